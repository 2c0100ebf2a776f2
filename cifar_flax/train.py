"""Training: factories, pure jitted steps, and the `train_and_evaluate` driver."""

import concurrent.futures
import functools
import math
import os
import signal
import threading
import time
from typing import Any

from absl import logging
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
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
from cifar_flax import optimizers
from cifar_flax import sharding
from cifar_flax import workdir as workdir_lib


class TrainingDivergedError(Exception):
  """The loss or the parameters stopped being finite in epoch `epoch`."""

  def __init__(self, message, epoch=None):
    super().__init__(message)
    self.epoch = epoch


class TrainState(train_state.TrainState):
  # flax BatchNorm statistics; an empty dict for models without them.
  batch_stats: Any = flax.core.FrozenDict()


# --- Factories -----------------------------------------------------------------


def create_optimizer(config, steps_per_epoch=None):
  """Adam or RMSProp as Keras computes them, with Keras' hyperparameters (see
  configs/default), or a scheduled optimizer of cifar_flax/optimizers.py,
  which needs the number of steps per epoch."""
  if config.optimizer in optimizers.OPTIMIZERS:
    if steps_per_epoch is None:
      raise ValueError(f'config.optimizer={config.optimizer!r} needs '
                       f'steps_per_epoch for its schedule')
    return optimizers.create(config, steps_per_epoch)
  if config.optimizer == 'adam':
    return optimizers.adam(config)
  if config.optimizer == 'rmsprop':
    # Keras RMSprop (tf.keras 2 and Keras 3): lr * g / sqrt(ms + eps), no
    # momentum, no centering. Standalone Keras 2 added eps to sqrt(ms).
    return optax.rmsprop(config.learning_rate, decay=config.rmsprop_decay,
                         eps=config.epsilon)
  raise ValueError(f'config.optimizer={config.optimizer!r}: expected '
                   f"'adam', 'rmsprop' or one of {optimizers.OPTIMIZERS}")


def create_train_state(config, model, rng, image_shape=data_lib.IMAGE_SHAPE,
                       steps_per_epoch=None):
  variables = model.init({'params': rng, 'dropout': rng},
                         jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                         train=False)
  return TrainState.create(
      apply_fn=model.apply, params=variables['params'],
      batch_stats=variables.get('batch_stats', flax.core.FrozenDict()),
      tx=create_optimizer(config, steps_per_epoch))


def state_initializer(config, model, steps_per_epoch, mesh):
  """key -> a new train state, placed replicated on `mesh`, as one jitted
  program: run op by op, the init compiles hundreds of small programs (cnn9
  on the 2-core CPU: 4.8 s against 3.0 s; the same values)."""
  return jax.jit(functools.partial(create_train_state, config, model,
                                   steps_per_epoch=steps_per_epoch),
                 out_shardings=sharding.replicated(mesh))


