"""Ablation: no augmentation (all ranges zero, no flip); the paper never isolates it.

Run:  python main.py --config=configs/no_augment.py --workdir=runs/no_augment \
        --config.data_dir=../shared/data
(or as a row of configs/paper_table.py). Expected: see results/paper_table.md.

Featurewise centering stays on: it is preprocessing every image gets (test
images too), not augmentation.
"""

from configs import default


def get_config():
  config = default.get_config()
  for field in ('shear_range', 'zoom_range', 'width_shift_range',
                'height_shift_range'):
    config.augment[field] = 0.0
  config.augment.horizontal_flip = False
  return config
