"""Training: one real step, both loop forms, early stopping, checkpoints, eval."""

import functools
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax import checkpointing
from cifar_flax import data
from cifar_flax import early_stopping
from cifar_flax import evaluate
from cifar_flax import loop
from cifar_flax import metrics as metrics_lib
from cifar_flax import models
from cifar_flax import multi_seed
from cifar_flax import train


def _state(config, num_classes=100):
  model = models.create_model(config, num_classes)
  return train.create_train_state(config, model, jax.random.key(0))


def _scan_form(config):
  """Scan form, on 80 training and 20 validation images: XLA:CPU runs a step
  inside lax.scan ~30x slower than the same step alone (README)."""
  config.loop = 'scan'
  config.train_subset = 100


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3)), jnp.uint8),
          'label': jnp.asarray(rng.integers(0, 100, n), jnp.int32),
          'mask': jnp.ones(n)}


def test_one_training_step_is_finite_and_learns(tiny_config):
  state = _state(tiny_config)
  step = jax.jit(lambda s, b, k: train.train_step(
      s, b, k, mean=jnp.full(3, 0.5), aug_config=tiny_config.augment))
  batch = _batch()
  new, m = step(state, batch, jax.random.key(1))
  m = m.compute()
  assert np.isfinite(m['loss']) and 0 <= m['top1'] <= m['top5'] <= 1
  assert int(new.step) == 1
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(new.params))
  assert not np.allclose(new.params['Dense_1']['kernel'],
                         state.params['Dense_1']['kernel'])
  for _ in range(30):  # Overfits one batch.
    new, m = step(new, batch, jax.random.key(1))
  assert m.compute()['loss'] < 0.5 * (np.log(100))


@pytest.mark.parametrize('label_smoothing', [0.0, 0.2])
def test_masked_examples_do_not_train(tiny_config, label_smoothing):
  """One step on 6 examples equals the step on them padded to 8 with masked
  junk (no dropout, identity augmentation: the same forward pass)."""
  tiny_config.conv_dropout, tiny_config.dense_dropout = (0.0, 0.0, 0.0), 0.0
  for field in ('shear_range', 'zoom_range', 'width_shift_range'):
    tiny_config.augment[field] = 0.0
  tiny_config.augment.horizontal_flip = False
  state = _state(tiny_config)
  step = jax.jit(lambda b: train.train_step(
      state, b, jax.random.key(1), mean=jnp.full(3, 0.5),
      aug_config=tiny_config.augment, label_smoothing=label_smoothing)[0])
  full, junk = _batch(6), _batch(2, seed=1)
  padded = {k: jnp.concatenate([full[k], junk[k]]) for k in full}
  padded['mask'] = padded['mask'].at[6:].set(0.0)
  a, b = step(full), step(padded)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-7),
               a.params, b.params)
  unmasked = step(dict(padded, mask=jnp.ones(8)))  # The junk would count.
  assert not np.allclose(unmasked.params['Dense_1']['kernel'],
                         a.params['Dense_1']['kernel'], atol=1e-7)


def test_masked_examples_do_not_count(tiny_config):
  state = _state(tiny_config)
  step = lambda b: train.eval_step(state, b, mean=jnp.zeros(3),
                                   aug_config=tiny_config.augment).compute()
  full = _batch(6)
  padded = {k: jnp.concatenate([v, v[:2] * 0]) for k, v in full.items()}
  a, b = step(full), step(padded)
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-6)


@pytest.mark.parametrize('name', ['adam', 'rmsprop'])
def test_optimizers_step_as_keras_does(tiny_config, name):
  """30 steps of our Adam / RMSprop against Keras' own (Keras 3, TensorFlow
  backend) on gradients from 1e-7 to 1, where epsilon's place shows."""
  keras = pytest.importorskip('keras')
  import optax  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  grads = (rng.normal(size=(30, 5)) *
           np.array([1e-7, 1e-6, 1e-4, 1e-2, 1.0])).astype(np.float32)
  w0 = rng.normal(size=5).astype(np.float32)
  tiny_config.optimizer, tiny_config.learning_rate = name, 1e-3

  def ours():
    tx = train.create_optimizer(tiny_config)
    params = {'w': jnp.asarray(w0)}
    state = tx.init(params)
    for g in grads:
      updates, state = tx.update({'w': jnp.asarray(g)}, state, params)
      params = optax.apply_updates(params, updates)
    return np.asarray(params['w'])

  kopt = (keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7)
          if name == 'adam' else
          keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, epsilon=1e-7))
  var = keras.Variable(w0)
  for g in grads:
    kopt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
  theirs = np.asarray(var.numpy())
  assert np.abs(theirs - w0).max() > 1e-3  # The steps moved the weights.
  np.testing.assert_allclose(ours(), theirs, rtol=0, atol=1e-7)
  if name == 'adam':  # optax.adam's epsilon (leases a-c) is not Keras'.
    tiny_config.adam_keras_epsilon = False
    assert np.abs(ours() - theirs).max() > 1e-3


