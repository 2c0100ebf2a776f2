"""--multihost: two processes (jax.distributed over localhost, CPU) train
exactly like one process with two devices."""

import json
import os
import socket
import subprocess
import sys

import conftest


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _main(args, env):
  return subprocess.Popen(
      [sys.executable, os.path.join(conftest.ROOT, 'main.py'),
       '--config=' + os.path.join(conftest.ROOT, 'configs', 'test.py')] + args,
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _results(workdir):
  history = json.load(open(os.path.join(workdir, 'history.json')))
  evaluation = json.load(open(os.path.join(workdir, 'eval.json')))
  for row in history:
    del row['epoch_seconds']
  return history, {k: evaluation[k] for k in ('test_loss', 'test_top1',
                                              'num_examples')}


def test_two_processes_equal_one_process_with_two_devices(tmp_path,
                                                          fake_data_dir):
  base = dict(os.environ, JAX_PLATFORMS='cpu')
  common = [f'--config.data_dir={fake_data_dir}',
            '--config.train_subset=100']  # 80 training, 20 validation.
  port = _free_port()
  multi = str(tmp_path / 'multi')
  env = dict(base, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  procs = [_main(common + [f'--workdir={multi}', '--multihost',
                           f'--coordinator_address=localhost:{port}',
                           '--num_processes=2', f'--process_id={i}'], env)
           for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:]
  single = str(tmp_path / 'single')
  env = dict(base, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  p = _main(common + [f'--workdir={single}'], env)
  out = p.communicate(timeout=300)[0]
  assert p.returncode == 0, out[-3000:]
  assert _results(multi) == _results(single)
  assert _results(single)[1]['num_examples'] == 120
