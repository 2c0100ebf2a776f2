"""Kernel initialisers: jax's values, drawn in a form XLA compiles faster.

XLA:CPU compiles a random draw of a multi-axis shape about 3x slower than
the same draw of its flat length (a 3x3x64x64 glorot-uniform kernel: 0.99 s
against 0.28 s), and a network's initialisation is one such draw per kernel.
JAX draws the bits of any shape as one flat vector and reshapes them, so
drawing flat and reshaping gives bitwise the same values (tests/models_test.py
checks every parameter of cnn5 and fastnet), and the jitted init
(train.state_initializer) compiles about twice as fast: cnn9 2.7 s against
5.1 s, cnn5 1.5 s against 3.0 s, fastnet 2.0 s against 4.7 s (medians of 4,
2-core AMD EPYC CPU, 2026-11-27). Unmeasured on a GPU.
"""

import math

import jax
import jax.numpy as jnp


def variance_scaling(scale, mode, distribution):
  """jax.nn.initializers.variance_scaling(scale, mode, distribution) with its
  default axes (inputs -2, outputs -1, the rest receptive field, as flax's
  Conv and Dense kernels are), for the modes 'fan_in' and 'fan_avg' and the
  distributions 'uniform' and 'truncated_normal', drawn flat."""
  if mode not in ('fan_in', 'fan_avg'):
    raise ValueError(f'mode={mode!r}: expected fan_in or fan_avg')
  if distribution not in ('uniform', 'truncated_normal'):
    raise ValueError(f'distribution={distribution!r}: expected uniform or '
                     'truncated_normal')

  def init(key, shape, dtype=jnp.float32):
    shape = tuple(shape)
    if len(shape) < 2:
      raise ValueError(f'a kernel of shape {shape}: expected at least 2 axes')
    # The fans as jax computes them, floats included.
    receptive = math.prod(shape) / shape[-2] / shape[-1]
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    denominator = fan_in if mode == 'fan_in' else (fan_in + fan_out) / 2
    variance = jnp.array(scale / denominator, dtype=dtype)
    flat = (math.prod(shape),)
    if distribution == 'uniform':
      values = jax.random.uniform(key, flat, dtype, -1) * jnp.sqrt(
          3 * variance)
    else:
      # The stddev of a standard normal truncated to (-2, 2), as in jax.
      values = jax.random.truncated_normal(key, -2, 2, flat, dtype) * (
          jnp.sqrt(variance) / jnp.array(.87962566103423978, dtype))
    return values.reshape(shape)

  return init


# Keras' Conv2D/Dense default, and flax's Conv/Dense default.
glorot_uniform = variance_scaling(1.0, 'fan_avg', 'uniform')
lecun_normal = variance_scaling(1.0, 'fan_in', 'truncated_normal')
