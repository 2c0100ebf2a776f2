"""Evaluation of a workdir's best checkpoint on the clean test set.

Unlike the paper, which evaluated through its augmenting generator, test
images here are only scaled and centred: no shear, zoom, shift or flip
(config.augment_test evaluates as the paper did, one fixed draw).
"""

import dataclasses
import datetime
import functools
import os
import re
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


# Fields that change what a trained model computes on a test image (the rest
# only shape training, or cannot differ once the checkpoint restores).
EVAL_FIELDS = ('model', 'activation', 'dtype', 'label_type',
               'augment.featurewise_center', 'fastnet.logit_scale')


# With EVAL_FIELDS, the fields that change the reports (the test images):
# those of a config that differs from the run's config.json in one of them
# are not the run's own (reports use clean test images, whatever
# augment_test says).
REPORT_FIELDS = EVAL_FIELDS + ('test_subset',)
# The fields that change a test result: an evaluation that differs from the
# run's config.json in one of them is not the run's result.
TEST_FIELDS = EVAL_FIELDS + workdir_lib.TEST_ONLY_FIELDS
# With augment_test, those that change the draw (keys go per batch) or what
# is drawn (the augment.* ranges count too: test_fields()).
DRAW_FIELDS = ('eval_batch_size', 'prng_impl')


def test_fields(config):
  """TEST_FIELDS, and with config.augment_test the fields of the draw."""
  if not config.get('augment_test', False):
    return TEST_FIELDS
  return TEST_FIELDS + DRAW_FIELDS + tuple(
      f for f, _ in workdir_lib.flatten(workdir_lib.config_to_dict(config))
      if f.startswith('augment.') and f not in TEST_FIELDS)


def differing_fields(config, workdir, fields=TEST_FIELDS):
  """{field: (the run's value, `config`'s)} for the `fields` where `config`
  differs from the run's config.json (none if it has none). Under TEST_FIELDS
  that differ, results are not the run's own: they go beside it
  (eval_other_config.json, reports_other_config/). A field added since the
  run has the value workdir.ADDED_FIELDS gives; one it has none for, and the
  file lacks, is not compared."""
  ran = workdir_lib.read_json(os.path.join(workdir, workdir_lib.CONFIG_FILE))
  if ran is None:
    return {}
  ran = workdir_lib.ADDED_FIELDS | dict(workdir_lib.flatten(ran))
  given = dict(workdir_lib.flatten(workdir_lib.config_to_dict(config)))
  return {f: (ran[f], given.get(f)) for f in fields
          if f in ran and ran[f] != given.get(f)}


def apart_name(differ):
  """'activation=elu,test_subset=100': a folder name for results computed
  under the given values of a non-empty differing_fields()."""
  return re.sub(r'[^\w.=,+-]', '_', ','.join(
      f'{f}={given}' for f, (_, given) in sorted(differ.items())))


def differs_note(differ):
  """' (not the run's own: ...)' for a non-empty differing_fields()."""
  if not differ:
    return ''
  return (f' (not the run\'s own: this config differs from its '
          f'{workdir_lib.CONFIG_FILE} in ' + ', '.join(
              f'{f}={given!r} (the run\'s {ran!r})'
              for f, (ran, given) in differ.items()) + ')')


def _its_config(workdir):
  """', --config=WORKDIR (...)' where the run's config.json can be read back."""
  if not os.path.exists(os.path.join(workdir, workdir_lib.CONFIG_FILE)):
    return ''
  return f', --config={workdir} (its {workdir_lib.CONFIG_FILE})'


def check_run_config(config, workdir):
  """Refuses to evaluate `workdir`'s model with a config that computes it
  differently (EVAL_FIELDS against the run's config.json), unless
  config.allow_config_change."""
  if config.get('allow_config_change', False):
    return
  differ = differing_fields(config, workdir, EVAL_FIELDS)
  if differ:
    raise workdir_lib.WorkdirError(
        f'{workdir!r} was trained with ' + ', '.join(
            f'{f}={ran!r}' for f, (ran, _) in differ.items()) + ' (its '
        f'{workdir_lib.CONFIG_FILE}), this config gives ' + ', '.join(
            f'{f}={given!r}' for f, (_, given) in differ.items()) + ': pass '
        f'the config it was trained with (--config={workdir}, without '
        'overriding those fields), or --config.allow_config_change=True to '
        'evaluate it so anyway (its results are kept apart)')