def abstract_train_state(config, num_classes):
  """Shapes and dtypes of a train state, for restoring without computing."""
  model = models.create_model(config, num_classes)
  # Schedules change values, not shapes: any steps_per_epoch will do.
  return jax.eval_shape(
      functools.partial(create_train_state, config, model,
                        steps_per_epoch=1),
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


def eval_step(state, batch, rng=None, *, mean, aug_config):
  """Metrics of a clean (centred, not augmented) batch; with `rng`, of the
  batch augmented as in training (the paper's validation)."""
  x = (augment.preprocess(batch['image'], mean, aug_config) if rng is None
       else augment.augment_batch(rng, batch['image'], mean, aug_config))
  logits = state.apply_fn(_variables(state, state.params), x, train=False)
  return metrics_lib.batch_metrics(logits, batch['label'], batch['mask'])


def predict_logits(state, images, mean, aug_config):
  x = augment.preprocess(images, mean, aug_config)
  return state.apply_fn(_variables(state, state.params), x, train=False)


# --- Helpers of the driver -------------------------------------------------------


def _apply_xla_flags(flags):
  """Appends `flags` to XLA_FLAGS, which XLA reads when JAX starts a backend."""
  current = os.environ.get('XLA_FLAGS', '')
  if not flags or flags in current:
    return
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized():
    raise config_checks.ConfigError(
        f'config.xla_flags: {flags!r} came after JAX started its backend; '
        f'set them in the XLA_FLAGS environment variable instead')
  os.environ['XLA_FLAGS'] = f'{current} {flags}'.strip()


def setup_jax(config):
  """Process-wide JAX settings of a run: XLA flags, PRNG and compilation
  cache."""
  _apply_xla_flags(config.get('xla_flags', ''))
  jax.config.update('jax_default_prng_impl', config.prng_impl)
  if config.compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir',
                      os.path.expanduser(config.compilation_cache_dir))
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
                                           batch_sharding, config.scan_unroll)
    self.eval_pass = loop.make_eval_pass(evaluate, config.eval_batch_size,
                                         form, batch_sharding)
    put = lambda s: sharding.replicate((s.images, s.labels), mesh)
    self.train_data = put(dataset.train)
    self.val_data = put(dataset.validation)
    self.form = form
    self.class_names = list(dataset.class_names)
    self.augment_validation = config.augment_validation

  def val_args(self, seed, epoch):
    """The validation pass's arguments after the state: the data, and with
    config.augment_validation the key of the seed's epoch (as a resumed run
    draws it again)."""
    if not self.augment_validation:
      return self.val_data
    return (*self.val_data, _validation_key(seed, epoch))

  def validate(self, state, seed, epoch):
    """Validation metrics of `state` after `epoch` (on device)."""
    return self.eval_pass(state, *self.val_args(seed, epoch))

  def compile(self, state, rng):
    """Compiles the scanned passes ahead of time, both at once (XLA releases
    the GIL while it compiles); `state` may be abstract (shapes, dtypes and
    shardings). Returns the seconds taken (None in step form, where the first
    step compiles)."""
    if self.form != 'scan':
      return None
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      train_pass = pool.submit(lambda: self.train_pass.lower(
          state, *self.train_data, rng).compile())
      eval_pass = pool.submit(
          lambda: self.eval_pass.lower(state, *self.val_args(0, 1)).compile())
      self.train_pass, self.eval_pass = train_pass.result(), eval_pass.result()
    return time.perf_counter() - t0


def checkpoint_meta(epoch, stopper, finished, programs, history):
  """What a checkpoint carries besides the state: enough to resume exactly
  (early stopping, the history up to its epoch) and to predict without the
  dataset (class names, channel mean)."""
  return {'epoch': epoch, 'early_stopping': stopper.state_dict(),
          'finished': bool(finished), 'class_names': programs.class_names,
          'channel_mean': programs.mean.tolist(), 'history': list(history)}


def _epoch_key(seed, epoch):
  """Per-epoch key: a resumed run draws the same order and augmentation."""
  return jax.random.fold_in(jax.random.key(seed), epoch)


def _validation_key(seed, epoch):
  """The key of an epoch's augmented validation pass, apart from its
  training keys: the training pass splits the epoch key in two, and jax's
  threefry makes fold_in(k, i) equal split(k, n)[i], so index 1, used
  before, gave validation batch i the key of training step i."""
  return jax.random.fold_in(_epoch_key(seed, epoch), 2)


def _scalars(prefix, m):
  return {f'{prefix}_{k}': float(v) for k, v in m.compute().items()}


@jax.jit
def params_finite(params):
  """One device boolean: every parameter is finite."""
  return jnp.all(jnp.stack([jnp.isfinite(p).all()
                            for p in jax.tree.leaves(params)]))


def _check_finite(epoch, row, state, best_epoch, finite=None):
  """Raises before a diverged epoch reaches the history or a checkpoint.
  `finite`: params_finite(state.params), if already computed."""
  bad = [k for k in ('train_loss', 'val_loss') if not math.isfinite(row[k])]
  if not bad:
    if finite is None:
      finite = params_finite(state.params)
    if not bool(finite):
      bad = ['parameters']
  if not bad:
    return
  if best_epoch:
    kept = (f'The best checkpoint (epoch {best_epoch}) and the history of '
            f'epochs 1-{epoch - 1} are intact: evaluate them with '
            f'--mode=eval, or continue from the latest checkpoint with a lower '
            f'--config.learning_rate and --config.allow_config_change=True')
  else:
    kept = ('No checkpoint was saved (no epoch ended with finite values): '
            'start again with a lower --config.learning_rate, in a new '
            '--workdir or in this one with --config.allow_config_change=True')
  raise TrainingDivergedError(
      f'epoch {epoch}: {" and ".join(bad)} not finite (train_loss='
      f'{row["train_loss"]}, val_loss={row["val_loss"]}); training stopped. '
      f'{kept}', epoch)


