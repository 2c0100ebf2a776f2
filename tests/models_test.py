"""The paper's networks: exact parameter counts, init, dropout, dtypes."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax import initializers
from cifar_flax import models
from configs import default
from configs import fast
import conftest


def _count(model):
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))['params']
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def test_parameter_counts_match_the_paper():
  assert _count(models.cnn9(conv_dropout=(0.2, 0.5, 0.5),
                            dense_dropout=0.5)) == 13_870_484
  assert _count(models.cnn5(conv_dropout=(0, 0, 0),
                            dense_dropout=0.0)) == 643_492


def test_coarse_head_and_create_model():
  config = default.get_config()
  config.model = 'cnn5'
  model = models.create_model(config, num_classes=20)
  assert _count(model) == 643_492 - 256 * 80 - 80


def test_keras_init_and_forward():
  config = default.get_config()
  config.model = 'cnn5'
  model = models.create_model(config, 100)
  x = conftest.normal(1, (4, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  for name, layer in variables['params'].items():
    assert not np.any(layer['bias']), name  # Zero biases.
  k = variables['params']['Conv_0']['kernel']
  limit = np.sqrt(6.0 / (3 * 3 * 3 + 3 * 3 * 32))  # Glorot uniform.
  assert np.abs(k).max() <= limit and np.abs(k).max() > 0.8 * limit
  logits = model.apply(variables, x)
  assert logits.shape == (4, 100) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize('name', ['cnn5', 'fastnet'])
def test_kernels_drawn_flat_are_jax_initialisers_values(name, monkeypatch):
  """cifar_flax/initializers.py draws each kernel flat (faster to compile);
  the parameters are bitwise those of jax's glorot-uniform (the paper's
  networks, as Keras) and lecun-normal (fastnet, flax's default)."""
  config = fast.get_config() if name == 'fastnet' else default.get_config()
  config.model = name
  model = models.create_model(config, 100)
  x = jnp.zeros((1, 32, 32, 3))
  ours = jax.jit(lambda k: model.init(k, x))(jax.random.key(3))
  monkeypatch.setattr(models, '_KERNEL_INIT',
                      jax.nn.initializers.glorot_uniform())
  monkeypatch.setattr(initializers, 'lecun_normal',
                      jax.nn.initializers.lecun_normal())
  theirs = jax.jit(lambda k: model.init(k, x))(jax.random.key(3))
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  with pytest.raises(ValueError, match='expected at least 2 axes'):
    initializers.glorot_uniform(jax.random.key(0), (5,))


class _TwoDropouts(nn.Module):
  @nn.compact
  def __call__(self, x, y):
    return models.Dropout(0.3)(x, False), models.Dropout(0.5)(y, False)


def test_dropout_masks_drawn_flat_are_flax_masks(monkeypatch):
  """models.Dropout draws each mask flat (faster to compile): the outputs in
  training, so the masks, are bitwise those with flax's nn.Dropout, in cnn5
  and, for keys vmapped (seeds trained together), in a small module."""
  model = models.cnn5(conv_dropout=(0.2, 0.5, 0.5), dense_dropout=0.5)
  x = conftest.normal(0, (2, 32, 32, 3))
  v = jax.jit(model.init)(jax.random.key(1), x)
  keys = jax.random.split(jax.random.key(2), 3)
  xy = (x[:, :8, :8], x[:, 0, 0])

  def outputs(keys):
    vmapped = jax.vmap(lambda k: _TwoDropouts().apply(
        {}, *xy, rngs={'dropout': k}))(keys)
    return vmapped, model.apply(v, x, train=True, rngs={'dropout': keys[0]})
  # A new function each time: jit would reuse the first trace of `outputs`.
  ours = jax.jit(lambda k: outputs(k))(keys)
  assert models.Dropout(1.0).apply({}, x, deterministic=False).sum() == 0
  monkeypatch.setattr(models, 'Dropout', nn.Dropout)
  theirs = jax.jit(lambda k: outputs(k))(keys)
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  assert not np.array_equal(ours[1], jax.jit(model.apply)(v, x))  # Masked.
  assert not np.array_equal(*ours[0][0][:2])  # A mask per key.


def test_dropout_only_in_training():
  model = models.cnn5(conv_dropout=(0.5, 0.5, 0.5), dense_dropout=0.5)
  x = jnp.ones((2, 32, 32, 3))
  v = model.init(jax.random.key(0), x)
  # At evaluation the network is the same one without dropout, which in
  # training differs only by its random masks.
  plain = models.cnn5(conv_dropout=(0.0, 0.0, 0.0), dense_dropout=0.0)
  np.testing.assert_array_equal(model.apply(v, x), plain.apply(v, x))
  np.testing.assert_array_equal(
      plain.apply(v, x), plain.apply(v, x, train=True,
                                     rngs={'dropout': jax.random.key(1)}))
  a = model.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)})
  b = model.apply(v, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(a, b)


@pytest.mark.parametrize('activation', ['relu', 'elu'])
def test_activation_and_bf16(activation):
  config = default.get_config()
  config.model = 'cnn5'
  config.activation = activation
  config.dtype = 'bfloat16'
  model = models.create_model(config, 100)
  assert model.activation is models.ACTIVATIONS[activation]
  x = conftest.normal(1, (2, 32, 32, 3))
  v = model.init(jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))
  assert model.apply(v, x).dtype == jnp.float32
  # The convs compute in bf16 (the logits are cast back to float32).
  assert 'bf16[2,32,32,32]' in str(jax.make_jaxpr(model.apply)(v, x))
  # And the network applies the configured activation: the other one, with
  # the same parameters, gives other logits; also after the convs alone.
  config.activation = {'relu': 'elu', 'elu': 'relu'}[activation]
  assert not np.allclose(model.apply(v, x),
                         models.create_model(config, 100).apply(v, x))
  convs_only = lambda act: models.PaperCNN(
      stack_filters=(8,), convs_per_stack=2, hidden_units=(), num_classes=10,
      conv_dropout=(0.0,), dense_dropout=0.0, activation=act)
  v = convs_only(jax.nn.relu).init(jax.random.key(0), x)
  assert not np.allclose(convs_only(jax.nn.relu).apply(v, x),
                         convs_only(jax.nn.elu).apply(v, x))


