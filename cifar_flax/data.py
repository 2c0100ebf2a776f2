"""CIFAR-100 from the official python archive or from tensorflow-datasets.

Both sources give the same thing: uint8 NHWC images, int32 labels and class
names, split like the paper (the first `validation_fraction` of the training
set validates, as Keras ImageDataGenerator(validation_split=...) does).
tfds' examples are first put back in the order of the file tfds read
(cifar-100-binary), since tfds shuffles them when it prepares the dataset.
TensorFlow is imported only when tensorflow-datasets is the source.
"""

import dataclasses
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

ARCHIVE_NAME = 'cifar-100-python.tar.gz'
FOLDER_NAME = 'cifar-100-python'
IMAGE_SHAPE = (32, 32, 3)
_LABEL_KEYS = {'fine': ('fine_labels', 'fine_label_names'),
               'coarse': ('coarse_labels', 'coarse_label_names')}


class DataError(Exception):
  """The data is missing, unreadable or not shaped like CIFAR-100."""


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # (N, 32, 32, 3) uint8
  labels: np.ndarray  # (N,) int32

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  train: Split
  validation: Split
  test: Split
  class_names: tuple
  # Fine-to-coarse label map (100,) when both are known, else None.
  fine_to_coarse: np.ndarray | None = None
  # The 20 superclass names (whatever label_type), when the source has them.
  coarse_class_names: tuple | None = None

  @property
  def num_classes(self):
    return len(self.class_names)


def _check_arrays(images, labels, num_classes, where):
  if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
    raise DataError(f'{where}: images have shape {images.shape}, expected '
                    f'(N, 32, 32, 3)')
  if images.dtype != np.uint8:
    raise DataError(f'{where}: images are {images.dtype}, expected uint8')
  if labels.ndim != 1:
    raise DataError(f'{where}: labels have shape {labels.shape}, expected '
                    f'({images.shape[0]},)')
  if labels.shape[0] != images.shape[0]:
    raise DataError(f'{where}: {labels.shape[0]} labels for '
                    f'{images.shape[0]} images')
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(f'{where}: labels outside [0, {num_classes})')


def _unpickle(raw, where):
  try:
    obj = pickle.loads(raw, encoding='latin1')
  except Exception as e:  # pickle raises many types on corrupt input.
    raise DataError(f'{where}: not a readable pickle ({type(e).__name__}: '
                    f'{e})') from e
  if not isinstance(obj, dict):
    raise DataError(f'{where}: expected a dict, found {type(obj).__name__}')
  return obj


def _get(obj, key, where):
  if key not in obj:
    raise DataError(f'{where}: missing key {key!r} (has {sorted(obj)})')
  return obj[key]


def _array(obj, key, where, dtype=None):
  """obj[key] as a numpy array; a DataError if it holds no array of
  numbers (ragged rows, strings, None)."""
  try:
    out = np.asarray(_get(obj, key, where), dtype=dtype)
  except (ValueError, TypeError) as e:
    raise DataError(f'{where}: {key!r} is not an array of numbers '
                    f'({type(e).__name__}: {e})') from e
  if not np.issubdtype(out.dtype, np.number):  # Objects, strings.
    raise DataError(f'{where}: {key!r} is not an array of numbers (found '
                    f'{out.dtype})')
  return out


def _decode_split(obj, label_key, num_classes, where):
  data = _array(obj, 'data', where)
  labels = _array(obj, label_key, where, np.int64)
  if data.ndim != 2 or data.shape[1] != 3072:
    raise DataError(f'{where}: data has shape {data.shape}, expected (N, 3072)')
  # Each row: the red plane, then green, then blue, each 32x32 row-major.
  # Stacking the planes is ~3x faster than copying the transposed array.
  planes = data.astype(np.uint8, copy=False).reshape(-1, 3, 32 * 32)
  images = np.stack([planes[:, c] for c in range(3)], axis=-1).reshape(
      (-1,) + IMAGE_SHAPE)
  _check_arrays(images, labels, num_classes, where)
  return Split(images, labels.astype(np.int32))


def _gunzip(raw):
  """The data of gzip file `raw`, one or more members (as gzip reads it,
  zero padding after them too), each checked against its trailer's CRC and
  length; zlib.error if not."""
  parts = []
  while True:
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    parts.append(inflate.decompress(raw))
    if not inflate.eof:
      raise zlib.error('the data ends before the end of the gzip stream')
    raw = inflate.unused_data
    if not raw.strip(b'\0'):  # gzip ignores zero padding after the end.
      return parts[0] if len(parts) == 1 else b''.join(parts)


