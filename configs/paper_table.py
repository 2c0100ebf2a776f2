"""The paper's experiments as one sweep: every row x every seed.

Run (every row, 3 seeds each, one at a time):
  python main.py --config=configs/paper_table.py --mode=sweep \
      --workdir=runs/paper_table --config.data_dir=../shared/data \
      --config.results_dir=results
Some rows only:   --config.train_rows='("adam_lr1e4","cnn5")'
Table only (a row with no seed run reads 'not yet measured', one whose seeds
all diverged 'diverged'; missing seeds are counted as not yet run):
  python main.py --config=configs/paper_table.py --mode=sweep_table \
      --workdir=runs/paper_table --config.results_dir=results
Tiny (tests, CPU):  --config=configs/paper_table.py:tiny
Writes WORKDIR/<row>/seed_<s>/ (ordinary single-run workdirs) and
WORKDIR/results/paper_table.{md,csv} + plots/; rerunning skips finished
seeds and resumes unfinished ones. Measured so far (results/paper_table.md,
H200): lr 1e-4 64.27% +- 0.69 over 3 seeds (~1.6 min of epochs each), cnn5
41.30% +- 0.26 over 3 seeds in 119 s for the three, lr 1e-2 at chance (1.00%,
2 seeds); a cnn9 row of ~100 epochs x 3 seeds is about 5 H200 minutes (the
paper: ~1.5 h per run on a Tesla K80). Rows measured elsewhere travel as their seeds'
JSON files (results/h200/*/table/): copy them into WORKDIR before a sweep.
"""

import ml_collections

# (name, label, config file, paper's test top-1, paper's note). '—': the
# paper gives no number.
ROWS = (
    ('adam_lr1e2', 'Adam, lr 1e-2', 'configs/adam_lr1e2.py', '~1%',
     'stuck near chance'),
    ('adam_lr1e3', 'Adam, lr 1e-3', 'configs/adam_lr1e3.py', '~1%',
     'stuck near chance'),
    ('adam_lr1e4', 'Adam, lr 1e-4 (final)', 'configs/final.py', '59.09%',
     'the final run'),
    ('adam_lr1e5', 'Adam, lr 1e-5', 'configs/adam_lr1e5.py', '36.96%', ''),
    ('rmsprop', 'RMSProp, lr 1e-4', 'configs/rmsprop.py', '—',
     'discussed against Adam, no number'),
    ('cnn5', '5-layer baseline (cnn5)', 'configs/cnn5.py', '39.5%',
     '643,492 parameters'),
    ('elu', 'ELU instead of ReLU', 'configs/elu.py', '—',
     'discussed, no number'),
    ('batch32', 'Batch 32', 'configs/batch32.py', '—', ''),
    ('no_augment', 'No augmentation', 'configs/no_augment.py', '—',
     'ablation; featurewise centering kept'),
    ('no_dropout', 'No dropout', 'configs/no_dropout.py', '—', 'ablation'),
)


def get_config(variant=''):
  config = ml_collections.ConfigDict()
  config.rows = ml_collections.ConfigDict()
  for name, label, path, paper, note in ROWS:
    config.rows[name] = ml_collections.ConfigDict(dict(
        label=label, config=path, paper_test_top1=paper, paper_note=note))
  # Table order; every row is shown, measured or not.
  config.row_names = tuple(r[0] for r in ROWS)
  # The rows --mode=sweep trains (a subset of row_names).
  config.train_rows = config.row_names
  config.seeds = (0, 1, 2)
  # Seeds of a row trained together in one vmapped program (0 = all). One at a
  # time is faster for cnn9 on an H200 (3 together: 3.1 s/epoch, 1 alone: 0.53).
  config.seeds_per_group = 1
  # Set on every row's config when not empty (--config.data_dir=...).
  config.data_dir = ''
  # Fields set on every row's config (nested like the row config), given
  # whole: --config.overrides='{"num_epochs": 50, "augment": {"zoom_range":
  # 0.1}}' (it starts empty, so --config.overrides.num_epochs=50 has no field
  # to set).
  config.overrides = ml_collections.ConfigDict()
  # Also copy results/ (table, CSV, plots) here, e.g. the repo's 'results'.
  config.results_dir = ''

  if variant == 'tiny':  # Seconds on a CPU with the tests' fake archive.
    config.train_rows = ('adam_lr1e4', 'adam_lr1e3')
    config.seeds = (1, 2)
    config.seeds_per_group = 0  # Covers seeds trained together.
    config.overrides = ml_collections.ConfigDict(dict(
        model='cnn5', batch_size=25, eval_batch_size=16, num_epochs=3,
        patience=1, compilation_cache_dir=''))
  elif variant:
    raise ValueError(f"configs/paper_table.py:{variant}: expected no variant "
                     f"or 'tiny'")
  return config
