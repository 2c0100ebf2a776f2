"""The sweep's results table (Markdown + CSV) and validation-curve plots.

Reads only finished seeds' workdirs (eval.json, history.json); a row with
none reads 'not yet measured', never a guess; one whose every seed diverged
reads 'diverged'; one missing some of the sweep's seeds says how many are
not yet run. Wall time is the sum of the seed's epoch times (seeds trained
together share each epoch's time). Seeds that ran a config other than their
row's as it is now (their config.json) are named under the table.
"""

import csv
import datetime
import os
import shutil

import ml_collections
import numpy as np

from cifar_flax import config_checks
from cifar_flax import evaluate
from cifar_flax import multi_seed
from cifar_flax import workdir as workdir_lib

RESULTS_DIR = 'results'
NAME = 'paper_table'
UNMEASURED = 'not yet measured'
DIVERGED = 'diverged'
STATS = (('test_top1', 100.0), ('test_top5', 100.0), ('best_epoch', 1.0),
         ('stop_epoch', 1.0), ('train_minutes', 1.0))


def seed_result(workdir, config):
  """What the table needs from one seed, or None if it has not finished
  under the config it ran (its config.json; `config`, its row's, without
  one). A seed finished under another config than its row's counts, and
  config_drift names what differs: a table written with other settings
  than the sweep's hides no measured seed."""
  ran = workdir_lib.read_json(os.path.join(workdir, workdir_lib.CONFIG_FILE))
  if not multi_seed.is_done(
      workdir, config if ran is None else ml_collections.ConfigDict(ran)):
    return None
  ev = workdir_lib.read_json(os.path.join(workdir, workdir_lib.EVAL_FILE))
  if ev is None:  # Diverged.
    return {'diverged': True}
  history = workdir_lib.read_history(workdir)
  mtime = os.path.getmtime(os.path.join(workdir, workdir_lib.EVAL_FILE))
  return {'diverged': False, 'test_top1': ev['test_top1'],
          # config.augment_test: evaluated as the paper did (older eval.json
          # files, all clean, do not say).
          'augmented_test': ev.get('images', evaluate.CLEAN_IMAGES) != (
              evaluate.CLEAN_IMAGES),
          'test_top5': ev['test_top5'], 'best_epoch': ev['checkpoint_epoch'],
          'stop_epoch': history[-1]['epoch'] if history else 0,
          'train_minutes': sum(h['epoch_seconds'] for h in history) / 60,
          'device': ev.get('device', '?'),
          # Older eval.json files have no date: their file time stands in.
          'date': ev.get('date') or datetime.datetime.fromtimestamp(
              mtime, datetime.timezone.utc).strftime('%Y-%m-%d'),
          'val_top1': [h['val_top1'] for h in history]}


def config_drift(row, name, workdir, seeds):
  """{seed: ((field, value it ran, value now, added since), ...)} for the
  `seeds` (finished or diverged) whose config.json differs from what row
  `name` runs now (`row`, its config as sweep.row_config gives it), outside
  fields that may change between attempts of a run (e.g. data_dir); nested
  fields dotted.
  A field config.json lacks (added since) is flagged True, with the value
  runs had before it (workdir.ADDED_FIELDS) or None. Seeds without a
  config.json are left out."""
  from cifar_flax import sweep  # pylint: disable=g-import-not-at-top
  drift = {}
  for seed in seeds:
    ran = workdir_lib.read_json(os.path.join(
        sweep.seed_workdir(workdir, name, seed), workdir_lib.CONFIG_FILE))
    if ran is None:
      continue
    ran = dict(workdir_lib.flatten(ran))
    now = dict(workdir_lib.flatten(workdir_lib.config_to_dict(
        multi_seed.seed_config(row, seed))))
    fields = workdir_lib.differing(ran, now, config_checks.RESUMABLE_KEYS)
    if fields:
      drift[seed] = tuple(
          (f, ran[f] if f in ran else workdir_lib.ADDED_FIELDS.get(f),
           now.get(f), f not in ran) for f in fields)
  return drift


def _drift_text(drift):
  """'seeds 0, 1: a (False before the field existed, now True); seed 2:
  ...': seeds grouped by what differs."""
  groups = {}
  for seed, fields in sorted(drift.items()):
    groups.setdefault(fields, []).append(str(seed))
  def describe(f, ran, now, added_since):
    if added_since:  # ADDED_FIELDS: as runs before the field ran, or absent.
      ran = 'absent' if ran is None else f'{ran!r} before the field existed'
    else:
      ran = repr(ran)
    return f'{f} ({ran}, now {now!r})'
  return '; '.join(f'seed{"s" if len(seeds) > 1 else ""} {", ".join(seeds)}: '
                   + ', '.join(describe(*field) for field in fields)
                   for fields, seeds in groups.items())