def test_unknown_optimizer_is_refused(tiny_config):
  tiny_config.optimizer = 'adagrad'
  with pytest.raises(ValueError, match='adagrad'):
    train.create_optimizer(tiny_config)


def test_batch_plan_pads_and_masks():
  idx, mask = loop.batch_plan(jax.random.key(0), 10, 4)
  assert idx.shape == (3, 4) and mask.sum() == 10
  assert sorted(np.asarray(idx).ravel()[:10].tolist()) == list(range(10))
  idx, mask = loop.batch_plan(None, 10, 4)
  np.testing.assert_array_equal(idx.ravel()[:10], np.arange(10))
  np.testing.assert_array_equal(mask.ravel(), [1] * 10 + [0, 0])


def test_scan_and_step_forms_agree(tiny_config):
  tiny_config.train_subset = 100  # 80: a batch of 64, a padded one of 16.
  ds = data.load_dataset(tiny_config)
  state = _state(tiny_config)
  step = lambda s, b, k: train.train_step(
      s, b, k, mean=jnp.full(3, 0.5), aug_config=tiny_config.augment)
  images, labels = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
  out = {}
  for form in ('scan', 'step'):
    p = loop.make_train_pass(step, 64, form)
    s, m = p(state, images, labels, jax.random.key(5))
    out[form] = (s, m.compute())
  for k in out['scan'][1]:
    np.testing.assert_allclose(out['scan'][1][k], out['step'][1][k], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               out['scan'][0].params, out['step'][0].params)


def test_early_stopping_has_keras_semantics():
  stopper = early_stopping.EarlyStopping(patience=20)
  losses = list(np.linspace(3, 1, 63)) + [1.0] * 40  # Best at epoch 63.
  for epoch, loss in enumerate(losses, start=1):
    stopper.update(epoch, loss)
    if stopper.should_stop:
      break
  assert (stopper.best_epoch, epoch) == (63, 83)
  s = early_stopping.EarlyStopping(patience=2)
  assert s.update(1, 1.0) and not s.update(2, 1.0) and not s.should_stop
  assert not s.update(3, 1.5) and s.should_stop  # Equal is no improvement.
  s = early_stopping.EarlyStopping(patience=0)  # Only a stall stops it.
  assert s.update(1, 1.0) and not s.should_stop
  assert s.update(2, 0.5) and not s.should_stop
  assert not s.update(3, 0.7) and s.should_stop


def test_manager_keeps_best_and_latest(tmp_path, tiny_config, caplog):
  state = _state(tiny_config)
  manager = checkpointing.create_manager(str(tmp_path))
  for step, loss in [(1, 0.5), (2, 0.3), (3, 0.4), (4, 0.6)]:
    checkpointing.save(manager, step, state, {'epoch': step}, loss)
  manager.wait_until_finished()
  assert sorted(manager.all_steps()) == [2, 4]
  assert manager.best_step() == 2 and manager.latest_step() == 4
  restored, meta = checkpointing.restore(manager, 2, state)
  assert meta == {'epoch': 2}
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
  manager.close()
  # Evaluation opens it read-only, without orbax's warnings that it is.
  with caplog.at_level('WARNING'):
    reader = checkpointing.create_manager(str(tmp_path), read_only=True)
    assert reader.best_step() == 2
    reader.close()
  assert not caplog.records, caplog.text


