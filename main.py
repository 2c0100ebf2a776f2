"""cifar_flax: python main.py --config=configs/final.py --workdir=runs/final [--mode=...]."""

import importlib.util
import json
import os
import re
import signal
import sys
import textwrap
import traceback

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, history, '
                    'metrics and reports of one run.')
flags.DEFINE_enum('mode', 'train',
                  ['train', 'eval', 'report', 'predict', 'benchmark', 'timed',
                   'sweep', 'sweep_table'],
                  'train: train (or resume) then evaluate; eval: evaluate the '
                  'best checkpoint; report: write the figures and tables to '
                  'WORKDIR/reports; predict: classify --images; benchmark: '
                  'time the training and evaluation programs on synthetic '
                  'data; timed: time config.timed_seeds runs from scratch (no '
                  'checkpoints) and write timed.json; sweep: train every row x '
                  'seed of a sweep config (configs/paper_table.py) and write '
                  'its table; sweep_table: only write the table.')
flags.DEFINE_list('images', [], 'Comma-separated image files for '
                  '--mode=predict (any size or mode PIL reads).')
flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first '
                  '(one process per host; see the README).')
flags.DEFINE_string('coordinator_address', None, 'With --multihost: host:port '
                    'of process 0 (unset: detected on Slurm, TPU, ...).')
flags.DEFINE_integer('num_processes', None, 'With --multihost: processes.')
flags.DEFINE_integer('process_id', None, 'With --multihost: this process.')
flags.mark_flags_as_required(['config', 'workdir'])


def _config_arg(argv):
  """The --config value as given (for messages)."""
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a.split('=', 1)[1]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _config_load_error(argv, e):
  """One line for a config file that could not be loaded."""
  while e.__cause__ is not None:  # ml_collections wraps the OS's error twice.
    e = e.__cause__
  lines = str(e).strip().splitlines() or ['']
  if isinstance(e, SyntaxError):
    why = f'syntax error at line {e.lineno}: {e.msg}'
  elif isinstance(e, OSError):  # The last line names the file and the error.
    why = lines[-1].strip()
  else:  # Raised while running the file: its line.
    frames = traceback.extract_tb(e.__traceback__)
    where = f' at line {frames[-1].lineno}' if frames else ''
    why = f'{type(e).__name__}{where}: {lines[0]}'
  return (f'FATAL Flags parsing error: --config={_config_arg(argv)}: cannot '
          f'load the config file ({why})')


def _overrides_hint(argv, arg):
  """For --config.overrides.a.b=v, a field the sweep's overrides lack: the
  whole --config.overrides that sets it and keeps the config's own (read
  from the config file again: the failed parse left none)."""
  path, _, variant = _config_arg(argv).partition(':')
  try:
    spec = importlib.util.spec_from_file_location('sweep_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(*([variant] if variant else []))
    merged = config.overrides.to_dict()
  except Exception:  # pylint: disable=broad-except
    merged = {}
  name, _, value = arg[len('--config.overrides.'):].partition('=')
  try:
    value = json.loads(value)
  except ValueError:
    pass  # A string.
  *parents, leaf = name.split('.')
  d = merged
  for p in parents:
    d = d.setdefault(p, {})
  d[leaf] = value
  return ("a sweep's overrides take new fields only whole, and replace the "
          f"config's own: --config.overrides='{json.dumps(merged)}'")


RUN_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'configs', 'run.py')


def _run_config_argv(argv):
  """--config=WORKDIR (or WORKDIR/config.json) reads the config that run was
  trained with: --config=configs/run.py:WORKDIR."""
  def run_config(value):
    if os.path.isdir(value):
      workdir = value
    elif os.path.basename(value) == 'config.json':
      workdir = os.path.dirname(value) or '.'
    else:
      return value
    return f'{os.path.relpath(RUN_CONFIG)}:{workdir}'
  argv = list(argv)
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      argv[i] = '--config=' + run_config(a.split('=', 1)[1])
    elif a == '--config' and i + 1 < len(argv):
      argv[i + 1] = run_config(argv[i + 1])
  return argv


