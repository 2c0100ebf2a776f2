"""main.py's flag parsing: absl's, with --config=WORKDIR read as that run's
config, and every config problem named in one line (ml_collections gives a
bare AttributeError for an unknown field, a traceback for a config file that
raises). Imports no JAX: a bad flag fails at once."""

import contextlib
import importlib.util
import json
import os
import sys
import textwrap
import traceback

from absl import flags
from absl import logging
import ml_collections

FLAGS = flags.FLAGS
RUN_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'configs', 'run.py')


def _config_items(argv):
  """[(first item, value item)] of each --config in argv; absl also reads
  -config and '--config VALUE' (two items)."""
  found = []
  for i, a in enumerate(argv):
    if a.startswith(('--config=', '-config=')):
      found.append((i, i))
    elif a in ('--config', '-config') and i + 1 < len(argv):
      found.append((i, i + 1))
  return found


def _config_index(argv):
  """(i, value) of the last --config value in argv (i: its item), or
  (None, None)."""
  items = _config_items(argv)
  if not items:
    return None, None
  first, i = items[-1]
  return i, argv[i].split('=', 1)[1] if first == i else argv[i]


def _last_config_only(argv):
  """argv without all but the last --config: a later one replaces an
  earlier (scripts/train.sh gives configs/final.py first), where
  ml_collections, given two, defines each override flag twice and fails."""
  dropped = {j for first, last in _config_items(argv)[:-1]
             for j in range(first, last + 1)}
  return [a for j, a in enumerate(argv) if j not in dropped]


def config_arg(argv):
  """The --config value in argv ('?' if none)."""
  value = _config_index(argv)[1]
  return '?' if value is None else value


def run_config_argv(argv):
  """--config=WORKDIR (or WORKDIR/config.json, or any *.json) is the config
  that run was trained with: --config=configs/run.py:WORKDIR."""
  i, value = _config_index(argv)
  if value is None:
    return argv
  path = os.path.expanduser(value)  # The shell leaves '~' after '='.
  if os.path.isdir(path) or path.endswith('.json'):  # Any name for it.
    new = f'{os.path.relpath(RUN_CONFIG)}:{path}'
  elif path != value:
    new = path
  else:
    return argv
  argv = list(argv)
  argv[i] = (argv[i][:len(argv[i]) - len(value)] + new
             if argv[i].endswith('=' + value) else new)
  return argv


def _wrapper(e):
  """An exception of absl's or ml_collections' around the config file's own
  (ml_collections re-raises its errors, or fails to: TypeError)."""
  if isinstance(e, flags.Error):
    return True
  frames = traceback.extract_tb(e.__traceback__)
  return bool(frames) and os.path.basename(frames[-1].filename) == (
      'config_flags.py')


def _raised(e):
  """The config file's own exception, under the wrappers."""
  while _wrapper(e) and (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  return e


def _unwrapped(e):
  """The exception ml_collections wraps as the first argument of another
  (a KeyError in an AttributeError), or `e`."""
  while e.args and isinstance(e.args[0], BaseException):
    e = e.args[0]
  return e


def _line_in(e, path):
  """The line of `path` (the config file) in e's traceback, or in those of
  the exceptions it arose from."""
  while e is not None:
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
             if os.path.abspath(f.filename) == os.path.abspath(path)]
    if lines:
      return lines[-1]
    e = e.__cause__ or e.__context__
  return None


def config_error(given, argv, e):
  """One line for a config file that could not be loaded, or raised `e`
  (`given`: the argv as typed, for the message; `argv`: as parsed)."""
  e = _raised(e)
  path = config_arg(argv).split(':', 1)[0]
  inner = _unwrapped(e)
  said = str(e) if inner is e else (
      str(inner.args[0]) if inner.args else str(inner))
  text = ' '.join(line.strip() for line in said.strip().splitlines())
  head = f'FATAL Flags parsing error: --config={config_arg(given)}: '
  if os.path.abspath(path) == RUN_CONFIG and isinstance(e, ValueError):
    return head + text  # Its messages name the run and the problem.
  if isinstance(e, SyntaxError):
    why = f'syntax error at line {e.lineno}: {e.msg}'
  elif isinstance(e, OSError):  # The last line names the file and the error.
    why = str(e).strip().splitlines()[-1].strip()
    if not path.endswith('.py'):
      why += '; --config takes a config file (configs/*.py) or a run\'s workdir'
  else:  # Raised while the file ran: its line there.
    line = _line_in(e, path)
    where = f' at line {line}' if line else ''
    why = f'{type(e).__name__}{where}: {text}'
  return head + f'cannot load the config file ({why})'