def test_unknown_model_is_named():
  config = default.get_config()
  config.model = 'resnet9000'
  with pytest.raises(ValueError, match='resnet9000'):
    models.create_model(config, 100)


@pytest.mark.parametrize('name', ['cnn5', 'fastnet'])
def test_max_pool_implementations_train_alike(name):
  """config.max_pool changes the speed only: equal logits and gradients."""
  config = default.get_config()
  config.model = name
  config.fastnet.widths = (8, 8, 8)
  x = conftest.normal(1, (4, 32, 32, 3))
  out = {}
  for impl in models.MAX_POOLS:
    config.max_pool = impl
    model = models.create_model(config, 10)
    assert model.max_pool is models.MAX_POOLS[impl]
    v = jax.jit(model.init)(jax.random.key(0), x)
    # Only flax's nn.max_pool is a reduce_window (the config picks it).
    forward = str(jax.make_jaxpr(lambda v, model=model: model.apply(v, x))(v))
    assert ('reduce_window_max' in forward) == (impl == 'reduce_window')

    def loss(params, model=model, v=v):
      logits, _ = model.apply({**v, 'params': params}, x, train=True,
                              rngs={'dropout': jax.random.key(2)},
                              mutable=['batch_stats'])
      return logits.sum()
    out[impl] = jax.jit(jax.value_and_grad(loss))(v['params'])
  for impl in ('fused', 'fused_select'):
    np.testing.assert_array_equal(out[impl][0], out['reduce_window'][0])
    jax.tree.map(np.testing.assert_array_equal, out[impl][1],
                 out['reduce_window'][1])


