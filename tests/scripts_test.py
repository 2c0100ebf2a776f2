"""scripts/: the GPU measurement script's guards (it runs nothing here)."""

import os
import subprocess

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