class StopSignal:
  """SIGTERM/SIGINT as a flag that training reads at safe points: after
  reading the data, after compiling, after each epoch (whose checkpoint is
  saved first) and at the end. Raising KeyboardInterrupt from the handler
  instead could land inside an XLA compile (a crash at exit), inside a
  garbage-collection callback (where Python drops it) or inside the last
  checkpoint's save. A second signal raises at once, keeping what was saved.
  A nested block shares the outermost one: cli.run installs one around the
  training modes, so a signal anywhere in them is seen."""
  _active = None

  def __init__(self):
    self.received = None
    self._outer = None

  def __enter__(self):
    if StopSignal._active is not None:
      self._outer = StopSignal._active
      return self._outer
    self._old = {}
    if threading.current_thread() is threading.main_thread():  # Else none.
      self._old = {s: signal.signal(s, self._handle)
                   for s in (signal.SIGTERM, signal.SIGINT)}
      StopSignal._active = self
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received is not None:  # A second signal: stop now.
      raise KeyboardInterrupt
    self.received = signal.Signals(signum).name
    logging.warning('%s received: stopping at the next safe point (after the '
                    'epoch in progress, saved); a second signal stops at '
                    'once, keeping what was saved', self.received)

  def __exit__(self, *exc):
    if self._outer is not None:
      return
    for s, h in self._old.items():
      signal.signal(s, h)
    if self._old:
      StopSignal._active = None

  def check(self, what):
    """Raises KeyboardInterrupt('<signal>: `what`') if a signal came."""
    if self.received:
      raise KeyboardInterrupt(f'{self.received}: {what}')


# --- The driver ------------------------------------------------------------------


def prepare_run(config, clock=None):
  """What every training mode does before its first step: checks the config,
  sets up JAX, loads the data and checks the device mesh against both.
  Returns (dataset, mesh). `clock`: a _PhaseClock to lap, if any."""
  config_checks.validate(config)
  setup_jax(config)
  # JAX starts its backend (on a GPU: CUDA and the device; the client is made
  # without the GIL) while the host reads the data.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    devices = pool.submit(jax.devices)
    dataset = data_lib.load_dataset(config)
    if clock:
      clock.lap('reading data')
    mesh = sharding.data_mesh(devices.result())
  if clock:
    clock.lap('JAX backend (after reading)')
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  config_checks.validate_against_data(config, dataset)
  return dataset, mesh


BEFORE_TRAINING = ('stopped before this attempt trained an epoch; saved '
                   'checkpoints are kept; rerun the same command to resume')


def train_and_evaluate(config, workdir):
  """Trains (or resumes) the run in `workdir`, then evaluates its best
  checkpoint on the test set. Returns the evaluation dict. SIGTERM/SIGINT
  stop it at the next safe point (StopSignal); one that comes once the last
  epoch has begun lets the run finish and be evaluated, then stops (a sweep
  stops there)."""
  with StopSignal() as stop:
    result = _train_and_evaluate(config, workdir, stop)
    stop.check(f'the run is finished, saved and evaluated '
               f'({os.path.join(workdir, workdir_lib.EVAL_FILE)})')
  return result


