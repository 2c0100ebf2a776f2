"""Wall time of one train epoch: k seeds together (multi_seed) vs one seed.

Random images stand in for CIFAR-100 (the time does not depend on pixels).
Run from the repo root, e.g. on a GPU:
  python scripts/bench_multi_seed.py --config=configs/final.py \
      --num_seeds=1,2,4,8 --images=40000
Prints seconds per epoch, images/s summed over seeds, and the speed-up per
seed against one seed trained alone (loop.make_train_pass, as
train.train_and_evaluate runs it). The first epoch of each compiles and is
not counted.
"""

import functools
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/final.py',
                                'Run config to time.', lock_config=True)
flags.DEFINE_list('num_seeds', ['1', '3'], 'Numbers of seeds trained together.')
flags.DEFINE_integer('images', 6400, 'Training images per epoch.')
flags.DEFINE_integer('epochs', 3, 'Epochs timed per setting (the first, '
                     'which compiles, is dropped; the best of the rest).')


def _time_epochs(fn, epochs):
  import jax  # pylint: disable=g-import-not-at-top
  times = []
  for e in range(epochs):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(e))
    times.append(time.perf_counter() - t0)
  return times[0], min(times[1:])


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cifar_flax import loop  # pylint: disable=g-import-not-at-top
  from cifar_flax import models  # pylint: disable=g-import-not-at-top
  from cifar_flax import multi_seed  # pylint: disable=g-import-not-at-top
  from cifar_flax import sharding  # pylint: disable=g-import-not-at-top
  from cifar_flax import train  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  if FLAGS.epochs < 2:
    raise app.UsageError('--epochs must be at least 2')
  train.setup_jax(config)  # prng_impl, xla_flags, the compilation cache.
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (FLAGS.images, 32, 32, 3),
                                    dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, 100, FLAGS.images, dtype=np.int32))
  mean = jnp.full((3,), 0.5)
  step = functools.partial(train.train_step, mean=mean,
                           aug_config=config.augment)
  form = loop.loop_form(config.loop)
  model = models.create_model(config, 100)
  steps = loop.num_batches(FLAGS.images, config.batch_size)
  init = lambda s: train.create_train_state(  # SGD's schedule needs steps.
      config, model, jax.random.key(s), steps_per_epoch=steps)
  print(f'{sharding.device_kind()}, {config.model}, batch '
        f'{config.batch_size}, {FLAGS.images} images ({steps} steps), '
        f'{form} form')

  single = loop.make_train_pass(step, config.batch_size, form)
  state = jax.jit(init)(0)
  compile_s, base = _time_epochs(
      lambda e: single(state, images, labels, jax.random.key(e))[1], FLAGS.epochs)
  print(f'1 seed alone:        {base:7.3f} s/epoch  '
        f'{FLAGS.images / base:9.0f} images/s  (first epoch {compile_s:.1f} s)')
  for k in map(int, FLAGS.num_seeds):
    multi = multi_seed.make_train_pass(step, config.batch_size, form)
    states = jax.jit(jax.vmap(init))(jnp.arange(k))
    active = jnp.ones(k, bool)
    keys = lambda e, k=k: jax.vmap(lambda s: jax.random.fold_in(
        jax.random.key(s), e))(jnp.arange(k))
    compile_s, t = _time_epochs(
        lambda e, states=states, multi=multi, active=active, keys=keys:
        multi(states, images, labels, keys(e), active)[1], FLAGS.epochs)
    print(f'{k} seeds together:   {t:7.3f} s/epoch  '
          f'{k * FLAGS.images / t:9.0f} images/s  {k * base / t:5.2f}x one '
          f'seed\'s throughput  (first epoch {compile_s:.1f} s)')


if __name__ == '__main__':
  app.run(main)
