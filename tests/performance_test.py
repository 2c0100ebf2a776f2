"""No host in the hot loop, and data parallelism over several devices."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax import data
from cifar_flax import loop
from cifar_flax import metrics as metrics_lib
from cifar_flax import models
from cifar_flax import multi_seed
from cifar_flax import sharding
from cifar_flax import train
import conftest


@pytest.mark.parametrize('form', ['step', 'scan'])
def test_epoch_runs_without_host_transfers(tiny_config, form):
  tiny_config.loop = form
  tiny_config.train_subset = 100
  ds = data.load_dataset(tiny_config)
  mesh = sharding.data_mesh()
  programs = train.Programs(tiny_config, ds, mesh)
  model = models.create_model(tiny_config, ds.num_classes)
  state = sharding.replicate(
      train.create_train_state(tiny_config, model, jax.random.key(0)), mesh)
  rng = jax.device_put(jax.random.key(1))
  programs.train_pass(state, *programs.train_data, rng)  # Compile first.
  programs.eval_pass(state, *programs.val_data)
  with jax.transfer_guard('disallow'):
    state, m = programs.train_pass(state, *programs.train_data, rng)
    v = programs.eval_pass(state, *programs.val_data)
  assert np.isfinite(m.compute()['loss']) and np.isfinite(v.compute()['loss'])


def test_step_form_queues_at_most_steps_ahead():
  # Each step ~30 ms on a CPU, far longer than its dispatch: unthrottled, the
  # host would queue them all and return with none of them run.
  @jax.jit
  def step(carry):
    x, i = carry
    return jax.lax.fori_loop(0, 20, lambda _, x: jnp.tanh(x @ x), x), i + 1

  outputs = []
  def recorded(carry):
    outputs.append(step(carry))
    return outputs[-1]
  carry = (jnp.eye(512) * 0.1, jnp.zeros((), jnp.int32))
  step(carry)[1].block_until_ready()  # Compile first.
  n = loop.STEPS_AHEAD + 8
  last = loop.run_steps(recorded, carry, n)
  ready = [o[1].is_ready() for o in outputs]
  assert len(ready) == n and all(ready[:8]), ready
  assert int(last[1]) == n


def test_step_form_compiles_each_step_once():
  """A pass's second call reuses its first's programs: every carried value
  is placed where the step puts its output (an unplaced step counter made
  the seeds-together step compile twice, ~5 s for cnn5 on a CPU)."""
  mesh = sharding.data_mesh()
  batches = sharding.batch_sharded(mesh)

  def train_step(w, batch, rng):
    x = batch['image'].reshape(batch['image'].shape[0], -1) / 255
    w = w + 1e-3 * jax.random.normal(rng, w.shape)
    return w, metrics_lib.batch_metrics(x @ w, batch['label'], batch['mask'])

  def eval_step(w, batch):
    x = batch['image'].reshape(batch['image'].shape[0], -1) / 255
    return metrics_lib.batch_metrics(x @ w, batch['label'], batch['mask'])

  images, labels = sharding.replicate(
      (np.arange(120, dtype=np.uint8).reshape(10, 2, 2, 3),
       np.arange(10, dtype=np.int32) % 5), mesh)
  rng = jax.device_put(jax.random.key(0))
  single = loop.make_train_pass(train_step, 4, 'step', batches)
  evaluate = loop.make_eval_pass(eval_step, 4, 'step', batches)
  together = multi_seed.make_train_pass(train_step, 4, 'step', batches)
  w = sharding.replicate(jnp.zeros((12, 5)), mesh)
  ws = sharding.replicate(jnp.zeros((2, 12, 5)), mesh)
  for _ in range(3):
    w, _ = single(w, images, labels, rng)
    evaluate(w, images, labels)
    ws, _ = together(ws, images, labels, jax.random.split(rng),
                     jnp.array([True, False]))
  for step_pass in (single, evaluate, together):
    assert step_pass.one_step._cache_size() == 1
  assert not ws[1].any() and ws[0].any()


_MULTI_DEVICE = '''
import sys, tempfile
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp, numpy as np
assert jax.device_count() == 4, jax.devices()
from configs import test
from cifar_flax import data, loop, models, sharding, train
c = test.get_config(); c.data_dir = {data_dir!r}
ds = data.load_dataset(c)
model = models.create_model(c, ds.num_classes)
state0 = train.create_train_state(c, model, jax.random.key(0))
mean = jnp.asarray(data.channel_mean(ds.train.images))
step = lambda s, b, k: train.train_step(s, b, k, mean=mean,
                                        aug_config=c.augment)
outs = []
for devices in (jax.devices()[:1], jax.devices()):
  mesh = sharding.data_mesh(devices)
  p = loop.make_train_pass(step, c.batch_size, 'step',
                           sharding.batch_sharded(mesh))
  # 20 images: the last batch of 8 has 4, padded and masked, 1 per device.
  images, labels = sharding.replicate((ds.train.images[:20],
                                       ds.train.labels[:20]), mesh)
  s, m = p(sharding.replicate(state0, mesh), images, labels,
           jax.random.key(3))
  outs.append((s.params, m.compute()))
for k in outs[0][1]:
  np.testing.assert_allclose(outs[0][1][k], outs[1][1][k], rtol=1e-5)
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
             outs[0][0], outs[1][0])
r = train.train_and_evaluate(c, {workdir!r})
assert r['num_examples'] == 120 and np.isfinite(r['test_loss']), r
print('OK')
'''


def test_four_devices_match_one_and_train(fake_data_dir, tiny_config,
                                          tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  workdir = str(tmp_path / 'four_devices')
  code = _MULTI_DEVICE.format(root=conftest.ROOT, data_dir=fake_data_dir,
                              workdir=workdir)
  out = subprocess.run([sys.executable, '-c', code], env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'OK' in out.stdout
  # Its checkpoint, saved from 4 devices, evaluates here on 1 (a laptop
  # evaluating a multi-GPU run) to the same test metrics.
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 1
  before = json.loads((tmp_path / 'four_devices' / 'eval.json').read_text())
  after = evaluate.evaluate(tiny_config, workdir)
  for k in ('test_loss', 'test_top1', 'test_top5'):
    np.testing.assert_allclose(after[k], before[k], rtol=1e-5)


def test_a_result_on_a_cpu_names_the_cpu():
  cores = len(os.sched_getaffinity(0))
  xeon = ('processor\t: 0\nmodel name\t: Intel Xeon\n'
          'flags\t\t: fpu sse2 avx avx2 avx512f avx512bw\n\n'
          'processor\t: 1\nmodel name\t: Intel Xeon\n')
  assert sharding.cpu_description(xeon) == f'Intel Xeon, {cores} cores, AVX-512'
  epyc = 'model name\t: AMD EPYC\nflags\t\t: fpu fma avx avx2\n'
  assert sharding.cpu_description(epyc) == f'AMD EPYC, {cores} cores, AVX2'
  assert sharding.cpu_description('').endswith(f', {cores} cores')
  assert sharding.device_kind() == f'cpu ({sharding.cpu_description()})'


def test_benchmark_reports_every_number(tmp_path, tiny_config):
  from cifar_flax import benchmark
  tiny_config.loop = 'step'
  result = benchmark.run(tiny_config, str(tmp_path))
  r = result['rows']['configured']
  assert r['loop'] == 'step' and len(r['epoch_seconds_all']) == 2
  for key in ('first_epoch_seconds', 'epoch_seconds', 'train_images_per_sec',
              'step_ms', 'eval_images_per_sec'):
    assert r[key] > 0, key
  assert os.path.exists(tmp_path / 'benchmark.json')
  assert 'per_step_jit' not in result['rows']  # Already the step loop.
  assert result['device'] == sharding.device_kind()
  # The speed settings its timings are compared by, as configured.
  from cifar_flax import config_checks
  for field in config_checks.SPEED_FIELDS:
    assert result[field] == tiny_config[field], field


def test_config_xla_flags_reach_xla(tmp_path):
  """--config.xla_flags is in force when JAX starts its backend: here it
  makes the CPU show two devices, which the benchmark then uses. Run as
  `python -m cifar_flax.benchmark`, main.py's --mode=benchmark."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  out = subprocess.run(
      [sys.executable, '-m', 'cifar_flax.benchmark', '--config=configs/test.py',
       f'--workdir={tmp_path}',
       '--config.xla_flags=--xla_force_host_platform_device_count=2',
       '--config.benchmark.compare_step_loop=False',
       '--config.benchmark.epochs=1'],
      cwd=conftest.ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / 'benchmark.json').read_text())
  assert result['num_devices'] == 2