def _train_and_evaluate(config, workdir, stop):
  if workdir_lib.is_results_copy(workdir):  # Training would overwrite it.
    raise workdir_lib.WorkdirError(
        f'{workdir!r} holds a finished run\'s {workdir_lib.EVAL_FILE} and '
        f'{workdir_lib.HISTORY_FILE} without its checkpoints (a copy, as '
        f'results/ keeps them): nothing to train or resume there; use another '
        f'--workdir')
  clock = _PhaseClock()
  dataset, mesh = prepare_run(config, clock)
  stop.check(BEFORE_TRAINING)
  # Only a valid config creates (or touches) the workdir.
  changed = workdir_lib.prepare(
      workdir, config, ignore_keys=config_checks.RESUMABLE_KEYS,
      allow_change=config.get('allow_config_change', False))

  model = models.create_model(config, dataset.num_classes)
  init = state_initializer(
      config, model, loop.num_batches(len(dataset.train), config.batch_size),
      mesh)
  key = jax.random.key(config.seed)
  abstract_state = init.eval_shape(key)  # Shapes, dtypes and shardings.
  manager = checkpointing.create_manager(workdir)
  try:
    # A resumed run restores into the abstract state, never computing init.
    state, stopper, history, first_epoch = _resume(config, workdir, manager,
                                                   abstract_state)
  except BaseException:
    manager.close()
    raise
  if changed and change_matters(manager, first_epoch):
    workdir_lib.record_config_change(workdir, config, changed)
  if first_epoch is None:  # Finished.
    best = manager.best_step()
    manager.close()
    return _finished_result(config, workdir, dataset, best,
                            stopper.should_stop, len(history))
  writer = None
  try:
    programs = Programs(config, dataset, mesh)
    clock.lap('workdir and data on device')
    # The passes compile while a fresh run initialises its state.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      compiling = pool.submit(programs.compile, abstract_state,
                              _epoch_key(config.seed, first_epoch))
      restored = first_epoch > 1
      state = sharding.replicate(state, mesh) if restored else init(key)
      compile_s = compiling.result()
    clock.lap('compile (and init)')
    stop.check(BEFORE_TRAINING)
    logging.info('compile: %s s (%s form, %d device(s))', compile_s,
                 programs.form, mesh.devices.size)
    writer = metric_logging.MetricWriter(workdir if jax.process_index() == 0
                                         else None)
    _train_epochs(config, workdir, programs, manager, writer, state,
                  stopper, history, first_epoch, stop, clock)
  finally:  # The last checkpoint's save completes, a signal or not.
    manager.wait_until_finished()
    manager.close()
    if writer is not None:
      writer.close()
  clock.lap('checkpoints and logs')
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  result = evaluate.evaluate(config, workdir, dataset=dataset)
  clock.lap('test evaluation')
  print(f'time after start-up imports: {clock.summary()}')
  return result


class _PhaseClock:
  """Wall seconds per phase of a run, for the closing 'time' line. A lap can
  say what the host did `during` it while the device worked on the phase
  (writing checkpoints while the next epoch runs): (what, seconds, whether
  the device had finished before the host). The host's seconds are reported
  inside that phase, never added to the total twice."""

  def __init__(self):
    self.seconds = {}
    self.during = {}
    self._t = time.perf_counter()

  def lap(self, phase, during=None):
    now = time.perf_counter()
    self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._t
    self._t = now
    if during:
      name, seconds, waited = during
      laps = self.during.setdefault(phase, {}).setdefault(name, [0.0, 0, 0])
      laps[0] += seconds
      laps[1] += 1
      laps[2] += bool(waited)

  def summary(self):
    total = sum(self.seconds.values())
    def phase(k, v):
      inner = ''.join(
          f' (of which the host wrote {name} for {s:.1f} s while the device '
          f'ran the next epoch; the device finished first and waited {w} of '
          f'{n} times)' for name, (s, n, w) in self.during.get(k, {}).items())
      return f'{k} {v:.1f} s{inner}'
    return ', '.join(phase(k, v) for k, v in self.seconds.items()) + (
        f'; total {total:.1f} s')


def _resume(config, workdir, manager, state):
  """(state, early stopping, history, first epoch to run or None if done)."""
  stopper = early_stopping_lib.EarlyStopping(config.patience)
  step = manager.latest_step()
  if step is None:
    return state, stopper, [], 1
  try:
    state, meta = checkpointing.restore(manager, step, state)
  except ValueError as e:  # A changed model or optimizer.
    raise workdir_lib.checkpoint_mismatch(
        workdir, config, step, e, 'a run cannot change its model or '
        'optimizer; use another --workdir',
        config_checks.RESUMABLE_KEYS) from e
  stopper = _resumed_stopper(meta, config)
  # The checkpoint's own history: history.json may be ahead of it (killed
  # before the save committed) or behind (killed before it was written).
  on_disk = workdir_lib.read_history(workdir, rewritten='history' in meta)
  history = meta.get('history', on_disk[:meta['epoch']])
  if on_disk != history:
    workdir_lib.write_history(workdir, history)
  if is_finished(meta, config):
    return state, stopper, history, None
  logging.info('resuming %s after epoch %d', workdir, meta['epoch'])
  print(f'Resuming from the checkpoint of epoch {meta["epoch"]}.')
  return state, stopper, history, meta['epoch'] + 1


def _resumed_stopper(meta, config):
  stopper = early_stopping_lib.EarlyStopping.from_state_dict(
      meta['early_stopping'])
  stopper.patience = config.patience  # Differs only if allow_config_change.
  return stopper


def is_finished(meta, config):
  """Whether the run whose latest checkpoint carries `meta` has no epoch left
  under `config`, whose num_epochs and patience may differ from those it was
  saved under (allow_config_change), so meta['finished'] alone cannot say."""
  return (_resumed_stopper(meta, config).should_stop or
          meta['epoch'] >= config.num_epochs)