def _assert_cnn5_trains_alike(base, other, dtype):
  """(params, loss, grads) of cnn5 built two ways: the same parameters and
  init, bitwise; loss and gradients within the dtype's rounding."""
  (p0, l0, g0), (p1, l1, g1) = base, other
  assert g1['Conv_0']['kernel'].shape == (3, 3, 3, 32)
  jax.tree.map(np.testing.assert_array_equal, p0, p1)
  tol = 1e-5 if dtype == 'float32' else 2e-2
  np.testing.assert_allclose(l1, l0, rtol=tol)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol,
      atol=tol * float(jnp.abs(b).max())), g1, g0)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_padded_input_channels_change_nothing(dtype):
  """config.pad_input_channels: the same parameters, init, logits and
  gradients (cnn5 here; the first conv of cnn9 is built the same way)."""
  config = default.get_config()
  config.model, config.dtype = 'cnn5', dtype
  x = conftest.normal(1, (4, 32, 32, 3))
  out = {}
  for pad in (0, 8):
    config.pad_input_channels = pad
    model = models.create_model(config, 10)
    v = jax.jit(model.init)(jax.random.key(0), x)
    loss = lambda params, model=model: model.apply(
        {'params': params}, x, train=True,
        rngs={'dropout': jax.random.key(2)}).sum()
    out[pad] = (v['params'], *jax.jit(jax.value_and_grad(loss))(v['params']))
    # The first conv really sees 8 channels (or the 3 given).
    jaxpr = str(jax.make_jaxpr(loss)(v['params']))
    short = {'float32': 'f32', 'bfloat16': 'bf16'}[dtype]
    assert (f'{short}[4,32,32,8]' in jaxpr) == (pad == 8)
  assert _count(models.create_model(config, 10)) == _count(
      models.cnn5(num_classes=10, conv_dropout=(0.2, 0.5, 0.5),
                  dense_dropout=0.5))
  _assert_cnn5_trains_alike(out[0], out[8], dtype)


@pytest.mark.parametrize('shape, window, padding', [
    ((2, 8, 8, 3), (3, 3), 'SAME'),
    ((2, 7, 9, 5), (3, 5), 'SAME'),
    ((2, 8, 8, 3), (3, 3), 'VALID'),
    ((1, 6, 6, 2), (3, 3), ((2, 0), (1, 1))),
])
def test_im2col_conv_is_the_conv(shape, window, padding):
  """models.im2col_conv: lax.conv_general_dilated's values and gradients
  (input and kernel) within float rounding; other convs are refused."""
  layout = ('NHWC', 'HWIO', 'NHWC')
  x = conftest.normal(0, shape)
  k = conftest.normal(1, window + (shape[-1], 4))
  theirs = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), padding, dimension_numbers=layout)
  ours = lambda x, k: models.im2col_conv(
      x, k, (1, 1), padding, dimension_numbers=jax.lax.conv_dimension_numbers(
          x.shape, k.shape, layout))
  y = theirs(x, k)
  np.testing.assert_allclose(ours(x, k), y, rtol=1e-5, atol=1e-5)
  dy = conftest.normal(2, y.shape)
  grad = lambda f: jax.grad(lambda x, k: (f(x, k) * dy).sum(), (0, 1))(x, k)
  for a, b in zip(grad(ours), grad(theirs)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
  for kwargs in ({'window_strides': (2, 2)}, {'rhs_dilation': (2, 2)},
                 {'feature_group_count': shape[-1]},
                 {'dimension_numbers': ('NCHW', 'OIHW', 'NCHW')},
                 {'dimension_numbers': None}):  # lax's default: NCHW.
    with pytest.raises(ValueError, match='stride 1'):
      models.im2col_conv(x, k, **{'window_strides': (1, 1),
                                  'padding': padding,
                                  'dimension_numbers': layout, **kwargs})


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_first_conv_im2col_changes_nothing(dtype):
  """config.first_conv_im2col: the first conv (only) becomes a matmul over
  27-wide patches; the same parameters and init, logits and gradients
  within float rounding (cnn5; cnn9 is built the same way)."""
  config = default.get_config()
  config.dtype = dtype
  x = conftest.normal(1, (4, 32, 32, 3))
  short = {'float32': 'f32', 'bfloat16': 'bf16'}[dtype]
  out = {}
  for flag in (False, True):
    config.first_conv_im2col = flag
    config.model = 'cnn9'
    forward = str(jax.make_jaxpr(models.create_model(config, 10).init)(
        jax.random.key(0), x))
    assert forward.count('conv_general_dilated[') == 6 - flag
    config.model = 'cnn5'
    model = models.create_model(config, 10)
    v = model.init(jax.random.key(0), x)
    loss = lambda params, model=model: model.apply(
        {'params': params}, x, train=True,
        rngs={'dropout': jax.random.key(2)}).sum()
    # Forward, weight gradients and the two later convs' input gradients.
    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(v['params']))
    assert jaxpr.count('conv_general_dilated[') == (6 if flag else 8)
    assert (f'{short}[4,32,32,27]' in jaxpr) == flag
    out[flag] = (v['params'], *jax.value_and_grad(loss)(v['params']))
  _assert_cnn5_trains_alike(out[False], out[True], dtype)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_relu_grad_from_output_is_jax_relu_bitwise(dtype):
  """The same values and gradients as jax.nn.relu, 0, -0, NaN, infinities
  and the smallest normal and subnormal numbers included."""
  tiny = float(jnp.finfo(dtype).tiny)
  sub = float(jnp.finfo(dtype).smallest_subnormal)
  x = jnp.array([0.0, -0.0, np.nan, np.inf, -np.inf, tiny, -tiny, sub, -sub,
                 1.5, -2.0], dtype)
  x = jnp.concatenate([x, conftest.normal(0, (64,), dtype)])
  g = conftest.normal(1, x.shape, dtype)
  bits = lambda a: np.asarray(a).view(f'u{a.dtype.itemsize}')
  for f in (lambda a: a, jax.jit):
    ours = jax.vjp(f(models.relu_grad_from_output), x)
    theirs = jax.vjp(f(jax.nn.relu), x)
    np.testing.assert_array_equal(bits(ours[0]), bits(theirs[0]))
    np.testing.assert_array_equal(bits(ours[1](g)[0]), bits(theirs[1](g)[0]))