def _overrides_hint(argv, arg):
  """For --config.overrides.a.b=v, a field the sweep's overrides lack: the
  whole --config.overrides that sets it and keeps the config's own (read
  from the config file again: the failed parse left none)."""
  path, _, variant = config_arg(argv).partition(':')
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


def _unknown_field(given, argv, e):
  """One line for ml_collections' KeyError (wrapped in an AttributeError),
  which reads "'field'", or "'field'\\nDid you mean ...?" for a near miss."""
  if "has no attribute 'get_config'" in str(e):
    return (f'FATAL Flags parsing error: --config={config_arg(given)}: the '
            f'config file defines no get_config() (see configs/*.py)')
  inner = _unwrapped(e)
  first, _, suggestion = str(inner.args[0] if inner.args else inner
                             ).partition('\n')
  field = first.strip('"\'')
  overrides = [a for a in argv if a.startswith('--config.') and field in
               a.split('=', 1)[0][len('--config.'):].split('.')]
  if not overrides:  # Not an override's: raised by the config file itself.
    return config_error(given, argv, e)
  if field != 'overrides' and overrides[0].startswith('--config.overrides.'):
    where = _overrides_hint(argv, overrides[0])
  else:
    where = 'all fields: configs/default.py'
  return (f'FATAL Flags parsing error: {" ".join(overrides)}: the config has '
          f'no field {field!r} ({where})'
          + (f'. {suggestion.strip()}' if suggestion else ''))


def _absl_error(e):
  """A flag absl rejects, said as absl says it."""
  text = str(e)
  if '\n' in text:
    text = '\n' + textwrap.indent(text, '  ')
  return (f'FATAL Flags parsing error: {text}\nPass --helpshort or '
          f'--helpfull to see help on flags.')


class _DropNoneWarning(logging.logging.Filter):

  def filter(self, record):
    return 'returned None, did you forget' not in record.getMessage()


@contextlib.contextmanager
def _quiet_none_warning():
  """Without ml_collections' warning for a get_config() that returned None
  (two lines before ours, which says it)."""
  f = _DropNoneWarning()
  logging.get_absl_logger().addFilter(f)
  try:
    yield
  finally:
    logging.get_absl_logger().removeFilter(f)


def read_flagfiles(argv):
  """argv with each --flagfile's flags in its place; exits with absl's one
  line for one it cannot read. main.py calls it before it defines --config:
  ml_collections reads them then, with a traceback for a missing one."""
  try:
    return FLAGS.read_flags_from_files(argv, force_gnu=False)
  except flags.Error as e:  # 'ERROR:: Unable to open flagfile: [Errno 2] ...'
    sys.exit('FATAL Flags parsing error: ' + str(e).removeprefix('ERROR::')
             .strip())


def parse(argv):
  """absl's parsing (app.run's flags_parser); exits with one line on a bad
  flag or config."""
  given = _last_config_only(read_flagfiles(argv))
  argv = run_config_argv(given)
  try:
    try:
      with _quiet_none_warning():
        rest = FLAGS(argv)
    except flags.Error as e:
      if (not str(e).startswith('flag --config=') or
          _config_index(given)[1] is None):  # Not the config file's.
        sys.exit(_absl_error(e))
      if str(e).startswith('flag --config=None:'):
        sys.exit(f'FATAL Flags parsing error: --config={config_arg(given)}: '
                 f'its get_config() returned None (no return statement?)')
      sys.exit(config_error(given, argv, e))
    FLAGS.config.keys()  # A file it could not read, ml_collections raises here.
    if not isinstance(FLAGS.config, ml_collections.ConfigDict):
      sys.exit(f'FATAL Flags parsing error: --config={config_arg(given)}: '
               f'its get_config() returned a {type(FLAGS.config).__name__}, '
               f'not an ml_collections.ConfigDict')
    return rest
  except (AttributeError, KeyError) as e:
    sys.exit(_unknown_field(given, argv, e))
  except Exception as e:  # pylint: disable=broad-except
    # What is left comes from reading or running the config file.
    sys.exit(config_error(given, argv, e))
