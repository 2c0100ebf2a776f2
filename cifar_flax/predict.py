"""Classifies new photos with a workdir's best checkpoint.

Each photo is made RGB (grayscale, palette, CMYK, 16-bit; transparency over
white), its centre square is cut out (CIFAR objects are centred and square)
and resized to 32x32, then it is classified like a clean test image. Per
photo: a top-k table on stdout and a PNG (photo, the 32x32 input, top-k bars).
"""

import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from PIL import ImageOps

from cifar_flax import data as data_lib
from cifar_flax import train
from cifar_flax import workdir as workdir_lib

TOP_K = 5
PREDICTIONS = 'predictions'  # Under reports/ (reports.py).
_SIZE = data_lib.IMAGE_SHAPE[:2]
DISPLAY_SIZE = 1024  # Longest side of the photo drawn in a prediction figure.


class ImageReadError(Exception):
  """A file given to predict is missing, empty or not an image."""


def _to_rgb(image):
  """Any PIL mode -> 'RGB'; transparent pixels become white."""
  if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):  # 16/32-bit gray.
    a = np.asarray(image, np.float64)
    # 16-bit modes span 0-65535, however dark the photo; 'I' and 'F' say
    # nothing of their range: read as 16-bit if above 255, else as 8-bit,
    # and floats no larger than 1 as [0, 1].
    if image.mode.startswith('I;16') or a.max() > 255:
      a = a / 257.0
    elif image.mode == 'F' and a.max() <= 1.0:
      a = a * 255.0
    image = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8),
                            'L')
  if image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info:
    rgba = image.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB')
  return image.convert('RGB')


def upright_rgb(image):
  """A PIL image as the RGB photo it shows: turned as its EXIF orientation
  says, in RGB (transparency over white)."""
  return _to_rgb(ImageOps.exif_transpose(image))


def load_image(path):
  """(the photo as RGB PIL image, its (32, 32, 3) uint8 network input)."""
  if not os.path.exists(path):
    raise ImageReadError(f'{path}: no such file')
  if os.path.isdir(path):
    raise ImageReadError(f'{path}: is a directory, not an image')
  if os.path.getsize(path) == 0:
    raise ImageReadError(f'{path}: empty file')
  try:
    # A photo over PIL's MAX_IMAGE_PIXELS (~89 MP) is a warning, classified
    # as any other; over twice that, an error (below).
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(path) as image:
        image.load()
        photo = upright_rgb(image)
  except Image.UnidentifiedImageError:
    raise ImageReadError(f'{path}: not an image (PIL cannot identify '
                         f'it)') from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ImageReadError(f'{path}: unreadable image ({type(e).__name__}: '
                         f'{e})') from None
  return photo, network_input(photo)


def network_input(photo):
  """The (32, 32, 3) uint8 input of an RGB photo: its centre square,
  resized."""
  small = ImageOps.fit(photo, _SIZE, method=Image.Resampling.LANCZOS)
  return np.asarray(small, np.uint8)


def softmax_program(aug_config):
  """The jitted softmax of the network's outputs for probabilities()."""
  return jax.jit(lambda state, x, mean: jax.nn.softmax(
      train.predict_logits(state, x, mean, aug_config), axis=-1))


def probabilities(restored, images, aug_config, batch_size, softmax=None):
  """Softmax outputs (N, classes) of uint8 images, `batch_size` at a time
  (the last batch padded, so one compiled program serves every batch);
  `softmax`: softmax_program(aug_config), made anew if not given."""
  softmax = softmax or softmax_program(aug_config)
  # A power of two up to batch_size: few programs for calls of every size.
  batch_size = max(1, min(batch_size, 1 << (len(images) - 1).bit_length()))
  out = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    n = len(batch)
    pad = np.zeros((batch_size - n,) + batch.shape[1:], batch.dtype)
    p = softmax(restored.state, jnp.asarray(np.concatenate([batch, pad])),
                restored.mean)
    out.append(np.asarray(p)[:n])
  if not out:
    return np.zeros((0, len(restored.class_names)), np.float32)
  return np.concatenate(out)