def _read_members(data_dir):
  """Returns {'train', 'test', 'meta'} -> (bytes, description for errors)."""
  if not data_dir:
    raise DataError('no data_dir given')
  if os.path.isfile(data_dir):
    raise DataError(f'data_dir {data_dir!r} is a file: give the folder that '
                    f'holds {ARCHIVE_NAME} (or {FOLDER_NAME}/)')
  if not os.path.isdir(data_dir):
    here = ('' if os.path.isabs(data_dir) else
            f', seen from {os.getcwd()}; a run\'s config.json keeps the path '
            f'as given where it trained: --config.data_dir=PATH')
    raise DataError(f'data_dir {data_dir!r} does not exist or is not a '
                    f'directory (it should hold {ARCHIVE_NAME} or '
                    f'{FOLDER_NAME}/{here})')
  folder = os.path.join(data_dir, FOLDER_NAME)
  archive = os.path.join(data_dir, ARCHIVE_NAME)
  names = ('train', 'test', 'meta')
  if os.path.isdir(folder):
    out = {}
    for name in names:
      path = os.path.join(folder, name)
      if not os.path.isfile(path):
        raise DataError(f'{path}: missing (expected the official '
                        f'{FOLDER_NAME}/ layout with train, test, meta)')
      with open(path, 'rb') as f:
        out[name] = (f.read(), path)
    return out
  if not os.path.isfile(archive):
    raise DataError(f'{data_dir!r} holds neither {ARCHIVE_NAME} nor '
                    f'{FOLDER_NAME}/')
  out = {}
  wanted = {f'{FOLDER_NAME}/{name}': name for name in names}
  try:
    # Decompressed whole in one call, which checks the gzip trailer's CRC
    # and length (tarfile's own gzip stream never does), as fast as that
    # stream; the members are views of the tar in memory, not copies.
    with open(archive, 'rb') as f:
      tar_bytes = _gunzip(f.read())
    view = memoryview(tar_bytes)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode='r:') as tar:
      for member in tar:
        name = wanted.get(member.name)
        if name is None:
          continue
        where = f'{archive}:{member.name}'
        if not member.isfile():
          raise DataError(f'{where}: not a regular file')
        out[name] = (view[member.offset_data:
                          member.offset_data + member.size], where)
        if len(out) == len(names):
          break
  except zlib.error as e:
    raise DataError(f'{archive}: truncated or corrupt archive (gzip: '
                    f'{str(e).split(": ", 1)[-1]})') from e
  except (tarfile.TarError, EOFError, OSError) as e:
    raise DataError(f'{archive}: truncated or corrupt archive '
                    f'({type(e).__name__}: {e})') from e
  for member, name in wanted.items():
    if name not in out:
      raise DataError(f'{archive}: no member {member!r} (expected the '
                      f'official layout with train, test, meta)')
  return out


def load_archive(data_dir, label_type='fine'):
  """Reads the official python archive (or its extracted folder) in place.

  Returns (train Split, test Split, class_names, fine_to_coarse).
  """
  return _read_archive(data_dir, label_type)[:4]


# The last archive read in this process, with what identifies its files:
# a sweep trains its seeds one after another in one process, and a notebook
# may evaluate several runs, each reading the same archive again otherwise
# (~2 s each). One entry, so at most one dataset's arrays (~180 MB) are held.
_last_read = {}


def _files(data_dir):
  """What _read_members would read: each file's real path, device, inode,
  size, modification and change times (a copy that keeps the size and
  restores the modification time, as cp -p does, still changes the inode or
  the change time), or None where that is not certain (it will name the
  problem)."""
  folder = os.path.join(data_dir, FOLDER_NAME)
  paths = ([os.path.join(folder, n) for n in ('train', 'test', 'meta')]
           if os.path.isdir(folder) else [os.path.join(data_dir, ARCHIVE_NAME)])
  try:
    stats = [os.stat(p) for p in paths]
  except OSError:
    return None
  return tuple((os.path.realpath(p), st.st_dev, st.st_ino, st.st_size,
                st.st_mtime_ns, st.st_ctime_ns) for p, st in zip(paths, stats))


