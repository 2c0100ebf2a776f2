"""cifar_flax: python main.py --config=configs/final.py --workdir=runs/final [--mode=...]."""

import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cifar_flax import flag_parsing

FLAGS = flags.FLAGS
flag_parsing.read_flagfiles(sys.argv)  # Before --config reads them.
config_flags.DEFINE_config_file(
    'config', None, 'A config file (configs/*.py[:variant]), or a run\'s '
    'workdir for the config it was trained with (its config.json).',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, history, '
                    'metrics and reports of one run.')
flags.DEFINE_enum('mode', 'train',
                  ['train', 'eval', 'report', 'predict', 'benchmark', 'timed',
                   'sweep', 'sweep_table'],
                  'train: train (or resume) then evaluate; eval: evaluate the '
                  'best checkpoint; report: write the figures and tables to '
                  'WORKDIR/reports; predict: classify --images; benchmark: '
                  'time the training and evaluation programs on synthetic '
                  'data; timed: time config.timed_seeds runs from scratch (no '
                  'checkpoints) and write timed.json; sweep: train every row x '
                  'seed of a sweep config (configs/paper_table.py) and write '
                  'its table; sweep_table: only write the table.')
flags.DEFINE_list('images', [], 'Comma-separated image files for '
                  '--mode=predict (any mode PIL reads, up to its ~179 MP limit).')
flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first '
                  '(one process per host; see the README).')
flags.DEFINE_string('coordinator_address', None, 'With --multihost: host:port '
                    'of process 0 (unset: detected on Slurm, TPU, ...).')
flags.DEFINE_integer('num_processes', None, 'With --multihost: processes.')
flags.DEFINE_integer('process_id', None, 'With --multihost: this process.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:  # One line, not absl's page of usage.
    sys.exit(f'FATAL Flags parsing error: unexpected arguments {argv[1:]} '
             f'(flags only, e.g. --mode=eval)')
  if not FLAGS['verbosity'].present:  # orbax logs every save at INFO.
    logging.set_verbosity(logging.WARNING)
  # Until cli.run takes over the signals: SIGTERM as Ctrl-C, one line.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    import jax  # pylint: disable=g-import-not-at-top
    if FLAGS.multihost:
      jax.distributed.initialize(FLAGS.coordinator_address,
                                 FLAGS.num_processes, FLAGS.process_id)
    from cifar_flax import checkpointing  # pylint: disable=g-import-not-at-top
    from cifar_flax import cli  # pylint: disable=g-import-not-at-top
  except KeyboardInterrupt:
    print('interrupted: while starting, before any work', file=sys.stderr)
    sys.exit(130)
  checkpointing.drop_closed_loop_reports()
  # '~' after '=' is left to us by the shell; empty names (a stray comma)
  # are no images.
  images = [os.path.expanduser(p) for p in FLAGS.images if p]
  sys.exit(cli.run(FLAGS.config, os.path.expanduser(FLAGS.workdir), FLAGS.mode,
                   images))


if __name__ == '__main__':
  app.run(main, flags_parser=flag_parsing.parse)
