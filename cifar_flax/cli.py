"""Dispatches main.py's modes and turns known failures into one clear line."""

import contextlib
import signal
import sys
import threading

from cifar_flax import checkpointing
from cifar_flax import config_checks
from cifar_flax import data
from cifar_flax import workdir as workdir_lib

# Failures whose message says everything: no traceback for these.
CLEAR_ERRORS = (data.DataError, config_checks.ConfigError,
                workdir_lib.WorkdirError, checkpointing.NoCheckpointError)


SWEEP_MODES = ('sweep', 'sweep_table')


# Modes that train: a signal is a flag they read at safe points
# (train.StopSignal). In the others SIGTERM stops as Ctrl-C does.
TRAINING_MODES = ('train', 'sweep')


@contextlib.contextmanager
def _terminate_as_interrupt():
  """SIGTERM raises KeyboardInterrupt, as SIGINT does: one 'interrupted:'
  line, where by default it killed the process silently."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  old = signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, old)


def run(config, workdir, mode, images=()):
  """Runs `mode`; returns the process exit status."""
  from cifar_flax import train  # pylint: disable=g-import-not-at-top
  signals = (train.StopSignal() if mode in TRAINING_MODES
             else _terminate_as_interrupt())
  with signals as stop:
    return _run(config, workdir, mode, images, stop)


def _run(config, workdir, mode, images, stop=None):
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  from cifar_flax import predict  # pylint: disable=g-import-not-at-top
  from cifar_flax import train  # pylint: disable=g-import-not-at-top
  clear = CLEAR_ERRORS + (train.TrainingDivergedError, predict.ImageReadError)
  try:
    if mode not in SWEEP_MODES:  # A sweep checks each of its row configs.
      if 'rows' in config:
        raise config_checks.ConfigError(
            'a sweep config runs with --mode=sweep or sweep_table; for one '
            'of its seeds, --config=that seed\'s workdir '
            '(WORKDIR/<row>/seed_<s>)')
      config_checks.validate(config)  # Before any mode does any work.
      train.setup_jax(config)
    if images and mode != 'predict':
      raise predict.ImageReadError(f'--images is for --mode=predict, not '
                                   f'--mode={mode}')
    if mode == 'train':
      train.train_and_evaluate(config, workdir)
    elif mode == 'eval':
      evaluate.evaluate(config, workdir)
    elif mode == 'benchmark':
      from cifar_flax import benchmark  # pylint: disable=g-import-not-at-top
      benchmark.run(config, workdir)
    elif mode == 'report':
      # matplotlib and scikit-learn load only here (seconds).
      from cifar_flax import reports  # pylint: disable=g-import-not-at-top
      reports.write_reports(config, workdir)
    elif mode == 'predict':
      return predict.predict_images(config, workdir, images)
    elif mode == 'timed':
      from cifar_flax import timed_runs  # pylint: disable=g-import-not-at-top
      timed_runs.timed_runs(config, workdir)
    elif mode == 'sweep':
      from cifar_flax import sweep  # pylint: disable=g-import-not-at-top
      sweep.run(config, workdir)
    elif mode == 'sweep_table':
      from cifar_flax import sweep  # pylint: disable=g-import-not-at-top
      from cifar_flax import sweep_table  # pylint: disable=g-import-not-at-top
      sweep.check(config, workdir)
      sweep_table.write(config, workdir)
    else:
      raise ValueError(f'unknown mode {mode!r}')
    if stop is not None:  # Came after the last safe point (say, a table).
      stop.check('everything is finished and saved')
  except clear as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt as e:
    if str(e):
      said = str(e)
    elif mode in TRAINING_MODES:  # A second signal: at once.
      said = ('the latest saved checkpoint is kept; rerun the same command '
              'to resume')
    else:
      said = f'--mode={mode} stopped before it finished'
    print(f'interrupted: {said}', file=sys.stderr)
    return 130
  return 0
