"""Beyond the paper: the modern recipe of fast.py, larger, aimed at 75%+.

fastnet widths 64/128/256/512 with 3 convs per block (the third residual),
0.91 GFLOP per image forward (ResNet-18 on CIFAR: 1.1), 4 px translation,
24 epochs; everything else as configs/fast.py.
Run:  python main.py --config=configs/fast_long.py \
        --workdir=runs/fast_long_timed --mode=timed \
        --config.data_dir=../shared/data
Expected (an estimate, not yet measured on a GPU): ~3.2 PFLOP per run, so
~20-30 s at 100-150 TFLOP/s on one H100/H200; test top-1 around 74-77%
(ResNet-18-class nets reach ~75% in ~30 epochs). More accuracy:
--config.num_epochs=32; less time: --config.num_epochs=18.
"""

from configs import fast


def get_config():
  config = fast.get_config()
  config.fastnet.widths = (64, 128, 256, 512)
  config.fastnet.block_depth = 3
  config.augment.translate_pixels = 4
  config.learning_rate = 0.6
  config.warmup_epochs = 2.0
  config.num_epochs = 24
  config.patience = config.num_epochs
  return config
