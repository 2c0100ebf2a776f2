"""The paper's figures and tables for a trained workdir, under WORKDIR/reports.

Training curves from history.json; confusion matrices (fine and superclass),
a per-class classification report and an image grid from the best
checkpoint's predictions on every clean test image.
"""

import csv
import os

from matplotlib import colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
from sklearn import metrics as sk_metrics

from cifar_flax import data as data_lib
from cifar_flax import predict
from cifar_flax import workdir as workdir_lib

REPORTS_DIR = 'reports'
# Reports under a config that changes what the run's model gives
# (evaluate.differing_fields): kept apart from the run's own, in a folder
# named by the fields and values that differ (evaluate.apart_name).
OTHER_REPORTS_DIR = 'reports_other_config'
NUM_EXTREMES = 10  # Worst and best classes listed in the report.
GRID_SIDE = 4  # The image grid is GRID_SIDE x GRID_SIDE test images.


def new_figure(figsize, layout=None):
  """A matplotlib Figure drawn by the Agg backend (no pyplot state)."""
  fig = Figure(figsize=figsize, layout=layout)
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig, path, dpi=100):
  fig.savefig(path, dpi=dpi, bbox_inches='tight')


# --- Training curves ----------------------------------------------------------


def plot_curves(history, path, patience=None):
  """Loss and top-1 per epoch, train and validation; the best epoch (lowest
  val_loss) and the last one (the early stop, if it was one) marked."""
  epochs = [h['epoch'] for h in history]
  best = min(history, key=lambda h: h['val_loss'])['epoch']
  last = epochs[-1]
  # Keras stops `patience` epochs after the best (patience 0 acts as 1).
  stopped_early = patience is not None and last - best >= max(patience, 1)
  fig = new_figure((12, 4.5))
  for i, (key, label) in enumerate((('loss', 'loss'), ('top1', 'top-1'))):
    ax = fig.add_subplot(1, 2, i + 1)
    for split, name in (('train', 'train'), ('val', 'validation')):
      ax.plot(epochs, [h[f'{split}_{key}'] for h in history], label=name,
              marker='.' if len(epochs) < 40 else None)
    ax.axvline(best, color='tab:green', ls='--', lw=1,
               label=f'best epoch {best} (lowest val loss)')
    ax.axvline(last, color='tab:red', ls=':', lw=1.5,
               label=(f'early stop, epoch {last}' if stopped_early else
                      f'last epoch {last}'))
    best_row = history[epochs.index(best)]
    ax.plot([best], [best_row[f'val_{key}']], 'o', color='tab:green')
    ax.set_xlabel('epoch')
    ax.set_ylabel(label)
    ax.set_title(f'{label} per epoch')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
  save_figure(fig, path)
  return path


# --- Confusion matrices -------------------------------------------------------


def write_confusion_csv(matrix, names, path):
  """Rows are true classes, columns predicted ones, both named."""
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['true \\ predicted'] + list(names))
    for name, row in zip(names, matrix):
      w.writerow([name] + [int(v) for v in row])
  return path


def plot_confusion(matrix, names, path, title):
  """Row-normalized heatmap (each row sums to 1: recall on the diagonal). The
  colour scale is a square root, so that rare confusions still show."""
  k = len(names)
  norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  annotate = k <= 30  # Numbers in the cells only while they fit.
  side = 0.45 * k + 3 if annotate else 0.19 * k + 2.5
  fig = new_figure((side + 1.5, side))
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(norm, cmap='Blues', interpolation='nearest',
                 norm=colors.PowerNorm(0.5, vmin=0, vmax=1))
  font = 10 if annotate else 6.5
  ax.set_xticks(range(k), names, rotation=90, fontsize=font)
  ax.set_yticks(range(k), names, fontsize=font)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  if annotate:
    for (i, j), v in np.ndenumerate(norm):
      if v >= 0.005:
        ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=7.5,
                color='white' if v > 0.4 else 'black')
  fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, shrink=0.6,
               label='fraction of the true class (square-root scale)')
  save_figure(fig, path, dpi=100 if annotate else 120)
  return path


def confusion_matrices(labels, preds, class_names, out_dir, fine_to_coarse=None,
                       coarse_names=None):
  """Counts as CSV and normalized heatmaps: the classes of the run and, for a
  fine-label run, its 20 superclasses. Returns the written paths."""
  k = len(class_names)
  n = len(labels)
  fine = sk_metrics.confusion_matrix(labels, preds, labels=np.arange(k))
  paths = [write_confusion_csv(fine, class_names,
                               os.path.join(out_dir, 'confusion_fine.csv')),
           plot_confusion(fine, class_names,
                          os.path.join(out_dir, 'confusion_fine.png'),
                          f'confusion matrix: {k} classes, {n} test images\n'
                          f'(rows: true class, normalized to sum to 1)')]
  if fine_to_coarse is None or k != len(fine_to_coarse):
    print('superclass confusion matrix skipped: the run does not use the '
          '100 fine labels with a known fine-to-coarse map')
    return paths
  kc = int(fine_to_coarse.max()) + 1
  names = coarse_names or tuple(f'superclass {i}' for i in range(kc))
  coarse = sk_metrics.confusion_matrix(fine_to_coarse[labels],
                                       fine_to_coarse[preds],
                                       labels=np.arange(kc))
  paths += [write_confusion_csv(coarse, names,
                                os.path.join(out_dir, 'confusion_coarse.csv')),
            plot_confusion(coarse, names,
                           os.path.join(out_dir, 'confusion_coarse.png'),
                           f'superclass confusion matrix: {kc} superclasses, '
                           f'{n} test images\n(fine predictions mapped to '
                           f'their superclass; rows normalized)')]
  return paths


# --- Classification report ----------------------------------------------------

