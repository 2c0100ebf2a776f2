"""Dispatches main.py's modes and turns known failures into one clear line."""

import sys

from cifar_flax import checkpointing
from cifar_flax import config_checks
from cifar_flax import data
from cifar_flax import workdir as workdir_lib

# Failures whose message says everything: no traceback for these.
CLEAR_ERRORS = (data.DataError, config_checks.ConfigError,
                workdir_lib.WorkdirError, checkpointing.NoCheckpointError)


def run(config, workdir, mode):
  """Runs `mode`; returns the process exit status."""
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  from cifar_flax import train  # pylint: disable=g-import-not-at-top
  try:
    if mode == 'train':
      train.train_and_evaluate(config, workdir)
    elif mode == 'eval':
      evaluate.evaluate(config, workdir)
    elif mode == 'sweep':
      from cifar_flax import sweep  # pylint: disable=g-import-not-at-top
      sweep.run(config, workdir)
    elif mode == 'sweep_table':
      from cifar_flax import sweep  # pylint: disable=g-import-not-at-top
      from cifar_flax import sweep_table  # pylint: disable=g-import-not-at-top
      sweep.check(config)
      sweep_table.write(config, workdir)
    else:
      raise ValueError(f'unknown mode {mode!r}')
  except CLEAR_ERRORS + (train.TrainingDivergedError,) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt as e:
    print(f'interrupted: {e}' if str(e) else 'interrupted', file=sys.stderr)
    return 130
  return 0
