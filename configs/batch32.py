"""Paper: batch size 32 instead of 64.

Run:  python main.py --config=configs/batch32.py --workdir=runs/batch32 \
        --config.data_dir=../shared/data
(or as a row of configs/paper_table.py). Expected: see results/paper_table.md.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.batch_size = 32
  return config
