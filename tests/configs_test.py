"""The configs hold the paper's recipe, and each table row changes only what
its experiment changes."""

import pytest

from cifar_flax import sweep
from cifar_flax import workdir as workdir_lib
from configs import default
from configs import paper_table


def _flat(config):
  return dict(workdir_lib.flatten(config.to_dict()))


def test_final_config_is_the_papers_recipe():
  final = sweep.load_config_file('configs/final.py')
  recipe = {
      'model': 'cnn9', 'activation': 'relu', 'conv_dropout': (0.2, 0.5, 0.5),
      'dense_dropout': 0.5, 'dtype': 'float32', 'optimizer': 'adam',
      'learning_rate': 1e-4, 'adam_b1': 0.9, 'adam_b2': 0.999,
      'epsilon': 1e-7, 'adam_keras_epsilon': True, 'batch_size': 64,
      'num_epochs': 100, 'patience': 20, 'validation_fraction': 0.2,
      'label_type': 'fine', 'label_smoothing': 0.0,
      'augment_validation': False, 'augment.shear_range': 0.2,
      'augment.zoom_range': 0.2, 'augment.width_shift_range': 0.1,
      'augment.height_shift_range': 0.0, 'augment.horizontal_flip': True,
      'augment.featurewise_center': True, 'augment.translate_pixels': 0,
      'train_subset': 0, 'test_subset': 0}
  flat = _flat(final)
  assert {k: flat[k] for k in recipe} == recipe
  assert flat == _flat(default.get_config())  # final.py is the default.


# What each row of the paper's table changes against configs/final.py.
ROW_CHANGES = {
    'adam_lr1e2': {'learning_rate': 1e-2},
    'adam_lr1e3': {'learning_rate': 1e-3},
    'adam_lr1e4': {},
    'adam_lr1e5': {'learning_rate': 1e-5},
    'rmsprop': {'optimizer': 'rmsprop'},
    'cnn5': {'model': 'cnn5'},
    'elu': {'activation': 'elu'},
    'batch32': {'batch_size': 32},
    'no_augment': {'augment.shear_range': 0.0, 'augment.zoom_range': 0.0,
                   'augment.width_shift_range': 0.0,
                   'augment.horizontal_flip': False},
    'no_dropout': {'conv_dropout': (0.0, 0.0, 0.0), 'dense_dropout': 0.0},
}


@pytest.mark.parametrize('row', [r[0] for r in paper_table.ROWS])
def test_each_row_changes_only_its_experiment(row):
  config = paper_table.get_config()
  final = _flat(sweep.load_config_file('configs/final.py'))
  flat = _flat(sweep.row_config(config, row))
  changed = {k: v for k, v in flat.items() if final.get(k) != v}
  assert changed == ROW_CHANGES[row]
  assert set(flat) == set(final)
