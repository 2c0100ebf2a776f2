"""k seeds of one config trained together, in one jitted program per epoch.

The single-run train pass (loop.make_train_pass over train.train_step) is
vmapped over stacked train states and per-seed epoch keys. (For cnn9 on an
H200 this is slower than seeds one after another: the GPU is not
launch-bound at batch 64, and vmapped convolutions become grouped ones;
README.) Each seed draws the data order, augmentation
and dropout of its single run (train._epoch_key(seed, epoch)), keeps its own
early stopping, and writes an ordinary single-run workdir (config.json,
history.json, best and latest checkpoints, eval.json), so --mode=eval and the
reports read each seed unchanged. A seed that has stopped stops changing: its
slot is still computed but `jnp.where(active, new, old)` keeps the old state.
Seeds may resume from different epochs; validation runs per seed, unvmapped.
"""

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp

from cifar_flax import checkpointing
from cifar_flax import config_checks
from cifar_flax import early_stopping as early_stopping_lib
from cifar_flax import evaluate as evaluate_lib
from cifar_flax import loop
from cifar_flax import metric_logging
from cifar_flax import metrics as metrics_lib
from cifar_flax import models
from cifar_flax import sharding
from cifar_flax import train
from cifar_flax import workdir as workdir_lib

DIVERGED_FILE = 'diverged.json'


# --- Stacked trees ------------------------------------------------------------


# Each is one jitted program: op by op, every leaf's shape compiled its own
# stack, or its own slice and squeeze.
@jax.jit
def stack(trees):
  """One tree with a leading seed axis from a list of equally shaped trees."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@jax.jit
def take(tree, i):
  """Seed `i`'s tree from a stacked one."""
  return jax.tree.map(lambda x: x[i], tree)


def keep_active(active, new, old):
  """`new` for seeds whose `active` is True, `old` for the others."""
  def pick(n, o):
    return jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
  return jax.tree.map(pick, new, old)


# --- The pure pass ------------------------------------------------------------


def make_train_pass(train_step, batch_size, form, sharding_=None):
  """Returns pass(states, images, labels, rngs, active) -> (states, Metrics),
  all stacked over seeds; seeds whose `active` is False come back unchanged.

  Seed i's slot computes exactly loop.make_train_pass's pass of rngs[i].
  """
  single = loop.make_train_pass(train_step, batch_size, form, sharding_)
  if form == 'scan':
    @jax.jit
    def scan_pass(states, images, labels, rngs, active):
      new, m = jax.vmap(single, in_axes=(0, None, None, 0))(
          states, images, labels, rngs)
      return keep_active(active, new, states), m
    return scan_pass

  plan = jax.jit(jax.vmap(single.plan, in_axes=(None, 0)))
  one_step = jax.jit(jax.vmap(single.one_step,
                              in_axes=(0, 0, None, None, 0, None),
                              out_axes=(0, 0, None)))
  keep = jax.jit(keep_active)

  def step_pass(states, images, labels, rngs, active):
    xs = plan(images, rngs)
    k = len(active)
    acc = jax.tree.map(lambda x: jnp.broadcast_to(x, (k,) + x.shape),
                       metrics_lib.Metrics.empty())
    counter = jnp.zeros((), jnp.int32)  # It stays on device.
    if sharding_ is not None:  # Placed like one_step's outputs: one compile.
      acc, counter = jax.device_put((acc, counter), jax.sharding.NamedSharding(
          sharding_.mesh, jax.sharding.PartitionSpec()))
    new, acc, _ = loop.run_steps(
        lambda c: one_step(c[0], c[1], images, labels, xs, c[2]),
        (states, acc, counter), loop.num_batches(images.shape[0], batch_size))
    return keep(active, new, states), acc
  step_pass.one_step = one_step
  return step_pass


# --- The driver ---------------------------------------------------------------


@dataclasses.dataclass
class _Run:
  """One seed's bookkeeping: its workdir, early stopping and history."""
  seed: int
  workdir: str
  config: Any
  manager: Any
  stopper: early_stopping_lib.EarlyStopping
  history: list
  epoch: int  # The last finished epoch.
  active: bool
  writer: Any = None


