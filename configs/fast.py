"""Beyond the paper: a modern recipe, the paper's 59.1% beaten in ~3 s.

airbench-style 'fastnet' (BatchNorm, GELU, widths 32/64/256/256, 0.30 GFLOP
per image forward), bf16, SGD with Nesterov momentum 0.9, lr 0.8 with 1.5
warm-up epochs then linear decay towards 0, weight decay 5e-4 on kernels, label
smoothing 0.2, batch 1000, flip + 2 px translation, 16 epochs, 2% validation
split (49,000 training images, 49 steps/epoch), no early stopping.
Run:  python main.py --config=configs/fast.py --workdir=runs/fast_timed \
        --mode=timed --config.data_dir=../shared/data   # 5 seeds, timed
      python main.py --config=configs/fast.py --workdir=runs/fast \
        --config.data_dir=../shared/data                # normal train + eval
Measured (H200, 2026-11-26, --mode=timed, 5 seeds): test top-1
71.41% +- 0.18 in 2.78 +- 0.05 s of training per seed (compile 28.4 s, once);
with flax's nn.max_pool before: 71.20% +- 0.56 in 3.28 s. lr 0.8 was chosen
over 0.4 on seed 0's validation top-1 (71.7% vs 70.4%); 16 epochs were chosen
to fit ~4.4 s.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.validation_fraction = 0.02
  config.model = 'fastnet'
  config.activation = 'gelu'
  config.conv_dropout = (0.0, 0.0, 0.0)
  config.dense_dropout = 0.0
  config.dtype = 'bfloat16'
  config.fastnet.widths = (32, 64, 256, 256)
  config.fastnet.block_depth = 2

  config.optimizer = 'sgd'
  config.learning_rate = 0.8
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 5e-4
  config.lr_schedule = 'linear'
  config.warmup_epochs = 1.5
  config.label_smoothing = 0.2
  config.batch_size = 1000
  config.num_epochs = 16
  config.patience = config.num_epochs  # Never stops early.

  config.augment.shear_range = 0.0
  config.augment.zoom_range = 0.0
  config.augment.width_shift_range = 0.0
  config.augment.height_shift_range = 0.0
  config.augment.horizontal_flip = True
  config.augment.translate_pixels = 2

  config.eval_batch_size = 2000
  config.checkpoint_every_epochs = 1000  # Only best and final epochs save.
  return config
