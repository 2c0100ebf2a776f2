"""Seeds trained together (one vmapped program) equal seeds trained alone."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax import multi_seed
from cifar_flax import sweep
from cifar_flax import train
from configs import paper_table


def tiny_row_config(fake_data_dir, xla_cache_dir, row='adam_lr1e3'):
  """A row of the tiny sweep: cnn5, batch 25, <=3 epochs, patience 1."""
  sweep_config = paper_table.get_config('tiny')
  sweep_config.data_dir = fake_data_dir
  sweep_config.overrides.compilation_cache_dir = xla_cache_dir
  return sweep.row_config(sweep_config, row)


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def test_keep_active_freezes_stopped_seeds():
  old = {'w': jnp.zeros((3, 2, 2)), 'step': jnp.array([4, 4, 4])}
  new = {'w': jnp.ones((3, 2, 2)), 'step': jnp.array([5, 5, 5])}
  out = multi_seed.keep_active(jnp.array([True, False, True]), new, old)
  np.testing.assert_array_equal(out['step'], [5, 4, 5])
  np.testing.assert_array_equal(out['w'][:, 0, 0], [1, 0, 1])


@pytest.mark.parametrize('augment_validation', [False, True])
def test_seeds_together_match_seeds_alone(tmp_path, fake_data_dir,
                                          xla_cache_dir, augment_validation):
  config = tiny_row_config(fake_data_dir, xla_cache_dir)
  config.augment_validation = augment_validation  # Keys per seed and epoch.
  seeds = (1, 2)  # On the fake data seed 1 stops early, seed 2 goes on.
  together = {s: str(tmp_path / 'together' / f'seed_{s}') for s in seeds}
  results = multi_seed.train_and_evaluate(config, together)
  stop_epochs = {}
  for s in seeds:
    alone = str(tmp_path / 'alone' / f'seed_{s}')
    train.train_and_evaluate(multi_seed.seed_config(config, s), alone)
    assert _read(together[s], 'config.json') == _read(alone, 'config.json')
    h_t, h_a = (_read(w, 'history.json') for w in (together[s], alone))
    assert [h['epoch'] for h in h_t] == [h['epoch'] for h in h_a]
    for key in ('train_loss', 'val_loss'):
      np.testing.assert_allclose([h[key] for h in h_t], [h[key] for h in h_a],
                                 rtol=1e-4, err_msg=f'seed {s} {key}')
    for key in ('train_top1', 'val_top1', 'val_top5'):
      np.testing.assert_allclose([h[key] for h in h_t], [h[key] for h in h_a],
                                 atol=1e-6, err_msg=f'seed {s} {key}')
    e_t, e_a = _read(together[s], 'eval.json'), _read(alone, 'eval.json')
    assert e_t == results[s]
    assert e_t['checkpoint_epoch'] == e_a['checkpoint_epoch']
    np.testing.assert_allclose(e_t['test_loss'], e_a['test_loss'], rtol=1e-4)
    for key in ('test_top1', 'test_top5'):
      np.testing.assert_allclose(e_t[key], e_a[key], atol=1e-6)
    stop_epochs[s] = h_t[-1]['epoch']
  # One seed stopped early while the other kept training.
  assert stop_epochs[1] < stop_epochs[2], stop_epochs
  assert stop_epochs[1] < config.num_epochs
  if augment_validation:
    return
  # An allowed change (one more epoch) continues the seed that ran to the
  # epoch limit and records it there; the early-stopped seed stays as it was.
  stopped = {n: _read(together[1], n) for n in ('config.json', 'history.json',
                                                 'eval.json')}
  config.num_epochs += 1
  config.allow_config_change = True
  multi_seed.train_and_evaluate(config, together)
  assert [h['epoch'] for h in _read(together[2], 'history.json')] == list(
      range(1, config.num_epochs + 1))
  assert _read(together[2], 'config_changes.json') == [
      {'num_epochs': {'old': config.num_epochs - 1, 'new': config.num_epochs}}]
  assert {n: _read(together[1], n) for n in stopped} == stopped
  assert not os.path.exists(os.path.join(together[1], 'config_changes.json'))


def test_a_diverging_seed_stops_alone(tmp_path):
  from cifar_flax import early_stopping  # pylint: disable=g-import-not-at-top
  from cifar_flax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from cifar_flax import sweep_table  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path)
  run = multi_seed._Run(seed=3, workdir=workdir, config=None, manager=None,
                        stopper=early_stopping.EarlyStopping(2), history=[],
                        epoch=4, active=True)
  nan = metrics_lib.batch_metrics(jnp.full((2, 5), jnp.nan),
                                  jnp.array([0, 1]), jnp.ones(2))
  multi_seed._end_epoch(None, run, None, None, nan, nan, 1.0, None, 10)
  assert not run.active and run.history == [] and run.epoch == 5
  assert _read(workdir, multi_seed.DIVERGED_FILE)['epoch'] == 5
  assert multi_seed.is_done(workdir, None)
  assert sweep_table.seed_result(workdir, None) == {'diverged': True}
