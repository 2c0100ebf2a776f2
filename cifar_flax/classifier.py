"""A trained run in Python (a notebook, a script): its best checkpoint
classifies images and measures the test set as main.py's predict and eval
modes do, and writes nothing.

  from cifar_flax import classifier
  model = classifier.load('runs/final')     # with the run's own config.json
  model.top_k('cat.jpg')                    # [(class name, probability)] x 5
  model.probabilities(images)               # uint8 (N, 32, 32, 3) -> (N, 100)
  model.test_metrics(data_dir='../shared/data')   # {'loss', 'top1', 'top5'}

Images are uint8 RGB pixels as CIFAR stores them, (32, 32, 3) or a batch
(N, 32, 32, 3), or photos: file paths or PIL images, any size, made 32x32 as
--mode=predict makes them (centre square, resized). One image gives one
result, a list or a batch a list (an array of rows) of them.
"""

import glob
import numbers
import os

import numpy as np
from PIL import Image

from cifar_flax import config_checks
from cifar_flax import data as data_lib
from cifar_flax import evaluate
from cifar_flax import predict
from cifar_flax import workdir as workdir_lib

_SHAPE = data_lib.IMAGE_SHAPE
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PHOTO = (str, os.PathLike, Image.Image)  # A photo: its file's path, or PIL's.


def _check_workdir(workdir):
  """A WorkdirError unless `workdir` is the folder of a run (one that holds
  runs, a sweep's, names some of them)."""
  if not os.path.isdir(workdir):
    raise workdir_lib.WorkdirError(
        f'{workdir!r} is not a folder: load() takes the workdir of a run')
  if os.path.exists(os.path.join(workdir, workdir_lib.CONFIG_FILE)):
    return
  runs = sorted(os.path.relpath(os.path.dirname(p), workdir) for pattern in (
      '*', '*/*') for p in glob.glob(os.path.join(
          glob.escape(workdir), pattern, workdir_lib.CONFIG_FILE)))
  raise workdir_lib.WorkdirError(
      f'{workdir!r} holds no run (no {workdir_lib.CONFIG_FILE})' + (
          f'; the runs in it: {", ".join(runs[:6])}'
          + (', ...' if len(runs) > 6 else '') if runs else ''))


def load(workdir, config=None):
  """The best checkpoint (lowest validation loss) of the run in `workdir`.
  `config`: the run's own config.json (configs/run.py) unless given; one
  that computes another model is refused, as in --mode=eval."""
  workdir = os.path.expanduser(os.fspath(workdir))
  _check_workdir(workdir)
  given = config is not None
  if not given:
    try:
      from configs import run as run_config  # pylint: disable=g-import-not-at-top
    except ImportError as e:  # Another 'configs' first on sys.path.
      raise ImportError(
          f'load() reads the run\'s config with this repository\'s '
          f'configs/run.py, but "import configs" finds another ({e}); put '
          f'{_ROOT} first on sys.path, or pass config=') from e
    config = run_config.get_config(workdir)
  try:
    restored = evaluate.load_best(config, workdir)
  except workdir_lib.WorkdirError as e:  # Its advice is for main.py's flags.
    if not given:
      raise
    raise workdir_lib.WorkdirError(
        f'{e}. In Python: load({workdir!r}) without config= uses the run\'s '
        f'own config; a config given must compute the same model, or have '
        f'allow_config_change = True') from e
  return Classifier(config, restored, workdir)


def _network_input(image):
  """One image as the network's (32, 32, 3) uint8 input."""
  if isinstance(image, (str, os.PathLike)):
    return predict.load_image(os.path.expanduser(os.fspath(image)))[1]
  if isinstance(image, Image.Image):
    return predict.network_input(predict.upright_rgb(image))
  return _pixels(image, one=True)


