"""Paper: ELU instead of ReLU in every hidden layer.

Run:  python main.py --config=configs/elu.py --workdir=runs/elu \
        --config.data_dir=../shared/data
(or as a row of configs/paper_table.py). Expected: see results/paper_table.md.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.activation = 'elu'
  return config
