"""The config a run was trained with, read from its workdir's config.json.

Run:  python main.py --config=runs/final --workdir=runs/final --mode=eval
(main.py reads --config=WORKDIR, or any *.json file, as
--config=configs/run.py:WORKDIR). It evaluates, reports on, predicts with or
resumes any run (a sweep's seed too: runs/paper_table/elu/seed_1) without its
config file or the overrides it was trained with. Flags still override its
fields: --config.data_dir=../shared/data (config.json keeps the path given
when it trained, relative to where it trained). An older run's config.json
lacks fields added since: those in workdir.ADDED_FIELDS take the value such a
run had (a note says so), any other default.py's (a warning); fields since
removed are ignored (a warning). allow_config_change, a permission for one
command, is never read back.
"""

import json
import os
import sys

from cifar_flax import workdir as workdir_lib
from configs import default


def get_config(run=''):
  """`run`: a run's workdir, or its config.json (under any name)."""
  if not run:
    raise ValueError('give the run\'s workdir after a colon: '
                     '--config=configs/run.py:runs/final')
  run = os.path.expanduser(run)
  path = run if os.path.isfile(run) else os.path.join(run,
                                                       workdir_lib.CONFIG_FILE)
  if not os.path.isfile(path):
    raise ValueError(f'{path} ' + (
        'is not a file' if os.path.exists(path) else 'does not exist') +
        f': {run!r} is not the workdir of a run (train writes '
        f'{workdir_lib.CONFIG_FILE} there)')
  try:
    with open(path) as f:
      ran = json.load(f)
  except ValueError as e:
    raise ValueError(f'{path} is damaged, not JSON ({e}); a config file is '
                     f'Python: configs/*.py') from e
  if not isinstance(ran, dict):
    raise ValueError(f'{path} holds no config (a JSON object)')
  config = default.get_config()
  known = dict(workdir_lib.flatten(config))
  ran = dict(workdir_lib.flatten(ran))
  if not set(ran) & set(known):
    raise ValueError(f'{path} holds no config (none of its keys is a config '
                     f'field)')
  ran.pop(workdir_lib.ONE_COMMAND, None)  # Never read back.
  unknown = sorted(set(ran) - set(known))
  for name in unknown:  # A value where default.py has a group of fields.
    if any(k.startswith(name + '.') for k in known):
      raise ValueError(f'{path}: field {name}={ran[name]!r}, where '
                       f'configs/default.py holds a ConfigDict')
  if unknown:  # Removed since: they cannot change what this code computes.
    print(f'warning: {path} has fields this cifar_flax does not know, '
          f'ignored: {", ".join(unknown)} (another version\'s run?)',
          file=sys.stderr)
  added = {k: v for k, v in workdir_lib.ADDED_FIELDS.items() if k not in ran}
  if added:  # An older run: it ran as runs before these fields did.
    print(f'note: {path} predates ' + ', '.join(
        f'{k} (set to {v!r}, as it ran)' for k, v in added.items()),
          file=sys.stderr)
    ran |= added
  missing = sorted(set(known) - set(ran) - {workdir_lib.ONE_COMMAND})
  if missing:
    print(f'warning: {path} lacks {", ".join(missing)}: configs/default.py\'s '
          f'values used', file=sys.stderr)
  for name, value in ran.items():
    if name in unknown:
      continue
    # ml_collections lets None replace any value, and a bool an int's.
    if value is None or isinstance(value, bool) != isinstance(known[name],
                                                              bool):
      raise ValueError(f'{path}: field {name}={value!r}, where '
                       f'configs/default.py holds a '
                       f'{type(known[name]).__name__}')
    try:
      config.update_from_flattened_dict({name: value})
    except TypeError as e:
      raise ValueError(f'{path}: field {name}={value!r}: {e}') from e
  return config
