"""The fused 2x2 max pools equal flax's reduce_window pool, gradients too."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax import pooling
import conftest


def _reference(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _grad(pool, x, g):
  return jax.grad(lambda x: (pool(x) * g).sum())(x)


POOLS = [pooling.max_pool_2x2, pooling.max_pool_2x2_select]


@pytest.mark.parametrize('pool', POOLS)
@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (1, 5, 7, 2)])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_equal_reduce_window_with_ties(shape, dtype, pool):
  # Few distinct values: most windows hold ties, several of them at the max.
  x = jnp.asarray(np.random.default_rng(0).integers(0, 3, shape), dtype)
  g = conftest.normal(1, _reference(x).shape, dtype)
  np.testing.assert_array_equal(pool(x), _reference(x))
  got = _grad(pool, x, g)
  want = _grad(_reference, x, g)
  assert got.dtype == want.dtype and got.shape == x.shape
  np.testing.assert_array_equal(got, want)
  # Each window passes its gradient to exactly one element (the first max).
  hits = (_grad(pool, x, jnp.ones_like(g)) != 0)
  assert int(hits.sum()) == int(np.prod(g.shape))


@pytest.mark.parametrize('pool', POOLS)
def test_first_maximum_in_row_major_order_gets_the_gradient(pool):
  x = jnp.array([[5., 1.], [5., 5.]]).reshape(1, 2, 2, 1)
  got = _grad(pool, x, jnp.full((1, 1, 1, 1), 3.))
  np.testing.assert_array_equal(got[0, :, :, 0], [[3., 0.], [0., 0.]])


@pytest.mark.parametrize('pool', POOLS)
def test_under_vmap_and_jit(pool):
  x = conftest.normal(1, (3, 2, 4, 4, 5))
  f = lambda pool: jax.jit(jax.vmap(jax.grad(lambda x: pool(x).sum())))
  np.testing.assert_array_equal(f(pool)(x), f(_reference)(x))


def test_fused_forms_agree_on_a_window_holding_nan():
  x = jnp.array([[5., jnp.nan], [1., 0.], [2., 3.], [3., 1.]]).reshape(1, 4, 2, 1)
  g = jnp.array([2., 7.]).reshape(1, 2, 1, 1)
  want = np.array([[0., 0.], [0., 0.], [0., 7.], [0., 0.]])
  for pool in POOLS:
    got = _grad(pool, x, g)
    np.testing.assert_array_equal(got[0, :, :, 0], want)
