"""Reports and predictions of a tiny trained run: every artefact, right counts,
every image mode PIL reads, and clear lines for bad input."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
from PIL import Image
import pytest

from cifar_flax import cli
from cifar_flax import data
from cifar_flax import evaluate
from cifar_flax import predict
from cifar_flax import reports
from cifar_flax import train
import conftest

NUM_TEST = 120  # conftest's fake archive.


@pytest.fixture(scope='module')
def config(fake_data_dir):
  from configs import test as test_config
  c = test_config.get_config()
  c.data_dir = fake_data_dir
  return c


@pytest.fixture(scope='module')
def trained(config, tmp_path_factory):
  """A workdir with a tiny trained checkpoint, once for this module."""
  workdir = str(tmp_path_factory.mktemp('reports_run') / 'run')
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def report_dir(config, trained):
  assert cli.run(config, trained, 'report') == 0
  return os.path.join(trained, 'reports')


def _read_csv(path):
  with open(path, newline='') as f:
    return list(csv.reader(f))


def test_report_writes_every_artefact(report_dir):
  for name in ('curves.png', 'confusion_fine.csv', 'confusion_fine.png',
               'confusion_coarse.csv', 'confusion_coarse.png',
               'classification_report.csv', 'classification_report.md',
               'test_grid.png'):
    path = os.path.join(report_dir, name)
    assert os.path.getsize(path) > 0, name
    if name.endswith('.png'):
      with Image.open(path) as im:
        assert im.format == 'PNG' and min(im.size) > 200, (name, im.size)


def test_confusion_matrices_count_every_test_image(report_dir, trained):
  rows = _read_csv(os.path.join(report_dir, 'confusion_fine.csv'))
  names = [f'fine{i}' for i in range(100)]
  assert rows[0][1:] == names and [r[0] for r in rows[1:]] == names
  counts = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
  assert counts.shape == (100, 100) and counts.sum() == NUM_TEST
  # Row sums are the true class counts of the test set (labels i % 100).
  np.testing.assert_array_equal(counts.sum(1),
                                np.bincount(np.arange(NUM_TEST) % 100))
  # The diagonal agrees with eval.json, computed by the eval pass.
  ev = json.load(open(os.path.join(trained, 'eval.json')))
  assert np.trace(counts) == round(ev['test_top1'] * NUM_TEST)
  coarse = _read_csv(os.path.join(report_dir, 'confusion_coarse.csv'))
  assert coarse[0][1:] == [f'coarse{i}' for i in range(20)]
  cc = np.array([[int(v) for v in r[1:]] for r in coarse[1:]])
  assert cc.shape == (20, 20) and cc.sum() == NUM_TEST
  # The fine counts summed by superclass (here fine class // 5).
  np.testing.assert_array_equal(cc, counts.reshape(20, 5, 20, 5).sum((1, 3)))


def test_classification_report_names_every_class(report_dir):
  rows = _read_csv(os.path.join(report_dir, 'classification_report.csv'))
  assert rows[0] == ['class', 'precision', 'recall', 'f1-score', 'support']
  per_class = [r for r in rows[1:] if r[0].startswith('fine')]
  assert [r[0] for r in per_class] == [f'fine{i}' for i in range(100)]
  assert sum(int(r[4]) for r in per_class) == NUM_TEST
  assert [r[0] for r in rows[-2:]] == ['macro avg', 'weighted avg']
  for r in per_class:
    assert all(0 <= float(v) <= 1 for v in r[1:4])
  # Rows of the confusion matrix are true classes: support is a row's sum,
  # recall its diagonal share, precision the column's (labels and
  # predictions not swapped).
  cm = np.array([[int(v) for v in r[1:]] for r in _read_csv(
      os.path.join(report_dir, 'confusion_fine.csv'))[1:]])
  diag = np.diag(cm)
  for i, r in enumerate(per_class):
    assert int(r[4]) == cm[i].sum(), r
    if cm[i].sum():
      np.testing.assert_allclose(float(r[2]), diag[i] / cm[i].sum(),
                                 atol=1e-4)
    if cm[:, i].sum():
      np.testing.assert_allclose(float(r[1]), diag[i] / cm[:, i].sum(),
                                 atol=1e-4)
  md = open(os.path.join(report_dir, 'classification_report.md')).read()
  assert 'The 10 worst classes (by F1)' in md and 'The 10 best classes' in md
  assert md.count('| fine') == 100 + 10 + 10


def test_superclasses_use_fine_predictions(tmp_path):
  f2c = np.arange(100) // 5
  labels = np.array([0, 1, 7, 99])
  preds = np.array([4, 1, 20, 95])  # Wrong, right, wrong, wrong fine class.
  names = tuple(f'c{i}' for i in range(100))
  paths = reports.confusion_matrices(labels, preds, names, str(tmp_path), f2c,
                                     tuple(f's{i}' for i in range(20)))
  assert len(paths) == 4
  cc = np.array([[int(v) for v in r[1:]] for r in _read_csv(paths[2])[1:]])
  assert cc[0, 0] == 2 and cc[1, 4] == 1 and cc[19, 19] == 1 and cc.sum() == 4
  # No fine-to-coarse map (a coarse-label run): the superclass view is skipped.
  os.makedirs(tmp_path / 'coarse_run')
  paths = reports.confusion_matrices(labels % 20, preds % 20, names[:20],
                                     str(tmp_path / 'coarse_run'), None)
  assert len(paths) == 2


def _write_images(d):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
  paths = {}
  paths['gray.png'] = Image.fromarray(rgb[..., 0], 'L')
  rgba = np.dstack([rgb, np.full((40, 60), 255, np.uint8)])
  rgba[:, :10, 3] = 0
  paths['rgba.png'] = Image.fromarray(rgba, 'RGBA')
  paths['large.jpg'] = Image.fromarray(rgb).resize((2000, 1500))
  paths['palette.png'] = Image.fromarray(rgb).convert('P')
  paths['cmyk.jpg'] = Image.fromarray(rgb).convert('CMYK')
  out = {}
  for name, im in paths.items():
    out[name] = os.path.join(d, name)
    im.save(out[name])
  return out


def test_load_image_reads_every_mode(tmp_path):
  paths = _write_images(str(tmp_path))
  with Image.open(paths['cmyk.jpg']) as im:
    assert im.mode == 'CMYK'
  with Image.open(paths['palette.png']) as im:
    assert im.mode == 'P'
  for name, path in paths.items():
    photo, small = predict.load_image(path)
    assert photo.mode == 'RGB' and small.shape == (32, 32, 3), name
    assert small.dtype == np.uint8, name
  _, gray = predict.load_image(paths['gray.png'])
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  photo, _ = predict.load_image(paths['rgba.png'])
  assert np.asarray(photo)[:, :10].min() == 255  # Transparent -> white.
  # The centre square is kept, not the whole photo squashed: a 96x32 photo
  # with a red, a random and a blue band gives exactly its random band.
  middle = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
  bands = [np.full((32, 32, 3), (255, 0, 0), np.uint8), middle,
           np.full((32, 32, 3), (0, 0, 255), np.uint8)]
  for axis, name in ((1, 'wide.png'), (0, 'tall.png')):
    Image.fromarray(np.concatenate(bands, axis)).save(tmp_path / name)
    np.testing.assert_array_equal(
        predict.load_image(str(tmp_path / name))[1], middle)
  wide16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))
  wide16.save(tmp_path / 'deep.png')
  _, deep = predict.load_image(str(tmp_path / 'deep.png'))
  assert deep.min() == 255
  # A dark 16-bit photo stays dark: 25700 of 65535 is 100 of 255, and 200
  # (below 256, which an 8-bit guess would read as 200 of 255) is 1. Floats:
  # [0, 1] (0.4 is 102 of 255), or 0-255 if larger.
  for value, want, dtype, mode, name in (
      (25700, 100, np.uint16, 'I;16', 'dark.png'),
      (200, 1, np.uint16, 'I;16', 'dark.png'),
      (0.4, 102, np.float32, 'F', 'float.tif'),
      (40.0, 40, np.float32, 'F', 'float.tif')):
    Image.fromarray(np.full((8, 8), value, dtype)).save(tmp_path / name)
    with Image.open(tmp_path / name) as im:
      assert im.mode == mode
    _, grey = predict.load_image(str(tmp_path / name))
    assert grey.min() == grey.max() == want, value


def test_a_photo_over_pils_pixel_limit_is_read_without_its_warning(
    tmp_path, monkeypatch):
  """Over MAX_IMAGE_PIXELS PIL warns (DecompressionBombWarning): read
  quietly. Over twice it refuses: one clear error naming the file."""
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
  for side in (12, 15):  # 144 and 225 pixels.
    Image.new('RGB', (side, side), (9, 99, 199)).save(tmp_path / f'{side}.png')
  with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter('always')
    photo, small = predict.load_image(str(tmp_path / '12.png'))
  assert not said, [str(w.message) for w in said]
  assert photo.size == (12, 12) and (small == (9, 99, 199)).all()
  with pytest.raises(predict.ImageReadError,
                     match=r'15.png: unreadable image \(DecompressionBombError'):
    predict.load_image(str(tmp_path / '15.png'))


def test_a_large_photo_is_drawn_reduced(tmp_path, monkeypatch):
  """The figure draws the photo at most DISPLAY_SIZE on its longer side
  (aspect kept); its title gives the size it had."""
  photo = Image.new('RGB', (3000, 1200), (200, 30, 30))
  drawn = []
  import matplotlib.axes  # pylint: disable=g-import-not-at-top
  imshow = matplotlib.axes.Axes.imshow
  monkeypatch.setattr(matplotlib.axes.Axes, 'imshow', lambda ax, x, **k: (
      drawn.append(np.asarray(x).shape), imshow(ax, x, **k))[1])
  path = str(tmp_path / 'big_top5.png')
  predict.plot_prediction(photo, np.zeros((32, 32, 3), np.uint8),
                          [('apple', 0.9), ('pear', 0.1)], 'big.png', path)
  assert drawn == [(410, predict.DISPLAY_SIZE, 3), (32, 32, 3)]
  assert os.path.getsize(path) > 0


def test_predict_classifies_like_the_network(config, trained, tmp_path):
  """A CIFAR test image saved as PNG gets the network's own probabilities."""
  restored = evaluate.load_best(config, trained)
  ds = data.load_dataset(config)
  path = str(tmp_path / 'cifar0.png')
  Image.fromarray(ds.test.images[3]).save(path)
  _, small = predict.load_image(path)
  np.testing.assert_array_equal(small, ds.test.images[3])
  probs = predict.probabilities(restored, small[None], config.augment, 16)[0]
  logits = np.asarray(train.predict_logits(
      restored.state, ds.test.images[3:4], restored.mean, config.augment))[0]
  expected = np.exp(logits - logits.max())
  np.testing.assert_allclose(probs, expected / expected.sum(), rtol=1e-4,
                             atol=1e-7)
  table = predict.top_k_table(probs, restored.class_names)
  assert len(table) == 5
  assert table[0][0] == restored.class_names[logits.argmax()]
  assert all(a[1] >= b[1] for a, b in zip(table, table[1:]))


