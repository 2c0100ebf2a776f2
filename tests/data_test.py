"""The two data sources, the paper's split and clear errors on bad input."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from cifar_flax import data
import conftest


def test_archive_layout_and_split(tiny_config):
  ds = data.load_dataset(tiny_config)
  assert ds.train.images.dtype == np.uint8
  assert ds.train.images.shape[1:] == (32, 32, 3)
  # 250 training images: the first 20% (50) validate, the rest train.
  assert len(ds.validation) == 50 and len(ds.train) == 200
  raw = conftest.fake_split(250, 0)
  np.testing.assert_array_equal(ds.validation.labels, raw['fine_labels'][:50])
  np.testing.assert_array_equal(ds.train.labels, raw['fine_labels'][50:])
  # Row layout: red plane, green plane, blue plane, each row-major.
  first = raw['data'][0]
  assert ds.validation.images[0, 0, 1, 0] == first[1]
  assert ds.validation.images[0, 1, 0, 1] == first[1024 + 32]
  assert ds.validation.images[0, 31, 31, 2] == first[3071]
  np.testing.assert_array_equal(
      ds.validation.images,
      raw['data'][:50].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
  assert len(ds.test) == 120 and ds.num_classes == 100
  assert ds.class_names[3] == 'fine3'
  assert ds.fine_to_coarse[7] == 1
  assert ds.coarse_class_names == tuple(f'coarse{i}' for i in range(20))


def test_a_second_read_of_unchanged_files_reuses_the_arrays(tmp_path,
                                                           monkeypatch):
  """One read per process of unchanged files (a sweep's seeds, a notebook's
  evaluations); a changed or touched file, the other label type or another
  folder is read anew. The arrays are read-only, so that no reader can
  change what another one gets."""
  monkeypatch.setattr(data, '_last_read', {})
  reads = []
  read_members = data._read_members
  monkeypatch.setattr(data, '_read_members',
                      lambda d: reads.append(d) or read_members(d))
  for extracted in (False, True):
    where = str(tmp_path / str(extracted))
    conftest.write_archive(where, extracted=extracted)
    del reads[:]
    first = data.load_archive(where)
    again = data.load_archive(where)
    assert len(reads) == 1 and again[0].images is first[0].images
    for array in (first[0].images, first[1].labels, first[3]):
      with pytest.raises(ValueError, match='read-only'):
        array[0] = 0
    assert data.load_archive(where, 'coarse')[2][0] == 'coarse0'
    assert len(reads) == 2
    data.load_archive(where)
    assert len(reads) == 3  # One entry: the coarse read replaced it.
    conftest.write_archive(where, n_train=240, extracted=extracted)
    assert len(data.load_archive(where)[0]) == 240 and len(reads) == 4
    path = (os.path.join(where, 'cifar-100-python', 'meta') if extracted
            else os.path.join(where, 'cifar-100-python.tar.gz'))
    os.utime(path, ns=(1, 1))  # Same bytes, other mtime.
    data.load_archive(where)
    assert len(reads) == 5
    # The file written anew, same size, its old mtime restored (as cp -p does).
    with open(path, 'rb') as f:
      blob = f.read()
    os.remove(path)
    with open(path, 'wb') as f:
      f.write(blob)
    os.utime(path, ns=(1, 1))
    data.load_archive(where)
    assert len(reads) == 6


def test_channel_mean_is_the_float64_mean():
  images = np.random.default_rng(0).integers(0, 256, (300, 32, 32, 3),
                                             dtype=np.uint8)
  expected = images.reshape(-1, 3).astype(np.float64).mean(axis=0) / 255.0
  mean = data.channel_mean(images)
  assert mean.dtype == np.float32
  np.testing.assert_allclose(mean, expected, rtol=1e-7)


def test_coarse_labels_and_subsets(tiny_config):
  tiny_config.label_type = 'coarse'
  tiny_config.train_subset = 100
  tiny_config.test_subset = 30
  ds = data.load_dataset(tiny_config)
  assert ds.num_classes == 20 and ds.class_names[0] == 'coarse0'
  assert len(ds.train) == 80 and len(ds.validation) == 20 and len(ds.test) == 30
  # The coarse labels of the first 100 training images (20 validate) and of
  # the first 30 test images, and those images.
  train, test = conftest.fake_split(250, 0), conftest.fake_split(120, 1)
  coarse = np.asarray(train['coarse_labels'])
  np.testing.assert_array_equal(ds.validation.labels, coarse[:20])
  np.testing.assert_array_equal(ds.train.labels, coarse[20:100])
  np.testing.assert_array_equal(ds.test.labels, test['coarse_labels'][:30])
  as_images = lambda d: d.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(ds.train.images,
                                as_images(train['data'][20:100]))
  np.testing.assert_array_equal(ds.test.images, as_images(test['data'][:30]))


def test_extracted_folder(tmp_path):
  conftest.write_archive(str(tmp_path), extracted=True)
  train, test, names, _ = data.load_archive(str(tmp_path))
  assert len(train) == 250 and len(test) == 120 and len(names) == 100


def test_validation_fraction_field(tiny_config):
  tiny_config.validation_fraction = 0.5
  ds = data.load_dataset(tiny_config)
  assert len(ds.validation) == 125 and len(ds.train) == 125


def test_missing_path_is_named(tmp_path, monkeypatch):
  with pytest.raises(data.DataError, match='does not exist') as e:
    data.load_archive(str(tmp_path / 'nowhere'))
  assert 'seen from' not in str(e.value)
  # A relative path says from where it was looked for.
  monkeypatch.chdir(tmp_path)
  with pytest.raises(data.DataError, match=f"'nowhere' does not exist .*, "
                     f'seen from {tmp_path}; a run.s config.json keeps'):
    data.load_archive('nowhere')
  with pytest.raises(data.DataError, match='neither cifar-100-python.tar.gz'):
    data.load_archive(str(tmp_path))
  archive = tmp_path / 'cifar-100-python.tar.gz'
  archive.write_bytes(b'')
  with pytest.raises(data.DataError, match='is a file: give the folder that '
                     'holds cifar-100-python.tar.gz'):
    data.load_archive(str(archive))


def test_archive_without_members(tmp_path):
  members = {'train': conftest.fake_split(10, 0), 'meta': conftest.fake_meta()}
  conftest.write_archive(str(tmp_path), members=members)
  with pytest.raises(data.DataError, match="no member 'cifar-100-python/test'"):
    data.load_archive(str(tmp_path))


def test_truncated_archive(tmp_path):
  path = conftest.write_archive(str(tmp_path))
  blob = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(blob[:len(blob) // 2])
  with pytest.raises(data.DataError, match='truncated or corrupt archive'):
    data.load_archive(str(tmp_path))


def test_archive_of_several_gzip_members_loads(tmp_path):
  """gzip (and bgzip) output may be several concatenated members, and may
  be padded with zeros."""
  path = conftest.write_archive(str(tmp_path / 'one'))
  blob = gzip.decompress(open(path, 'rb').read())
  os.makedirs(tmp_path / 'two')
  with open(tmp_path / 'two' / os.path.basename(path), 'wb') as f:
    f.write(gzip.compress(blob[:5000]) + gzip.compress(blob[5000:])
            + bytes(100))  # Zero padding after them, as gzip allows.
  for a, b in zip(data.load_archive(str(tmp_path / 'one'))[:2],
                  data.load_archive(str(tmp_path / 'two'))[:2]):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize('damage', ['no trailer', 'wrong crc', 'trailing'])
def test_archive_whose_gzip_trailer_does_not_check(damage, tmp_path):
  """Every member decompresses, but the gzip trailer (CRC32 and length of
  the data) is missing or does not match it, or bytes follow it."""
  path = conftest.write_archive(str(tmp_path))
  blob = bytearray(open(path, 'rb').read())
  if damage == 'no trailer':
    blob = blob[:-8]
  elif damage == 'wrong crc':
    blob[-8] ^= 0xFF
  else:
    blob += b'junk'
  with open(path, 'wb') as f:
    f.write(blob)
  with pytest.raises(data.DataError, match='truncated or corrupt archive'):
    data.load_archive(str(tmp_path))


def test_corrupt_pickle_names_member(tmp_path):
  members = {'train': b'not a pickle at all', 'test': conftest.fake_split(5, 1),
             'meta': conftest.fake_meta()}
  conftest.write_archive(str(tmp_path), members=members)
  with pytest.raises(data.DataError, match='cifar-100-python/train: not a '
                     'readable pickle'):
    data.load_archive(str(tmp_path))


def test_wrong_shape_and_missing_key(tmp_path):
  bad = conftest.fake_split(10, 0)
  bad['data'] = bad['data'][:, :100]
  members = {'train': bad, 'test': conftest.fake_split(5, 1),
             'meta': conftest.fake_meta()}
  conftest.write_archive(str(tmp_path / 'a'), members=members)
  with pytest.raises(data.DataError, match=r'train: data has shape \(10, 100\)'):
    data.load_archive(str(tmp_path / 'a'))
  nolabels = conftest.fake_split(10, 0)
  del nolabels['fine_labels']
  members['train'] = nolabels
  conftest.write_archive(str(tmp_path / 'b'), members=members)
  with pytest.raises(data.DataError, match="missing key 'fine_labels'"):
    data.load_archive(str(tmp_path / 'b'))


@pytest.mark.parametrize('member, key, value, said', [
    ('train', 'fine_labels', ['a'] * 10, "'fine_labels' is not an array"),
    ('train', 'fine_labels', None, "'fine_labels' is not an array"),
    ('train', 'data', [[0] * 3072] * 9 + [[0] * 5], "'data' is not an array"),
    ('train', 'data', 'pixels', "'data' is not an array"),
    ('meta', 'fine_label_names', 5, "'fine_label_names' is not a list of "
     'class names'),
])
def test_malformed_member_fields_are_named(tmp_path, member, key, value, said):
  members = {'train': conftest.fake_split(10, 0),
             'test': conftest.fake_split(5, 1), 'meta': conftest.fake_meta()}
  members[member][key] = value
  conftest.write_archive(str(tmp_path), members=members)
  with pytest.raises(data.DataError, match=f'{member}: {said}'):
    data.load_archive(str(tmp_path))


def test_label_count_mismatch(tmp_path):
  bad = conftest.fake_split(10, 0)
  bad['fine_labels'] = bad['fine_labels'][:7]
  members = {'train': bad, 'test': conftest.fake_split(5, 1),
             'meta': conftest.fake_meta()}
  conftest.write_archive(str(tmp_path), members=members)
  with pytest.raises(data.DataError, match='7 labels for 10 images'):
    data.load_archive(str(tmp_path))


def test_bad_labels_are_named(tmp_path):
  """Labels of the wrong shape, and fine labels a coarse run only maps to
  superclasses, are checked too."""
  def load(name, label_type='fine', **train_fields):
    bad = conftest.fake_split(10, 0)
    bad.update(train_fields)
    conftest.write_archive(str(tmp_path / name), members={
        'train': bad, 'test': conftest.fake_split(5, 1),
        'meta': conftest.fake_meta()})
    return data.load_archive(str(tmp_path / name), label_type)
  with pytest.raises(data.DataError,
                     match=r'train: labels have shape \(10, 1\), expected '
                     r'\(10,\)'):
    load('2d', fine_labels=[[i] for i in range(10)])
  out_of_range = list(range(9)) + [100]
  with pytest.raises(data.DataError, match=r'train: labels outside \[0, 100\) '
                     r'\(fine\) or \[0, 20\) \(coarse\)'):
    load('fine100', 'coarse', fine_labels=out_of_range)
  with pytest.raises(data.DataError, match=r'train: labels outside'):
    load('fine-1', 'coarse', fine_labels=[-1] + list(range(1, 10)))
  # Class 0 under superclasses 0 and 1.
  with pytest.raises(data.DataError, match='train: class 0 is under more '
                     'than one superclass'):
    load('two', 'coarse', fine_labels=[0] * 10, coarse_labels=[0] * 9 + [1])


def test_archive_path_never_imports_tensorflow(fake_data_dir, tmp_path):
  """Training on the archive works with TensorFlow made unimportable."""
  code = f'''
import importlib.machinery, sys
_find = importlib.machinery.PathFinder.find_spec
def find_spec(name, path=None, target=None):  # As if TF were not installed.
  if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
    return None
  return _find(name, path, target)
importlib.machinery.PathFinder.find_spec = staticmethod(find_spec)
sys.path.insert(0, {conftest.ROOT!r})
from configs import test
from cifar_flax import data, train
c = test.get_config(); c.data_dir = {fake_data_dir!r}; c.num_epochs = 1
r = train.train_and_evaluate(c, {str(tmp_path / 'run')!r})
assert r['num_examples'] == 120, r
assert 'tensorflow' not in sys.modules
print('OK')
'''
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'OK' in out.stdout


class _HttpAnswer:
  """What requests.head returns, as far as the tfds source reads it."""

  def close(self):
    pass


def _no_network_check(monkeypatch):
  """The mock prepares nothing, so the tfds source first checks that tfds'
  download URL answers: here without the network. Returns the URLs checked."""
  requests = pytest.importorskip('requests')
  checked = []
  monkeypatch.setattr(requests, 'head', lambda url, **kwargs: checked.append(
      url) or _HttpAnswer())
  return checked


def test_tfds_source_restores_the_files_order(tiny_config, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  tf = pytest.importorskip('tensorflow')
  checked = _no_network_check(monkeypatch)
  tiny_config.data_dir = ''
  sizes = {'train': 120, 'test': 12}

  def as_dataset(self, split, *args, **kwargs):
    """Example i of the file: id '<split>_0000i', pixels i, fine label
    i % 100, coarse label that // 5; shuffled, as tfds stores them."""
    split = str(split)
    shuffled = np.random.default_rng(0).permutation(sizes[split])
    return tf.data.Dataset.from_generator(
        lambda: ({'id': f'{split}_{i:05d}',
                  'image': np.full((32, 32, 3), i, np.uint8),
                  'label': i % 100, 'coarse_label': i % 100 // 5}
                 for i in shuffled),
        output_types=self.info.features.dtype,
        output_shapes=self.info.features.shape)

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    ds = data.load_dataset(tiny_config)
  assert [url.rsplit('/', 1)[-1] for url in checked] == [
      'cifar-100-binary.tar.gz']
  # The file's first 20% validate, as with the archive.
  assert ds.validation.labels.tolist() == list(range(24))
  assert ds.train.labels.tolist() == [i % 100 for i in range(24, 120)]
  assert ds.test.labels.tolist() == list(range(12))
  np.testing.assert_array_equal(ds.train.images[:, 5, 7, 2],
                                np.arange(24, 120))
  assert ds.train.images.shape[1:] == (32, 32, 3)
  assert ds.train.images.dtype == np.uint8
  assert ds.num_classes == 100
  assert ds.fine_to_coarse.tolist() == [i // 5 for i in range(100)]


def test_tfds_path_without_tensorflow_is_one_clear_error(tiny_config,
                                                         monkeypatch):
  # As on the GPU machines, which have no TensorFlow.
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  tiny_config.data_dir = ''
  with pytest.raises(data.DataError,
                     match=r'no --config.data_dir given, and the '
                     r'tensorflow-datasets source cannot load '
                     r'\(ModuleNotFoundError.*give --config.data_dir=PATH, '
                     r'where PATH holds cifar-100-python.tar.gz'):
    data.load_dataset(tiny_config)


def test_tfds_examples_without_file_indices_are_refused(tiny_config,
                                                        monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  _no_network_check(monkeypatch)
  tiny_config.data_dir = ''
  # tfds' own mock gives every example a random id.
  with tfds.testing.mock_data(num_examples=40):
    with pytest.raises(data.DataError, match=r"tfds cifar100/train: example "
                       r"id '.*' is not 'train_' and an index"):
      data.load_dataset(tiny_config)


def _tfds_without_cifar100(tiny_config, tmp_path, monkeypatch, head):
  """tfds' real cifar100 builder on an empty tfds directory, with `head` in
  place of requests.head and a download_and_prepare that records its call
  and fails."""
  tfds = pytest.importorskip('tensorflow_datasets')
  requests = pytest.importorskip('requests')
  tiny_config.data_dir = ''
  tiny_config.tfds_data_dir = str(tmp_path / 'tfds')
  monkeypatch.setattr(requests, 'head', head)
  downloads = []

  def download_and_prepare(self, *args, **kwargs):
    downloads.append(self.data_dir)
    raise RuntimeError('disk full')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      download_and_prepare)
  return requests, downloads


def test_tfds_unreachable_download_fails_at_once_naming_the_way_out(
    tiny_config, tmp_path, monkeypatch):
  def unreachable(url, **kwargs):
    raise requests.ConnectionError(f'cannot resolve the host of {url}')
  requests, downloads = _tfds_without_cifar100(tiny_config, tmp_path,
                                               monkeypatch, unreachable)
  with pytest.raises(data.DataError) as e:
    data.load_dataset(tiny_config)
  message = str(e.value)
  assert str(tmp_path / 'tfds') in message
  assert 'cifar-100-binary.tar.gz is unreachable (ConnectionError)' in message
  assert '--config.data_dir=PATH' in message
  assert downloads == []  # tfds' minutes of retries never start.


def test_tfds_failing_download_is_a_data_error(tiny_config, tmp_path,
                                               monkeypatch):
  _, downloads = _tfds_without_cifar100(tiny_config, tmp_path, monkeypatch,
                                        lambda url, **kwargs: _HttpAnswer())
  with pytest.raises(data.DataError,
                     match='failed: RuntimeError: disk full') as e:
    data.load_dataset(tiny_config)
  assert str(tmp_path / 'tfds') in str(e.value)
  assert len(downloads) == 1


@pytest.mark.skipif(not os.path.exists(os.path.join(
    conftest.REAL_DATA, 'cifar-100-python.tar.gz')), reason='no real archive')
def test_real_archive_matches_official_statistics():
  train, test, names, f2c = data.load_archive(conftest.REAL_DATA)
  assert len(train) == 50_000 and len(test) == 10_000
  np.testing.assert_allclose(data.channel_mean(train.images),
                             [0.50707516, 0.48654887, 0.44091784], atol=1e-6)
  np.testing.assert_allclose(data.channel_mean(test.images),
                             [0.50879641, 0.48739301, 0.44194221], atol=1e-6)
  assert names[0] == 'apple' and len(names) == 100
  assert np.bincount(train.labels).tolist() == [500] * 100
  assert f2c is not None and set(f2c.tolist()) == set(range(20))
