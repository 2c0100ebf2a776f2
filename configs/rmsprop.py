"""Paper: RMSProp (Keras defaults) at lr 1e-4 instead of Adam.

Run:  python main.py --config=configs/rmsprop.py --workdir=runs/rmsprop \
        --config.data_dir=../shared/data
(or as a row of configs/paper_table.py). Expected: see results/paper_table.md.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.optimizer = 'rmsprop'
  return config
