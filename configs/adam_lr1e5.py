"""Paper: Adam at lr 1e-5, the final recipe otherwise (36.96% test).

Run:  python main.py --config=configs/adam_lr1e5.py --workdir=runs/adam_lr1e5 \
        --config.data_dir=../shared/data
(or as a row of configs/paper_table.py). Expected: see results/paper_table.md.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.learning_rate = 1e-5
  return config