def test_manager_keeps_the_first_of_equal_best_losses(tmp_path, tiny_config):
  # Early stopping counts only a strictly lower loss as better, so of two
  # equal losses the earlier epoch stays best; the checkpoints must agree.
  state = _state(tiny_config)
  manager = checkpointing.create_manager(str(tmp_path))
  stopper = early_stopping.EarlyStopping(patience=5)
  for step, loss in [(1, 0.5), (2, 0.3), (3, 0.3), (4, 0.6)]:
    stopper.update(step, loss)
    checkpointing.save(manager, step, state, {'epoch': step}, loss)
  manager.wait_until_finished()
  assert stopper.best_epoch == 2
  assert manager.best_step() == 2 and sorted(manager.all_steps()) == [2, 4]
  manager.close()


def test_train_and_evaluate_end_to_end(tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(tiny_config, workdir)
  history = json.load(open(os.path.join(workdir, 'history.json')))
  assert [h['epoch'] for h in history] == [1, 2]
  for key in ('train_loss', 'train_top1', 'val_loss', 'val_top1',
              'epoch_seconds'):
    assert all(np.isfinite(h[key]) for h in history), key
  config = json.load(open(os.path.join(workdir, 'config.json')))
  assert config['batch_size'] == 8 and config['augment']['zoom_range'] == 0.2
  # TensorBoard reads the history's scalars, one point per epoch.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(workdir)
  events.Reload()
  for key in ('train_loss', 'val_top1', 'epoch_seconds'):
    np.testing.assert_allclose([e.value for e in events.Scalars(key)],
                               [h[key] for h in history], rtol=1e-6)
  # At the step that ends each epoch: 200 training images, batches of 8.
  assert [e.step for e in events.Scalars('val_loss')] == [25, 50]
  ev = json.load(open(os.path.join(workdir, 'eval.json')))
  assert ev == result and ev['num_examples'] == 120
  assert 0 <= ev['test_top1'] <= ev['test_top5'] <= 1
  # eval.json equals a direct pass over every test image, none dropped.
  restored = evaluate.load_best(tiny_config, workdir)
  ds = data.load_dataset(tiny_config)
  logits = train.predict_logits(restored.state, ds.test.images, restored.mean,
                                tiny_config.augment)
  top1 = np.mean(np.argmax(logits, -1) == ds.test.labels)
  top5 = np.mean((np.argsort(-np.asarray(logits), -1)[:, :5] ==
                  ds.test.labels[:, None]).any(-1))
  loss = np.mean(metrics_lib.cross_entropy(logits, ds.test.labels))
  np.testing.assert_allclose(ev['test_top1'], top1, rtol=1e-6)
  np.testing.assert_allclose(ev['test_top5'], top5, rtol=1e-6)
  np.testing.assert_allclose(ev['test_loss'], loss, rtol=1e-4)
  best = min(history, key=lambda h: h['val_loss'])['epoch']
  assert ev['checkpoint_epoch'] == best == restored.epoch
  assert restored.class_names[5] == 'fine5'
  # The best checkpoint holds the best epoch's weights: their clean
  # validation loss is the one history.json recorded for that epoch. Its
  # centering mean is the training split's, not train + validation's.
  np.testing.assert_allclose(restored.mean,
                             data.channel_mean(ds.train.images), rtol=1e-6)
  val_logits = train.predict_logits(restored.state, ds.validation.images,
                                    restored.mean, tiny_config.augment)
  np.testing.assert_allclose(
      np.mean(metrics_lib.cross_entropy(val_logits, ds.validation.labels)),
      history[best - 1]['val_loss'], rtol=1e-4)
  assert not np.allclose(data.channel_mean(ds.train.images), data.channel_mean(
      np.concatenate([ds.train.images, ds.validation.images])), rtol=1e-6)


def test_validation_can_be_augmented_as_the_paper_did(tmp_path, tiny_config,
                                                      xla_cache_dir):
  """config.augment_validation: the validation images are augmented as in
  training (the paper's Keras generator), a new draw each epoch; training is
  unchanged; zero ranges give the clean pass; both loop forms agree."""
  _scan_form(tiny_config)
  ds = data.load_dataset(tiny_config)
  state = _state(tiny_config)
  images = jnp.asarray(ds.validation.images)
  labels = jnp.asarray(ds.validation.labels)

  def validate(aug_config, form, rng):
    step = functools.partial(train.eval_step, mean=jnp.full(3, 0.5),
                             aug_config=aug_config)
    return loop.make_eval_pass(step, 16, form)(state, images, labels,
                                               rng).compute()
  key = jax.random.key(3)
  clean = validate(tiny_config.augment, 'step', None)
  scan, step = (validate(tiny_config.augment, f, key) for f in ('scan', 'step'))
  for k in clean:
    np.testing.assert_allclose(scan[k], step[k], rtol=1e-5)
  assert step['loss'] != clean['loss']
  no_change = tiny_config.augment.copy_and_resolve_references()
  no_change.update(shear_range=0.0, zoom_range=0.0, width_shift_range=0.0,
                   horizontal_flip=False)
  identity = validate(no_change, 'step', key)
  for k in clean:
    np.testing.assert_allclose(identity[k], clean[k], rtol=1e-6)
  # A new draw each epoch, apart from the epoch's training key.
  epoch1, epoch2 = (validate(tiny_config.augment, 'step',
                             train._validation_key(0, e))  # pylint: disable=protected-access
                    for e in (1, 2))
  assert epoch1['loss'] != epoch2['loss']
  # Not the epoch key, nor its permutation or training steps' key (the two
  # halves the training pass splits it into).
  epoch_key = train._epoch_key(0, 1)  # pylint: disable=protected-access
  val_key = jax.random.key_data(train._validation_key(0, 1))  # pylint: disable=protected-access
  for k in (epoch_key, *jax.random.split(epoch_key)):
    assert not np.array_equal(val_key, jax.random.key_data(k))

  tiny_config.compilation_cache_dir = xla_cache_dir
  # Scan form (set above) compiles ahead, with the validation key.
  histories = {}
  for augmented in (False, True):
    tiny_config.augment_validation = augmented
    workdir = str(tmp_path / f'augment_validation_{augmented}')
    train.train_and_evaluate(tiny_config, workdir)
    histories[augmented] = json.load(open(os.path.join(workdir,
                                                       'history.json')))
  for clean_row, augmented_row in zip(histories[False], histories[True]):
    for k in ('train_loss', 'train_top1'):
      assert clean_row[k] == augmented_row[k], k
    assert clean_row['val_loss'] != augmented_row['val_loss']


def test_launching_the_next_epoch_early_changes_nothing(
    tmp_path, tiny_config, xla_cache_dir, monkeypatch):
  """Scan form launches epoch e+1 before writing epoch e's checkpoint and
  logs: the same history, checkpoints and test metrics as waiting, and no
  epoch launched past an early stop."""
  _scan_form(tiny_config)
  tiny_config.num_epochs = 6
  tiny_config.patience = 1
  tiny_config.learning_rate = 1e-2  # Stops early on the fake data.
  tiny_config.compilation_cache_dir = xla_cache_dir
  key = train._epoch_key  # pylint: disable=protected-access
  runs = {}
  for forms in (('scan',), ()):
    launched = []
    monkeypatch.setattr(train, 'LAUNCH_AHEAD_FORMS', forms)
    monkeypatch.setattr(train, '_epoch_key',
                        lambda seed, epoch, l=launched: l.append(epoch)
                        or key(seed, epoch))
    workdir = str(tmp_path / f'ahead_{bool(forms)}')
    result = train.train_and_evaluate(tiny_config, workdir)
    history = json.load(open(os.path.join(workdir, 'history.json')))
    steps = sorted(int(s) for s in os.listdir(
        os.path.join(workdir, 'checkpoints')) if s.isdigit())
    runs[bool(forms)] = (launched, history, steps, result)
  (l1, h1, s1, r1), (l0, h0, s0, r0) = runs[True], runs[False]
  stop = h1[-1]['epoch']
  assert stop < tiny_config.num_epochs  # Early stopping fired.
  # Epoch 1's key also serves compiling; then one launch per epoch run.
  assert l1 == l0 == [1] + list(range(1, stop + 1))
  assert s1 == s0
  drop = lambda h: [{k: v for k, v in r.items() if k != 'epoch_seconds'}
                    for r in h]
  assert drop(h1) == drop(h0)
  assert {k: r1[k] for k in ('test_loss', 'test_top1', 'checkpoint_epoch')} == {
      k: r0[k] for k in ('test_loss', 'test_top1', 'checkpoint_epoch')}


def test_a_change_that_ends_an_unfinished_run_is_recorded(tmp_path, tiny_config,
                                                          monkeypatch, capsys):
  """A run stopped after epoch 2 of 3, rerun with num_epochs=2 (allowed),
  is finished: it is evaluated, the change recorded, and the sweep counts
  it done; with 3 epochs again it is not."""
  workdir = str(tmp_path / 'run')
  tiny_config.num_epochs = 3
  judge = train.judge_epoch

  def stopped_at_3(config, state, stopper, history, epoch, *args, **kwargs):
    if epoch == 3:
      raise KeyboardInterrupt
    return judge(config, state, stopper, history, epoch, *args, **kwargs)

  monkeypatch.setattr(train, 'judge_epoch', stopped_at_3)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(tiny_config, workdir)
  monkeypatch.undo()
  tiny_config.update(num_epochs=2, allow_config_change=True)
  capsys.readouterr()
  result = train.train_and_evaluate(tiny_config, workdir)
  said = capsys.readouterr().out
  assert (f'{workdir}: config fields num_epochs changed (previous values in '
          'config_changes.json)') in said
  assert 'training has already finished; evaluating its best' in said
  assert json.load(open(os.path.join(workdir, 'eval.json'))) == result
  assert json.load(open(os.path.join(workdir, 'config_changes.json'))) == [
      {'num_epochs': {'old': 3, 'new': 2}}]
  assert json.load(open(os.path.join(workdir, 'config.json')))[
      'num_epochs'] == 2
  assert multi_seed.is_done(workdir, tiny_config)
  tiny_config.num_epochs = 3
  assert not multi_seed.is_done(workdir, tiny_config)


def test_signals_wait_for_a_safe_point(tmp_path, tiny_config, monkeypatch):
  """A signal while compiling stops the run once compiled, before an epoch;
  one as the last epoch's checkpoint is saved lets the save complete and the
  run be evaluated, then stops it."""
  import signal  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  compile_ = train.Programs.compile

  def signal_while_compiling(self, *args):
    os.kill(os.getpid(), signal.SIGTERM)
    return compile_(self, *args)
  monkeypatch.setattr(train.Programs, 'compile', signal_while_compiling)
  with pytest.raises(KeyboardInterrupt,
                     match='SIGTERM: stopped before this attempt trained an '
                     'epoch'):
    train.train_and_evaluate(tiny_config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'history.json'))
  assert not os.listdir(os.path.join(workdir, 'checkpoints'))
  monkeypatch.undo()

  save = train.save_epoch

  def signal_while_saving_the_last(*args, **kwargs):
    save(*args, **kwargs)  # Orbax writes it in a thread of its own.
    if args[8]['epoch'] == tiny_config.num_epochs:  # args[8]: the row.
      os.kill(os.getpid(), signal.SIGTERM)
  monkeypatch.setattr(train, 'save_epoch', signal_while_saving_the_last)
  with pytest.raises(KeyboardInterrupt,
                     match='SIGTERM: the run is finished, saved and evaluated'):
    train.train_and_evaluate(tiny_config, workdir)
  steps = sorted(int(n) for n in os.listdir(os.path.join(
      workdir, 'checkpoints')) if n.isdigit())
  assert steps[-1] == tiny_config.num_epochs
  ev = json.load(open(os.path.join(workdir, 'eval.json')))
  assert ev['num_examples'] == 120


