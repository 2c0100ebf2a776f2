"""The config a run was trained with, read from its workdir's config.json.

Run:  python main.py --config=configs/run.py:runs/final --workdir=runs/final \
        --mode=eval
It evaluates, reports on or predicts with any run (a sweep's seed too:
--config=configs/run.py:runs/paper_table/elu/seed_1) without its config file
or the overrides it was trained with. Flags still override its fields:
--config.data_dir=../shared/data (config.json keeps the path given when it
trained, relative to where it trained). Fields the run's config.json lacks
(written by an older cifar_flax) keep configs/default.py's values, and fields
this cifar_flax no longer has are ignored, each with a warning naming them
(a checkpoint they made unfit is refused when it is read). allow_config_change,
a permission for one command, is never read back: give it again if needed.
"""

import json
import os
import sys

from cifar_flax import workdir as workdir_lib
from configs import default

# A permission for one command, not a property of the run: never read back.
ONE_COMMAND = ('allow_config_change',)


def get_config(workdir=''):
  if not workdir:
    raise ValueError('give the run\'s workdir after a colon: '
                     '--config=configs/run.py:runs/final')
  path = os.path.join(os.path.expanduser(workdir), workdir_lib.CONFIG_FILE)
  if not os.path.isfile(path):
    raise ValueError(f'{path} does not exist: {workdir!r} is not the workdir '
                     f'of a run (train writes {workdir_lib.CONFIG_FILE} there)')
  try:
    with open(path) as f:
      ran = json.load(f)
  except ValueError as e:
    raise ValueError(f'{path} is damaged, not JSON ({e})') from e
  if not isinstance(ran, dict):
    raise ValueError(f'{path} holds no config (a JSON object)')
  config = default.get_config()
  known = dict(workdir_lib.flatten(config))
  ran = {k: v for k, v in workdir_lib.flatten(ran) if k not in ONE_COMMAND}
  unknown = sorted(set(ran) - set(known))
  if unknown:  # Removed since: they cannot change what this code computes.
    print(f'warning: {path} has fields this cifar_flax does not know, '
          f'ignored: {", ".join(unknown)} (another version\'s run?)',
          file=sys.stderr)
  missing = sorted(set(known) - set(ran) - set(ONE_COMMAND))
  if missing:
    print(f'warning: {path} lacks {", ".join(missing)} (an older run): '
          f'configs/default.py\'s values used', file=sys.stderr)
  for name, value in ran.items():
    if name not in unknown:
      try:
        config.update_from_flattened_dict({name: value})
      except TypeError as e:
        raise ValueError(f'{path}: field {name}={value!r}: {e}') from e
  return config
