"""The modern recipe: fastnet + BatchNorm, SGD schedules, translation, the
fast config end to end through training, eval and the timed mode."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cifar_flax import augment
from cifar_flax import cli
from cifar_flax import config_checks
from cifar_flax import data
from cifar_flax import evaluate
from cifar_flax import fast_models
from cifar_flax import models
from cifar_flax import schedules
from cifar_flax import timed_runs
from cifar_flax import train
from configs import fast
from configs import fast_long


@pytest.fixture
def fast_config(fake_data_dir):
  """configs/fast.py made tiny: small widths, 50-image batches, 2 epochs."""
  config = fast.get_config()
  config.data_dir = fake_data_dir
  config.validation_fraction = 0.2  # 200 train / 50 validation images.
  config.fastnet.widths = (4, 8, 8)
  config.batch_size = 50
  config.eval_batch_size = 40
  config.num_epochs = 2
  config.patience = 2
  config.timed_seeds = 2
  config.compilation_cache_dir = ''
  return config


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3)), jnp.uint8),
          'label': jnp.asarray(rng.integers(0, 100, n), jnp.int32),
          'mask': jnp.ones(n)}


def test_fast_configs_are_valid_and_sized():
  for module in (fast, fast_long):
    config = module.get_config()
    config_checks.validate(config)
    assert config.patience >= config.num_epochs  # No early stop.
  assert fast_models.forward_flops(fast.get_config()) == pytest.approx(
      0.304e9, rel=0.01)
  # The flop count matches the parameters: each conv weight is used once per
  # output pixel (checked on a one-block net).
  config = fast.get_config()
  config.fastnet.widths = (4, 8)
  config.fastnet.block_depth = 2
  expected = 2 * (32 * 32 * 27 * 4 + 32 * 32 * 9 * 4 * 8 +
                  16 * 16 * 9 * 8 * 8 + 8 * 100)
  assert fast_models.forward_flops(config) == expected


def test_fastnet_batch_norm_updates_in_training_only():
  config = fast.get_config()
  config.fastnet.widths = (4, 8)
  config.fastnet.block_depth = 3  # The third conv is residual.
  config.dtype = 'float32'
  model = models.create_model(config, 100)
  state = train.create_train_state(config, model, jax.random.key(0),
                                   steps_per_epoch=10)
  assert state.batch_stats  # BatchNorm statistics are part of the state.
  step = jax.jit(lambda s, b, k: train.train_step(
      s, b, k, mean=jnp.full(3, 0.5), aug_config=config.augment,
      label_smoothing=config.label_smoothing))
  batch = _batch()
  new, m = step(state, batch, jax.random.key(1))
  m = m.compute()
  assert np.isfinite(m['loss']) and 0 <= m['top1'] <= m['top5'] <= 1
  for a, b in zip(jax.tree.leaves(state.batch_stats),
                  jax.tree.leaves(new.batch_stats)):
    assert not np.allclose(a, b)  # Every running mean and variance moved.
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(new.params))
  # Evaluation normalises with the running statistics: an image's loss does
  # not depend on the rest of its batch, and other statistics change it.
  eval_step = jax.jit(lambda s, b: train.eval_step(
      s, b, mean=jnp.full(3, 0.5), aug_config=config.augment))
  loss = lambda s, b: float(eval_step(s, b).compute()['loss'])
  alone = [loss(new, jax.tree.map(lambda a, i=i: a[i:i + 1], batch))
           for i in range(len(batch['label']))]
  assert loss(new, batch) == pytest.approx(np.mean(alone), rel=1e-5)
  moved = new.replace(batch_stats=jax.tree.map(lambda a: a + 1.0,
                                               new.batch_stats))
  assert loss(moved, batch) != pytest.approx(loss(new, batch), rel=1e-5)
  for _ in range(15):  # Learns one batch.
    new, m = step(new, batch, jax.random.key(1))
  assert m.compute()['loss'] < 0.8 * np.log(100)


def test_warmup_then_decay_schedules():
  config = ml_collections.ConfigDict(dict(
      learning_rate=0.8, num_epochs=10, warmup_epochs=2.0,
      lr_schedule='linear'))
  lr = schedules.learning_rate_fn(config, steps_per_epoch=5)
  values = np.array([float(lr(i)) for i in range(51)])
  assert values[0] == 0 and values[10] == pytest.approx(0.8)
  assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:]) < 0)
  # The last of the 50 steps (index 49) takes peak / 40 decay steps; 0 comes
  # one step later, as the docstring says.
  assert values[49] == pytest.approx(0.8 / 40)
  assert values[50] == pytest.approx(0.0, abs=1e-7)
  config.lr_schedule = 'cosine'
  lr = schedules.learning_rate_fn(config, steps_per_epoch=5)
  assert float(lr(10)) == pytest.approx(0.8)
  assert float(lr(30)) == pytest.approx(0.4, rel=1e-4)  # Half-way: cos = 0.
  config.lr_schedule = 'step'
  with pytest.raises(ValueError, match='step'):
    schedules.learning_rate_fn(config, 5)


def test_sgd_needs_steps_and_decays_only_kernels():
  config = fast.get_config()
  with pytest.raises(ValueError, match='steps_per_epoch'):
    train.create_optimizer(config)
  config.warmup_epochs = 0.0
  config.lr_schedule = 'constant'
  config.momentum = 0.0
  config.learning_rate = 0.1
  config.weight_decay = 0.5
  tx = train.create_optimizer(config, steps_per_epoch=3)
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.05)  # -lr * wd * w.
  np.testing.assert_array_equal(updates['bias'], 0.0)
  # Nesterov momentum 0.9 on a gradient of 1: the first step is
  # -lr * (g + 0.9 * g) = -0.19 (plain momentum: -0.1).
  config.momentum, config.weight_decay = 0.9, 0.0
  tx = train.create_optimizer(config, steps_per_epoch=3)
  ones = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(ones, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.19, rtol=1e-6)


def test_translate_shifts_by_whole_pixels_with_reflection():
  x = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1)
  out = augment.random_translate(jax.random.key(3), x, 2)
  assert out.shape == x.shape
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)),
                  mode='reflect')
  for i in range(2):  # Each output is one 8x8 window of the padded image.
    windows = [padded[i, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
    assert any(np.array_equal(out[i], w) for w in windows)
  # Off by default: the paper's augmentation draws stay exactly as before.
  aug = fast.get_config().augment
  aug.translate_pixels = 0
  images = jnp.asarray(np.random.default_rng(0).integers(
      0, 256, (4, 32, 32, 3)), jnp.uint8)
  plain = augment.augment_batch(jax.random.key(0), images, jnp.zeros(3), aug)
  aug.translate_pixels = 3
  moved = augment.augment_batch(jax.random.key(0), images, jnp.zeros(3), aug)
  assert plain.shape == moved.shape and not np.allclose(plain, moved)
  # Its key is none of the Keras draws' keys (a shared key would tie the
  # translation to, say, the width shift when both are on).
  rng = jax.random.key(0)
  translate = jax.random.key_data(augment.translate_key(rng))
  for k in jax.random.split(rng, 5):
    assert not np.array_equal(translate, jax.random.key_data(k))


def test_fast_config_trains_evaluates_and_times(tmp_path, fast_config):
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(fast_config, workdir)
  history = json.load(open(os.path.join(workdir, 'history.json')))
  assert [h['epoch'] for h in history] == [1, 2]
  assert all(np.isfinite(h['train_loss']) and np.isfinite(h['val_loss'])
             for h in history)
  # The foundation's evaluation restores the checkpoint (with BatchNorm
  # statistics and the SGD state) and gives the same answer again.
  again = evaluate.evaluate(fast_config, workdir)
  for key in ('test_top1', 'test_top5', 'test_loss', 'checkpoint_epoch'):
    assert again[key] == pytest.approx(result[key], rel=1e-6), key
  restored = evaluate.load_best(fast_config, workdir)
  # What was restored is the trained statistics and SGD momentum, not those
  # of a new state.
  fresh = train.create_train_state(
      fast_config, models.create_model(fast_config, 100), jax.random.key(0),
      steps_per_epoch=2)
  for name in ('batch_stats', 'opt_state'):
    pairs = [(a, b) for a, b in zip(jax.tree.leaves(getattr(fresh, name)),
                                    jax.tree.leaves(getattr(restored.state,
                                                            name)))
             if np.ndim(a)]
    assert pairs and all(not np.allclose(a, b) for a, b in pairs), name
  assert result['num_examples'] == 120
  # So do the foundation's reports and predictions.
  assert cli.run(fast_config, workdir, 'report') == 0
  for name in ('curves.png', 'confusion_fine.csv', 'classification_report.md',
               'test_grid.png'):
    assert os.path.getsize(os.path.join(workdir, 'reports', name)) > 0, name

  # Timed mode, in the GPU's 'scan' form: compiled once, reused by 2 seeds.
  fast_config.loop = 'scan'
  fast_config.num_epochs = 1
  timed_dir = str(tmp_path / 'timed')
  assert cli.run(fast_config, timed_dir, 'timed') == 0
  summary = json.load(open(os.path.join(timed_dir, timed_runs.TIMED_FILE)))
  assert summary['compile_seconds'] > 0 and summary['loop'] == 'scan'
  assert [r['seed'] for r in summary['runs']] == [0, 1]
  assert summary['runs'][0]['test_loss'] != summary['runs'][1]['test_loss']
  for r in summary['runs']:
    assert 0 <= r['test_top1'] <= r['test_top5'] <= 1
    assert np.isfinite(r['test_loss']) and r['train_seconds'] > 0
  assert summary['test_top1_mean'] == pytest.approx(
      np.mean([r['test_top1'] for r in summary['runs']]))
  assert summary['test_images'] == 120 and summary['train_images'] == 200
  assert not os.path.exists(os.path.join(timed_dir, 'checkpoints'))


def test_batchnorm_models_need_full_batches(tiny_config):
  """The last batch is padded; BatchNorm would normalise over the padding."""
  ds = data.load_dataset(tiny_config)  # 200 training images.
  config = fast.get_config()
  config.batch_size = 50
  config_checks.validate_against_data(config, ds)
  config.batch_size = 64
  with pytest.raises(config_checks.ConfigError,
                     match='64 does not divide the 200 training images'):
    config_checks.validate_against_data(config, ds)
  tiny_config.batch_size = 64  # cnn5 has no BatchNorm: padding is masked.
  config_checks.validate_against_data(tiny_config, ds)

