"""Augmentation geometry, checked against Keras' own recipe (scipy.ndimage)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import ndimage

from cifar_flax import augment


def _aug(**kw):
  c = ml_collections.ConfigDict(dict(
      shear_range=0.0, zoom_range=0.0, width_shift_range=0.0,
      height_shift_range=0.0, horizontal_flip=False, featurewise_center=False))
  c.update(kw)
  return c


def _images(n=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3),
                                              dtype=np.uint8)


def keras_affine(x, tx, ty, shear_deg, zx, zy):
  """keras_preprocessing.image.apply_affine_transform (order=1, nearest)."""
  s = np.deg2rad(shear_deg)
  m = (np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]]) @
       np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]]) @
       np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]]))
  o_x, o_y = x.shape[0] / 2 + 0.5, x.shape[1] / 2 + 0.5
  m = (np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]]) @ m @
       np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]]))
  return np.stack([ndimage.affine_transform(x[..., c], m[:2, :2], m[:2, 2],
                                            order=1, mode='nearest')
                   for c in range(x.shape[-1])], axis=-1)


def test_matches_keras_affine_transform():
  x = _images(4).astype(np.float32) / 255
  rng = np.random.default_rng(1)
  tx, ty = rng.uniform(-3.2, 3.2, 4), rng.uniform(-3.2, 3.2, 4)
  shear, zx, zy = rng.uniform(-20, 20, 4), rng.uniform(.8, 1.2, 4), rng.uniform(.8, 1.2, 4)
  ours = augment.affine_transform(jnp.asarray(x), jnp.asarray(tx, jnp.float32),
                                  jnp.asarray(ty, jnp.float32),
                                  jnp.deg2rad(jnp.asarray(shear, jnp.float32)),
                                  jnp.asarray(zx, jnp.float32),
                                  jnp.asarray(zy, jnp.float32))
  for i in range(4):
    ref = keras_affine(x[i], tx[i], ty[i], shear[i], zx[i], zy[i])
    np.testing.assert_allclose(ours[i], ref, atol=2e-5)


def test_pure_width_shift_moves_pixels():
  x = jnp.asarray(_images(1), jnp.float32)
  out = augment.affine_transform(x, jnp.zeros(1), jnp.full(1, 3.0),
                                 jnp.zeros(1), jnp.ones(1), jnp.ones(1))
  # A shift of ty=3 samples column c+3: content moves 3 pixels left ...
  np.testing.assert_array_equal(out[0, :, :29], x[0, :, 3:])
  # ... and the vacated columns repeat the edge ('nearest' fill).
  np.testing.assert_array_equal(out[0, :, 29:], np.repeat(x[0, :, 31:], 3, 1))


def test_flip_mirrors_and_zero_ranges_are_identity():
  x = _images(64)
  out = augment.augment_batch(jax.random.key(0), x, jnp.zeros(3),
                              _aug(horizontal_flip=True))
  xf = np.asarray(augment.to_float(x))
  flipped = np.all(np.asarray(out) == xf[:, :, ::-1], axis=(1, 2, 3))
  same = np.all(np.asarray(out) == xf, axis=(1, 2, 3))
  assert np.all(flipped | same) and 10 < flipped.sum() < 54
  ident = augment.augment_batch(jax.random.key(0), x, jnp.zeros(3), _aug())
  np.testing.assert_array_equal(ident, xf)


def test_centering_gives_zero_channel_means():
  x = _images(50)
  mean = jnp.asarray(x.reshape(-1, 3).mean(0) / 255, jnp.float32)
  out = augment.augment_batch(jax.random.key(0), x, mean,
                              _aug(featurewise_center=True))
  np.testing.assert_allclose(np.asarray(out).reshape(-1, 3).mean(0), 0,
                             atol=1e-5)


def test_random_parameters_stay_in_range():
  p = augment.random_transform_params(
      jax.random.key(0), 4096, 32, 32,
      _aug(shear_range=0.2, zoom_range=0.2, width_shift_range=0.1,
           horizontal_flip=True))
  assert np.abs(p['ty']).max() <= 3.2 and np.abs(p['ty']).max() > 3.0
  assert np.all(p['tx'] == 0)
  assert (0.9 * np.deg2rad(0.2) < np.abs(p['shear']).max()
          <= np.deg2rad(0.2) + 1e-9)
  for z in (p['zx'], p['zy']):
    assert 0.8 <= z.min() < 0.82 and 1.18 < z.max() <= 1.2
  assert not np.allclose(p['zx'], p['zy'])  # Independent x and y zoom.
  assert 0.45 < np.mean(p['flip']) < 0.55


def test_paper_augmentation_runs_under_jit():
  aug = _aug(shear_range=0.2, zoom_range=0.2, width_shift_range=0.1,
             horizontal_flip=True, featurewise_center=True)
  f = jax.jit(lambda k, x: augment.augment_batch(k, x, jnp.full(3, .5), aug))
  out = f(jax.random.key(3), _images(8))
  assert out.shape == (8, 32, 32, 3) and out.dtype == jnp.float32
  assert np.all(np.isfinite(out)) and -0.5 <= out.min() and out.max() <= 0.5


def test_shift_ranges_are_fractions(tiny_config):
  """Keras reads a shift range of 1 or more as pixels; here it is always a
  fraction of the image, so such values are refused, naming the field."""
  from cifar_flax import config_checks  # pylint: disable=g-import-not-at-top
  tiny_config.augment.width_shift_range = 0.99
  config_checks.validate(tiny_config)
  for field in ('width_shift_range', 'height_shift_range'):
    config = tiny_config.copy_and_resolve_references()
    config.augment[field] = 4.0
    with pytest.raises(config_checks.ConfigError,
                       match=f'config.augment.{field}: 4.0 is a fraction'):
      config_checks.validate(config)