def _mask_reads(relu):
  """What the gradient's mask (the `> 0` compare) of conv(relu(conv(x) + b))
  reads in the program XLA compiles: the opcode that defines its operand,
  'add' (the relu's input, conv plus bias) or 'maximum' (its output)."""
  conv = lambda a, k: jax.lax.conv_general_dilated(
      a, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  x = conftest.normal(0, (2, 8, 8, 3))
  w2 = conftest.normal(1, (3, 3, 4, 4))
  loss = lambda w: (conv(relu(conv(x, w) + 1.0), w2) ** 2).sum()
  hlo = jax.jit(jax.grad(loss)).lower(jnp.ones((3, 3, 3, 4))).compile(
      ).as_text()
  (operand,) = re.findall(r'compare\((%[\w.-]+), .*direction=GT', hlo)
  (opcode,) = re.findall(re.escape(operand) + r' = \S+ (\w+)\(', hlo)
  return opcode


def test_relu_grad_from_output_leaves_the_pre_activation_one_reader():
  """Why it exists: in the compiled program the backward pass's mask reads
  the relu's output, so the pre-activation has one reader, which XLA's GPU
  compiler needs to fold the relu into cuDNN's conv call. jax.nn.relu's
  mask reads the input; so would ours without its optimization barrier
  (XLA's simplifier rewrites max(x, 0) > 0 to x > 0)."""
  assert _mask_reads(jax.nn.relu) == 'add'
  assert _mask_reads(models.relu_grad_from_output) == 'maximum'


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_relu_grad_from_output_changes_nothing(dtype):
  """config.relu_grad_from_output: bitwise the same logits and gradients
  (cnn5, with dropout); ELU ignores it."""
  config = default.get_config()
  config.model, config.dtype = 'cnn5', dtype
  x = conftest.normal(1, (4, 32, 32, 3))
  out = {}
  for flag in (False, True):
    config.relu_grad_from_output = flag
    model = models.create_model(config, 10)
    assert model.activation is (models.relu_grad_from_output if flag
                                else jax.nn.relu)
    params = model.init(jax.random.key(0), x)['params']
    loss = jax.jit(lambda p, model=model: model.apply(
        {'params': p}, x, train=True,
        rngs={'dropout': jax.random.key(2)}).sum())
    out[flag] = jax.value_and_grad(loss)(params)
  np.testing.assert_array_equal(out[True][0], out[False][0])
  jax.tree.map(np.testing.assert_array_equal, out[True][1], out[False][1])
  config.activation = 'elu'
  assert models.create_model(config, 10).activation is jax.nn.elu
