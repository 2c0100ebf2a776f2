"""Ablation: no dropout anywhere (the paper discusses dropout, never isolates it).

Run:  python main.py --config=configs/no_dropout.py --workdir=runs/no_dropout \
        --config.data_dir=../shared/data
(or as a row of configs/paper_table.py). Expected: see results/paper_table.md.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.conv_dropout = (0.0, 0.0, 0.0)
  config.dense_dropout = 0.0
  return config