def collect(sweep_config, workdir):
  """One dict per row of row_names: paper figure, per-seed results, stats."""
  from cifar_flax import sweep  # pylint: disable=g-import-not-at-top
  rows = []
  for name in sweep_config.row_names:
    spec = sweep_config.rows[name]
    config = sweep.row_config(sweep_config, name)
    seeds = {s: seed_result(sweep.seed_workdir(workdir, name, s), config)
             for s in sweep_config.seeds}
    done = {s: r for s, r in seeds.items() if r and not r['diverged']}
    row = {'row': name, 'label': spec.label, 'config': spec.config,
           'paper_test_top1': spec.paper_test_top1,
           'paper_note': spec.paper_note, 'seeds': sorted(done),
           'diverged': sorted(s for s, r in seeds.items()
                              if r and r['diverged']),
           'augmented_test': sorted(s for s, r in done.items()
                                    if r['augmented_test']),
           'devices': sorted({r['device'] for r in done.values()}),
           'dates': sorted({r['date'] for r in done.values()}),
           'not_run': sorted(s for s, r in seeds.items() if r is None),
           'curves': {s: r['val_top1'] for s, r in done.items()},
           # Diverged seeds too: a sweep never retrains them by itself.
           'config_drift': config_drift(
               config, name, workdir,
               sorted(s for s, r in seeds.items() if r))}
    row['status'] = _status(row)
    for key, scale in STATS:
      values = np.array([r[key] for r in done.values()], float) * scale
      row[key] = (float(values.mean()) if len(values) else None,
                  float(values.std(ddof=1)) if len(values) > 1 else None)
    rows.append(row)
  return rows


def _status(row):
  """UNMEASURED (no seed run), 'partial (k of n seeds run)', DIVERGED (every
  seed run, none finished) or 'measured' (every seed run, some finished)."""
  run = len(row['seeds']) + len(row['diverged'])
  if not run:
    return UNMEASURED
  if row['not_run']:
    return f'partial ({run} of {run + len(row["not_run"])} seeds run)'
  return 'measured' if row['seeds'] else DIVERGED


def _mean_std(pair, digits):
  mean, std = pair
  if mean is None:
    return ''
  return f'{mean:.{digits}f}' + ('' if std is None else f' ± {std:.{digits}f}')


def markdown(rows, sweep_config):
  measured = [r for r in rows if r['seeds']]
  devices = sorted({d for r in measured for d in r['devices']})
  dates = sorted({d for r in measured for d in r['dates']})
  lines = ['# CIFAR-100: the paper\'s experiments, re-measured', '']
  if measured:
    lines.append(f'Measured on {"; ".join(devices)}, {dates[0]}'
                 + (f' to {dates[-1]}' if len(dates) > 1 else '') + '.')
  elif any(r['diverged'] for r in rows):
    lines.append('No seed has finished without diverging yet.')
  else:
    lines.append('No row measured yet: every row reads '
                 f'\'{UNMEASURED}\'.')
  lines += [
      '', 'Command: `python main.py --config=configs/paper_table.py '
      '--mode=sweep --workdir=W --config.data_dir=DATA` (seeds '
      f'{tuple(sweep_config.seeds)}). Ours: mean ± std (ddof 1) over the '
      'finished seeds; test images clean (no augmentation)' + (
          ', except where a row says \'augmented test images\' '
          '(config.augment_test, as the paper evaluated)'
          if any(r['augmented_test'] for r in rows) else '') + ', best '
      'checkpoint by validation loss. Train time: sum of the seed\'s epoch '
      'times' + (
          '; seeds trained together share each epoch\'s time'
          if sweep_config.seeds_per_group != 1 else
          ' (one seed at a time)') +
      '. \'—\': the paper gives no number.', '',
      '| Experiment | Config | Paper test top-1 | Paper note | Seeds | '
      'Test top-1 (%) | Test top-5 (%) | Best epoch | Stop epoch | '
      'Train time (min) |',
      '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    head = (f'| {r["label"]} | `{r["config"]}` | {r["paper_test_top1"]} | '
            f'{r["paper_note"]} | ')
    seeds = f'{len(r["seeds"])}'
    if r['diverged']:
      seeds += f' ({len(r["diverged"])} diverged)'
    if r['not_run'] and r['status'] != UNMEASURED:
      seeds += f' ({len(r["not_run"])} not yet run)'
    if r['augmented_test']:
      seeds += f' ({len(r["augmented_test"])} on augmented test images)'
    if not r['seeds']:
      lines.append(head + f'{seeds} | {r["status"]} | | | | |')
      continue
    lines.append(head + f'{seeds} | ' + ' | '.join(
        _mean_std(r[key], 2 if scale > 1 else 1) for key, scale in STATS)
                 + ' |')
  drifted = [r for r in rows if r['config_drift']]
  if drifted:
    lines += ['', 'Seeds that ran a config other than their row\'s as it is '
              'now: the fields that differ, with the value each seed ran '
              '(its `config.json`; for a field added since, the value runs '
              'had before it) and the value now.', '']
    lines += [f'- {r["label"]}: {_drift_text(r["config_drift"])}'
              for r in drifted]
  return '\n'.join(lines) + '\n'


