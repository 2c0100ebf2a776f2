"""Shared fixtures: a small fake CIFAR-100 archive in the official layout."""

import io
import os
import pickle
import sys
import tarfile
import tempfile

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
REAL_DATA = os.path.join(ROOT, '..', 'shared', 'data')


def fake_split(n, seed):
  """Learnable fake images: each class has its own mean colour."""
  rng = np.random.default_rng(seed)
  fine = np.arange(n) % 100
  coarse = fine // 5
  base = (fine * 37 % 256)[:, None]
  data = np.clip(base + rng.integers(-20, 21, (n, 3072)), 0, 255)
  return {'data': data.astype(np.uint8), 'fine_labels': fine.tolist(),
          'coarse_labels': coarse.tolist(),
          'filenames': [f'unknown_{i:05d}.png' for i in range(n)],
          'batch_label': 'fake'}


def normal(seed, shape, dtype=np.float32):
  """Standard-normal test inputs drawn by numpy. XLA:CPU takes ~1.7 s to
  compile jax.random.normal for each new multi-axis shape (a test's inputs
  need not pay that)."""
  x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
  return jax.numpy.asarray(x, dtype)


def fake_meta():
  return {'fine_label_names': [f'fine{i}' for i in range(100)],
          'coarse_label_names': [f'coarse{i}' for i in range(20)]}


def write_archive(data_dir, n_train=250, n_test=120, members=None,
                  extracted=False):
  """Writes cifar-100-python.tar.gz (or the extracted folder) to data_dir."""
  members = members or {'train': fake_split(n_train, 0),
                        'test': fake_split(n_test, 1), 'meta': fake_meta()}
  blobs = {k: v if isinstance(v, bytes) else pickle.dumps(v, protocol=2)
           for k, v in members.items()}
  os.makedirs(data_dir, exist_ok=True)
  if extracted:
    folder = os.path.join(data_dir, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    for k, b in blobs.items():
      with open(os.path.join(folder, k), 'wb') as f:
        f.write(b)
    return folder
  path = os.path.join(data_dir, 'cifar-100-python.tar.gz')
  with tarfile.open(path, 'w:gz') as tar:
    for k, b in blobs.items():
      info = tarfile.TarInfo(f'cifar-100-python/{k}')
      info.size = len(b)
      tar.addfile(info, io.BytesIO(b))
  return path


@pytest.fixture(autouse=True, scope='session')
def _temporary_files_under_pytest(tmp_path_factory):
  """Temporary files and folders of the code under test (tfds' mock data
  leaves empty folders) go under pytest's own temporary folder, which it
  prunes, not into the system's."""
  old, old_env = tempfile.tempdir, os.environ.get('TMPDIR')
  tempfile.tempdir = os.environ['TMPDIR'] = str(  # Subprocesses' too.
      tmp_path_factory.mktemp('tempfile'))
  yield
  tempfile.tempdir = old
  if old_env is None:
    del os.environ['TMPDIR']
  else:
    os.environ['TMPDIR'] = old_env


@pytest.fixture(scope='session')
def fake_data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('fake_cifar'))
  write_archive(d)
  return d


@pytest.fixture
def tiny_config(fake_data_dir):
  from configs import test as test_config
  config = test_config.get_config()
  config.data_dir = fake_data_dir
  return config


@pytest.fixture(scope='session')
def xla_cache_dir(tmp_path_factory):
  """A compilation cache shared by tests that compile the same programs."""
  return str(tmp_path_factory.mktemp('xla_cache'))
