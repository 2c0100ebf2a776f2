"""The files of a run's workdir: config.json, history.json, eval.json."""

import contextlib
import json
import math
import os
import tempfile

from absl import logging

CONFIG_FILE = 'config.json'
HISTORY_FILE = 'history.json'
EVAL_FILE = 'eval.json'
# An evaluation whose config changes the test result (evaluate.py).
OTHER_EVAL_FILE = 'eval_other_config.json'
CONFIG_CHANGES_FILE = 'config_changes.json'
CHECKPOINT_DIR = 'checkpoints'


# Fields added to the config since the first runs, each with what a run from
# before it did: a config.json without the field ran so.
ADDED_FIELDS = {'adam_keras_epsilon': False, 'augment_test': False,
                'augment_validation': False,
                'checkpoint_copy_ahead': False, 'max_pool': 'reduce_window',
                'first_conv_im2col': False, 'pad_input_channels': 0,
                'relu_grad_from_output': False,
                'xla_flags': ''}
# Fields that change only the test evaluation (evaluate.TEST_FIELDS has
# them): for a run that differs in them alone, --mode=eval is what one wants
# (its result goes apart).
TEST_ONLY_FIELDS = ('augment_test', 'test_subset')
# A permission for one command, not a property of the run: saved as False.
ONE_COMMAND = 'allow_config_change'


class WorkdirError(Exception):
  """The workdir cannot be used as asked."""


def _clean(obj):
  """JSON-safe copy: tuples to lists, non-finite floats to strings."""
  if isinstance(obj, dict):
    return {k: _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return str(obj)
  return obj


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary name beside `path`, renamed onto it once the block
  has written it: a reader (or a kill) never sees a partial file."""
  d = os.path.dirname(path) or '.'
  fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + os.path.basename(path))
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path, obj):
  """Writes atomically: a reader (or a kill) never sees a partial file."""
  with atomic_path(path) as tmp, open(tmp, 'w') as f:
    json.dump(_clean(obj), f, indent=1, allow_nan=False)
    f.flush()
    os.fsync(f.fileno())


def read_json(path, default=None, rewritten=False):
  """The JSON in `path`; `default` if there is no such file. One that is not
  JSON (damaged by something else: this program writes atomically) raises a
  WorkdirError naming it; if the caller `rewritten` it from the checkpoint,
  a warning, and `default`."""
  if not os.path.exists(path):
    return default
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError.
    if rewritten:
      logging.warning('%s is damaged (%s): written again from the checkpoint',
                      path, e)
      return default
    raise WorkdirError(f'{path} is damaged, not JSON ({e}): restore it or '
                       f'move it away') from e


def read_history(workdir, rewritten=False):
  return read_json(os.path.join(workdir, HISTORY_FILE), [], rewritten)


def write_history(workdir, history):
  write_json(os.path.join(workdir, HISTORY_FILE), history)


def config_to_dict(config):
  return json.loads(config.to_json_best_effort())


def _saved(config):
  """config.json's dict of `config`."""
  d = config_to_dict(config)
  if ONE_COMMAND in d:
    d[ONE_COMMAND] = False
  return d


def flatten(d, prefix=''):
  """(dotted name, value) of every leaf of a nested dict or ConfigDict."""
  for k, v in d.items():
    if hasattr(v, 'items'):
      yield from flatten(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}', v


def is_results_copy(workdir):
  """A finished run's JSON files without its checkpoints, as results/ keeps
  them to carry measured runs between machines (an empty checkpoints/ too:
  orbax names each saved step's folder by its number)."""
  if not os.path.exists(os.path.join(workdir, EVAL_FILE)):
    return False
  checkpoints = os.path.join(workdir, CHECKPOINT_DIR)
  return not (os.path.isdir(checkpoints) and
              any(n.isdigit() for n in os.listdir(checkpoints)))


def ensure_writable_dir(path, what='workdir'):
  """Creates directory `path` if needed and checks that a file can be
  written there; a WorkdirError names `what` and `path` otherwise."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f'{what} {path!r} is a file, not a directory')
  try:
    os.makedirs(path, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=path, prefix='.write-test')
    probe.close()
  except OSError as e:
    raise WorkdirError(f'{what} {path!r} is not writable: {e}') from e


def prepare(workdir, config, ignore_keys=(), allow_change=False):
  """Creates the workdir, checks it is writable and holds no other run.

  A workdir whose config.json differs from `config` (outside `ignore_keys`,
  fields that may change between attempts of one run) is refused unless
  `allow_change`. Returns the fields that differ: the caller records them
  with `record_config_change` once the run's checkpoint has accepted them.
  An unchanged config.json is left untouched.
  """
  ensure_writable_dir(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  new = _saved(config)
  old = read_json(path)
  if old == new:
    return []
  differ = differing(old, new, ignore_keys)
  if differ and not allow_change:
    only_test = all(f in TEST_ONLY_FIELDS for f in differ)
    raise WorkdirError(
        f'workdir {workdir!r} holds a run with a different config (fields '
        f'{", ".join(differ)}); ' + (
            'to evaluate it so, --mode=eval (the result goes to '
            f'{OTHER_EVAL_FILE}, beside its own {EVAL_FILE}); or '
            if only_test else '') + 'use another --workdir, or set '
        f'--config.allow_config_change=True to continue it anyway')
  if not differ:
    write_json(path, new)
  return differ


def differing(old, new, ignore_keys=()):
  """The fields, outside `ignore_keys`, of config dicts `old` (None: no
  config.json, so none) and `new` whose values differ; nested ones dotted
  (augment.zoom_range). A field `old` lacks that ADDED_FIELDS holds has the
  value it gives; one `new` lacks (removed since) does not count."""
  if old is None:
    return []
  old, new = ADDED_FIELDS | dict(flatten(old)), dict(flatten(new))
  # A field `new` lacks is one this code no longer has: nothing it does.
  return sorted(k for k in new
                if k not in ignore_keys and old.get(k) != new.get(k))


def checkpoint_mismatch(workdir, config, step, error, advice, ignore_keys=()):
  """The WorkdirError for a checkpoint that `config`'s state cannot take
  (orbax's `error`): names the fields that differ from the run's config."""
  differ = differing(read_json(os.path.join(workdir, CONFIG_FILE)),
                      config_to_dict(config), ignore_keys)
  why = (f'its {CONFIG_FILE} differs in {", ".join(differ)}' if differ else
         str(error).splitlines()[0][:200].rstrip(':'))
  return WorkdirError(f'the checkpoint of epoch {step} in {workdir!r} does not '
                      f'fit this config ({why}): {advice}')


def record_config_change(workdir, config, fields):
  """Writes the new config.json; the old values of `fields` are appended to
  config_changes.json."""
  path = os.path.join(workdir, CONFIG_FILE)
  new = _saved(config)
  old_flat, new_flat = dict(flatten(read_json(path))), dict(flatten(new))
  changes_path = os.path.join(workdir, CONFIG_CHANGES_FILE)
  changes = read_json(changes_path, [])
  changes.append({k: {'old': old_flat.get(k), 'new': new_flat.get(k)}
                  for k in fields})
  write_json(changes_path, changes)
  write_json(path, new)
  print(f'{workdir}: config fields {", ".join(fields)} changed (previous '
        f'values in {CONFIG_CHANGES_FILE})')