def test_predict_reports_bad_files_and_predicts_the_rest(config, trained,
                                                          tmp_path, capsys):
  good = _write_images(str(tmp_path))
  (tmp_path / 'notes.png').write_text('not an image at all')
  (tmp_path / 'empty.jpg').write_bytes(b'')
  bad = [str(tmp_path / 'notes.png'), str(tmp_path / 'empty.jpg'),
         str(tmp_path / 'missing.png')]
  status = cli.run(config, trained, 'predict', [bad[0]] + list(good.values())
                   + bad[1:])
  out, err = capsys.readouterr()
  assert status == 1
  err_lines = err.strip().splitlines()
  assert len(err_lines) == 3
  for path, line in zip(bad, err_lines):
    assert path in line and 'Traceback' not in line
  assert 'not an image' in err_lines[0] and 'empty file' in err_lines[1]
  assert 'no such file' in err_lines[2]
  pred_dir = os.path.join(trained, 'reports', 'predictions')
  for name, path in good.items():
    assert f'{path}:' in out, name
    png = os.path.join(pred_dir, os.path.splitext(name)[0] + '_top5.png')
    assert os.path.getsize(png) > 0, name
  assert out.count('fine') >= 5 * len(good)
  assert '5 image(s) classified, 3 failed' in out
  # All readable: exit status 0.
  assert cli.run(config, trained, 'predict', [good['gray.png']]) == 0


