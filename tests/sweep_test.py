"""The sweep: rows x seeds end to end, the table, plots, skip and resume."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from cifar_flax import cli
from cifar_flax import config_checks
from cifar_flax import sharding
from cifar_flax import sweep
from cifar_flax import sweep_table
from cifar_flax import workdir as workdir_lib
from configs import paper_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(fake_data_dir, xla_cache_dir):
  config = paper_table.get_config('tiny')
  config.data_dir = fake_data_dir
  config.overrides.compilation_cache_dir = xla_cache_dir
  return config


def _files(workdir):
  return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
          for d, _, fs in os.walk(workdir) for f in fs}


def _read(path):
  with open(path) as f:
    return json.load(f)


def test_sweep_end_to_end_skips_and_resumes(tmp_path, fake_data_dir,
                                            xla_cache_dir, capsys):
  config = _tiny(fake_data_dir, xla_cache_dir)
  config.results_dir = str(tmp_path / 'repo_results')
  workdir = str(tmp_path / 'sweep')
  sweep.run(config, workdir)
  # The table is written (and printed) once per trained row, not again.
  assert capsys.readouterr().out.count(
      f'paper_table.md (copied to {config.results_dir})') == len(
          config.train_rows)

  out = os.path.join(workdir, 'results')
  md = open(os.path.join(out, 'paper_table.md')).read()
  with open(os.path.join(out, 'paper_table.csv')) as f:
    table = {r['row']: r for r in csv.DictReader(f)}
  assert list(table) == list(config.row_names)
  # Every seed ran its row's config as it is now: no drift to name.
  assert 'ran a config other' not in md
  assert {r['config_drift'] for r in table.values()} == {''}
  for name in config.row_names:
    row = table[name]
    assert row['paper_test_top1'] == config.rows[name].paper_test_top1
    if name not in config.train_rows:
      assert row['status'] == 'not yet measured' and row['n_seeds'] == '0'
      continue
    evals = [_read(os.path.join(workdir, name, f'seed_{s}', 'eval.json'))
             for s in config.seeds]
    top1 = [100 * e['test_top1'] for e in evals]
    assert row['n_seeds'] == str(len(config.seeds))
    np.testing.assert_allclose(float(row['test_top1_mean']), np.mean(top1),
                               rtol=1e-4)
    np.testing.assert_allclose(float(row['test_top1_std'] or 0),
                               np.std(top1, ddof=1), rtol=1e-4, atol=1e-9)
    histories = [_read(os.path.join(workdir, name, f'seed_{s}',
                                    'history.json')) for s in config.seeds]
    for column, values in (
        ('test_top5', [100 * e['test_top5'] for e in evals]),
        ('best_epoch', [e['checkpoint_epoch'] for e in evals]),
        ('stop_epoch', [h[-1]['epoch'] for h in histories]),
        ('train_minutes', [sum(r['epoch_seconds'] for r in h) / 60
                           for h in histories])):
      np.testing.assert_allclose(float(row[f'{column}_mean']),
                                 np.mean(values), rtol=1e-4, err_msg=column)
    assert f'| {config.rows[name].label} |' in md
  assert md.count('not yet measured') == (len(config.row_names)
                                          - len(config.train_rows))
  assert f'Measured on {sharding.device_kind()}, 20' in md
  plots = sorted(os.listdir(os.path.join(out, 'plots')))
  assert plots == sorted(['val_top1_all_rows.png'] + [
      f'val_top1_{n}.png' for n in config.train_rows])
  for p in plots:
    with open(os.path.join(config.results_dir, 'plots', p), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert open(os.path.join(config.results_dir, 'paper_table.md')).read() == md

  # A rerun trains nothing and touches no run file.
  before = _files(os.path.join(workdir, 'adam_lr1e4'))
  capsys.readouterr()
  sweep.run(config, workdir)
  said = capsys.readouterr().out
  for name in config.train_rows:
    assert f'{name}: all 2 seeds finished, skipping.' in said
  assert _files(os.path.join(workdir, 'adam_lr1e4')) == before

  # An unfinished seed (latest checkpoint and eval.json lost) resumes and
  # ends where it ended before; its finished sibling stays untouched.
  seed1, seed2 = (os.path.join(workdir, 'adam_lr1e4', f'seed_{s}')
                  for s in config.seeds)
  history = _read(os.path.join(seed2, 'history.json'))
  steps = sorted(int(s) for s in os.listdir(os.path.join(seed2, 'checkpoints'))
                 if s.isdigit())
  shutil.rmtree(os.path.join(seed2, 'checkpoints', str(steps[-1])))
  os.remove(os.path.join(seed2, 'eval.json'))
  sibling = _files(seed1)
  sweep.run(config, workdir)
  assert _files(seed1) == sibling
  resumed = _read(os.path.join(seed2, 'history.json'))
  assert [h['epoch'] for h in resumed] == [h['epoch'] for h in history]
  np.testing.assert_allclose([h['val_loss'] for h in resumed],
                             [h['val_loss'] for h in history], rtol=1e-5)
  assert os.path.exists(os.path.join(seed2, 'eval.json'))

  # The runs' JSON files alone (no checkpoints), as kept under results/,
  # give the same table: measured rows travel between machines.
  copy = tmp_path / 'json_only'
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(
      'checkpoints', 'results', '*tfevents*'))
  config.results_dir = ''
  sweep_table.write(config, str(copy))
  with open(os.path.join(workdir, 'results', 'paper_table.csv')) as f:
    want = list(csv.DictReader(f))
  with open(copy / 'results' / 'paper_table.csv') as f:
    assert list(csv.DictReader(f)) == want

  # A table written with other settings than the sweep's (more epochs, a
  # patience they never met) still counts every finished seed, and names
  # what they ran.
  config.overrides.update(num_epochs=5, patience=3)
  sweep_table.write(config, workdir)
  with open(os.path.join(workdir, 'results', 'paper_table.csv')) as f:
    other = {r['row']: r for r in csv.DictReader(f)}
  for row in want:
    assert other[row['row']]['test_top1_mean'] == row['test_top1_mean']
    assert other[row['row']]['n_seeds'] == row['n_seeds']
  assert 'num_epochs (3, now 5), patience (1, now 3)' in (
      other['adam_lr1e4']['config_drift'])


def test_table_without_runs_marks_every_row_unmeasured(tmp_path):
  config = paper_table.get_config()
  rows = sweep_table.write(config, str(tmp_path))
  md = open(tmp_path / 'results' / 'paper_table.md').read()
  assert md.count('| not yet measured |') == len(rows) == len(paper_table.ROWS)
  assert '| 59.09% |' in md and '| 36.96% |' in md and '| 39.5% |' in md
  assert not os.path.exists(tmp_path / 'results' / 'plots' /
                            'val_top1_all_rows.png')
  assert "No row measured yet: every row reads 'not yet measured'." in md
  # With one diverged seed that line would be false.
  from cifar_flax import multi_seed  # pylint: disable=g-import-not-at-top
  seed_dir = tmp_path / 'adam_lr1e2' / 'seed_0'
  seed_dir.mkdir(parents=True)
  (seed_dir / multi_seed.DIVERGED_FILE).write_text('{"epoch": 2}')
  sweep_table.write(config, str(tmp_path))
  md = open(tmp_path / 'results' / 'paper_table.md').read()
  assert 'No seed has finished without diverging yet.' in md
  assert 'No row measured yet' not in md


def test_table_names_partial_and_diverged_rows(tmp_path):
  """A row missing some of the sweep's seeds is 'partial'; one whose every
  seed diverged reads 'diverged', not 'not yet measured'."""
  from cifar_flax import multi_seed  # pylint: disable=g-import-not-at-top
  config = paper_table.get_config()
  # cnn5: seeds 0-2; adam_lr1e4: seed 0 only (lease c's final run).
  lease_c = os.path.join(ROOT, 'results', 'h200', '2026-11-26c')
  shutil.copytree(os.path.join(lease_c, 'table'), tmp_path, dirs_exist_ok=True)
  shutil.copytree(os.path.join(lease_c, 'final'),
                  tmp_path / 'adam_lr1e4' / 'seed_0')
  for seed in config.seeds:
    seed_dir = tmp_path / 'adam_lr1e2' / f'seed_{seed}'
    seed_dir.mkdir(parents=True)
    (seed_dir / multi_seed.DIVERGED_FILE).write_text('{"epoch": 2}')
  # Seed 1 diverged under another learning rate than its row's now.
  ran = workdir_lib.config_to_dict(multi_seed.seed_config(
      sweep.row_config(config, 'adam_lr1e2'), 1))
  ran['learning_rate'] = 0.1
  workdir_lib.write_json(str(tmp_path / 'adam_lr1e2' / 'seed_1' /
                             'config.json'), ran)
  # A seed evaluated on augmented test images (config.augment_test), and on
  # a CPU, whose name has commas of its own.
  path = str(tmp_path / 'cnn5' / 'seed_2' / 'eval.json')
  cpu = 'cpu (AMD EPYC, 2 cores, AVX2)'
  workdir_lib.write_json(path, dict(workdir_lib.read_json(path), images=(
      'augmented as in training, as the paper evaluated'), device=cpu))
  sweep_table.write(config, str(tmp_path))
  with open(tmp_path / 'results' / 'paper_table.csv') as f:
    table = {r['row']: r for r in csv.DictReader(f)}
  assert table['cnn5']['devices'] == f'NVIDIA H200; {cpu}'
  md = open(tmp_path / 'results' / 'paper_table.md').read()
  assert f'Measured on NVIDIA H200; {cpu}, 2026-' in md
  assert table['cnn5']['status'] == 'measured'
  assert table['cnn5']['augmented_test'] == '2'
  assert table['adam_lr1e4']['augmented_test'] == ''
  assert table['adam_lr1e4']['status'] == 'partial (1 of 3 seeds run)'
  assert table['adam_lr1e4']['n_seeds'] == '1'
  assert table['adam_lr1e2']['status'] == 'diverged'
  assert table['adam_lr1e2']['diverged'] == '0 1 2'
  assert table['adam_lr1e3']['status'] == 'not yet measured'
  md = open(tmp_path / 'results' / 'paper_table.md').read()
  assert '| 1 (2 not yet run) | 64.09 |' in md
  assert '| 3 (1 on augmented test images) |' in md
  assert ("test images clean (no augmentation), except where a row says "
          "'augmented test images'") in md
  assert '| 0 (3 diverged) | diverged |' in md
  assert md.count('| not yet measured |') == len(paper_table.ROWS) - 3
  # Lease c's seeds ran before these fields existed: the table says so.
  drift = 'adam_keras_epsilon (False before the field existed, now True)'
  assert f'- 5-layer baseline (cnn5): seeds 0, 1, 2: {drift}' in md
  assert f'- Adam, lr 1e-4 (final): seed 0: {drift}' in md
  assert table['cnn5']['config_drift'] == f'seeds 0, 1, 2: {drift}'
  assert table['adam_lr1e2']['config_drift'] == (
      'seed 1: learning_rate (0.1, now 0.01)')


def test_committed_table_lists_every_row():
  with open(os.path.join(ROOT, 'results', 'paper_table.md')) as f:
    md = f.read()
  for _, label, path, paper, _ in paper_table.ROWS:
    assert f'| {label} | `{path}` | {paper} |' in md, label


def test_bad_sweep_configs_fail_before_training(tmp_path, fake_data_dir,
                                                capsys):
  config = paper_table.get_config('tiny')
  config.data_dir = fake_data_dir
  config.train_rows = ('adam_lr1e4', 'sgd')
  with pytest.raises(config_checks.ConfigError, match="'sgd'"):
    sweep.check(config)
  config = paper_table.get_config('tiny')
  config.overrides.augment = {'zoom': 0.1}
  with pytest.raises(config_checks.ConfigError, match='overrides.augment.zoom'):
    sweep.check(config)
  config = paper_table.get_config('tiny')
  config.overrides.learning_rate = -1.0
  with pytest.raises(config_checks.ConfigError, match='learning_rate'):
    sweep.check(config)
  # rbg draws other numbers under vmap: no seeds together with it.
  config = paper_table.get_config('tiny')  # seeds_per_group=0: all together.
  config.overrides.prng_impl = 'rbg'
  with pytest.raises(config_checks.ConfigError,
                     match="prng_impl='rbg' draws other numbers under"):
    sweep.check(config)
  config.seeds_per_group = 1
  sweep.check(config)
  assert not os.listdir(tmp_path)
  # A results_dir or workdir where the table cannot go: one line, at once.
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  config.results_dir = str(a_file)
  with pytest.raises(workdir_lib.WorkdirError,
                     match=f"config.results_dir '{a_file}' is a file, not a "
                     'directory'):
    sweep.check(config, str(tmp_path / 'sweep'))
  config.results_dir = ''
  for mode in ('sweep', 'sweep_table'):
    assert cli.run(config, str(a_file), mode) == 1
    assert capsys.readouterr().err == (
        f"error: workdir '{a_file}' is a file, not a directory\n")
  assert os.listdir(tmp_path) == ['a_file']


def test_sweep_mode_refuses_a_run_config(tmp_path, tiny_config, capsys):
  assert cli.run(tiny_config, str(tmp_path / 'w'), 'sweep') == 1
  assert 'needs a sweep config' in capsys.readouterr().err
  # And the other modes a sweep config, in one line (it was a traceback).
  for mode in ('train', 'eval', 'report'):
    assert cli.run(paper_table.get_config('tiny'), str(tmp_path / 'w'),
                   mode) == 1
    assert capsys.readouterr().err == (
        'error: a sweep config runs with --mode=sweep or sweep_table; for one '
        "of its seeds, --config=that seed's workdir (WORKDIR/<row>/seed_<s>)"
        '\n')
  assert not os.path.exists(tmp_path / 'w')


def test_seeds_one_at_a_time_take_the_single_run_path(
    tmp_path, fake_data_dir, xla_cache_dir, monkeypatch, capsys):
  """seeds_per_group=1 trains each seed with train.train_and_evaluate; a seed
  that diverges is recorded (diverged.json) and the sweep goes on. The
  archive is read once for both seeds."""
  from cifar_flax import data  # pylint: disable=g-import-not-at-top
  from cifar_flax import multi_seed  # pylint: disable=g-import-not-at-top
  from cifar_flax import train  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  config = _tiny(fake_data_dir, xla_cache_dir)
  config.train_rows = ('adam_lr1e4',)
  config.seeds_per_group = 1
  workdir = str(tmp_path / 'sweep')

  def never(*args):
    raise AssertionError('multi_seed path used')
  monkeypatch.setattr(multi_seed, 'train_and_evaluate', never)
  calls = []  # The first seed's first epoch reads as diverged.
  finite = train.params_finite
  monkeypatch.setattr(train, 'params_finite', lambda p: calls.append(1) or (
      jnp.asarray(False) if len(calls) == 1 else finite(p)))
  monkeypatch.setattr(data, '_last_read', {})
  reads = []
  read_members = data._read_members
  monkeypatch.setattr(data, '_read_members',
                      lambda d: reads.append(d) or read_members(d))
  sweep.run(config, workdir)
  assert len(reads) == 1
  first, second = (os.path.join(workdir, 'adam_lr1e4', f'seed_{s}')
                   for s in config.seeds)
  assert _read(os.path.join(first, multi_seed.DIVERGED_FILE))['epoch'] == 1
  assert not os.path.exists(os.path.join(first, 'eval.json'))
  assert os.path.exists(os.path.join(second, 'eval.json'))
  with open(os.path.join(workdir, 'results', 'paper_table.csv')) as f:
    row = {r['row']: r for r in csv.DictReader(f)}['adam_lr1e4']
  assert row['n_seeds'] == '1' and row['diverged'] == str(config.seeds[0])
  assert 'one at a time' in capsys.readouterr().out
  sweep.run(config, workdir)  # Both seeds done: nothing trains.
  assert 'all 2 seeds finished, skipping' in capsys.readouterr().out


def test_sigterm_stops_the_sweep_in_a_last_epoch_and_between_epochs(
    tmp_path, fake_data_dir, xla_cache_dir, monkeypatch, capsys):
  """A signal in a seed's last epoch ends that seed (saved, evaluated) and
  then the sweep; one outside the epochs (here while the data is read) stops
  it too, with one 'interrupted:' line and the table written, not killing it
  silently as SIGTERM's default did."""
  import signal  # pylint: disable=g-import-not-at-top
  from cifar_flax import train  # pylint: disable=g-import-not-at-top
  old = signal.signal(signal.SIGTERM, lambda *a: pytest.fail('SIGTERM'))
  try:
    config = _tiny(fake_data_dir, xla_cache_dir)
    config.train_rows = ('adam_lr1e4',)
    config.seeds_per_group = 1
    workdir = str(tmp_path / 'sweep')
    first, second = (os.path.join(workdir, 'adam_lr1e4', f'seed_{s}')
                     for s in config.seeds)
    judge = train.judge_epoch

    def signal_in_last_epoch(run_config, *args, **kwargs):
      row, improved, finished = judge(run_config, *args, **kwargs)
      if finished:
        os.kill(os.getpid(), signal.SIGTERM)
      return row, improved, finished
    monkeypatch.setattr(train, 'judge_epoch', signal_in_last_epoch)
    assert cli.run(config, workdir, 'sweep') == 130
    err = capsys.readouterr().err
    assert 'interrupted: SIGTERM: the run is finished, saved and evaluated' \
        in err, err
    assert os.path.exists(os.path.join(first, 'eval.json'))
    assert not os.path.exists(os.path.join(second, 'history.json'))
    with open(os.path.join(workdir, 'results', 'paper_table.csv')) as f:
      row = {r['row']: r for r in csv.DictReader(f)}['adam_lr1e4']
    assert row['n_seeds'] == '1'

    monkeypatch.setattr(train, 'judge_epoch', judge)
    shutil.rmtree(os.path.join(workdir, 'results'))
    load = train.data_lib.load_dataset
    monkeypatch.setattr(train.data_lib, 'load_dataset', lambda c: os.kill(
        os.getpid(), signal.SIGTERM) or load(c))
    assert cli.run(config, workdir, 'sweep') == 130
    err = capsys.readouterr().err
    assert err.startswith('interrupted: SIGTERM: stopped before this attempt '
                          'trained an epoch') and 'Traceback' not in err, err
    assert not os.path.exists(os.path.join(second, 'history.json'))
    assert os.path.exists(os.path.join(workdir, 'results', 'paper_table.md'))
  finally:
    signal.signal(signal.SIGTERM, old)
