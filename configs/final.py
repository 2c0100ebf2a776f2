"""The paper's final run: cnn9, Adam 1e-4, batch 64, <=100 epochs, patience 20.

Run:  python main.py --config=configs/final.py --workdir=runs/final \
        --config.data_dir=../shared/data
      python main.py --config=configs/final.py --workdir=runs/final --mode=eval \
        --config.data_dir=../shared/data
Measured (H200, 2026-11-26, lease d, fp32, seed 0, an empty compilation
cache): 64.14% test top-1 (88.09% top-5), early stop after epoch 96 (best 76),
113.7 s wall for the whole command (1.02 s per epoch with validation). With
--config.dtype=bfloat16 --config.max_pool=fused_select
--config.pad_input_channels=8 --config.scan_unroll=2: 63.25%, 78.7 s.
Paper: 59.09%, ~1.5 h on a Tesla K80. README: Results.
"""

from configs import default


def get_config():
  return default.get_config()