def test_scan_form_resumes_like_an_uninterrupted_run(tmp_path, tiny_config,
                                                     xla_cache_dir):
  """Scan form compiles against the abstract state and restores into it: 2
  epochs continued to 3 equal 3 epochs in one go."""
  _scan_form(tiny_config)
  tiny_config.compilation_cache_dir = xla_cache_dir
  histories = {}
  for name, epochs in (('whole', (3,)), ('resumed', (2, 3))):
    workdir = str(tmp_path / name)
    for n in epochs:
      tiny_config.num_epochs = n
      tiny_config.allow_config_change = n != epochs[0]
      result = train.train_and_evaluate(tiny_config, workdir)
    histories[name] = [{k: v for k, v in r.items() if k != 'epoch_seconds'}
                       for r in json.load(open(os.path.join(workdir,
                                                            'history.json')))]
    histories[name + '_eval'] = (result['test_loss'], result['test_top1'])
  assert [r['epoch'] for r in histories['resumed']] == [1, 2, 3]
  assert histories['resumed'] == histories['whole']
  assert histories['resumed_eval'] == histories['whole_eval']


def test_time_line_counts_writing_during_an_epoch_as_the_epoch(
    tmp_path, tiny_config, xla_cache_dir, monkeypatch, capsys):
  """In scan form epoch e's checkpoint is written while epoch e+1 runs: that
  wall time is the epoch's (the device is busy), the writing is named inside
  it, with how often the device finished first, and only the last epoch's
  writing is 'checkpoints and logs'."""
  _scan_form(tiny_config)
  tiny_config.num_epochs = 2
  tiny_config.compilation_cache_dir = xla_cache_dir
  save = train.save_epoch
  def slow_save(*args, **kwargs):
    row = args[8]
    # Epoch 1's writing outlasts epoch 2 (which runs meanwhile) for sure.
    time.sleep(0.5 + (2 * row['epoch_seconds'] if row['epoch'] == 1 else 0))
    return save(*args, **kwargs)
  monkeypatch.setattr(train, 'save_epoch', slow_save)
  train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  line, = [l for l in capsys.readouterr().out.splitlines()
           if l.startswith('time after start-up imports:')]
  seconds = lambda pattern: float(re.search(pattern, line).group(1))
  epochs = seconds(r'epochs \(train and validation\) ([\d.]+) s')
  written = seconds(r'the host wrote checkpoints and logs for ([\d.]+) s')
  after = seconds(r'of 1 times\), checkpoints and logs ([\d.]+) s')
  assert 0.5 <= written <= epochs, line  # Epoch 1's writing, inside epoch 2.
  assert after >= 0.5, line  # Epoch 2's, with nothing left to overlap.
  assert 'the device finished first and waited 1 of 1 times' in line, line