def change_matters(manager, first_epoch):
  """Whether an allowed config change is recorded: the run trains on under
  it, or the change itself (a lower num_epochs or patience) ends a run that
  had not finished. A run finished before is left as it was."""
  if first_epoch is not None:
    return True
  return not checkpointing.restore_meta(manager,
                                        manager.latest_step()).get('finished')


def _finished_result(config, workdir, dataset, best_step, stopped_early,
                     epochs):
  """A finished run's eval.json, untouched; evaluated only if missing or
  older than the best checkpoint (killed before the evaluation ended)."""
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  result = workdir_lib.read_json(os.path.join(workdir, workdir_lib.EVAL_FILE),
                                 rewritten=True)
  if result is None or result.get('checkpoint_epoch') != best_step:
    print(f'{workdir}: training has already finished; evaluating its best '
          f'checkpoint.')
    result = evaluate.evaluate(config, workdir, dataset=dataset)
    if 'config_differs' in result:  # Missing or stale, and still so.
      print(f'{workdir}: its own {workdir_lib.EVAL_FILE} is still to be '
            f'written: python main.py --config={workdir} --workdir={workdir} '
            f'--mode=eval')
    return result
  print(f'{workdir}: this run has already finished; nothing changed. Test '
        f'top-1 {result["test_top1"]:.4f}, top-5 {result["test_top5"]:.4f}, '
        f'loss {result["test_loss"]:.4f} (best checkpoint, epoch '
        f'{best_step}; {workdir_lib.EVAL_FILE}). Evaluate again with '
        f'--mode=eval; train on with a higher '
        f'--config.{"patience" if stopped_early else "num_epochs"} and '
        f'--config.allow_config_change=True ('
        + (f'it stopped early after epoch {epochs}, no val_loss improvement '
           f'for {config.patience} epochs).' if stopped_early else
           f'all {epochs} epochs are trained).'))
  return result


def record_epoch(config, workdir, manager, writer, programs, state, stopper,
                 history, epoch, train_m, val_m, seconds, steps_per_epoch,
                 force_save=False):
  """One finished epoch's bookkeeping, for single and multi-seed runs alike:
  refuses a diverged epoch, updates early stopping and the history, saves a
  checkpoint when due (new best, last epoch, every checkpoint_every_epochs,
  or `force_save`), writes history.json and the TensorBoard scalars.
  Returns (row, improved, finished)."""
  row, improved, finished = judge_epoch(config, state, stopper, history, epoch,
                                        train_m, val_m, seconds)
  save_epoch(config, workdir, manager, writer, programs, state, stopper,
             history, row, improved, finished, steps_per_epoch, force_save)
  return row, improved, finished


def judge_epoch(config, state, stopper, history, epoch, train_m, val_m,
                seconds, finite=None):
  """The host-only half of record_epoch: refuses a diverged epoch, updates
  early stopping and appends the epoch's row to `history`.
  Returns (row, improved, finished)."""
  row = {'epoch': epoch, **_scalars('train', train_m),
         **_scalars('val', val_m), 'epoch_seconds': seconds}
  _check_finite(epoch, row, state, stopper.best_epoch, finite)
  improved = stopper.update(epoch, row['val_loss'])
  history.append(row)
  finished = stopper.should_stop or epoch == config.num_epochs
  return row, improved, finished


def checkpoint_due(config, epoch, improved, finished, force_save=False):
  return bool(improved or finished or force_save or
              epoch % config.checkpoint_every_epochs == 0)


def copy_to_host_ahead(state):
  """`state` as arrays in pinned host memory (where orbax copies arrays to
  save them), the copies started now. Made before the next epoch is launched,
  they are ordered ahead of it; orbax's own copy, made after the launch, may
  wait for that epoch (config.checkpoint_copy_ahead). A device without pinned
  host memory gets `state` back."""
  leaves = [a for a in jax.tree.leaves(state) if isinstance(a, jax.Array)]
  if not leaves or not all(
      'pinned_host' in {m.kind for m in d.addressable_memories()}
      for d in leaves[0].sharding.addressable_devices):
    return state
  return jax.tree.map(
      lambda a: jax.device_put(a, a.sharding.with_memory_kind('pinned_host'))
      if isinstance(a, jax.Array) else a, state)


