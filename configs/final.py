"""The paper's final run: cnn9, Adam 1e-4, batch 64, <=100 epochs, patience 20.

Run:  python main.py --config=configs/final.py --workdir=runs/final \
        --config.data_dir=../shared/data
      python main.py --config=configs/final.py --workdir=runs/final --mode=eval
Expected: see the README results table (paper: 59.09% test top-1, ~1.5 h on
a Tesla K80).
"""

from configs import default


def get_config():
  return default.get_config()
