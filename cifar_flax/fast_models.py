"""Modern fast-training networks: airbench-style conv nets with BatchNorm.

`fastnet`: a stem conv, then per block [CONV3x3 -> MAXPOOL2 -> BN -> ACT]
followed by (block_depth - 1) x [CONV3x3 -> BN -> ACT] (the third and later
convs of a block add a residual), a global max pool and a bias-free linear
head whose logits are scaled by `logit_scale` (airbench's 1/9). Convs have no
bias (BatchNorm follows each). Kernels are flax's default lecun-normal (drawn
flat: cifar_flax/initializers.py). Sizes come from config.fastnet.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cifar_flax import initializers
from cifar_flax import pooling


class ConvBlock(nn.Module):
  width: int
  depth: int
  bn_momentum: float
  activation: Callable[[Any], Any]
  dtype: Any = jnp.float32
  max_pool: Callable[[Any], Any] = pooling.max_pool_2x2

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda: nn.Conv(self.width, (3, 3), padding='SAME', use_bias=False,
                           dtype=self.dtype,
                           kernel_init=initializers.lecun_normal)
    norm = lambda: nn.BatchNorm(use_running_average=not train,
                                momentum=self.bn_momentum, dtype=self.dtype)
    x = conv()(x)
    x = self.max_pool(x)
    x = self.activation(norm()(x))
    for i in range(1, self.depth):
      y = self.activation(norm()(conv()(x)))
      x = x + y if i >= 2 else y
    return x


class FastNet(nn.Module):
  """widths = (stem, block 1, block 2, ...); each block halves the size."""
  widths: Sequence[int]
  block_depth: int
  num_classes: int
  logit_scale: float
  bn_momentum: float
  activation: Callable[[Any], Any] = nn.gelu
  dtype: Any = jnp.float32
  max_pool: Callable[[Any], Any] = pooling.max_pool_2x2

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    x = nn.Conv(self.widths[0], (3, 3), padding='SAME', use_bias=False,
                dtype=self.dtype, kernel_init=initializers.lecun_normal)(x)
    x = self.activation(nn.BatchNorm(use_running_average=not train,
                                     momentum=self.bn_momentum,
                                     dtype=self.dtype)(x))
    for width in self.widths[1:]:
      x = ConvBlock(width, self.block_depth, self.bn_momentum,
                    self.activation, self.dtype, self.max_pool)(x, train)
    x = jnp.max(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype,
                 kernel_init=initializers.lecun_normal)(x)
    return x.astype(jnp.float32) * self.logit_scale


def fastnet(num_classes, activation, dtype, fastnet_config,
            max_pool=pooling.max_pool_2x2):
  c = fastnet_config
  return FastNet(widths=tuple(c.widths), block_depth=c.block_depth,
                 num_classes=num_classes, logit_scale=c.logit_scale,
                 bn_momentum=c.bn_momentum, activation=activation, dtype=dtype,
                 max_pool=max_pool)


MODELS = {'fastnet': fastnet}


def forward_flops(config, num_classes=100, image_shape=(32, 32, 3)):
  """Multiply-adds x 2 of one forward pass of a fastnet (convs and head)."""
  c = config.fastnet
  h, w, cin = image_shape
  flops = 2 * h * w * 9 * cin * c.widths[0]
  prev = c.widths[0]
  for width in c.widths[1:]:
    flops += 2 * h * w * 9 * prev * width
    h, w = h // 2, w // 2
    flops += (c.block_depth - 1) * 2 * h * w * 9 * width * width
    prev = width
  return flops + 2 * prev * num_classes
