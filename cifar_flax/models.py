"""The paper's networks in flax linen, with Keras' default initialisation."""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from cifar_flax import fast_models
from cifar_flax import initializers
from cifar_flax import pooling

# Keras Conv2D/Dense defaults: glorot-uniform kernels (jax's values, drawn
# flat: see cifar_flax/initializers.py), zero biases.
_KERNEL_INIT = initializers.glorot_uniform
_BIAS_INIT = nn.initializers.zeros

ACTIVATIONS = {'relu': nn.relu, 'elu': nn.elu, 'gelu': nn.gelu}


@jax.custom_jvp
def relu_grad_from_output(x):
  """jax.nn.relu, whose gradient mask is taken from the output instead of the
  input (config.relu_grad_from_output). y = max(x, 0) > 0 exactly when x > 0
  (NaN included: neither holds), so values and gradients are bitwise those
  of jax.nn.relu. What changes is the graph: the pre-activation (a conv's
  output plus bias) is then read by the relu alone, and XLA's GPU compiler
  folds a relu into cuDNN's conv-bias-activation call only in that case;
  with jax.nn.relu the backward pass's `x > 0` reads it too, and the relu
  runs as a kernel of its own. The mask reads y through an optimization
  barrier: without it XLA's algebraic simplifier rewrites `max(x, 0) > 0`
  back to `x > 0` before the GPU compiler fuses convs (tests/models_test.py
  shows it on the CPU); XLA removes barriers after fusion."""
  return jnp.maximum(x, 0)


relu_grad_from_output.defjvps(lambda g, y, x: lax.select(
    lax.optimization_barrier(y) > 0, g, lax.full_like(g, 0)))


def activation_fn(config):
  """The config's activation function."""
  if config.activation == 'relu' and config.get('relu_grad_from_output',
                                                 False):
    return relu_grad_from_output
  return ACTIVATIONS[config.activation]


def _reduce_window_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


# config.max_pool: three implementations of one function (values and
# gradients bitwise equal; see cifar_flax/pooling.py).
MAX_POOLS = {'fused': pooling.max_pool_2x2,
             'fused_select': pooling.max_pool_2x2_select,
             'reduce_window': _reduce_window_pool}


def channel_padded_conv(channels):
  """lax.conv_general_dilated that first zero-pads inputs of fewer than
  `channels` channels (NHWC), and the kernel's input rows (HWIO) to match.
  Mathematically the same conv: the zero channels add exact zeros, and the
  padded kernel rows, sliced off again, carry no gradient (identical results
  on the CPU). What can change is cuDNN's choice of kernels for the
  3-channel first conv, and with it the order of summation."""
  def conv(lhs, rhs, *args, **kwargs):
    pad = channels - lhs.shape[-1]
    if pad > 0 and kwargs.get('feature_group_count', 1) == 1:
      lhs = jnp.pad(lhs, [(0, 0)] * (lhs.ndim - 1) + [(0, pad)])
      rhs = jnp.pad(rhs, [(0, 0)] * (rhs.ndim - 2) + [(0, pad), (0, 0)])
    return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)
  return conv


def im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                rhs_dilation=None, dimension_numbers=None,
                feature_group_count=1, precision=None):
  """lax.conv_general_dilated, for the convs our networks have (NHWC input,
  HWIO kernel, stride 1, no dilation, one group), as one matmul: the input's
  kh x kw patches side by side on the channel axis, (N, H, W, kh*kw*C),
  times the kernel as a (kh*kw*C, O) matrix. The same function, summed in
  another order. config.first_conv_im2col uses it for the first conv, whose
  3 input channels make a poor cuDNN problem: in lease c's fp32 profile
  (results/h200/2026-11-26c/prof32.txt) its weight gradient ran a legacy
  kernel without tensor cores (wgrad_alg0_engine_NHWC, 52 us of the 1.54 ms
  step) for 0.45 GFLOP. As a matmul, that gradient is one GEMM: the 27 x
  (batch x pixels) patches times the (batch x pixels) x 128 output
  gradient."""
  nhwc = ('NHWC', 'HWIO', 'NHWC')
  ones = (1, 1)
  if not (lhs.ndim == rhs.ndim == 4 and lhs.shape[-1] == rhs.shape[2]
          and dimension_numbers is not None
          and lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                         dimension_numbers)
          == lax.conv_dimension_numbers(lhs.shape, rhs.shape, nhwc)
          and tuple(window_strides) == ones
          and tuple(lhs_dilation or ones) == ones
          and tuple(rhs_dilation or ones) == ones
          and feature_group_count == 1):
    raise ValueError('im2col_conv computes NHWC x HWIO convs of stride 1, '
                     'without dilation or groups, only')
  kh, kw, c, o = rhs.shape
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides,
                                  padding)
  padded = jnp.pad(lhs, [(0, 0), *padding, (0, 0)])
  h = padded.shape[1] - kh + 1
  w = padded.shape[2] - kw + 1
  patches = jnp.concatenate([padded[:, i:i + h, j:j + w]
                             for i in range(kh) for j in range(kw)], axis=-1)
  return lax.dot_general(patches, rhs.reshape(kh * kw * c, o),
                         (((3,), (0,)), ((), ())), precision=precision)