def top_k_table(probs, class_names, k=TOP_K):
  """[(class name, probability)], most probable first."""
  order = np.argsort(-probs, kind='stable')[:k]
  return [(class_names[i], float(probs[i])) for i in order]


def format_table(path, table):
  width = max(len(name) for name, _ in table)
  lines = [f'{path}:', f'  {"class":<{width}}  probability']
  lines += [f'  {name:<{width}}  {p:11.4f}' for name, p in table]
  return '\n'.join(lines)


def for_display(photo, size=DISPLAY_SIZE):
  """A copy of `photo` whose longer side is at most `size` pixels, aspect
  kept: the figure's panel shows no more (an 11000x9000 photo drawn whole
  took 18 s and 6 GB)."""
  shown = photo.copy()
  shown.thumbnail((size, size), Image.Resampling.LANCZOS)
  return shown


def plot_prediction(photo, small, table, title, path):
  """PNG: the photo, the 32x32 input the network saw, and top-k bars."""
  from cifar_flax import reports  # pylint: disable=g-import-not-at-top
  fig = reports.new_figure((11, 3.8), layout='constrained')
  fig.get_layout_engine().set(w_pad=0.1)
  grid = fig.add_gridspec(1, 3, width_ratios=(1.2, 1, 1.6))
  ax = fig.add_subplot(grid[0])
  ax.imshow(for_display(photo))
  ax.set_title(f'photo\n({photo.width}x{photo.height})', fontsize=10)
  ax.axis('off')
  ax = fig.add_subplot(grid[1])
  ax.imshow(small, interpolation='nearest')
  ax.set_title('network input\n(centre square, 32x32)', fontsize=10)
  ax.axis('off')
  ax = fig.add_subplot(grid[2])
  names = [name for name, _ in table][::-1]
  probs = [p for _, p in table][::-1]
  bars = ax.barh(names, probs, color='tab:blue')
  bars[-1].set_color('tab:orange')
  for y, p in enumerate(probs):
    ax.text(min(p + 0.02, 0.82), y, f'{p:.3f}', va='center', fontsize=9)
  ax.set_xlim(0, 1)
  ax.set_xlabel('probability')
  ax.set_title(f'top-{len(table)}', fontsize=10)
  fig.suptitle(title, fontsize=10)
  reports.save_figure(fig, path)


def _output_path(out_dir, image_path, used):
  stem = os.path.splitext(os.path.basename(image_path))[0] or 'image'
  name, i = f'{stem}_top{TOP_K}.png', 2
  while name in used:
    name, i = f'{stem}_{i}_top{TOP_K}.png', i + 1
  used.add(name)
  return os.path.join(out_dir, name)


def predict_images(config, workdir, image_paths):
  """Classifies each image; returns the exit status (1 if any failed)."""
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  from cifar_flax import reports  # pylint: disable=g-import-not-at-top
  if not image_paths:
    raise ImageReadError('--mode=predict needs images: '
                         '--images=photo1.jpg,photo2.png')
  restored = evaluate.load_best(config, workdir)
  loaded, failed = [], 0
  for path in image_paths:
    try:
      loaded.append((path,) + load_image(path))
    except ImageReadError as e:
      print(f'error: {e}', file=sys.stderr)
      failed += 1
  differ = evaluate.differing_fields(config, workdir, evaluate.EVAL_FIELDS)
  out_dir = os.path.join(reports.reports_dir(workdir, differ), PREDICTIONS)
  if loaded:
    workdir_lib.ensure_writable_dir(out_dir, 'predictions folder')
    probs = probabilities(restored, np.stack([s for _, _, s in loaded]),
                          config.augment, config.eval_batch_size)
    used = set()
    for (path, photo, small), p in zip(loaded, probs):
      table = top_k_table(p, restored.class_names)
      png = _output_path(out_dir, path, used)
      plot_prediction(photo, small, table, f'{os.path.basename(path)}  '
                      f'(best checkpoint, epoch {restored.epoch})', png)
      print(format_table(path, table))
      print(f'  -> {png}', flush=True)
  print(f'{len(loaded)} image(s) classified, {failed} failed'
        + (f'; plots in {out_dir}{evaluate.differs_note(differ)}'
           if loaded else ''))
  return 1 if failed else 0
