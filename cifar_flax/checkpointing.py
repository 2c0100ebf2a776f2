"""orbax checkpoints under WORKDIR/checkpoints: the best (lowest validation
loss) and the latest, each with the run's bookkeeping (epoch, early stopping)
so a run can resume exactly."""

import logging
import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from cifar_flax import workdir as workdir_lib

METRIC = 'val_loss'


class NoCheckpointError(Exception):
  """The workdir holds no checkpoint to restore."""


class _NoReadOnlyNotice(logging.Filter):
  """Drops orbax's warning that a read-only manager's directory is read-only,
  which every evaluation would print."""

  def filter(self, record):
    return not str(record.msg).startswith('Given directory is read only')


logging.getLogger('absl').addFilter(_NoReadOnlyNotice())


def _rank(metrics):
  """Orders checkpoints as early stopping does: by validation loss, and
  among equal losses the earlier epoch first, since only a strictly lower
  loss improves (orbax alone would keep the later of two equal ones).
  Checkpoints saved before 'epoch' was recorded rank as epoch 0."""
  return metrics[METRIC], metrics.get('epoch', 0)


def create_manager(workdir, read_only=False):
  """Keeps the best checkpoint by validation loss AND the latest one."""
  options = ocp.CheckpointManagerOptions(
      best_fn=_rank, best_mode='min', read_only=read_only,
      create=not read_only,
      save_interval_steps=0 if read_only else 1,  # 1: orbax's default.
      # Deletes what a save killed midway left (<step>.orbax-checkpoint-tmp-*);
      # complete checkpoints are renamed into place, so they are never partial.
      cleanup_tmp_directories=not read_only,
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(1),
          policies.BestN(get_metric_fn=_rank, reverse=True, n=1)]))
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)),
      options=options, item_names=('state', 'meta'))


def save(manager, epoch, state, meta, val_loss):
  manager.save(epoch, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
               metrics={METRIC: float(val_loss), 'epoch': epoch},
               force=True)


def restore(manager, step, abstract_state):
  """(state, meta) of checkpoint `step`, laid out like `abstract_state`."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return out.state, out.meta


def restore_meta(manager, step):
  """The bookkeeping JSON of checkpoint `step`, without its arrays."""
  return manager.restore(step, args=ocp.args.Composite(
      meta=ocp.args.JsonRestore())).meta


def best_step(manager, workdir):
  step = manager.best_step()
  if step is None:
    raise NoCheckpointError(
        f'no checkpoint in {os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)}'
        ': train first (python main.py --config=... --workdir=...)')
  return step
