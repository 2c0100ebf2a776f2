"""2x2 max pooling with stride 2, written so that XLA fuses its gradient.

`flax.linen.max_pool` is a `reduce_window` whose gradient is XLA's
`select_and_scatter`, a slow op on GPU (and on CPU: 128 ms against 44 ms for
the gradient of a 64x32x32x128 pool on this repo's 2-core CPU). Here the
forward pass is a reshape and a max over each 2x2 window, and the gradient is
written out: each window's upstream gradient goes to the FIRST maximum in
row-major order, exactly where `select_and_scatter` (and Keras' MaxPool2D)
sends it. Values and gradients are bitwise those of `nn.max_pool(x, (2, 2),
strides=(2, 2))`, ties included (tests/pooling_test.py), for inputs without
NaN; a window holding a NaN passes no gradient here (select_and_scatter
passes it to some element). Like 'VALID' padding, a trailing odd row or
column is dropped.
"""

import jax
import jax.numpy as jnp


def _windows(x):
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c)


def _unwindows(win, shape):
  """_windows' inverse for an input of `shape`: zeros where it dropped a
  trailing odd row or column."""
  n, h, w, c = shape
  x = win.reshape(n, h // 2 * 2, w // 2 * 2, c)
  return jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))


def _max_2x2(x):
  """(N, H, W, C) -> (N, H // 2, W // 2, C), the max of each 2x2 window."""
  return _windows(x).max(axis=(2, 4))


def _with_gradient(bwd):
  """_max_2x2 with `bwd` as its gradient."""
  pool = jax.custom_vjp(_max_2x2)

  def fwd(x):
    y = _max_2x2(x)
    return y, (x, y)

  pool.defvjp(fwd, bwd)
  return pool


def _bwd(res, g):
  x, y = res
  win = _windows(x)
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for a in range(2):
    cols = []
    for b in range(2):
      hit = (win[:, :, a, :, b] == y) & ~taken
      taken = taken | hit
      cols.append(jnp.where(hit, g, jnp.zeros_like(g)))
    rows.append(jnp.stack(cols, axis=3))    # (n, h2, w2, 2, c)
  grad = jnp.stack(rows, axis=2)            # (n, h2, 2, w2, 2, c)
  return (_unwindows(grad, x.shape),)


def _bwd_select(res, g):
  """The same gradient as one select over the windows (no stack or
  concatenate); XLA may fuse it differently."""
  x, y = res
  win = _windows(x)                         # (n, h2, 2, w2, 2, c)
  yb, gb = y[:, :, None, :, None], g[:, :, None, :, None]
  hit = [[win[:, :, a:a + 1, :, b:b + 1] == yb for b in range(2)]
         for a in range(2)]
  # The first maximum in row-major order (0,0), (0,1), (1,0), (1,1).
  first = [[hit[0][0], hit[0][1] & ~hit[0][0]],
           [hit[1][0] & ~(hit[0][0] | hit[0][1]),
            hit[1][1] & ~(hit[0][0] | hit[0][1] | hit[1][0])]]
  a = jax.lax.broadcasted_iota(jnp.int32, win.shape, 2)
  b = jax.lax.broadcasted_iota(jnp.int32, win.shape, 4)
  take = jnp.where(a == 0, jnp.where(b == 0, first[0][0], first[0][1]),
                   jnp.where(b == 0, first[1][0], first[1][1]))
  grad = jnp.where(take, gb, jnp.zeros_like(gb))
  return (_unwindows(grad, x.shape),)


# config.max_pool='fused' and 'fused_select': the same values and gradients.
max_pool_2x2 = _with_gradient(_bwd)
max_pool_2x2_select = _with_gradient(_bwd_select)
