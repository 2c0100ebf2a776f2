"""Checks a config before any work, naming the field at fault."""

import math

from cifar_flax import fast_models
from cifar_flax import models
from cifar_flax import optimizers
from cifar_flax import schedules

# Fields that may differ between attempts of one run in one workdir.
RESUMABLE_KEYS = ('data_dir', 'tfds_data_dir', 'compilation_cache_dir',
                  'loop', 'eval_batch_size', 'allow_config_change',
                  'max_pool', 'scan_unroll', 'xla_flags',
                  'pad_input_channels', 'checkpoint_copy_ahead',
                  'relu_grad_from_output', 'first_conv_im2col')
# The speed settings among them, which benchmark.json and profile_epoch's
# summary.json record: their timings are compared by these.
SPEED_FIELDS = ('max_pool', 'scan_unroll', 'pad_input_channels',
                'relu_grad_from_output', 'first_conv_im2col')
DTYPES = ('float32', 'bfloat16')


class ConfigError(ValueError):
  """A config field holds an impossible value."""


def _require(ok, field, message):
  if not ok:
    raise ConfigError(f'config.{field}: {message}')


def validate(config):
  """Raises ConfigError for impossible values (types are checked by
  ml_collections when the field is overridden)."""
  c = config
  _require(c.model in models.MODELS, 'model',
           f'{c.model!r} is not one of {sorted(models.MODELS)}')
  _require(c.activation in models.ACTIVATIONS, 'activation',
           f'{c.activation!r} is not one of {sorted(models.ACTIVATIONS)}')
  _require(c.max_pool in models.MAX_POOLS, 'max_pool',
           f'{c.max_pool!r} is not one of {sorted(models.MAX_POOLS)}')
  known = ('adam', 'rmsprop') + optimizers.OPTIMIZERS
  _require(c.optimizer in known, 'optimizer',
           f'{c.optimizer!r} is not one of {known}')
  _require(c.lr_schedule in schedules.SCHEDULES, 'lr_schedule',
           f'{c.lr_schedule!r} is not one of {schedules.SCHEDULES}')
  _require(c.warmup_epochs >= 0, 'warmup_epochs', 'must not be negative')
  _require(c.weight_decay >= 0, 'weight_decay', 'must not be negative')
  _require(0 <= c.momentum < 1, 'momentum', f'{c.momentum} is outside [0, 1)')
  _require(0 <= c.label_smoothing < 1, 'label_smoothing',
           f'{c.label_smoothing} is outside [0, 1)')
  _require(c.timed_seeds >= 1, 'timed_seeds', 'must be at least 1')
  f = c.fastnet
  _require(len(f.widths) >= 2 and min(f.widths) >= 1, 'fastnet.widths',
           f'{tuple(f.widths)}: needs a stem width and at least one block '
           f'width, all positive')
  _require(len(f.widths) - 1 <= 5, 'fastnet.widths',
           f'{len(f.widths) - 1} blocks would pool 32x32 images below 1x1')
  _require(f.block_depth >= 1, 'fastnet.block_depth', 'must be at least 1')
  _require(0 <= f.bn_momentum < 1, 'fastnet.bn_momentum',
           f'{f.bn_momentum} is outside [0, 1)')
  _require(c.label_type in ('fine', 'coarse'), 'label_type',
           f"{c.label_type!r} is not 'fine' or 'coarse'")
  _require(c.dtype in DTYPES, 'dtype', f'{c.dtype!r} is not one of {DTYPES}')
  _require(c.prng_impl in ('threefry2x32', 'rbg', 'unsafe_rbg'), 'prng_impl',
           f"{c.prng_impl!r} is not 'threefry2x32', 'rbg' or 'unsafe_rbg'")
  _require(c.loop in ('auto', 'scan', 'step'), 'loop',
           f"{c.loop!r} is not 'auto', 'scan' or 'step'")
  _require(0.0 < c.validation_fraction < 1.0, 'validation_fraction',
           f'{c.validation_fraction} is outside (0, 1)')
  for field in ('learning_rate', 'epsilon'):
    _require(0 < c[field] < math.inf, field,
             f'{c[field]} must be positive and finite')
  for field in ('adam_b1', 'adam_b2', 'rmsprop_decay'):
    _require(0 <= c[field] < 1, field, f'{c[field]} is outside [0, 1)')
  for field in ('batch_size', 'eval_batch_size', 'num_epochs',
                'checkpoint_every_epochs', 'scan_unroll'):
    _require(c[field] >= 1, field, f'{c[field]} must be at least 1')
  _require(c.patience >= 0, 'patience', f'{c.patience} must not be negative')
  _require(c.pad_input_channels >= 0, 'pad_input_channels',
           f'{c.pad_input_channels} must not be negative')
  if c.first_conv_im2col:
    _require(c.model not in fast_models.MODELS, 'first_conv_im2col',
             f'applies to cnn9 and cnn5, not to {c.model!r}')
    _require(not c.pad_input_channels, 'first_conv_im2col',
             'and pad_input_channels both change the first conv: set one '
             f'(pad_input_channels is {c.pad_input_channels})')
  _require(c.train_subset >= 0 and c.test_subset >= 0, 'train_subset',
           'subsets must not be negative (0 means all)')
  for i, rate in enumerate(tuple(c.conv_dropout) + (c.dense_dropout,)):
    _require(0.0 <= rate < 1.0, 'conv_dropout' if i < 3 else 'dense_dropout',
             f'rate {rate} is outside [0, 1)')
  _require(len(c.conv_dropout) == 3, 'conv_dropout',
           'needs one rate per conv stack (3)')
  a = c.augment
  for field in ('shear_range', 'zoom_range', 'width_shift_range',
                'height_shift_range'):
    _require(a[field] >= 0, f'augment.{field}', 'must not be negative')
  for field in ('width_shift_range', 'height_shift_range'):
    # Keras reads 1 or more as pixels; here it is always a fraction.
    _require(a[field] < 1, f'augment.{field}',
             f'{a[field]} is a fraction of the image size here and must be '
             f'below 1 (Keras reads values of 1 or more as pixels)')
  _require(a.zoom_range < 1, 'augment.zoom_range', 'must be below 1')
  _require(0 <= a.translate_pixels < 16, 'augment.translate_pixels',
           f'{a.translate_pixels} is outside [0, 16)')


def validate_benchmark(c):
  """The benchmark's fields, checked by --mode=benchmark only."""
  b = c.benchmark
  _require(b.epochs >= 1, 'benchmark.epochs', f'{b.epochs} must be at least 1')
  _require(b.num_train >= c.batch_size, 'benchmark.num_train',
           f'{b.num_train} is smaller than batch_size {c.batch_size}')
  _require(b.num_eval >= 1, 'benchmark.num_eval',
           f'{b.num_eval} must be at least 1')


def validate_against_data(config, dataset):
  n = len(dataset.train)
  _require(config.batch_size <= n, 'batch_size',
           f'{config.batch_size} is larger than the {n} training images')
  # The last batch is padded and masked; BatchNorm would still see the
  # padding in its batch statistics.
  _require(config.model not in fast_models.MODELS or n % config.batch_size == 0,
           'batch_size', f'{config.batch_size} does not divide the {n} '
           f'training images: {config.model} normalises over each batch, so '
           f'the padding of the last one would enter its BatchNorm statistics')