def _read_archive(data_dir, label_type):
  """load_archive's tuple plus the coarse class names (or None). The arrays
  are read-only: a second read of the same unchanged files in this process
  returns the same ones."""
  files = _files(data_dir) if data_dir else None
  key = (files, label_type)
  if files is not None and _last_read.get('key') == key:
    return _last_read['value']
  _last_read.clear()  # Not two datasets in memory while this one is read.
  value = _read_archive_uncached(data_dir, label_type)
  for split in value[:2]:
    split.images.flags.writeable = split.labels.flags.writeable = False
  if value[3] is not None:
    value[3].flags.writeable = False
  if files is not None:
    _last_read.update(key=key, value=value)
  return value


def _read_archive_uncached(data_dir, label_type):
  label_key, names_key = _label_keys(label_type)
  members = _read_members(data_dir)
  meta = _unpickle(*members['meta'])
  class_names = _names(meta, names_key, members['meta'][1])
  coarse_names = (_names(meta, 'coarse_label_names', members['meta'][1])
                  if 'coarse_label_names' in meta else None)
  train_obj = _unpickle(*members['train'])
  test_obj = _unpickle(*members['test'])
  train = _decode_split(train_obj, label_key, len(class_names),
                        members['train'][1])
  test = _decode_split(test_obj, label_key, len(class_names),
                       members['test'][1])
  fine_to_coarse = None
  if 'fine_labels' in train_obj and 'coarse_labels' in train_obj:
    fine_to_coarse = _fine_to_coarse(
        _array(train_obj, 'fine_labels', members['train'][1], np.int64),
        _array(train_obj, 'coarse_labels', members['train'][1], np.int64),
        members['train'][1])
  return train, test, class_names, fine_to_coarse, coarse_names


def _names(meta, key, where):
  names = _get(meta, key, where)
  if (not isinstance(names, (list, tuple)) or
      not all(isinstance(n, str) for n in names)):
    raise DataError(f'{where}: {key!r} is not a list of class names')
  return tuple(names)


def _fine_to_coarse(fine, coarse, where):
  """The (100,) superclass of each class, read off the training labels; None
  if some class never occurs. Labels out of range, or a class under two
  superclasses, are a DataError naming `where`."""
  fine, coarse = np.asarray(fine, np.int64), np.asarray(coarse, np.int64)
  if fine.shape != coarse.shape or fine.ndim != 1:
    raise DataError(f'{where}: fine labels {fine.shape} and coarse labels '
                    f'{coarse.shape} do not pair up')
  if fine.size and (fine.min() < 0 or fine.max() >= 100 or coarse.min() < 0
                    or coarse.max() >= 20):
    raise DataError(f'{where}: labels outside [0, 100) (fine) or [0, 20) '
                    f'(coarse)')
  mapping = np.full(100, -1, dtype=np.int32)
  mapping[fine] = coarse
  if fine.size and (mapping[fine] != coarse).any():
    split = fine[mapping[fine] != coarse][0]
    raise DataError(f'{where}: class {split} is under more than one '
                    f'superclass')
  return mapping if (mapping >= 0).all() else None


def _label_keys(label_type):
  if label_type not in _LABEL_KEYS:
    raise DataError(f'label_type {label_type!r}: expected one of '
                    f'{sorted(_LABEL_KEYS)}')
  return _LABEL_KEYS[label_type]


def load_tfds(label_type='fine', data_dir=None):
  """Reads tensorflow-datasets' 'cifar100' (imports TensorFlow)."""
  return _read_tfds(label_type, data_dir)[:4]


def _read_tfds(label_type, data_dir):
  """load_tfds's tuple plus the coarse class names."""
  _label_keys(label_type)
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # As on machines without TensorFlow.
    raise DataError(
        f'no --config.data_dir given, and the tensorflow-datasets source '
        f'cannot load ({type(e).__name__}: {e}): give '
        f'--config.data_dir=PATH, where PATH holds {ARCHIVE_NAME} or '
        f'{FOLDER_NAME}/, or install requirements.txt') from e
  label_key = 'label' if label_type == 'fine' else 'coarse_label'
  splits = {}
  builder = tfds.builder('cifar100', data_dir=data_dir or None)
  if not builder.is_prepared():
    _download_tfds(builder)
  for split in ('train', 'test'):
    # Batched reads: batch_size=-1 crashes TensorFlow 2.21 under mock data.
    batches = list(tfds.as_numpy(tfds.load(
        'cifar100', split=split, data_dir=data_dir or None,
        batch_size=10_000, shuffle_files=False)))
    if not batches:
      raise DataError(f'tfds cifar100/{split}: no examples')
    order = _file_order(np.concatenate([b['id'] for b in batches]), split)
    cat = lambda key: np.concatenate([b[key] for b in batches])[order]
    images = cat('image').astype(np.uint8)
    labels = cat(label_key).astype(np.int32)
    fine, coarse = cat('label'), cat('coarse_label')
    splits[split] = (Split(images, labels), fine, coarse)
  class_names = tuple(builder.info.features[label_key].names)
  for split, (s, _, _) in splits.items():
    _check_arrays(s.images, s.labels, len(class_names), f'tfds cifar100/{split}')
  train, fine, coarse = splits['train']
  return (train, splits['test'][0], class_names,
          _fine_to_coarse(fine, coarse, 'tfds cifar100/train'),
          tuple(builder.info.features['coarse_label'].names))