def seed_config(config, seed):
  c = config.copy_and_resolve_references()
  c.seed = seed
  return c


def _diverged(workdir):
  return os.path.exists(os.path.join(workdir, DIVERGED_FILE))


def record_divergence(seed, workdir, epoch, error):
  """Marks the seed in `workdir` as diverged: a sweep skips it and the table
  counts it apart."""
  print(f'seed {seed}: {error}', flush=True)
  workdir_lib.write_json(os.path.join(workdir, DIVERGED_FILE),
                         {'epoch': epoch, 'message': str(error)})


def is_done(workdir, config):
  """True once the seed in `workdir` has diverged, or finished under `config`
  (its row's config, as the sweep runs it) and has eval.json: a sweep skips
  it. A workdir with eval.json and no checkpoints directory is a copy of a
  finished run's JSON files (as kept under results/ to carry measured rows
  from one machine to the next): done."""
  if _diverged(workdir):
    return True
  if not os.path.exists(os.path.join(workdir, workdir_lib.EVAL_FILE)):
    return False
  if workdir_lib.is_results_copy(workdir):
    return True
  manager = checkpointing.create_manager(workdir, read_only=True)
  try:
    step = manager.latest_step()
    if step is None:
      return False
    return train.is_finished(checkpointing.restore_meta(manager, step), config)
  finally:
    manager.close()


def check_group(config, num_seeds):
  """Seeds train together only where jax.vmap draws each seed's random
  numbers as that seed alone would: not with the rbg PRNGs."""
  if num_seeds > 1 and config.prng_impl != 'threefry2x32':
    raise config_checks.ConfigError(
        f'config.prng_impl={config.prng_impl!r} draws other numbers under '
        f'jax.vmap, so seeds trained together would not equal the same seeds '
        f'trained alone: use threefry2x32, or one seed at a time '
        f'(seeds_per_group=1)')


def train_and_evaluate(config, workdirs):
  """Trains (or resumes) the seeds {seed: workdir} of `config` together,
  then evaluates each one's best checkpoint; returns {seed: eval dict}
  (seeds that diverged are left out and have diverged.json). Signals as in
  train.train_and_evaluate."""
  with train.StopSignal() as stop:
    results = _train_and_evaluate(config, workdirs, stop)
    stop.check('the seeds are finished, saved and evaluated')
  return results


def _train_and_evaluate(config, workdirs, stop):
  check_group(config, len(workdirs))
  dataset, mesh = train.prepare_run(config)
  seeds = list(workdirs)
  configs = {s: seed_config(config, s) for s in seeds}
  changed = {s: workdir_lib.prepare(
      workdirs[s], configs[s], ignore_keys=config_checks.RESUMABLE_KEYS,
      allow_change=config.get('allow_config_change', False)) for s in seeds}

  model = models.create_model(config, dataset.num_classes)
  steps = loop.num_batches(len(dataset.train), config.batch_size)
  init = jax.jit(jax.vmap(lambda s: train.create_train_state(
      config, model, jax.random.key(s), steps_per_epoch=steps)))
  fresh = init(jnp.asarray(seeds))
  runs, states = [], []
  finished = {}  # Seeds done before this call: {seed: best epoch}.
  for i, s in enumerate(seeds):
    manager = checkpointing.create_manager(workdirs[s])
    state, stopper, history, first = train._resume(  # pylint: disable=protected-access
        configs[s], workdirs[s], manager, take(fresh, i))
    diverged = _diverged(workdirs[s])
    if first is None and not diverged:
      finished[s] = manager.best_step()
    if changed[s] and train.change_matters(manager, first):  # As train does.
      workdir_lib.record_config_change(workdirs[s], configs[s], changed[s])
    runs.append(_Run(s, workdirs[s], configs[s], manager, stopper, history,
                     len(history) if first is None else first - 1,
                     first is not None and not diverged))
    states.append(state)
  try:
    stop.check(train.BEFORE_TRAINING)
    if any(r.active for r in runs):
      _train(config, dataset, mesh, runs, stack(states), stop)
  finally:
    for r in runs:
      r.manager.wait_until_finished()
      r.manager.close()
      if r.writer is not None:
        r.writer.close()
  # A seed finished before keeps its eval.json, as a finished single run.
  return {r.seed: (train._finished_result(  # pylint: disable=protected-access
      r.config, r.workdir, dataset, finished[r.seed], r.stopper.should_stop,
      len(r.history)) if r.seed in finished
                   else evaluate_lib.evaluate(r.config, r.workdir,
                                              dataset=dataset))
          for r in runs if not _diverged(r.workdir)}


