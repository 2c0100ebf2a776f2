"""The paper's final run: cnn9, Adam 1e-4, batch 64, <=100 epochs, patience 20.

Run:  python main.py --config=configs/final.py --workdir=runs/final \
        --config.data_dir=../shared/data
      python main.py --config=configs/final.py --workdir=runs/final --mode=eval \
        --config.data_dir=../shared/data
Measured (H200, 2026-11-26, fp32, seed 0): 64.09% test top-1 (88.27% top-5),
best epoch 100, no early stop, 143 s wall for the whole command (0.978 s per
epoch with validation). With --config.dtype=bfloat16: 64.99%, best epoch 90,
108 s. Both ran optax.adam's epsilon (--config.adam_keras_epsilon=False), as
the code did then. Paper: 59.09%, ~1.5 h on a Tesla K80. README: Results.
"""

from configs import default


def get_config():
  return default.get_config()