def _flags_error(argv, e):
  """absl's message for a flag it rejects; for a config file that raised a
  ValueError or TypeError (ml_collections puts the whole traceback in the
  message), one line."""
  text = str(e)
  if 'Error whilst parsing config file' not in text:  # As absl says it.
    if '\n' in text:
      text = '\n' + textwrap.indent(text, '  ')
    return (f'FATAL Flags parsing error: {text}\nPass --helpshort or '
            f'--helpfull to see help on flags.')
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  config = _config_arg(argv)
  path = config.split(':', 1)[0]
  if os.path.abspath(path) == RUN_CONFIG:  # Its messages say everything.
    why = lines[-1].split(': ', 1)[-1]
    return f'FATAL Flags parsing error: --config={config}: {why}'
  frames = re.findall(r'File "(.*)", line (\d+)', text)
  lines_there = [n for f, n in frames if os.path.abspath(f) ==
                 os.path.abspath(path)]
  name, _, message = lines[-1].partition(': ')
  where = f' at line {lines_there[-1]}' if lines_there else ''
  return (f'FATAL Flags parsing error: --config={config}: cannot load the '
          f'config file ({name}{where}: {message})')


def parse_flags(argv):
  """absl's parsing, with an unknown --config field, or a config file that
  cannot be loaded, named in one line (ml_collections raises a bare
  AttributeError for the first and a traceback for the second)."""
  argv = _run_config_argv(argv)
  try:
    try:
      rest = FLAGS(argv)
    except flags.Error as e:
      sys.exit(_flags_error(argv, e))
    FLAGS.config.keys()  # A file it could not read, ml_collections raises here.
    return rest
  except (AttributeError, KeyError) as e:
    if "has no attribute 'get_config'" in str(e):
      sys.exit(f'FATAL Flags parsing error: --config={_config_arg(argv)}: the '
               f'config file defines no get_config() (see configs/*.py)')
    # ml_collections' KeyError (wrapped in an AttributeError) reads
    # "'field'", or "'field'\nDid you mean ...?" for a near miss.
    inner = e
    while inner.args and isinstance(inner.args[0], BaseException):
      inner = inner.args[0]
    first, _, suggestion = str(inner.args[0] if inner.args else inner
                               ).partition('\n')
    field = first.strip('"\'')
    given = [a for a in argv if a.startswith('--config.') and field in a]
    if not given:  # Not an override's: raised by the config file itself.
      sys.exit(_config_load_error(argv, e))
    if field != 'overrides' and given[0].startswith('--config.overrides.'):
      where = _overrides_hint(argv, given[0])
    else:
      where = 'all fields: configs/default.py'
    sys.exit(f'FATAL Flags parsing error: {" ".join(given)}: the config has '
             f'no field {field!r} ({where})'
             + (f'. {suggestion.strip()}' if suggestion else ''))
  except Exception as e:  # pylint: disable=broad-except
    # Flag values absl rejects itself (SystemExit); what is left comes from
    # reading or running the config file.
    sys.exit(_config_load_error(argv, e))


def main(argv):
  if len(argv) > 1:  # One line, not absl's page of usage.
    sys.exit(f'FATAL Flags parsing error: unexpected arguments {argv[1:]} '
             f'(flags only, e.g. --mode=eval)')
  if not FLAGS['verbosity'].present:  # orbax logs every save at INFO.
    logging.set_verbosity(logging.WARNING)
  # Until cli.run takes over the signals: SIGTERM as Ctrl-C, one line.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    import jax  # pylint: disable=g-import-not-at-top
    if FLAGS.multihost:
      jax.distributed.initialize(FLAGS.coordinator_address,
                                 FLAGS.num_processes, FLAGS.process_id)
    from cifar_flax import checkpointing  # pylint: disable=g-import-not-at-top
    from cifar_flax import cli  # pylint: disable=g-import-not-at-top
  except KeyboardInterrupt:
    print('interrupted: while starting, before any work', file=sys.stderr)
    sys.exit(130)
  checkpointing.drop_closed_loop_reports()
  # '~' after '=' is left to us by the shell; empty names (a stray comma)
  # are no images.
  images = [os.path.expanduser(p) for p in FLAGS.images if p]
  sys.exit(cli.run(FLAGS.config, os.path.expanduser(FLAGS.workdir), FLAGS.mode,
                   images))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