def write_csv(rows, path):
  fields = (['row', 'label', 'config', 'paper_test_top1', 'paper_note',
             'n_seeds', 'seeds', 'diverged', 'augmented_test'] +
            [f'{k}_{s}' for k, _ in STATS for s in ('mean', 'std')] +
            ['devices', 'dates', 'status', 'config_drift'])
  with workdir_lib.atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
    w = csv.DictWriter(f, fields)
    w.writeheader()
    for r in rows:
      out = {k: r[k] for k in ('row', 'label', 'config', 'paper_test_top1',
                               'paper_note')}
      out.update(n_seeds=len(r['seeds']),
                 seeds=' '.join(map(str, r['seeds'])),
                 diverged=' '.join(map(str, r['diverged'])),
                 augmented_test=' '.join(map(str, r['augmented_test'])),
                 devices='; '.join(r['devices']), dates=' '.join(r['dates']),
                 status=r['status'],
                 config_drift=_drift_text(r['config_drift']))
      for key, _ in STATS:
        mean, std = r[key]
        out[f'{key}_mean'] = '' if mean is None else f'{mean:.6g}'
        out[f'{key}_std'] = '' if std is None else f'{std:.6g}'
      w.writerow(out)


def plot(rows, plot_dir):
  """validation top-1 vs epoch: one figure per measured row (a line per
  seed) and one with every row's seed-mean; returns the files written."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(plot_dir, exist_ok=True)
  written = []
  all_fig, all_ax = plt.subplots(figsize=(8, 5))
  for r in rows:
    if not r['curves']:
      continue
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, curve in sorted(r['curves'].items()):
      ax.plot(range(1, len(curve) + 1), np.array(curve) * 100,
              label=f'seed {seed}')
    longest = max(len(c) for c in r['curves'].values())
    mean = [np.mean([c[e] for c in r['curves'].values() if len(c) > e])
            for e in range(longest)]
    all_ax.plot(range(1, longest + 1), np.array(mean) * 100, label=r['label'])
    ax.set(title=f'{r["label"]}: validation top-1', xlabel='epoch',
           ylabel='validation top-1 (%)')
    ax.legend()
    ax.grid(alpha=0.3)
    path = os.path.join(plot_dir, f'val_top1_{r["row"]}.png')
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
    written.append(path)
  if written:
    all_ax.set(title='Validation top-1 (mean over seeds)', xlabel='epoch',
               ylabel='validation top-1 (%)')
    all_ax.legend(fontsize='small')
    all_ax.grid(alpha=0.3)
    path = os.path.join(plot_dir, 'val_top1_all_rows.png')
    all_fig.savefig(path, dpi=100, bbox_inches='tight')
    written.append(path)
  plt.close(all_fig)
  return written


def write(sweep_config, workdir):
  """Writes WORKDIR/results/paper_table.{md,csv} and plots/ (and copies them
  to sweep_config.results_dir when set); returns the rows."""
  rows = collect(sweep_config, workdir)
  out = os.path.join(workdir, RESULTS_DIR)
  os.makedirs(out, exist_ok=True)
  md = os.path.join(out, f'{NAME}.md')
  text = markdown(rows, sweep_config)
  with workdir_lib.atomic_path(md) as tmp, open(tmp, 'w') as f:
    f.write(text)
  write_csv(rows, os.path.join(out, f'{NAME}.csv'))
  plots = plot(rows, os.path.join(out, 'plots'))
  if sweep_config.results_dir:
    dest = sweep_config.results_dir
    for path in [md, os.path.join(out, f'{NAME}.csv')] + plots:
      target = os.path.join(dest, os.path.relpath(path, out))
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with workdir_lib.atomic_path(target) as tmp:
        shutil.copyfile(path, tmp)
  print(text)
  print(f'-> {md}' + (f' (copied to {sweep_config.results_dir})'
                      if sweep_config.results_dir else ''))
  return rows
