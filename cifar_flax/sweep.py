"""Runs a table of experiments: every row's config x every seed.

A sweep config (configs/paper_table.py) names the rows (a config file each)
and the seeds. Each seed trains in WORKDIR/<row>/seed_<seed>, an ordinary
single-run workdir; a row's seeds train one at a time (train, the default)
or together (multi_seed, `seeds_per_group`). A rerun skips
finished seeds and resumes unfinished ones. After each row the table is
rewritten (sweep_table).
"""

import importlib.util
import os

from cifar_flax import config_checks
from cifar_flax import multi_seed
from cifar_flax import sweep_table
from cifar_flax import train
from cifar_flax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_file(path):
  """get_config() of a config file, relative to the cwd or the repo root."""
  full = path if os.path.isfile(path) else os.path.join(ROOT, path)
  if not os.path.isfile(full):
    raise config_checks.ConfigError(f'config file {path!r} not found (nor '
                                    f'under {ROOT})')
  name = 'sweep_row_' + os.path.splitext(os.path.basename(full))[0]
  spec = importlib.util.spec_from_file_location(name, full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def row_config(sweep_config, name):
  """The row's config file with the sweep's data_dir and overrides set."""
  if name not in sweep_config.rows:
    raise config_checks.ConfigError(
        f'row {name!r} is not one of {list(sweep_config.row_names)}')
  path = sweep_config.rows[name].config
  config = load_config_file(path)
  overrides = dict(workdir_lib.flatten(sweep_config.overrides))
  if sweep_config.data_dir:
    overrides['data_dir'] = sweep_config.data_dir
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    target = config
    try:
      for p in parents:
        target = target[p]
      if leaf not in target:
        raise KeyError(leaf)
      target[leaf] = value
    except (KeyError, TypeError) as e:
      raise config_checks.ConfigError(
          f'overrides.{key}={value!r} does not fit {path} ({e})') from e
  config_checks.validate(config)
  return config


def seed_workdir(workdir, row, seed):
  return os.path.join(workdir, row, f'seed_{seed}')


def _groups(seeds, size):
  size = size or len(seeds)
  return [seeds[i:i + size] for i in range(0, len(seeds), size)]


def check(sweep_config, workdir=None):
  """Fails before any training on a bad row list, seed list or row config,
  or (given `workdir`) a workdir or results_dir where the table cannot be
  written."""
  if 'rows' not in sweep_config:
    raise config_checks.ConfigError(
        'this mode needs a sweep config (e.g. configs/paper_table.py), not '
        'the config of one run')
  names = list(sweep_config.row_names)
  unknown = [n for n in names if n not in sweep_config.rows]
  if unknown:
    raise config_checks.ConfigError(f'row_names: {unknown} not in rows')
  unknown = [n for n in sweep_config.train_rows if n not in names]
  if unknown:
    raise config_checks.ConfigError(
        f'train_rows: {unknown} not in row_names {names}')
  seeds = list(sweep_config.seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise config_checks.ConfigError(f'seeds {seeds}: need distinct seeds')
  if sweep_config.seeds_per_group < 0:
    raise config_checks.ConfigError('seeds_per_group must not be negative')
  configs = {n: row_config(sweep_config, n) for n in sweep_config.train_rows}
  largest = len(_groups(seeds, sweep_config.seeds_per_group)[0])
  for config in configs.values():
    multi_seed.check_group(config, largest)
  if workdir is not None:
    if sweep_config.results_dir:
      workdir_lib.ensure_writable_dir(sweep_config.results_dir,
                                      'config.results_dir')
    workdir_lib.ensure_writable_dir(workdir)
  return configs


def _train_one(config, workdir, seed):
  """One seed on its own: the single-run path (train.train_and_evaluate),
  whose scan form launches each epoch before the last one's checkpoint is
  written. A diverged seed is recorded as multi_seed does; the sweep goes on."""
  try:
    train.train_and_evaluate(multi_seed.seed_config(config, seed), workdir)
  except train.TrainingDivergedError as e:
    multi_seed.record_divergence(seed, workdir, e.epoch, e)


def run(sweep_config, workdir):
  """Trains every unfinished seed of every row in train_rows, then writes
  the table; returns the table's rows."""
  configs = check(sweep_config, workdir)
  seeds = list(sweep_config.seeds)
  table = None  # The rows of the table as last written.
  try:
    for name, config in configs.items():
      todo = [s for s in seeds
              if not multi_seed.is_done(seed_workdir(workdir, name, s), config)]
      if not todo:
        print(f'{name}: all {len(seeds)} seeds finished, skipping.')
        continue
      groups = list(_groups(todo, sweep_config.seeds_per_group))
      how = ('together' if len(groups) == 1 and len(todo) > 1 else
             'one at a time' if all(len(g) == 1 for g in groups) else
             f'in groups of {sweep_config.seeds_per_group}')
      print(f'{name}: training seeds {todo} {how} '
            f'({sweep_config.rows[name].config}).', flush=True)
      for group in groups:
        if len(group) == 1:
          _train_one(config, seed_workdir(workdir, name, group[0]), group[0])
        else:
          multi_seed.train_and_evaluate(
              config, {s: seed_workdir(workdir, name, s) for s in group})
      table = sweep_table.write(sweep_config, workdir)
  except KeyboardInterrupt:  # Stopped (SIGTERM/SIGINT): table of what finished.
    sweep_table.write(sweep_config, workdir)
    raise
  # Rows skipped after the last write change nothing in the table.
  return table if table is not None else sweep_table.write(sweep_config,
                                                           workdir)