def _pixels(images, one):
  """uint8 pixels of an array (or nested lists) of one image or a batch, or
  a ValueError that names what is wrong with it."""
  array = np.asarray(images)
  if array.dtype == object or array.ndim == 0:
    raise ValueError(f'images: a {type(images).__name__}, where an array of '
                     f'RGB pixels, a file path or a PIL image is expected')
  shape = _SHAPE if one else (None,) + _SHAPE
  what = '(32, 32, 3)' if one else '(N, 32, 32, 3)'
  if array.ndim != len(shape) or any(
      s is not None and s != a for s, a in zip(shape, array.shape)):
    raise ValueError(f'images: an array of shape {array.shape}, where '
                     f'{what} RGB pixels are expected (or file paths, PIL '
                     f'images)')
  if array.dtype == np.uint8:
    return array
  if not np.issubdtype(array.dtype, np.integer):
    hint = ('; for floats in [0, 1]: (x * 255).round().astype(np.uint8)'
            if np.issubdtype(array.dtype, np.floating) else '')
    raise ValueError(f'images: {array.dtype} pixels, where uint8 (0-255, as '
                     f'CIFAR stores them) are expected{hint}')
  if array.size and (array.min() < 0 or array.max() > 255):
    raise ValueError(f'images: pixel values from {array.min()} to '
                     f'{array.max()}, outside 0-255')
  return array.astype(np.uint8)


def _batch(images):
  """(uint8 (N, 32, 32, 3), whether `images` was one image)."""
  if isinstance(images, _PHOTO):
    return _network_input(images)[None], True
  if isinstance(images, (list, tuple)):
    if not images:
      return np.zeros((0,) + _SHAPE, np.uint8), False
    # Items that are images each; else nested lists of pixel values.
    if any(isinstance(i, _PHOTO) or hasattr(i, 'ndim') for i in images):
      return np.stack([_network_input(i) for i in images]), False
  one = np.ndim(images) == len(_SHAPE)
  batch = _pixels(images, one)
  return (batch[None] if one else batch), one


class Classifier:
  """A run's best checkpoint with what it needs to classify (see load())."""

  def __init__(self, config, restored, workdir):
    self.config = config
    self.restored = restored
    self.workdir = workdir
    self._softmax = predict.softmax_program(config.augment)

  @property
  def class_names(self):
    return self.restored.class_names

  @property
  def epoch(self):
    """The epoch of the best checkpoint."""
    return self.restored.epoch

  def probabilities(self, images):
    """Softmax outputs: (classes,) for one image, (N, classes) for more."""
    batch, one = _batch(images)
    probs = predict.probabilities(self.restored, batch, self.config.augment,
                                  self.config.eval_batch_size, self._softmax)
    return probs[0] if one else probs

  def top_k(self, images, k=predict.TOP_K):
    """[(class name, probability)], most probable first: one such list for
    one image, a list of them for more."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
      raise ValueError(f'k={k!r}: the number of classes to list, 1 or more')
    probs = self.probabilities(images)
    if probs.ndim == 1:
      return predict.top_k_table(probs, self.class_names, k)
    return [predict.top_k_table(p, self.class_names, k) for p in probs]

  def test_metrics(self, data_dir=None):
    """Loss, top-1 and top-5 over the test images of the config's data
    (`data_dir`: another copy of the archive), as --mode=eval measures them
    (clean images, unless config.augment_test); writes no eval.json."""
    config = self.config
    if data_dir is not None:
      config = config.copy_and_resolve_references()
      config.data_dir = data_dir
    try:
      dataset = data_lib.load_dataset(config)
      evaluate.check_classes(self.restored, dataset, self.workdir, config)
    except (data_lib.DataError, config_checks.ConfigError) as e:
      # Their advice is for main.py's flags.
      ran = self.config.data_dir
      raise type(e)(f'{e}. In Python: test_metrics(data_dir=PATH), PATH '
                    f'holding {data_lib.ARCHIVE_NAME} (or '
                    f'{data_lib.FOLDER_NAME}/) of the run\'s dataset'
                    + (f' (it trained with {ran!r})' if ran else '')) from e
    return evaluate.test_metrics(config, self.restored, dataset.test)
