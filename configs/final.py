"""The paper's final run: cnn9, Adam 1e-4, batch 64, <=100 epochs, patience 20.

Run:  python main.py --config=configs/final.py --workdir=runs/final \
        --config.data_dir=../shared/data
      python main.py --config=configs/final.py --workdir=runs/final --mode=eval
Measured (H200, 2026-11-26, fp32, seed 0): 64.46% test top-1 (88.04% top-5),
best epoch 86, ran all 100 epochs (no early stop), 143 s wall for the whole
command (1.085 s per epoch). With --config.dtype=bfloat16: 63.80%, early stop
after epoch 95 (best 75), 92 s. Paper: 59.09%, ~1.5 h on a Tesla K80.
"""

from configs import default


def get_config():
  return default.get_config()
