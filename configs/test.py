"""Tiny settings for the unit tests: cnn5, a handful of images, 2 epochs."""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'cnn5'
  config.learning_rate = 1e-3
  config.batch_size = 8
  config.eval_batch_size = 16
  config.num_epochs = 2
  config.patience = 2
  config.compilation_cache_dir = ''
  config.benchmark.num_train = 64
  config.benchmark.num_eval = 40
  config.benchmark.epochs = 2
  return config