_COLUMNS = ('precision', 'recall', 'f1-score', 'support')


def classification_report(labels, preds, class_names, out_dir,
                          num_extremes=NUM_EXTREMES):
  """Per-class precision, recall, F1 and support, with averages, as CSV and
  Markdown (which also lists the worst and best classes by F1)."""
  report = sk_metrics.classification_report(
      labels, preds, labels=np.arange(len(class_names)),
      target_names=list(class_names), output_dict=True, zero_division=0)
  averages = ('macro avg', 'weighted avg')
  csv_path = os.path.join(out_dir, 'classification_report.csv')
  with open(csv_path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(('class',) + _COLUMNS)
    for name in tuple(class_names) + averages:
      r = report[name]
      w.writerow([name] + [f'{r[c]:.4f}' for c in _COLUMNS[:3]] +
                 [int(r['support'])])
  by_f1 = sorted(class_names, key=lambda c: (report[c]['f1-score'], c))
  md_path = os.path.join(out_dir, 'classification_report.md')
  accuracy = float(np.mean(np.asarray(labels) == np.asarray(preds)))
  lines = [f'# Classification report ({len(labels)} test images)', '',
           f'Accuracy (top-1): {accuracy:.4f}', '',
           _md_table(report, averages), '',
           f'## The {num_extremes} worst classes (by F1)', '',
           _md_table(report, by_f1[:num_extremes]), '',
           f'## The {num_extremes} best classes (by F1)', '',
           _md_table(report, by_f1[::-1][:num_extremes]), '',
           '## Every class', '', _md_table(report, class_names), '']
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines))
  return [csv_path, md_path]


def _md_table(report, names):
  rows = ['| class | precision | recall | F1 | support |',
          '|---|---:|---:|---:|---:|']
  for name in names:
    r = report[name]
    rows.append(f'| {name} | {r["precision"]:.3f} | {r["recall"]:.3f} | '
                f'{r["f1-score"]:.3f} | {int(r["support"])} |')
  return '\n'.join(rows)


# --- Image grid ---------------------------------------------------------------


def image_grid(images, labels, preds, class_names, path, side=GRID_SIDE,
               seed=0):
  """side x side test images drawn at random (fixed seed), titled with the
  true and predicted class; wrong predictions in red with a red frame."""
  n = min(side * side, len(images))
  idx = np.sort(np.random.default_rng(seed).choice(len(images), n,
                                                   replace=False))
  fig = new_figure((2.3 * side, 2.6 * side))
  for plot_i, i in enumerate(idx):
    ax = fig.add_subplot(side, side, plot_i + 1)
    ax.imshow(images[i], interpolation='nearest')
    right = labels[i] == preds[i]
    color = 'tab:green' if right else 'red'
    mark = '' if right else ' \u2717'
    ax.set_title(f'true: {class_names[labels[i]]}\n'
                 f'pred: {class_names[preds[i]]}{mark}', fontsize=9,
                 color=color)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
      spine.set_color(color)
      spine.set_linewidth(1 if right else 3)
  wrong = int(np.sum(labels[idx] != preds[idx]))
  fig.suptitle(f'{n} random test images: {n - wrong} right (green), '
               f'{wrong} wrong (red, \u2717)', fontsize=11)
  fig.subplots_adjust(hspace=0.45, wspace=0.1)
  save_figure(fig, path)
  return path


# --- The driver ---------------------------------------------------------------


def reports_dir(workdir, differ):
  """WORKDIR/reports, or for a config that differs from the run's in
  `differ` (evaluate.differing_fields), its folder apart."""
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  if not differ:
    return os.path.join(workdir, REPORTS_DIR)
  return os.path.join(workdir, OTHER_REPORTS_DIR, evaluate.apart_name(differ))


def write_reports(config, workdir):
  """Writes every report of `workdir` to WORKDIR/reports (under a config
  that changes the model's results, reports_other_config/<what differs>);
  returns the paths."""
  from cifar_flax import evaluate  # pylint: disable=g-import-not-at-top
  restored = evaluate.load_best(config, workdir)
  differ = evaluate.differing_fields(config, workdir, evaluate.REPORT_FIELDS)
  out_dir = reports_dir(workdir, differ)
  if config.get('augment_test', False):
    print('note: reports use clean test images; config.augment_test is for '
          '--mode=eval')
  workdir_lib.ensure_writable_dir(out_dir, 'reports folder')
  dataset = data_lib.load_dataset(config)
  evaluate.check_classes(restored, dataset, workdir, config)
  paths = []
  history = workdir_lib.read_history(workdir)
  if history:
    paths.append(plot_curves(history, os.path.join(out_dir, 'curves.png'),
                             config.patience))
  else:
    print(f'training curves skipped: {workdir}/history.json is missing')
  test = dataset.test
  probs = predict.probabilities(restored, test.images, config.augment,
                                config.eval_batch_size)
  preds = probs.argmax(axis=-1)
  fine_to_coarse = (dataset.fine_to_coarse if config.label_type == 'fine'
                    else None)
  paths += confusion_matrices(test.labels, preds, dataset.class_names, out_dir,
                              fine_to_coarse, dataset.coarse_class_names)
  paths += classification_report(test.labels, preds, dataset.class_names,
                                 out_dir)
  paths.append(image_grid(test.images, test.labels, preds, dataset.class_names,
                          os.path.join(out_dir, 'test_grid.png'),
                          seed=config.seed))
  print(f'best checkpoint (epoch {restored.epoch}), {len(test)} test images, '
        f'top-1 {np.mean(preds == test.labels):.4f}. Reports in {out_dir}'
        f'{evaluate.differs_note(differ)}:')
  for p in paths:
    print(f'  {p}')
  return paths