def test_clear_lines_without_images_or_checkpoint(config, trained, tmp_path,
                                                  capsys):
  assert cli.run(config, trained, 'predict', []) == 1
  assert '--images=' in capsys.readouterr().err
  assert cli.run(config, trained, 'report', ['a.png']) == 1
  assert '--images is for --mode=predict' in capsys.readouterr().err
  empty = str(tmp_path / 'empty_run')
  for mode, images in (('report', []), ('predict', ['a.png'])):
    assert cli.run(config, empty, mode, images) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: no checkpoint') and err.count('\n') == 1


def test_main_py_predict_without_checkpoint(tmp_path):
  """main.py's flags reach predict; a missing checkpoint is one line."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  p = subprocess.run(
      [sys.executable, os.path.join(conftest.ROOT, 'main.py'),
       '--config=' + os.path.join(conftest.ROOT, 'configs', 'test.py'),
       f'--workdir={tmp_path}', '--mode=predict', '--images=a.png,b.jpg'],
      capture_output=True, text=True, env=env, cwd=conftest.ROOT, timeout=120)
  assert p.returncode == 1, p.stderr
  assert p.stderr.strip().startswith('error: no checkpoint')
  assert 'Traceback' not in p.stderr


def _listing(folder):
  return sorted((os.path.relpath(os.path.join(d, f), folder),
                 os.path.getmtime(os.path.join(d, f)))
                for d, _, files in os.walk(folder) for f in files)


def test_classifier_in_python_classifies_and_measures_like_main_py(
    config, trained, tmp_path, monkeypatch):
  from cifar_flax import classifier  # pylint: disable=g-import-not-at-top
  before = _listing(trained)
  model = classifier.load(trained)  # The run's own config.json.
  restored = evaluate.load_best(config, trained)
  assert model.epoch == restored.epoch
  assert model.class_names == restored.class_names
  images = data.load_dataset(config).test.images[:3]
  probs = model.probabilities(images)
  np.testing.assert_allclose(probs, predict.probabilities(
      restored, images, config.augment, 16), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
  # One image (array, file or PIL image) gives one result.
  path = str(tmp_path / 'test2.png')
  Image.fromarray(images[2]).save(path)
  # A PIL image as its file: upright and RGB (this PNG is RGBA, turned by
  # its EXIF orientation).
  exif = Image.Exif()
  exif[0x0112] = 3  # Orientation: turned 180 degrees.
  Image.fromarray(np.dstack([images[2], np.full((32, 32), 255, np.uint8)])
                  [::-1, ::-1]).save(str(tmp_path / 'turned.png'), exif=exif)
  home = str(tmp_path)
  monkeypatch.setenv('HOME', home)
  for one in (images[2], path, '~/test2.png', Image.open(path),
              Image.open(tmp_path / 'turned.png'), images[2].astype(np.int64),
              images[2].tolist()):
    np.testing.assert_allclose(model.probabilities(one), probs[2], rtol=1e-5,
                               atol=1e-7)
  assert model.top_k(path) == predict.top_k_table(probs[2], model.class_names)
  tables = model.top_k([images[0], path], k=3)
  assert [len(t) for t in tables] == [3, 3]
  assert tables[0][0][0] == model.class_names[probs[0].argmax()]
  # The test metrics of --mode=eval, without writing eval.json.
  with open(os.path.join(trained, 'eval.json')) as f:
    ran = json.load(f)
  m = model.test_metrics()
  for k in ('top1', 'top5', 'loss'):
    np.testing.assert_allclose(m[k], ran[f'test_{k}'], rtol=1e-5)
  assert _listing(trained) == before
  for bad, said in ((images.astype(np.float32) / 255, 'float32 pixels'),
                    (images[:, :16], 'shape (3, 16, 32, 3)'),
                    (images[0, ..., 0], 'shape (32, 32)'),
                    (images.astype(np.int32) - 1, 'from -1 to'),
                    (None, 'a NoneType, where')):
    with pytest.raises(ValueError, match=re.escape(said)):
      model.probabilities(bad)
  with pytest.raises(ValueError, match='k=0: the number of classes'):
    model.top_k(path, k=0)
  with pytest.raises(predict.ImageReadError, match='no such file'):
    model.top_k(str(tmp_path / 'missing.png'))
  # Refusals whose advice is in main.py's flags say it in Python too.
  with pytest.raises(data.DataError, match=re.escape(
      "does not exist or is not a directory") + '.*' + re.escape(
          'In Python: test_metrics(data_dir=PATH)')):
    model.test_metrics(data_dir=str(tmp_path / 'nowhere'))
  other = model.config.copy_and_resolve_references()
  other.activation = 'elu'
  from cifar_flax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(workdir_lib.WorkdirError, match=re.escape(
      "activation='relu'") + '.*' + re.escape('In Python: load(')):
    classifier.load(trained, config=other)
  # A folder that holds runs names them; a file or no folder is refused.
  parent = os.path.dirname(trained)
  for where, said in ((parent, "holds no run (no config.json); the runs in "
                       "it: run"), (path, 'is not a folder')):
    with pytest.raises(workdir_lib.WorkdirError, match=re.escape(said)):
      classifier.load(where)


def test_augment_test_evaluates_as_the_paper_did_kept_apart(config, trained,
                                                           tmp_path):
  with open(os.path.join(trained, 'eval.json')) as f:
    own = json.load(f)
  paper = config.copy_and_resolve_references()
  paper.augment_test = True
  assert cli.run(paper, trained, 'eval') == 0
  with open(os.path.join(trained, 'eval_other_config.json')) as f:
    other = json.load(f)
  assert other['config_differs'] == {'augment_test': {'run': False,
                                                      'given': True}}
  assert other['images'].startswith('augmented as in training')
  assert other['test_loss'] != own['test_loss']
  with open(os.path.join(trained, 'eval.json')) as f:
    assert json.load(f) == own  # The run's own result is kept.
  # Reports use clean test images: they stay the run's own.
  assert evaluate.differing_fields(paper, trained,
                                   evaluate.REPORT_FIELDS) == {}
  # The same draw each time, whatever the seed; augmentation that changes
  # nothing gives the clean result.
  restored = evaluate.load_best(paper, trained)
  test = data.load_dataset(paper).test
  paper.seed += 1
  assert evaluate.test_metrics(paper, restored, test)['loss'] == other[
      'test_loss']
  # A run that evaluated so keeps its eval.json under another draw: another
  # eval_batch_size (keys go per batch) goes apart.
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    ran = json.load(f)
  with open(path, 'w') as f:
    json.dump(dict(ran, augment_test=True), f)
  assert evaluate.evaluate(paper, workdir)['test_loss'] == other['test_loss']
  paper.eval_batch_size += 1
  assert evaluate.evaluate(paper, workdir)['config_differs'] == {
      'eval_batch_size': {'run': ran['eval_batch_size'],
                          'given': ran['eval_batch_size'] + 1}}
  with open(os.path.join(workdir, 'eval.json')) as f:
    assert json.load(f)['test_loss'] == other['test_loss']
  paper.augment.update(shear_range=0.0, zoom_range=0.0, width_shift_range=0.0,
                       horizontal_flip=False)
  np.testing.assert_allclose(evaluate.test_metrics(paper, restored, test)[
      'loss'], own['test_loss'], rtol=1e-5)


def test_classifier_says_when_another_configs_package_is_found(trained,
                                                               monkeypatch):
  import types  # pylint: disable=g-import-not-at-top
  from cifar_flax import classifier  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, 'configs', types.ModuleType('configs'))
  monkeypatch.delitem(sys.modules, 'configs.run', raising=False)
  with pytest.raises(ImportError, match=re.escape(
      '"import configs" finds another (')) as e:
    classifier.load(trained)
  assert f'put {conftest.ROOT} first on sys.path' in str(e.value)
