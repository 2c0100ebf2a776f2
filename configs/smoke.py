"""cnn5 on the first 10,000 real training images: ~1 min on 2 CPU cores.

The paper's split of those 10,000: the first 2,000 validate, 8,000 train.

Checks the whole path (data, augmentation, training, checkpoints, eval) for a
newcomer without a GPU. Evaluation still uses all 10,000 test images.
Run:  python main.py --config=configs/smoke.py --workdir=runs/smoke \
        --config.data_dir=../shared/data
      python main.py --config=configs/smoke.py --workdir=runs/smoke --mode=eval \
        --config.data_dir=../shared/data
Expected: test top-1 well above chance (1%); see the README for the measured value.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'cnn5'
  config.conv_dropout = (0.0, 0.0, 0.0)
  config.dense_dropout = 0.0
  config.learning_rate = 1e-3
  config.train_subset = 10_000
  config.num_epochs = 6
  config.patience = 3
  return config
