"""Paper: Adam at lr 1e-3, the final recipe otherwise (stuck near 1%).

Run:  python main.py --config=configs/adam_lr1e3.py --workdir=runs/adam_lr1e3 \
        --config.data_dir=../shared/data
(or as a row of configs/paper_table.py). Expected: see results/paper_table.md.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.learning_rate = 1e-3
  return config
