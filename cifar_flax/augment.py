"""Keras ImageDataGenerator augmentation, in JAX, for whole batches on device.

The geometry follows keras_preprocessing's `apply_affine_transform`: the
output pixel (r, c) samples the input at
  M @ ((r, c) - o) + (tx, ty) + o,   M = shear(s) @ diag(zx, zy),
with o = (h/2 + 0.5, w/2 + 0.5) (Keras' centre, half a pixel off the true
one), bilinear interpolation (Keras' interpolation_order=1) and 'nearest'
fill (edge pixels repeat). tx moves along rows (height shift), ty along
columns (width shift). The horizontal flip comes after the affine transform,
and featurewise centering last, as in Keras.

Besides Keras: `translate_pixels` (default 0, off) shifts each image by a
whole number of pixels, up to that many each way, reflect-padded (a random
crop of the padded image, as modern CIFAR recipes do); it runs after the
affine transform and before the flip.
"""

import jax
import jax.numpy as jnp


def to_float(images):
  """uint8 [0, 255] -> float32 [0, 1]."""
  return images.astype(jnp.float32) * (1.0 / 255.0)


def center(images, mean):
  """Featurewise centering: subtract the per-channel training mean."""
  return images - mean.reshape(1, 1, 1, -1)


def preprocess(images, mean, aug_config):
  """What every image gets, augmented or not: scale, then centre."""
  x = to_float(images)
  return center(x, mean) if aug_config.featurewise_center else x


def random_transform_params(rng, batch_size, height, width, aug_config):
  """Per-image (tx, ty, shear_radians, zx, zy, flip) as Keras draws them."""
  k_tx, k_ty, k_shear, k_zoom, k_flip = jax.random.split(rng, 5)
  u = lambda k, r, shape=(batch_size,): jax.random.uniform(
      k, shape, minval=-r, maxval=r)
  tx = u(k_tx, aug_config.height_shift_range) * height
  ty = u(k_ty, aug_config.width_shift_range) * width
  shear = jnp.deg2rad(u(k_shear, aug_config.shear_range))
  zoom = 1.0 + u(k_zoom, aug_config.zoom_range, (batch_size, 2))
  if aug_config.horizontal_flip:
    flip = jax.random.bernoulli(k_flip, 0.5, (batch_size,))
  else:
    flip = jnp.zeros((batch_size,), bool)
  return dict(tx=tx, ty=ty, shear=shear, zx=zoom[:, 0], zy=zoom[:, 1],
              flip=flip)


def affine_transform(images, tx, ty, shear, zx, zy):
  """Keras' affine transform of a (B, H, W, C) float batch (see module doc)."""
  _, h, w, _ = images.shape
  o_r, o_c = h / 2 + 0.5, w / 2 + 0.5
  r = jnp.arange(h, dtype=jnp.float32)[None, :, None] - o_r
  c = jnp.arange(w, dtype=jnp.float32)[None, None, :] - o_c
  col = lambda v: v[:, None, None]
  src_r = col(zx) * r - col(jnp.sin(shear) * zy) * c + col(tx) + o_r
  src_c = col(jnp.cos(shear) * zy) * c + col(ty) + o_c
  src_r = jnp.broadcast_to(src_r, (images.shape[0], h, w))
  src_c = jnp.broadcast_to(src_c, (images.shape[0], h, w))
  return jax.vmap(_bilinear_nearest)(images, src_r, src_c)


def _bilinear_nearest(image, src_r, src_c):
  """Samples one (H, W, C) image at float coordinates, edges repeating."""
  h, w, _ = image.shape
  r0, c0 = jnp.floor(src_r), jnp.floor(src_c)
  wr, wc = (src_r - r0)[..., None], (src_c - c0)[..., None]
  r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
  ri = lambda i: jnp.clip(i, 0, h - 1)
  ci = lambda i: jnp.clip(i, 0, w - 1)
  top = (image[ri(r0), ci(c0)] * (1 - wc) + image[ri(r0), ci(c0 + 1)] * wc)
  bottom = (image[ri(r0 + 1), ci(c0)] * (1 - wc) +
            image[ri(r0 + 1), ci(c0 + 1)] * wc)
  return top * (1 - wr) + bottom * wr


def random_translate(rng, images, max_pixels):
  """Shifts each (H, W, C) image by integers in [-max_pixels, max_pixels],
  reflect-padding the edges."""
  b, h, w, c = images.shape
  p = max_pixels
  padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * p + 1)
  crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0),
                                                (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def translate_key(rng):
  """The translation's key: none of random_transform_params' five.
  jax's threefry (partitionable, the default) makes fold_in(k, i) equal
  split(k, n)[i], so the index must be past them: fold_in(rng, 1), used
  before, was the width shift's key."""
  return jax.random.fold_in(rng, 5)


def _is_geometric(aug_config):
  return any((aug_config.shear_range, aug_config.zoom_range,
              aug_config.width_shift_range, aug_config.height_shift_range))


def augment_batch(rng, images, mean, aug_config):
  """uint8 (B, H, W, C) -> augmented, centred float32 batch (jit-friendly)."""
  x = to_float(images)
  params = random_transform_params(rng, x.shape[0], x.shape[1], x.shape[2],
                                   aug_config)
  if _is_geometric(aug_config):  # Zero ranges are skipped: exact identity.
    x = affine_transform(x, params['tx'], params['ty'], params['shear'],
                         params['zx'], params['zy'])
  translate = aug_config.get('translate_pixels', 0)
  if translate:  # A key of its own: the Keras draws above stay the same.
    x = random_translate(translate_key(rng), x, translate)
  if aug_config.horizontal_flip:
    x = jnp.where(params['flip'][:, None, None, None], x[:, :, ::-1], x)
  return center(x, mean) if aug_config.featurewise_center else x
