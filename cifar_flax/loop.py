"""Whole passes over device-resident data, in the form that suits the backend.

One step function serves both forms:
- 'scan': the epoch is one jitted `lax.scan` (fastest on GPU/TPU);
- 'step': a Python loop over one jitted step (XLA:CPU runs a step inside
  `lax.scan` ~30x slower than the same step jitted alone; README).
Neither form syncs with the host inside the pass: batches are gathered on
device from a permutation drawn on device, and metrics accumulate on device.
"""

import collections
import functools

import jax
import jax.numpy as jnp

from cifar_flax import metrics as metrics_lib


def loop_form(config_loop):
  """'scan' or 'step' for the config's `loop` field and the default backend."""
  if config_loop == 'auto':
    return 'step' if jax.default_backend() == 'cpu' else 'scan'
  if config_loop not in ('scan', 'step'):
    raise ValueError(f"config.loop={config_loop!r}: expected 'auto', 'scan' "
                     f"or 'step'")
  return config_loop


# Steps the host may queue ahead of the device in 'step' form. More gain
# nothing (a step outlasts its dispatch), and Python runs a signal handler only
# once the host is free: with a whole epoch queued, a second SIGTERM waited for
# all of it (minutes for cnn9 on a CPU), and so did the interpreter's exit.
STEPS_AHEAD = 2


def run_steps(step, carry, n):
  """`carry = step(carry)` n times, without syncing with the host; the host
  waits (on the carry's last leaf, a step counter) whenever more than
  STEPS_AHEAD steps are queued."""
  queued = collections.deque()
  for _ in range(n):
    carry = step(carry)
    queued.append(carry[-1])
    if len(queued) > STEPS_AHEAD:
      queued.popleft().block_until_ready()
  return carry


def num_batches(num_examples, batch_size):
  return -(-num_examples // batch_size)


def batch_plan(rng, num_examples, batch_size):
  """(indices, mask), each (num_batches, batch_size).

  `rng` None keeps the data order; the last batch is padded (index 0) and
  masked, so every example counts once and none is dropped.
  """
  order = (jnp.arange(num_examples) if rng is None else
           jax.random.permutation(rng, num_examples))
  steps = num_batches(num_examples, batch_size)
  pad = steps * batch_size - num_examples
  idx = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)])
  mask = (jnp.arange(steps * batch_size) < num_examples).astype(jnp.float32)
  return (idx.reshape(steps, batch_size).astype(jnp.int32),
          mask.reshape(steps, batch_size))


def _gather(images, labels, idx, mask, sharding):
  batch = {'image': images[idx], 'label': labels[idx], 'mask': mask}
  if sharding is not None:
    batch = jax.lax.with_sharding_constraint(batch, sharding)
  return batch


def _accumulator_fn(sharding):
  """Makes fresh metrics and a step counter on device (no host transfer),
  placed like the step's outputs so the step compiles once."""
  out = (None if sharding is None else
         jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()))
  return jax.jit(lambda: (metrics_lib.Metrics.empty(),
                          jnp.zeros((), jnp.int32)), out_shardings=out)


def make_train_pass(train_step, batch_size, form, sharding=None, unroll=1):
  """Returns pass(state, images, labels, rng) -> (state, Metrics).

  `train_step(state, batch, rng) -> (state, Metrics)` is the pure step.
  """
  def body(images, labels, carry, xs):
    state, acc = carry
    idx, mask, key = xs
    state, m = train_step(state, _gather(images, labels, idx, mask, sharding),
                          key)
    return (state, acc.merge(m)), None

  def plan(images, rng):
    perm_rng, step_rng = jax.random.split(rng)
    idx, mask = batch_plan(perm_rng, images.shape[0], batch_size)
    return idx, mask, jax.random.split(step_rng, idx.shape[0])

  if form == 'scan':
    @jax.jit
    def scan_pass(state, images, labels, rng):
      xs = plan(images, rng)
      carry = (state, metrics_lib.Metrics.empty())
      (state, acc), _ = jax.lax.scan(
          functools.partial(body, images, labels), carry, xs, unroll=unroll)
      return state, acc
    return scan_pass

  plan_jit = jax.jit(plan)
  empty_accumulator = _accumulator_fn(sharding)

  @jax.jit
  def one_step(state, acc, images, labels, xs, i):
    x_i = jax.tree.map(lambda a: a[i], xs)
    return body(images, labels, (state, acc), x_i)[0] + (i + 1,)

  def step_pass(state, images, labels, rng):
    xs = plan_jit(images, rng)
    # The step counter lives on device: no host-to-device copy per step.
    state, acc, _ = run_steps(
        lambda c: one_step(c[0], c[1], images, labels, xs, c[2]),
        (state, *empty_accumulator()), num_batches(images.shape[0], batch_size))
    return state, acc
  step_pass.one_step = one_step
  step_pass.plan = plan_jit
  return step_pass


def make_eval_pass(eval_step, batch_size, form, sharding=None):
  """Returns pass(state, images, labels, rng=None) -> Metrics over every
  example, in data order. `eval_step(state, batch[, key])`; with `rng`, each
  batch gets its own key split from it."""
  def body(state, images, labels, acc, xs):
    idx, mask, *key = xs
    return acc.merge(eval_step(state, _gather(images, labels, idx, mask,
                                              sharding), *key)), None

  def plan(n, rng):
    idx, mask = batch_plan(None, n, batch_size)
    return ((idx, mask) if rng is None else
            (idx, mask, jax.random.split(rng, idx.shape[0])))

  if form == 'scan':
    @jax.jit
    def scan_pass(state, images, labels, rng=None):
      acc, _ = jax.lax.scan(functools.partial(body, state, images, labels),
                            metrics_lib.Metrics.empty(),
                            plan(images.shape[0], rng))
      return acc
    return scan_pass

  @functools.partial(jax.jit, static_argnums=(3,))
  def one_step(state, images, labels, n, acc, i, rng=None):
    xs = jax.tree.map(lambda a: a[i], plan(n, rng))
    return body(state, images, labels, acc, xs)[0], i + 1

  empty_accumulator = _accumulator_fn(sharding)

  def step_pass(state, images, labels, rng=None):
    n = images.shape[0]
    return run_steps(lambda c: one_step(state, images, labels, n, *c, rng),
                     empty_accumulator(), num_batches(n, batch_size))[0]
  step_pass.one_step = one_step
  return step_pass
