"""Modern optimizers (the paper's Adam/RMSprop stay in train.create_optimizer)."""

import jax
import optax

from cifar_flax import schedules

OPTIMIZERS = ('sgd',)


def _kernels(params):
  """Weight decay mask: conv and dense kernels, not biases or BatchNorm."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def sgd(config, steps_per_epoch):
  """SGD with (Nesterov) momentum, coupled weight decay on kernels (added to
  the gradient, as in PyTorch) and the config's warm-up + decay schedule."""
  lr = schedules.learning_rate_fn(config, steps_per_epoch)
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=_kernels),
      optax.sgd(lr, momentum=config.momentum or None,
                nesterov=config.nesterov))


def create(config, steps_per_epoch):
  if config.optimizer == 'sgd':
    return sgd(config, steps_per_epoch)
  raise ValueError(f'config.optimizer={config.optimizer!r}: expected one of '
                   f'{OPTIMIZERS}')