def load_best(config, workdir):
  """Restores the best checkpoint (lowest validation loss) of `workdir`,
  replicated on this process's devices (whatever devices trained it)."""
  path = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
  if workdir_lib.is_results_copy(workdir):
    raise checkpointing.NoCheckpointError(
        f'{workdir!r} holds a finished run\'s results without its '
        f'checkpoints (a copy, as results/ keeps them): its test result is '
        f'in {workdir_lib.EVAL_FILE}; this mode needs the checkpoints')
  if not os.path.isdir(path):
    raise checkpointing.NoCheckpointError(
        f'no checkpoint in {path}: train first (python main.py '
        f'--config=... --workdir={workdir})')
  check_run_config(config, workdir)
  manager = checkpointing.create_manager(workdir, read_only=True)
  try:
    step = checkpointing.best_step(manager, workdir)
    meta = checkpointing.restore_meta(manager, step)
    here = sharding.replicated(sharding.data_mesh())
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here),
        train.abstract_train_state(config, len(meta['class_names'])))
    try:
      state, meta = checkpointing.restore(manager, step, abstract)
    except ValueError as e:  # Another model or optimizer.
      raise workdir_lib.checkpoint_mismatch(
          workdir, config, step, e,
          'use the config it was trained with' + _its_config(workdir),
          config_checks.RESUMABLE_KEYS) from e
  finally:
    manager.close()
  return Restored(state=state, epoch=step,
                  mean=jnp.asarray(meta['channel_mean'], jnp.float32),
                  class_names=tuple(meta['class_names']))


def test_key(config):
  """With config.augment_test, the key of the augmented test pass: one fixed
  draw, the same for every run and seed (for one eval_batch_size and
  prng_impl: test_fields()); else None (clean test images)."""
  if not config.get('augment_test', False):
    return None
  return jax.random.key(0, impl=config.prng_impl)


def test_pass_args(config, *data):
  """The test pass's arguments after the state: the data, and with
  config.augment_test its key."""
  key = test_key(config)
  return (*data, *([] if key is None else [key]))


# What eval.json says of clean test images (any other: augment_test).
CLEAN_IMAGES = 'clean (scaled and centred, no augmentation)'


def test_images_note(config):
  """What eval.json says of the test images."""
  if config.get('augment_test', False):
    return ('augmented as in training, as the paper evaluated '
            '(config.augment_test; one fixed draw)')
  return CLEAN_IMAGES


def test_metrics(config, restored, test_split):
  """Loss, top-1, top-5 over every test image (last batch padded, masked);
  augmented with config.augment_test."""
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  step = functools.partial(train.eval_step, mean=restored.mean,
                           aug_config=config.augment)
  eval_pass = loop.make_eval_pass(step, config.eval_batch_size,
                                  loop.loop_form(config.loop),
                                  sharding.batch_sharded(mesh))
  state = sharding.replicate(restored.state, mesh)
  images, labels = sharding.replicate((test_split.images, test_split.labels),
                                      mesh)
  m = eval_pass(state, *test_pass_args(config, images, labels))
  return {k: float(v) for k, v in m.compute().items()}


def check_classes(restored, dataset, workdir, config):
  """The checkpoint's classes must be those the config's data labels."""
  if tuple(dataset.class_names) != tuple(restored.class_names):
    raise config_checks.ConfigError(
        f'{workdir}: the checkpoint has {len(restored.class_names)} classes '
        f'but the config loads {dataset.num_classes} other ones (label_type '
        f'{config.label_type!r}); pass the config the run was trained with'
        + _its_config(workdir))


def evaluate(config, workdir, dataset=None):
  """Writes WORKDIR/eval.json for the best checkpoint; returns its dict.

  Under a config that changes the test result (a test subset, augment_test
  or, with it, the draw's fields, or what allow_config_change let through:
  test_fields()), the result is not the run's:
  it goes to eval_other_config.json, naming those fields, and eval.json
  (the run's own, which the sweep's table reads) is kept."""
  restored = load_best(config, workdir)
  differ = differing_fields(config, workdir, test_fields(config))
  workdir_lib.ensure_writable_dir(workdir)  # Before the test pass.
  if dataset is None:
    dataset = data_lib.load_dataset(config)
  check_classes(restored, dataset, workdir, config)
  t0 = time.perf_counter()
  m = test_metrics(config, restored, dataset.test)
  result = {'test_loss': m['loss'], 'test_top1': m['top1'],
            'test_top5': m['top5'], 'num_examples': len(dataset.test),
            'checkpoint_epoch': restored.epoch,
            'eval_seconds': time.perf_counter() - t0,
            'device': sharding.device_kind(),
            'date': datetime.datetime.now(datetime.timezone.utc).strftime(
                '%Y-%m-%d'),
            'images': test_images_note(config)}
  path = os.path.join(workdir, workdir_lib.EVAL_FILE)
  if differ:
    result['config_differs'] = {f: {'run': ran, 'given': given}
                                for f, (ran, given) in differ.items()}
    path = os.path.join(workdir, workdir_lib.OTHER_EVAL_FILE)
  workdir_lib.write_json(path, result)
  print(f'test top-1 {result["test_top1"]:.4f}  top-5 '
        f'{result["test_top5"]:.4f}  loss {result["test_loss"]:.4f}  on '
        f'{result["num_examples"]} images (best checkpoint, epoch '
        f'{restored.epoch}) -> {path}' + differs_note(differ))
  return result
