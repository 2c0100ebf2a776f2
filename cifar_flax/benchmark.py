"""Speed of a config's training and evaluation programs on synthetic data.

  python main.py --config=configs/final.py --mode=benchmark --workdir=runs/bench
  python -m cifar_flax.benchmark --config=configs/final.py  # The same, into
                                                            # runs/benchmark.

Reports compile time, steady-state training images/s and s/epoch, evaluation
images/s, and (optionally) the same epoch as a plain per-step jit loop; as a
table on stdout and as WORKDIR/benchmark.json. Synthetic uint8 images of the
real shapes stand in for CIFAR-100: speed does not depend on pixel values.
"""

import os
import statistics
import time

import jax
import numpy as np

from cifar_flax import config_checks
from cifar_flax import data as data_lib
from cifar_flax import loop
from cifar_flax import models
from cifar_flax import sharding
from cifar_flax import train
from cifar_flax import workdir as workdir_lib


def synthetic_dataset(num_train, num_eval, num_classes=100, seed=0):
  rng = np.random.default_rng(seed)
  split = lambda n: data_lib.Split(
      rng.integers(0, 256, (n,) + data_lib.IMAGE_SHAPE, dtype=np.uint8),
      rng.integers(0, num_classes, n).astype(np.int32))
  return data_lib.Dataset(train=split(num_train), validation=split(num_eval),
                          test=split(num_eval),
                          class_names=tuple(f'c{i}' for i in range(num_classes)))


def _time(fn):
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def measure(config, dataset, epochs):
  """Times the config's own loop form; returns a dict of measurements."""
  mesh = sharding.data_mesh()
  programs = train.Programs(config, dataset, mesh)
  model = models.create_model(config, dataset.num_classes)
  steps = loop.num_batches(len(dataset.train), config.batch_size)
  state = train.state_initializer(config, model, steps, mesh)(
      jax.random.key(0))
  keys = [jax.device_put(jax.random.key(e)) for e in range(epochs + 1)]
  compile_s = programs.compile(state, keys[0])
  holder = {'state': state}

  def epoch(key):
    holder['state'], m = programs.train_pass(holder['state'],
                                             *programs.train_data, key)
    return m

  first = _time(lambda: epoch(keys[0]))  # Includes compiling in step form.
  times = [_time(lambda k=k: epoch(k)) for k in keys[1:]]
  eval_times = [_time(lambda: programs.validate(holder['state'], 0, 1))
                for _ in range(3)]
  n_train, n_eval = len(dataset.train), len(dataset.validation)
  s_epoch = statistics.median(times)
  s_eval = statistics.median(eval_times)
  return {
      'loop': programs.form,
      'compile_seconds': compile_s,
      'first_epoch_seconds': first,
      'epoch_seconds': s_epoch,
      'epoch_seconds_all': times,
      'train_images_per_sec': n_train / s_epoch,
      'step_ms': 1e3 * s_epoch / steps,
      'eval_images_per_sec': n_eval / s_eval,
  }


def run(config, workdir):
  """Benchmarks `config` (its loop form, then optionally the step loop)."""
  b = config.benchmark
  config_checks.validate_benchmark(config)
  workdir_lib.ensure_writable_dir(workdir)  # Before the timing, not after.
  dataset = synthetic_dataset(b.num_train, b.num_eval)
  config_checks.validate_against_data(config, dataset)
  train.setup_jax(config)
  rows = {'configured': measure(config, dataset, b.epochs)}
  if b.compare_step_loop and rows['configured']['loop'] != 'step':
    step_config = config.copy_and_resolve_references()
    with step_config.unlocked():
      step_config.loop = 'step'
    rows['per_step_jit'] = measure(step_config, dataset, max(1, b.epochs // 2))
  result = {
      'device': sharding.device_kind(), 'num_devices': jax.device_count(),
      'backend': jax.default_backend(), 'jax': jax.__version__,
      'model': config.model, 'dtype': config.dtype,
      'prng_impl': config.prng_impl,
      **{f: config[f] for f in config_checks.SPEED_FIELDS},
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'batch_size': config.batch_size, 'num_train': b.num_train,
      'num_eval': b.num_eval, 'compilation_cache_dir':
          config.compilation_cache_dir, 'rows': rows}
  path = os.path.join(workdir, 'benchmark.json')
  workdir_lib.write_json(path, result)
  print(format_table(result))
  print(f'-> {path}')
  return result


def format_table(result):
  settings = ''
  for field in config_checks.SPEED_FIELDS:
    value = result.get(field)  # None: a file from before the field.
    if isinstance(value, bool):  # A switch: named when on.
      settings += f'{field}, ' if value else ''
    elif value is not None:
      settings += f'{field} {value}, '
  lines = [f"{result['model']} {result['dtype']} batch {result['batch_size']} "
           f"prng {result['prng_impl']}, {settings}"
           f"{result['num_train']} train images, on {result['num_devices']}x "
           f"{result['device']} (jax {result['jax']})"
           + (f", XLA_FLAGS {result['xla_flags']}" if result['xla_flags']
              else ''),
           f"{'loop':20s} {'compile s':>9s} {'1st epoch s':>11s} "
           f"{'s/epoch':>8s} {'ms/step':>8s} {'train img/s':>11s} "
           f"{'eval img/s':>10s}"]
  for name, r in result['rows'].items():
    compile_s = ('-' if r['compile_seconds'] is None
                 else f"{r['compile_seconds']:.2f}")
    lines.append(f"{name + ' (' + r['loop'] + ')':20s} {compile_s:>9s} "
                 f"{r['first_epoch_seconds']:11.2f} {r['epoch_seconds']:8.3f} "
                 f"{r['step_ms']:8.2f} {r['train_images_per_sec']:11.0f} "
                 f"{r['eval_images_per_sec']:10.0f}")
  return '\n'.join(lines)


if __name__ == '__main__':
  # From the repository root, as main.py with --mode=benchmark (its flags, its
  # one-line errors) and --workdir=runs/benchmark unless given.
  import sys  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  from cifar_flax import flag_parsing  # pylint: disable=g-import-not-at-top
  import main  # pylint: disable=g-import-not-at-top
  args = [a for a in sys.argv[1:] if not a.startswith('--mode')]
  if not any(a.startswith('--workdir') for a in args):
    args.append('--workdir=runs/benchmark')
  sys.argv = ['main.py', '--mode=benchmark'] + args
  app.run(main.main, flags_parser=flag_parsing.parse)
