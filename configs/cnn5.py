"""Paper: the 5-layer baseline (643,492 parameters; 39.5% test), final recipe otherwise.

Run:  python main.py --config=configs/cnn5.py --workdir=runs/cnn5 \
        --config.data_dir=../shared/data
(or as a row of configs/paper_table.py). Expected: see results/paper_table.md.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'cnn5'
  return config
