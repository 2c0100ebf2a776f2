"""scripts/: the GPU measurement script's guards (it runs nothing here)."""

import json
import os
import subprocess
import sys
import time

import ml_collections

from cifar_flax import config_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'gpu_measurements.sh')


def _run(args, tmp_path, **env):
  return subprocess.run(['bash', SCRIPT, *args], cwd=str(tmp_path),
                        capture_output=True, text=True, timeout=60,
                        env={**os.environ, **env})


def test_gpu_measurements_needs_its_two_folders(tmp_path):
  for args in ([], [str(tmp_path / 'data')]):
    proc = _run(args, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith('usage: bash scripts/gpu_measurements.sh')
  assert os.listdir(tmp_path) == []  # Nothing written anywhere.


def test_gpu_measurements_fails_when_a_step_fails(tmp_path):
  out = tmp_path / 'out'
  proc = _run([str(tmp_path / 'data'), str(out), 'bench'], tmp_path,
              PYTHON='false')
  assert proc.returncode == 1
  assert (out / 'summary.txt').read_text().startswith('bench rc=1 ')
  proc = _run([str(tmp_path / 'data'), str(out), 'bench', 'nosuch'], tmp_path,
              PYTHON='false')
  assert proc.returncode == 2 and 'unknown step nosuch' in proc.stderr


# Stands in for `python main.py ...` (the script's other Python, its summary,
# runs the real interpreter): main.py's own flag parsing gives the config,
# which is recorded with the mode in a benchmark.json of made-up timings (a run named
# 'alone' trains at 100 images/s, others at 60); --mode=sweep waits for
# SIGTERM, as a sweep finishing its epoch, and exits 130.
FAKE_MAIN = '''
import json, os, signal, sys, time
sys.path.insert(0, os.getcwd())
sys.argv[0] = 'main.py'
import main
from absl import app
from cifar_flax import flag_parsing

def fake(argv):
  workdir, mode = main.FLAGS.workdir, main.FLAGS.mode
  os.makedirs(workdir, exist_ok=True)
  if mode == 'sweep':
    def stop(*_):
      open(os.path.join(workdir, 'stopped'), 'w').close()
      sys.exit(130)
    signal.signal(signal.SIGTERM, stop)
    time.sleep(60)
    return
  rate = 100.0 if os.path.basename(workdir) == 'alone' else 60.0
  row = {'compile_seconds': 1.0, 'epoch_seconds': 400 / rate,
         'epoch_seconds_all': [400 / rate], 'step_ms': 1.0,
         'train_images_per_sec': rate}
  with open(os.path.join(workdir, 'benchmark.json'), 'w') as f:
    json.dump({'rows': {'configured': row}, 'mode': mode,
               'config': main.FLAGS.config.to_dict(),
               'mem_fraction': os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION')},
              f)

app.run(fake, flags_parser=flag_parsing.parse)
'''


def _fake_python(tmp_path):
  fake_main = tmp_path / 'fake_main.py'
  fake_main.write_text(FAKE_MAIN)
  python = tmp_path / 'python'
  python.write_text(f'#!/bin/sh\nif [ "$1" = main.py ]; then shift; '
                    f'exec {sys.executable} {fake_main} "$@"; fi\n'
                    f'exec {sys.executable} "$@"\n')
  python.chmod(0o755)
  return str(python)


def test_gpu_measurements_candidates_each_own_cache_and_settings(tmp_path):
  out = tmp_path / 'out'
  proc = _run([str(tmp_path / 'data'), str(out), 'candidates'], tmp_path,
              PYTHON=_fake_python(tmp_path))
  assert proc.returncode == 0, proc.stderr
  names = ('f32', 'f32_relu', 'f32_im2col', 'f32_nchw', 'b16', 'b16_relu',
           'b16_im2col_relu')
  configs = {}
  for name in names:
    with open(out / 'candidates' / name / 'benchmark.json') as f:
      config = ml_collections.ConfigDict(json.load(f)['config'])
    config_checks.validate(config)  # A valid combination, as main.py checks.
    assert config.compilation_cache_dir == str(out / 'candidates' / name /
                                               'xla')
    assert config.benchmark.epochs == 2
    assert not config.benchmark.compare_step_loop
    configs[name] = config
  base = configs['f32']
  assert (base.dtype, base.relu_grad_from_output, base.first_conv_im2col,
          base.xla_flags) == ('float32', False, False, '')
  assert configs['f32_relu'].relu_grad_from_output
  assert configs['f32_im2col'].first_conv_im2col
  assert configs['f32_nchw'].xla_flags == '--xla_gpu_force_conv_nchw=true'
  for name in ('b16', 'b16_relu', 'b16_im2col_relu'):
    assert configs[name].dtype == 'bfloat16'
    assert configs[name].max_pool == 'fused_select'
  assert configs['b16_relu'].pad_input_channels == 8
  assert configs['b16_relu'].relu_grad_from_output
  assert configs['b16_im2col_relu'].first_conv_im2col
  assert configs['b16_im2col_relu'].pad_input_channels == 0
  summary = (out / 'candidates.txt').read_text().splitlines()
  assert [line.split(':')[0] for line in summary] == list(names)
  assert summary[0] == ('f32: compile 1.00 s, 6.667 s/epoch (each '
                        '6.667-6.667), 1.00 ms/step, 60 train images/s')


def test_gpu_measurements_concurrent_rate_against_one_alone(tmp_path):
  out = tmp_path / 'out'
  proc = _run([str(tmp_path / 'data'), str(out), 'concurrent'], tmp_path,
              PYTHON=_fake_python(tmp_path), PROCS='2')
  assert proc.returncode == 0, proc.stderr
  for run in ('alone', 'p1', 'p2'):
    with open(out / 'concurrent' / run / 'benchmark.json') as f:
      result = json.load(f)
    assert result['mem_fraction'] == '0.4'  # 0.8 of the GPU over 2.
    assert result['config']['compilation_cache_dir'] == str(
        out / 'concurrent' / 'xla')
  lines = (out / 'concurrent.txt').read_text().splitlines()
  assert [line.split(':')[0] for line in lines] == [
      'alone', 'p1', 'p2', '2 at once']
  assert lines[-1] == ('2 at once: 120 train images/s in all, 1.20x the run '
                       'alone')
  summary = (out / 'summary.txt').read_text()
  assert 'concurrent/p1 rc=0' in summary and 'concurrent/p2 rc=0' in summary


def test_gpu_measurements_concurrent_under_mps(tmp_path):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  control = bin_dir / 'nvidia-cuda-mps-control'  # Logs what it is asked.
  log = tmp_path / 'mps.log'
  control.write_text(f'#!/bin/sh\nif [ "$1" = -d ]; then echo start >> {log}; '
                     f'exit ${{FAIL_START:-0}}; fi\nread cmd; echo $cmd >> {log}\n')
  control.chmod(0o755)
  path = f'{bin_dir}:{os.environ["PATH"]}'
  python = _fake_python(tmp_path)
  proc = _run([str(tmp_path / 'data'), str(tmp_path / 'out'), 'concurrent'],
              tmp_path, PYTHON=python, PROCS='2', MPS='1', PATH=path)
  assert proc.returncode == 0, proc.stderr
  assert log.read_text().split() == ['start', 'quit']
  # A daemon that does not start is said so, and the step fails.
  log.unlink()
  out = tmp_path / 'out2'
  proc = _run([str(tmp_path / 'data'), str(out), 'concurrent'], tmp_path,
              PYTHON=python, PROCS='2', MPS='1', PATH=path, FAIL_START='1')
  assert proc.returncode == 1
  assert log.read_text().split() == ['start']  # No quit for no daemon.
  assert ('the MPS daemon did not start; running without it'
          in (out / 'summary.txt').read_text())


def test_gpu_measurements_table_time_limit_asks_the_sweep_to_stop(tmp_path):
  out = tmp_path / 'out'
  start = time.monotonic()
  proc = _run([str(tmp_path / 'data'), str(out), 'table'], tmp_path,
              PYTHON=_fake_python(tmp_path), TABLE_SECONDS='2')
  assert time.monotonic() - start < 30  # The fake sweep would wait 60 s.
  assert proc.returncode == 1
  assert (out / 'summary.txt').read_text().startswith('table rc=124 ')
  # SIGTERM, which the sweep answers by saving and writing its table; not
  # SIGKILL.
  assert (out / 'paper_table' / 'stopped').exists()


def test_gpu_measurements_eval_augmented_evaluates_the_final_run(tmp_path):
  out = tmp_path / 'out'
  proc = _run([str(tmp_path / 'data'), str(out), 'eval_augmented'], tmp_path,
              PYTHON=_fake_python(tmp_path))
  assert proc.returncode == 0, proc.stderr
  with open(out / 'final' / 'benchmark.json') as f:
    result = json.load(f)
  assert result['mode'] == 'eval'
  assert result['config']['augment_test']
  assert result['config']['data_dir'] == str(tmp_path / 'data')


def test_gpu_measurements_refuses_bad_settings_before_any_step(tmp_path):
  out = tmp_path / 'out'
  for env, message in ((dict(CANDIDATES='f32 f64'), 'unknown candidate f64'),
                       (dict(PROCS='1'), "PROCS must be a whole number above "
                                         "1, not '1'"),
                       (dict(TABLE_SECONDS='5m'), 'TABLE_SECONDS must be'),
                       (dict(MPS='yes'), "MPS must be 0 or 1, not 'yes'"),
                       (dict(MPS='1', PATH='/usr/bin:/bin'),
                        'nvidia-cuda-mps-control is not on PATH')):
    proc = _run([str(tmp_path / 'data'), str(out), 'bench'], tmp_path,
                PYTHON='false', **env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
  assert not out.exists()
