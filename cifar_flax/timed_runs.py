"""--mode=timed: train `timed_seeds` runs from scratch and time each one.

Per seed, the timed region runs from the data already on the device to the
test metrics on the host: state init, `num_epochs` training passes (no
per-epoch validation, early stopping or checkpoints) and one single-view
evaluation of the validation and test sets (no test-time augmentation). The
programs (init, training pass, both evaluation passes) are compiled once,
before any timing, and reused by every seed; that compile time is reported
on its own. On CPU ('step' loop form) nothing is compiled ahead of time, so
the first seed's time includes compiling.
Writes WORKDIR/timed.json and prints a table.
"""

import functools
import os
import time

import jax
import numpy as np

from cifar_flax import config_checks
from cifar_flax import evaluate
from cifar_flax import fast_models
from cifar_flax import loop
from cifar_flax import models
from cifar_flax import sharding
from cifar_flax import train
from cifar_flax import workdir as workdir_lib

TIMED_FILE = 'timed.json'


def _mean_std(values):
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


class TimedPrograms:
  """Init, train pass and the two eval passes, compiled once for all seeds."""

  def __init__(self, config, dataset, mesh):
    self.config = config
    self.programs = train.Programs(config, dataset, mesh)
    model = models.create_model(config, dataset.num_classes)
    self.steps_per_epoch = loop.num_batches(len(dataset.train),
                                            config.batch_size)
    self.init = train.state_initializer(config, model, self.steps_per_epoch,
                                        mesh)
    self.test_pass = loop.make_eval_pass(
        functools.partial(train.eval_step, mean=self.programs.mean,
                          aug_config=config.augment),
        config.eval_batch_size, self.programs.form,
        sharding.batch_sharded(mesh))
    self.test_data = sharding.replicate(
        (dataset.test.images, dataset.test.labels), mesh)
    jax.block_until_ready((self.programs.train_data, self.programs.val_data,
                           self.test_data))

  def compile(self, seed):
    """Compiles everything ahead of time; returns the seconds (None in the
    'step' form, which compiles on first use)."""
    if self.programs.form != 'scan':
      return None
    t0 = time.perf_counter()
    key = jax.random.key(seed)
    self.init = self.init.lower(key).compile()
    state = self.init(key)
    self.programs.compile(state, train._epoch_key(seed, 1))  # pylint: disable=protected-access
    self.test_pass = self.test_pass.lower(state, *evaluate.test_pass_args(
        self.config, *self.test_data)).compile()
    return time.perf_counter() - t0


def timed_run(config, timed, seed):
  """One seed from scratch; returns its row (seconds end at the host sync)."""
  p = timed.programs
  t0 = time.perf_counter()
  state = timed.init(jax.random.key(seed))
  for epoch in range(1, config.num_epochs + 1):
    state, train_m = p.train_pass(state, *p.train_data,
                                  train._epoch_key(seed, epoch))  # pylint: disable=protected-access
  val = p.validate(state, seed, config.num_epochs).compute()
  test = timed.test_pass(state, *evaluate.test_pass_args(
      config, *timed.test_data)).compute()
  val, test = jax.device_get((val, test))
  seconds = time.perf_counter() - t0
  row = {'seed': seed, 'train_seconds': seconds,
         'test_top1': float(test['top1']), 'test_top5': float(test['top5']),
         'test_loss': float(test['loss']), 'val_top1': float(val['top1']),
         'last_epoch_train_loss': float(train_m.compute()['loss'])}
  bad = [k for k, v in row.items() if not np.isfinite(v)]
  if bad:
    raise train.TrainingDivergedError(
        f'seed {seed}: {", ".join(bad)} not finite; lower the learning rate')
  return row


def _summary(config, dataset, timed, compile_s, rows):
  top1, top1_std = _mean_std([r['test_top1'] for r in rows])
  secs, secs_std = _mean_std([r['train_seconds'] for r in rows])
  out = {'test_top1_mean': top1, 'test_top1_std': top1_std,
         'train_seconds_mean': secs, 'train_seconds_std': secs_std,
         'compile_seconds': compile_s, 'seeds': len(rows),
         'num_epochs': config.num_epochs, 'batch_size': config.batch_size,
         'steps_per_epoch': timed.steps_per_epoch,
         'train_images': len(dataset.train), 'test_images': len(dataset.test),
         'device': sharding.device_kind(),
         'num_devices': len(jax.devices()), 'loop': timed.programs.form,
         'evaluation': ('single view, no TTA; test images '
                        + evaluate.test_images_note(config)),
         'runs': rows}
  if config.model in fast_models.MODELS:
    # Training costs about 3x a forward pass (forward + two backward matmuls).
    fwd = fast_models.forward_flops(config, dataset.num_classes)
    total = 3 * fwd * timed.steps_per_epoch * config.batch_size * \
        config.num_epochs
    out['forward_gflops_per_image'] = fwd / 1e9
    out['train_tflops_per_run'] = total / 1e12
    out['achieved_tflops_per_s'] = total / 1e12 / secs
  return out


def _print_table(summary):
  print(f'{"seed":>5} {"test top-1":>10} {"top-5":>7} {"val top-1":>9} '
        f'{"train s":>8}')
  for r in summary['runs']:
    print(f'{r["seed"]:5d} {r["test_top1"]:10.4f} {r["test_top5"]:7.4f} '
          f'{r["val_top1"]:9.4f} {r["train_seconds"]:8.2f}')
  c = summary['compile_seconds']
  print(f'mean test top-1 {summary["test_top1_mean"]:.4f} +- '
        f'{summary["test_top1_std"]:.4f}  train '
        f'{summary["train_seconds_mean"]:.2f} +- '
        f'{summary["train_seconds_std"]:.2f} s  over {summary["seeds"]} '
        f'seed(s), {summary["num_epochs"]} epochs, on '
        f'{summary["num_devices"]} x {summary["device"]}; compile '
        + (f'{c:.1f} s (once)' if c is not None else
           'not separate (step form: inside the first seed)'))


def timed_runs(config, workdir):
  """Runs the seeds, writes WORKDIR/timed.json, returns its dict."""
  dataset, mesh = train.prepare_run(config)
  workdir_lib.prepare(workdir, config,
                      ignore_keys=config_checks.RESUMABLE_KEYS +
                      ('timed_seeds',))
  timed = TimedPrograms(config, dataset, mesh)
  seeds = [config.seed + i for i in range(config.timed_seeds)]
  compile_s = timed.compile(seeds[0])
  rows = []
  for seed in seeds:
    rows.append(timed_run(config, timed, seed))
    print(f'seed {seed}: test top-1 {rows[-1]["test_top1"]:.4f} in '
          f'{rows[-1]["train_seconds"]:.2f} s', flush=True)
  summary = _summary(config, dataset, timed, compile_s, rows)
  _print_table(summary)
  path = os.path.join(workdir, TIMED_FILE)
  workdir_lib.write_json(path, summary)
  print(f'-> {path}')
  return summary