def save_epoch(config, workdir, manager, writer, programs, state, stopper,
               history, row, improved, finished, steps_per_epoch,
               force_save=False):
  """The writing half of record_epoch: checkpoint when due, history.json,
  TensorBoard scalars."""
  epoch = row['epoch']
  if checkpoint_due(config, epoch, improved, finished, force_save):
    checkpointing.save(manager, epoch, state,
                       checkpoint_meta(epoch, stopper, finished, programs,
                                       history), row['val_loss'])
  workdir_lib.write_history(workdir, history)
  if writer is not None:
    writer.write_scalars(epoch * steps_per_epoch,
                         {k: v for k, v in row.items() if k != 'epoch'})


# Loop forms whose next epoch is launched before the host writes the last
# one's checkpoint and logs. Not 'step': there launching dispatches every step
# from Python, so launching early would only delay the writing.
LAUNCH_AHEAD_FORMS = ('scan',)


def _train_epochs(config, workdir, programs, manager, writer, state, stopper,
                  history, first_epoch, stop, clock):
  """The epoch loop. In scan form the next epoch is launched as soon as this
  one's metrics are judged (early stopping decided, finiteness checked),
  before its checkpoint and logs are written, so the device does not wait
  for the host's writing; only what was judged is ever saved."""
  steps_per_epoch = loop.num_batches(len(programs.train_data[1]),
                                     config.batch_size)
  progress = metric_logging.ProgressReporter(
      config.num_epochs * steps_per_epoch, (first_epoch - 1) * steps_per_epoch)
  ahead = programs.form in LAUNCH_AHEAD_FORMS

  def launch(state, epoch):
    t0 = time.perf_counter()
    state, train_m = programs.train_pass(state, *programs.train_data,
                                         _epoch_key(config.seed, epoch))
    val_m = programs.validate(state, config.seed, epoch)
    return state, train_m, val_m, params_finite(state.params), t0

  pending = launch(state, first_epoch)
  for epoch in range(first_epoch, config.num_epochs + 1):
    state, train_m, val_m, finite, launched = pending
    # On the host: what the judging reads, so the device stays free.
    train_m, val_m, finite = jax.device_get((train_m, val_m, finite))
    seconds = time.perf_counter() - launched
    clock.lap('epochs (train and validation)')
    row, improved, finished = judge_epoch(config, state, stopper, history,
                                          epoch, train_m, val_m, seconds,
                                          finite)
    stopping = stop.received  # A signal from now on stops after the next epoch.
    pending = None
    saved = state
    if ahead and not (finished or stopping):
      if (config.get('checkpoint_copy_ahead', False) and
          checkpoint_due(config, epoch, improved, finished)):
        saved = copy_to_host_ahead(state)
      pending = launch(state, epoch + 1)
    writing = time.perf_counter()
    save_epoch(config, workdir, manager, writer, programs, saved, stopper,
               history, row, improved, finished, steps_per_epoch,
               force_save=stopping)
    report = progress(epoch * steps_per_epoch)
    print(f'epoch {epoch:3d}  train loss {row["train_loss"]:.4f} '
          f'top1 {row["train_top1"]:.4f}  val loss {row["val_loss"]:.4f} '
          f'top1 {row["val_top1"]:.4f}  {row["epoch_seconds"]:.2f}s  '
          f'{report["steps_per_sec"]:.1f} steps/s  ETA '
          f'{metric_logging.format_duration(report["eta_seconds"])}'
          + ('  *best*' if improved else ''), flush=True)
    if pending is None:
      clock.lap('checkpoints and logs')
    else:  # The device ran the next epoch meanwhile: its time, not the host's,
      # unless it finished first and waited (counted, as the host can't tell
      # when it finished).
      waited = all(a.is_ready() for a in jax.tree.leaves(pending[2:4]))
      clock.lap('epochs (train and validation)',
                during=('checkpoints and logs',
                        time.perf_counter() - writing, waited))
    if stopping and not finished:
      manager.wait_until_finished()
      raise KeyboardInterrupt(
          f'{stopping}: checkpoint of epoch {epoch} saved; rerun the '
          f'same command to resume')
    if stopper.should_stop:
      print(f'Early stop after epoch {epoch}: no val_loss improvement for '
            f'{config.patience} epochs (best {stopper.best:.4f} at epoch '
            f'{stopper.best_epoch}).')
      break
    if pending is None and not finished:
      pending = launch(state, epoch + 1)
  writer.flush()
