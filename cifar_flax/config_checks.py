"""Checks a config before any work, naming the field at fault."""

from cifar_flax import loop
from cifar_flax import models

# Fields that may differ between attempts of one run in one workdir.
RESUMABLE_KEYS = ('data_dir', 'tfds_data_dir', 'compilation_cache_dir',
                  'loop', 'eval_batch_size', 'allow_config_change')
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
  _require(c.optimizer in ('adam', 'rmsprop'), 'optimizer',
           f"{c.optimizer!r} is not 'adam' or 'rmsprop'")
  _require(c.label_type in ('fine', 'coarse'), 'label_type',
           f"{c.label_type!r} is not 'fine' or 'coarse'")
  _require(c.dtype in DTYPES, 'dtype', f'{c.dtype!r} is not one of {DTYPES}')
  _require(c.prng_impl in ('threefry2x32', 'rbg', 'unsafe_rbg'), 'prng_impl',
           f"{c.prng_impl!r} is not 'threefry2x32', 'rbg' or 'unsafe_rbg'")
  _require(c.loop in ('auto', 'scan', 'step'), 'loop',
           f"{c.loop!r} is not 'auto', 'scan' or 'step'")
  _require(0.0 < c.validation_fraction < 1.0, 'validation_fraction',
           f'{c.validation_fraction} is outside (0, 1)')
  _require(c.learning_rate > 0, 'learning_rate', 'must be positive')
  for field in ('batch_size', 'eval_batch_size', 'num_epochs',
                'checkpoint_every_epochs', 'scan_unroll'):
    _require(c[field] >= 1, field, f'{c[field]} must be at least 1')
  _require(c.patience >= 0, 'patience', f'{c.patience} must not be negative')
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
  _require(a.zoom_range < 1, 'augment.zoom_range', 'must be below 1')
  loop.loop_form(c.loop)


def validate_against_data(config, dataset):
  n = len(dataset.train)
  _require(config.batch_size <= n, 'batch_size',
           f'{config.batch_size} is larger than the {n} training images')
