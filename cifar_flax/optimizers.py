"""Keras' Adam, and the modern recipe's SGD (train.create_optimizer picks)."""

import jax
import jax.numpy as jnp
import optax

from cifar_flax import schedules

OPTIMIZERS = ('sgd',)


def scale_by_keras_adam(b1, b2, eps):
  """Adam as Keras computes it: epsilon is added to sqrt(v) before the bias
  correction, which goes into the step size ("epsilon hat" of Kingma & Ba,
  the formula before their section 2.1; tf.keras' Adam docstring says so):
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    update = sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
  optax.scale_by_adam adds eps to sqrt(v / (1 - b2^t)) instead: the same
  step once b2^t ~ 0, but Keras' epsilon is in effect eps / sqrt(1 - b2^t)
  early on (3.2e-6 at step 1 for eps 1e-7, 1.3e-7 at step 1000). Its state
  is optax's ScaleByAdamState, so checkpoints look the same either way."""

  def init_fn(params):
    return optax.scale_by_adam(b1, b2, eps).init(params)

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
    nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * g * g, updates,
                      state.nu)
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    step = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    updates = jax.tree.map(lambda m, v: step * m / (jnp.sqrt(v) + eps), mu,
                           nu)
    return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def adam(config):
  """The paper's Adam: Keras' formula, or optax.adam's with
  config.adam_keras_epsilon=False (what GPU leases a-c ran)."""
  if not config.adam_keras_epsilon:
    return optax.adam(config.learning_rate, b1=config.adam_b1,
                      b2=config.adam_b2, eps=config.epsilon)
  return optax.chain(
      scale_by_keras_adam(config.adam_b1, config.adam_b2, config.epsilon),
      optax.scale_by_learning_rate(config.learning_rate))


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