def _file_order(ids, split):
  """The permutation that puts tfds' examples of `split` back in the order of
  the file they came from. tfds shuffles a split when it prepares it; each
  example keeps its index in the file as its id ('train_00042'). In file
  order the first 20% of the training set validates, as in the paper."""
  prefix = f'{split}_'
  ids = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
  bad = [i for i in ids
         if not (i.startswith(prefix) and i[len(prefix):].isdigit())]
  if bad:
    raise DataError(f'tfds cifar100/{split}: example id {bad[0]!r} is not '
                    f'{prefix!r} and an index, so the file order (and the '
                    f"paper's validation split) is unknown")
  index = np.array([int(i[len(prefix):]) for i in ids])
  if not np.array_equal(np.sort(index), np.arange(len(index))):
    raise DataError(f'tfds cifar100/{split}: the example ids are not the '
                    f'indices 0-{len(index) - 1}, each once')
  return np.argsort(index)


def _download_tfds(builder):
  """Downloads and prepares tfds' cifar100. Offline, tfds would retry for
  minutes and end in a traceback: one quick request to each download URL
  first, and any failure becomes a DataError naming the directory and the
  way around it (the official archive)."""
  import requests  # pylint: disable=g-import-not-at-top
  where = (f'tensorflow-datasets has no prepared cifar100 in '
           f'{builder.data_dir!r}')
  hint = ('Offline, use the official archive instead: --config.data_dir=PATH, '
          f'where PATH holds {ARCHIVE_NAME}')
  for url in builder.url_infos:
    try:  # Any HTTP answer will do; only an unreachable host stops here.
      requests.head(url, timeout=10, allow_redirects=True).close()
    except requests.RequestException as e:
      raise DataError(f'{where} and cannot download it: {url} is unreachable '
                      f'({type(e).__name__}). {hint}') from e
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{where}, and downloading and preparing it failed: '
                    f'{type(e).__name__}: {e}. {hint}') from e


def validation_split(split, fraction):
  """Keras ImageDataGenerator semantics: the first `fraction` validates."""
  if not 0.0 < fraction < 1.0:
    raise DataError(f'validation_fraction must be in (0, 1), got {fraction}')
  n_val = int(len(split) * fraction)
  if n_val == 0 or n_val == len(split):
    raise DataError(f'validation_fraction {fraction} of {len(split)} training '
                    f'images leaves an empty split')
  return (Split(split.images[n_val:], split.labels[n_val:]),
          Split(split.images[:n_val], split.labels[:n_val]))


def _head(split, n):
  return split if not n else Split(split.images[:n], split.labels[:n])


def load_dataset(config):
  """The train/validation/test splits the config asks for."""
  if config.data_dir:
    train, test, names, f2c, coarse_names = _read_archive(
        os.path.expanduser(config.data_dir), config.label_type)
  else:
    train, test, names, f2c, coarse_names = _read_tfds(config.label_type,
                                                       config.tfds_data_dir)
  train, val = validation_split(_head(train, config.train_subset),
                                config.validation_fraction)
  return Dataset(train=train, validation=val,
                 test=_head(test, config.test_subset), class_names=names,
                 fine_to_coarse=f2c, coarse_class_names=coarse_names)


def channel_mean(images):
  """Per-channel mean in [0, 1] (Keras featurewise_center on x/255).
  Exact integer sums, one channel at a time: ~40x faster than a float64
  mean over the (N*32*32, 3) array."""
  sums = np.array([images[..., c].sum(dtype=np.int64) for c in range(3)])
  return (sums / images[..., 0].size / 255.0).astype(np.float32)
