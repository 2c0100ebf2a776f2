"""orbax checkpoints under WORKDIR/checkpoints: the best (lowest validation
loss) and the latest, each with the run's bookkeeping (epoch, early stopping)
so a run can resume exactly."""

import logging
import os
import sys

import jax
import numpy as np
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
  """(state, meta) of checkpoint `step`, laid out like `abstract_state`.
  A ValueError: the state does not fit `abstract_state`; a WorkdirError:
  the checkpoint is damaged."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  except ValueError as e:
    restore_meta(manager, step)  # Damaged bookkeeping is named here.
    if _damaged_rather_than_unfitting(manager, step, abstract):
      raise _damaged(manager, step, e) from e
    raise
  except Exception as e:  # pylint: disable=broad-except
    # orbax raises KeyError for a missing item, a bare Exception for
    # unreadable arrays.
    raise _damaged(manager, step, e) from e
  return out.state, out.meta


def restore_meta(manager, step):
  """The bookkeeping JSON of checkpoint `step`, without its arrays."""
  try:
    return manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore())).meta
  except Exception as e:  # pylint: disable=broad-except
    raise _damaged(manager, step, e) from e


def _damaged_rather_than_unfitting(manager, step, abstract):
  """For a state that would not restore: whether checkpoint `step`'s array
  metadata (read without the arrays) is missing, or records the shapes and
  dtypes of `abstract`'s arrays, so that the arrays themselves are what
  cannot be read (else the state is another model's or optimizer's)."""
  def kinds(leaves):
    return sorted((tuple(x.shape), str(np.dtype(x.dtype))) for x in leaves)
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      stored = kinds(jax.tree.leaves(checkpointer.metadata(
          os.path.join(manager.directory, str(step), 'state')).item_metadata))
  except Exception:  # pylint: disable=broad-except
    return True
  return not stored or stored == kinds(jax.tree.leaves(abstract))


def drop_closed_loop_reports():
  """Once an array of a checkpoint cannot be read, orbax closes its event
  loop while TensorStore still completes the other reads: each reports
  'Event loop is closed' to sys.unraisablehook (dozens of tracebacks around
  the one error line). This hook drops those reports, and only those."""
  previous = sys.unraisablehook
  def hook(unraisable):
    e = unraisable.exc_value
    if not (isinstance(e, RuntimeError) and str(e) == 'Event loop is closed'):
      previous(unraisable)
  sys.unraisablehook = hook


def _damaged(manager, step, error):
  """The WorkdirError for checkpoint `step`, which cannot be read."""
  path = os.path.join(manager.directory, str(step))
  while error.__cause__ is not None:  # TensorStore's own error, if any.
    error = error.__cause__
  why = (str(error).strip().splitlines() or [''])[0][:200]
  return workdir_lib.WorkdirError(
      f'checkpoint {path} cannot be read ({type(error).__name__}: {why}): it '
      f'is damaged; move it away to go on from an earlier checkpoint, or '
      f'train in a new --workdir')


def best_step(manager, workdir):
  step = manager.best_step()
  if step is None:
    raise NoCheckpointError(
        f'no checkpoint in {os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)}'
        ': train first (python main.py --config=... --workdir=...)')
  return step
