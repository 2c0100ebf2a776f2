"""Training: factories, pure jitted steps, and the `train_and_evaluate` driver."""

import functools
import math
import os
import signal
import time
from typing import Any

from absl import logging
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cifar_flax import augment
from cifar_flax import checkpointing
from cifar_flax import config_checks
from cifar_flax import data as data_lib
from cifar_flax import early_stopping as early_stopping_lib
from cifar_flax import loop
from cifar_flax import metric_logging
from cifar_flax import metrics as metrics_lib
from cifar_flax import models
from cifar_flax import sharding
from cifar_flax import workdir as workdir_lib


class TrainingDivergedError(Exception):
  """The loss or the parameters stopped being finite."""


class TrainState(train_state.TrainState):
  # flax BatchNorm statistics; an empty dict for models without them.
  batch_stats: Any = flax.core.FrozenDict()


# --- Factories -----------------------------------------------------------------


def create_optimizer(config):
  """optax Adam or RMSProp with Keras' hyperparameters (see configs/default)."""
  lr = config.learning_rate
  if config.optimizer == 'adam':
    return optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2,
                      eps=config.epsilon)
  if config.optimizer == 'rmsprop':
    # Keras RMSprop: lr * g / sqrt(ms + eps), no momentum, no centering.
    return optax.rmsprop(lr, decay=config.rmsprop_decay, eps=config.epsilon)
  raise ValueError(f'config.optimizer={config.optimizer!r}: expected '
                   f"'adam' or 'rmsprop'")


def create_train_state(config, model, rng, image_shape=data_lib.IMAGE_SHAPE):
  variables = model.init({'params': rng, 'dropout': rng},
                         jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                         train=False)
  return TrainState.create(
      apply_fn=model.apply, params=variables['params'],
      batch_stats=variables.get('batch_stats', flax.core.FrozenDict()),
      tx=create_optimizer(config))


def abstract_train_state(config, num_classes):
  """Shapes and dtypes of a train state, for restoring without computing."""
  model = models.create_model(config, num_classes)
  return jax.eval_shape(
      functools.partial(create_train_state, config, model),
      jax.random.key(0))


# --- Pure steps ----------------------------------------------------------------


def _variables(state, params):
  v = {'params': params}
  if state.batch_stats:
    v['batch_stats'] = state.batch_stats
  return v


