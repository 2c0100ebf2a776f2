"""Evaluation of a workdir's best checkpoint on the clean test set.

Unlike the paper, which evaluated through its augmenting generator, test
images here are only scaled and centred: no shear, zoom, shift or flip.
"""

import dataclasses
import datetime
import functools
import os
import time

import jax
import jax.numpy as jnp

from cifar_flax import checkpointing
from cifar_flax import config_checks
from cifar_flax import data as data_lib
from cifar_flax import loop
from cifar_flax import sharding
from cifar_flax import train
from cifar_flax import workdir as workdir_lib


@dataclasses.dataclass
class Restored:
  """A trained model ready to predict: state, its epoch and what it needs."""
  state: train.TrainState
  epoch: int
  mean: jnp.ndarray
  class_names: tuple


def load_best(config, workdir):
  """Restores the best checkpoint (lowest validation loss) of `workdir`."""
  path = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
  if not os.path.isdir(path):
    raise checkpointing.NoCheckpointError(
        f'no checkpoint in {path}: train first (python main.py '
        f'--config=... --workdir={workdir})')
  manager = checkpointing.create_manager(workdir, read_only=True)
  try:
    step = checkpointing.best_step(manager, workdir)
    meta = checkpointing.restore_meta(manager, step)
    abstract = train.abstract_train_state(config, len(meta['class_names']))
    try:
      state, meta = checkpointing.restore(manager, step, abstract)
    except ValueError as e:  # Another model or optimizer.
      raise workdir_lib.checkpoint_mismatch(
          workdir, config, step, e, 'use the config it was trained with '
          f'(the run\'s fields are in {workdir_lib.CONFIG_FILE} there)',
          config_checks.RESUMABLE_KEYS) from e
  finally:
    manager.close()
  return Restored(state=state, epoch=step,
                  mean=jnp.asarray(meta['channel_mean'], jnp.float32),
                  class_names=tuple(meta['class_names']))


def test_metrics(config, restored, test_split):
  """Loss, top-1, top-5 over every test image (last batch padded, masked)."""
  mesh = sharding.data_mesh()
  step = functools.partial(train.eval_step, mean=restored.mean,
                           aug_config=config.augment)
  eval_pass = loop.make_eval_pass(step, config.eval_batch_size,
                                  loop.loop_form(config.loop),
                                  sharding.batch_sharded(mesh))
  state = sharding.replicate(restored.state, mesh)
  images, labels = sharding.replicate((test_split.images, test_split.labels),
                                      mesh)
  return {k: float(v)
          for k, v in eval_pass(state, images, labels).compute().items()}


def evaluate(config, workdir, dataset=None):
  """Writes WORKDIR/eval.json for the best checkpoint; returns its dict."""
  restored = load_best(config, workdir)
  if dataset is None:
    dataset = data_lib.load_dataset(config)
  t0 = time.perf_counter()
  m = test_metrics(config, restored, dataset.test)
  result = {'test_loss': m['loss'], 'test_top1': m['top1'],
            'test_top5': m['top5'], 'num_examples': len(dataset.test),
            'checkpoint_epoch': restored.epoch,
            'eval_seconds': time.perf_counter() - t0,
            'device': jax.devices()[0].device_kind,
            'date': datetime.datetime.now(datetime.timezone.utc).strftime(
                '%Y-%m-%d'),
            'images': 'clean (scaled and centred, no augmentation)'}
  workdir_lib.write_json(os.path.join(workdir, workdir_lib.EVAL_FILE), result)
  print(f'test top-1 {result["test_top1"]:.4f}  top-5 '
        f'{result["test_top5"]:.4f}  loss {result["test_loss"]:.4f}  on '
        f'{result["num_examples"]} images (best checkpoint, epoch '
        f'{restored.epoch}) -> {os.path.join(workdir, workdir_lib.EVAL_FILE)}')
  return result
