"""Paper: Adam at lr 1e-2, the final recipe otherwise (stuck near 1%).

Run:  python main.py --config=configs/adam_lr1e2.py --workdir=runs/adam_lr1e2 \
        --config.data_dir=../shared/data
(or as a row of configs/paper_table.py). Expected: see results/paper_table.md.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.learning_rate = 1e-2
  return config