def train_step(state, batch, rng, *, mean, aug_config, label_smoothing=0.0):
  """One optimizer step on an augmented batch: (state, batch, rng) -> (state, Metrics)."""
  aug_rng, dropout_rng = jax.random.split(rng)
  x = augment.augment_batch(aug_rng, batch['image'], mean, aug_config)
  labels, mask = batch['label'], batch['mask']
  mutable = ['batch_stats'] if state.batch_stats else False

  def loss_fn(params):
    out = state.apply_fn(_variables(state, params), x, train=True,
                         rngs={'dropout': dropout_rng}, mutable=mutable)
    logits, new_vars = out if mutable else (out, {})
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    ce = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    if label_smoothing:
      ce = (1 - label_smoothing) * ce - label_smoothing * logp.mean(-1)
    loss = (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    return loss, (logits, new_vars)

  (_, (logits, new_vars)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  if mutable:
    state = state.replace(batch_stats=new_vars['batch_stats'])
  return state, metrics_lib.batch_metrics(logits, labels, mask)


def eval_step(state, batch, *, mean, aug_config):
  """Metrics of a clean (centred, not augmented) batch."""
  x = augment.preprocess(batch['image'], mean, aug_config)
  logits = state.apply_fn(_variables(state, state.params), x, train=False)
  return metrics_lib.batch_metrics(logits, batch['label'], batch['mask'])


def predict_logits(state, images, mean, aug_config):
  x = augment.preprocess(images, mean, aug_config)
  return state.apply_fn(_variables(state, state.params), x, train=False)


# --- Helpers of the driver -------------------------------------------------------


def setup_compilation_cache(cache_dir):
  if cache_dir:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(cache_dir))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


class Programs:
  """The compiled train and eval passes of a run, and the data they read."""

  def __init__(self, config, dataset, mesh):
    self.mean = jnp.asarray(data_lib.channel_mean(dataset.train.images))
    form = loop.loop_form(config.loop)
    step = functools.partial(train_step, mean=self.mean,
                             aug_config=config.augment,
                             label_smoothing=config.get('label_smoothing', 0.0))
    evaluate = functools.partial(eval_step, mean=self.mean,
                                 aug_config=config.augment)
    self.train_step = step
    batch_sharding = sharding.batch_sharded(mesh)
    self.train_pass = loop.make_train_pass(step, config.batch_size, form,
                                           batch_sharding)
    self.eval_pass = loop.make_eval_pass(evaluate, config.eval_batch_size,
                                         form, batch_sharding)
    put = lambda s: sharding.replicate((s.images, s.labels), mesh)
    self.train_data = put(dataset.train)
    self.val_data = put(dataset.validation)
    self.form = form
    self.class_names = list(dataset.class_names)

  def compile(self, state, rng):
    """Compiles the scanned passes ahead of time; returns the seconds taken
    (None in step form, where the first step compiles)."""
    if self.form != 'scan':
      return None
    t0 = time.perf_counter()
    self.train_pass = self.train_pass.lower(state, *self.train_data,
                                            rng).compile()
    self.eval_pass = self.eval_pass.lower(state, *self.val_data).compile()
    return time.perf_counter() - t0


def _epoch_key(seed, epoch):
  """Per-epoch key: a resumed run draws the same order and augmentation."""
  return jax.random.fold_in(jax.random.key(seed), epoch)


def _scalars(prefix, m):
  return {f'{prefix}_{k}': float(v) for k, v in m.compute().items()}


def _check_finite(epoch, row, state):
  bad = [k for k in ('train_loss', 'val_loss') if not math.isfinite(row[k])]
  if not bad and not all(bool(jnp.isfinite(p).all())
                         for p in jax.tree.leaves(state.params)):
    bad = ['parameters']
  if bad:
    raise TrainingDivergedError(
        f'epoch {epoch}: {" and ".join(bad)} not finite ('
        f'train_loss={row["train_loss"]}, val_loss={row["val_loss"]}); '
        f'stopped. The best checkpoint and history up to epoch {epoch - 1} '
        f'are intact: evaluate them with --mode=eval, or lower the learning '
        f'rate')


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag checked between epochs."""

  def __init__(self):
    self.received = None

  def __enter__(self):
    self._old = {s: signal.signal(s, self._handle)
                 for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received is not None:  # A second signal: stop now.
      raise KeyboardInterrupt
    self.received = signal.Signals(signum).name
    logging.warning('%s received: saving a checkpoint after this epoch',
                    self.received)

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)


# --- The driver ------------------------------------------------------------------


def train_and_evaluate(config, workdir):
  """Trains (or resumes) the run in `workdir`, then evaluates its best
  checkpoint on the test set. Returns the evaluation dict."""
  config_checks.validate(config)
  workdir_lib.prepare(workdir, config, ignore_keys=config_checks.RESUMABLE_KEYS)
  setup_compilation_cache(config.compilation_cache_dir)
  dataset = data_lib.load_dataset(config)
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  config_checks.validate_against_data(config, dataset)

  model = models.create_model(config, dataset.num_classes)
  state = create_train_state(config, model, jax.random.key(config.seed))
  manager = checkpointing.create_manager(workdir)
  state, stopper, history, first_epoch = _resume(config, workdir, manager,
                                                 state)
  if first_epoch is None:
    logging.info('%s: run already finished (resumed nothing)', workdir)
    print(f'{workdir}: this run has already finished; nothing to do.')
    manager.close()
    from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
    return evaluate.evaluate(config, workdir, dataset=dataset)
  state = sharding.replicate(state, mesh)
  programs = Programs(config, dataset, mesh)
  compile_s = programs.compile(state, _epoch_key(config.seed, 1))
  logging.info('compile: %s s (%s form, %d device(s))', compile_s,
               programs.form, mesh.devices.size)
  writer = metric_logging.MetricWriter(workdir if jax.process_index() == 0
                                       else None)
  try:
    with _StopSignal() as stop:
      _train_epochs(config, workdir, programs, manager, writer, state,
                    stopper, history, first_epoch, stop)
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  return evaluate.evaluate(config, workdir, dataset=dataset)


def _resume(config, workdir, manager, state):
  """(state, early stopping, history, first epoch to run or None if done)."""
  stopper = early_stopping_lib.EarlyStopping(config.patience)
  step = manager.latest_step()
  if step is None:
    return state, stopper, [], 1
  state, meta = checkpointing.restore(manager, step, state)
  stopper = early_stopping_lib.EarlyStopping.from_state_dict(
      meta['early_stopping'])
  history = workdir_lib.read_history(workdir)[:meta['epoch']]
  if meta.get('finished'):
    return state, stopper, history, None
  logging.info('resuming %s after epoch %d', workdir, meta['epoch'])
  print(f'Resuming from the checkpoint of epoch {meta["epoch"]}.')
  return state, stopper, history, meta['epoch'] + 1


def _train_epochs(config, workdir, programs, manager, writer, state, stopper,
                  history, first_epoch, stop):
  steps_per_epoch = loop.num_batches(len(programs.train_data[1]),
                                     config.batch_size)
  progress = metric_logging.ProgressReporter(
      config.num_epochs * steps_per_epoch, (first_epoch - 1) * steps_per_epoch)
  for epoch in range(first_epoch, config.num_epochs + 1):
    t0 = time.perf_counter()
    state, train_m = programs.train_pass(state, *programs.train_data,
                                         _epoch_key(config.seed, epoch))
    val_m = programs.eval_pass(state, *programs.val_data)
    row = {'epoch': epoch, **_scalars('train', train_m),
           **_scalars('val', val_m)}
    row['epoch_seconds'] = time.perf_counter() - t0
    _check_finite(epoch, row, state)
    improved = stopper.update(epoch, row['val_loss'])
    history.append(row)
    finished = (stopper.should_stop or epoch == config.num_epochs)
    if (improved or finished or stop.received or
        epoch % config.checkpoint_every_epochs == 0):
      meta = {'epoch': epoch, 'early_stopping': stopper.state_dict(),
              'finished': bool(finished), 'class_names': programs.class_names,
              'channel_mean': programs.mean.tolist()}
      checkpointing.save(manager, epoch, state, meta, row['val_loss'])
    workdir_lib.write_history(workdir, history)
    step = epoch * steps_per_epoch
    report = progress(step)
    writer.write_scalars(step, {k: v for k, v in row.items() if k != 'epoch'})
    print(f'epoch {epoch:3d}  train loss {row["train_loss"]:.4f} '
          f'top1 {row["train_top1"]:.4f}  val loss {row["val_loss"]:.4f} '
          f'top1 {row["val_top1"]:.4f}  {row["epoch_seconds"]:.2f}s  '
          f'{report["steps_per_sec"]:.1f} steps/s  ETA '
          f'{metric_logging.format_duration(report["eta_seconds"])}'
          + ('  *best*' if improved else ''), flush=True)
    if stop.received:
      manager.wait_until_finished()
      raise KeyboardInterrupt(
          f'{stop.received}: checkpoint of epoch {epoch} saved; rerun the '
          f'same command to resume')
    if stopper.should_stop:
      print(f'Early stop after epoch {epoch}: no val_loss improvement for '
            f'{config.patience} epochs (best {stopper.best:.4f} at epoch '
            f'{stopper.best_epoch}).')
      break
  writer.flush()