def _train(config, dataset, mesh, runs, states, stop):
  states = sharding.replicate(states, mesh)
  programs = train.Programs(config, dataset, mesh)
  train_pass = make_train_pass(programs.train_step, config.batch_size,
                               programs.form, sharding.batch_sharded(mesh))
  epoch_keys = jax.jit(jax.vmap(train._epoch_key))  # pylint: disable=protected-access
  seeds = jnp.asarray([r.seed for r in runs])
  steps_per_epoch = loop.num_batches(len(programs.train_data[1]),
                                     config.batch_size)
  if programs.form == 'scan':  # Compile ahead, as train.Programs.compile.
    t0 = time.perf_counter()
    train_pass = train_pass.lower(
        states, *programs.train_data, epoch_keys(seeds, seeds),
        jnp.ones(len(runs), bool)).compile()
    programs.eval_pass = programs.eval_pass.lower(
        take(states, 0), *programs.val_args(runs[0].seed, 1)).compile()
    what = f'{len(runs)} seeds together' if len(runs) > 1 else 'one seed'
    print(f'compiled {what} in '
          f'{time.perf_counter() - t0:.1f} s', flush=True)
  for r in runs:
    if r.active and jax.process_index() == 0:
      r.writer = metric_logging.MetricWriter(r.workdir)
  stop.check(train.BEFORE_TRAINING)  # After compiling.
  while any(r.active for r in runs):
    t0 = time.perf_counter()
    active = jnp.asarray([r.active for r in runs])
    rngs = epoch_keys(seeds, jnp.asarray([r.epoch + 1 for r in runs]))
    states, train_m = train_pass(states, *programs.train_data, rngs, active)
    val = {i: programs.validate(take(states, i), r.seed, r.epoch + 1)
           for i, r in enumerate(runs) if r.active}
    jax.block_until_ready(val)
    seconds = time.perf_counter() - t0
    stopping = stop.received  # Read once: every seed saves, then we stop.
    for i, val_m in val.items():
      _end_epoch(config, runs[i], programs, take(states, i),
                 take(train_m, i), val_m, seconds, stopping, steps_per_epoch)
    if stopping:
      raise KeyboardInterrupt(
          f'{stopping}: checkpoints of every seed saved; rerun the '
          f'same command to resume')


def _end_epoch(config, run, programs, state, train_m, val_m, seconds, stopping,
               steps_per_epoch):
  """One seed's epoch bookkeeping (train.record_epoch), then its progress
  line; `stopping` (a signal's name) forces a checkpoint."""
  run.epoch += 1
  epoch = run.epoch
  try:
    row, improved, finished = train.record_epoch(
        config, run.workdir, run.manager, run.writer, programs, state,
        run.stopper, run.history, epoch, train_m, val_m, seconds,
        steps_per_epoch, force_save=bool(stopping))
  except train.TrainingDivergedError as e:
    record_divergence(run.seed, run.workdir, epoch, e)
    run.active = False
    return
  print(f'seed {run.seed} epoch {epoch:3d}  train loss {row["train_loss"]:.4f}'
        f' top1 {row["train_top1"]:.4f}  val loss {row["val_loss"]:.4f} top1 '
        f'{row["val_top1"]:.4f}  {seconds:.2f}s (all seeds)'
        + ('  *best*' if improved else ''), flush=True)
  if run.stopper.should_stop:
    print(f'seed {run.seed}: early stop after epoch {epoch} (best '
          f'{run.stopper.best:.4f} at epoch {run.stopper.best_epoch}).')
  if finished:
    run.active = False
    if run.writer is not None:
      run.writer.flush()