def test_batch_not_divisible_by_the_devices_is_one_error_line(
    tmp_path, fake_data_dir):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  workdir = str(tmp_path / 'run')
  out = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/test.py',
       f'--config.data_dir={fake_data_dir}', f'--workdir={workdir}',
       '--config.batch_size=7'],
      cwd=conftest.ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1] == (
      'error: config.batch_size=7 is not divisible by the 2 devices of the '
      'data mesh')
  assert not os.path.exists(workdir)


def test_benchmark_refuses_bad_settings_before_timing(tmp_path, tiny_config,
                                                      capsys, monkeypatch):
  from cifar_flax import benchmark  # pylint: disable=g-import-not-at-top
  from cifar_flax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(benchmark, 'measure', None)  # Timing would crash.
  workdir = str(tmp_path / 'bench')
  for field, value, why in (
      ('epochs', 0, '0 must be at least 1'),
      ('num_train', 4, '4 is smaller than batch_size 8'),
      ('num_eval', 0, '0 must be at least 1')):
    config = tiny_config.copy_and_resolve_references()
    config.benchmark[field] = value
    assert cli.run(config, workdir, 'benchmark') == 1
    assert capsys.readouterr().err == (
        f'error: config.benchmark.{field}: {why}\n')
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  assert cli.run(tiny_config, str(a_file), 'benchmark') == 1
  assert capsys.readouterr().err == (
      f"error: workdir '{a_file}' is a file, not a directory\n")
  assert sorted(os.listdir(tmp_path)) == ['a_file']