class Dropout(nn.Module):
  """flax.linen.Dropout (without broadcast_dims), its mask drawn flat and
  reshaped: bitwise flax's masks (JAX draws the bits of any shape as one
  flat vector; flax's module of the same name and place gets the same key),
  and XLA:CPU compiles it faster, as kernels drawn flat (initializers.py):
  cnn9's training step at batch 64 in 4.7 s against 7.3 s, cnn5's at batch
  25 in 4.1 s against 5.2 s (medians of 6, 2-core AMD EPYC CPU,
  2026-11-27). Unmeasured on a GPU."""
  rate: float
  deterministic: bool | None = None

  def __call__(self, inputs, deterministic=None):
    deterministic = nn.merge_param('deterministic', self.deterministic,
                                   deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep_prob = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep_prob,
                                (inputs.size,)).reshape(inputs.shape)
    return lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))


class PaperCNN(nn.Module):
  """[[CONV3x3 -> ACT] x convs_per_stack -> MAXPOOL2 -> DROPOUT] per stack,
  then [FC -> ACT -> DROPOUT] per hidden layer, then the class logits."""
  stack_filters: Sequence[int]
  convs_per_stack: int
  hidden_units: Sequence[int]
  num_classes: int
  conv_dropout: Sequence[float]
  dense_dropout: float
  activation: Callable[[Any], Any] = nn.relu
  dtype: Any = jnp.float32
  max_pool: Callable[[Any], Any] = pooling.max_pool_2x2
  # Convs see at least this many input channels (zero-padded); 0: as given.
  pad_input_channels: int = 0
  # The first conv runs as a matmul over 3x3 patches (im2col_conv).
  first_conv_im2col: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv_fn = (channel_padded_conv(self.pad_input_channels)
               if self.pad_input_channels else None)
    conv = lambda f, fn: nn.Conv(
        f, (3, 3), padding='SAME', dtype=self.dtype, kernel_init=_KERNEL_INIT,
        bias_init=_BIAS_INIT, conv_general_dilated=fn)
    first_fn = im2col_conv if self.first_conv_im2col else conv_fn
    dense = lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=_KERNEL_INIT,
                               bias_init=_BIAS_INIT)
    x = x.astype(self.dtype)
    for filters, rate in zip(self.stack_filters, self.conv_dropout):
      for _ in range(self.convs_per_stack):
        x = self.activation(conv(filters, first_fn)(x))
        first_fn = conv_fn
      x = self.max_pool(x)
      x = Dropout(rate, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    for units in self.hidden_units:
      x = self.activation(dense(units)(x))
      x = Dropout(self.dense_dropout, deterministic=not train)(x)
    return dense(self.num_classes)(x).astype(jnp.float32)


def cnn9(num_classes=100, **kwargs):
  """The paper's final network: 13,870,484 parameters at 100 classes."""
  return PaperCNN(stack_filters=(128, 256, 512), convs_per_stack=2,
                  hidden_units=(1000, 1000), num_classes=num_classes, **kwargs)


def cnn5(num_classes=100, **kwargs):
  """The paper's baseline: 643,492 parameters at 100 classes."""
  return PaperCNN(stack_filters=(32, 64, 128), convs_per_stack=1,
                  hidden_units=(256,), num_classes=num_classes, **kwargs)


MODELS = {'cnn9': cnn9, 'cnn5': cnn5, **fast_models.MODELS}


def create_model(config, num_classes):
  """The flax module the config names."""
  if config.model not in MODELS:
    raise ValueError(f'config.model={config.model!r}: expected one of '
                     f'{sorted(MODELS)}')
  if config.activation not in ACTIVATIONS:
    raise ValueError(f'config.activation={config.activation!r}: expected one '
                     f'of {sorted(ACTIVATIONS)}')
  if config.max_pool not in MAX_POOLS:
    raise ValueError(f'config.max_pool={config.max_pool!r}: expected one of '
                     f'{sorted(MAX_POOLS)}')
  max_pool = MAX_POOLS[config.max_pool]
  if config.model in fast_models.MODELS:
    return fast_models.MODELS[config.model](
        num_classes, activation_fn(config), jnp.dtype(config.dtype),
        config.fastnet, max_pool)
  return MODELS[config.model](
      num_classes=num_classes,
      conv_dropout=tuple(config.conv_dropout),
      dense_dropout=config.dense_dropout,
      activation=activation_fn(config),
      dtype=jnp.dtype(config.dtype), max_pool=max_pool,
      pad_input_channels=config.pad_input_channels,
      first_conv_im2col=config.first_conv_im2col)