def test_phase_clock_reports_overlapped_work_once():
  clock = train._PhaseClock()  # pylint: disable=protected-access
  clock.lap('a')
  for waited in (True, False, False):
    clock.lap('epochs', during=('writing', 0.25, waited))
  clock.seconds = {'a': 1.0, 'epochs': 3.0}
  assert clock.summary() == (
      'a 1.0 s, epochs 3.0 s (of which the host wrote writing for 0.8 s while '
      'the device ran the next epoch; the device finished first and waited 1 '
      'of 3 times); total 4.0 s')


def test_checkpoint_copy_ahead_saves_the_same_checkpoints(
    tmp_path, tiny_config, xla_cache_dir, monkeypatch):
  """config.checkpoint_copy_ahead: in scan form a state due to be saved is
  copied to pinned host memory before the next epoch is launched (not the
  last epoch's, which launches nothing); the checkpoints, history and test
  metrics are those of the plain save."""
  _scan_form(tiny_config)
  tiny_config.num_epochs = 3
  tiny_config.compilation_cache_dir = xla_cache_dir
  save = checkpointing.save
  runs = {}
  for ahead in (True, False):
    kinds = []
    def recording_save(manager, epoch, state, *args, kinds=kinds):
      kinds.append({a.sharding.memory_kind for a in jax.tree.leaves(state)})
      return save(manager, epoch, state, *args)
    monkeypatch.setattr(checkpointing, 'save', recording_save)
    tiny_config.checkpoint_copy_ahead = ahead
    workdir = str(tmp_path / f'copy_ahead_{ahead}')
    result = train.train_and_evaluate(tiny_config, workdir)
    history = json.load(open(os.path.join(workdir, 'history.json')))
    manager = checkpointing.create_manager(workdir)
    abstract = jax.eval_shape(lambda: _state(tiny_config))
    restored = [checkpointing.restore(manager, s, abstract)[0]
                for s in sorted(manager.all_steps())]
    manager.close()
    runs[ahead] = (kinds, history, restored, result)
  (k1, h1, r1, e1), (k0, h0, r0, e0) = runs[True], runs[False]
  assert k1 == [{'pinned_host'}, {'pinned_host'}, {'device'}]
  assert k0 == [{'device'}] * 3
  drop = lambda h: [{k: v for k, v in r.items() if k != 'epoch_seconds'}
                    for r in h]
  assert drop(h1) == drop(h0)
  assert len(r1) == len(r0) > 0
  for a, b in zip(r1, r0):
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    jax.tree.map(np.testing.assert_array_equal, a.opt_state, b.opt_state)
  assert {k: e1[k] for k in ('test_loss', 'test_top1', 'checkpoint_epoch')} == {
      k: e0[k] for k in ('test_loss', 'test_top1', 'checkpoint_epoch')}
