"""Where a training epoch's device time goes: a jax.profiler trace, summed.

  python scripts/profile_epoch.py --config=configs/final.py --out=runs/prof \
      [--config.dtype=bfloat16] [--images=6400]

Traces one training pass over `--images` synthetic images (after a warm-up
pass), then sums the trace's device events by name per trace line (on a GPU:
the 'XLA Ops' line names HLO instructions, the stream lines name kernels) and
prints the largest, with the pass's wall time for comparison. Writes
OUT/summary.json, OUT/epoch_hlo.txt (the compiled program, to look the
instruction names up; scan form only) and the raw trace under OUT/trace.
On a CPU the trace has no device lines: only the wall time is printed.
"""

import collections
import glob
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cifar_flax import benchmark  # pylint: disable=g-import-not-at-top
from cifar_flax import config_checks
from cifar_flax import loop
from cifar_flax import models
from cifar_flax import sharding
from cifar_flax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file.')
flags.DEFINE_string('out', None, 'Output directory.')
flags.DEFINE_integer('images', 6400, 'Training images in the traced pass.')
flags.DEFINE_integer('top', 25, 'Events listed per trace line.')
flags.mark_flags_as_required(['config', 'out'])


def summarize(trace_dir, top):
  """{plane: {line: {'total_ms', 'events', 'top': [(name, ms, count)]}}}."""
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  paths = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'),
                    recursive=True)
  out = {}
  for path in paths:
    for plane in ProfileData.from_file(path).planes:
      if not plane.name.startswith('/device:'):
        continue
      for line in plane.lines:
        ms, count = collections.Counter(), collections.Counter()
        for ev in line.events:
          ms[ev.name] += ev.duration_ns / 1e6
          count[ev.name] += 1
        if ms:
          out.setdefault(plane.name, {})[line.name] = {
              'total_ms': sum(ms.values()), 'events': sum(count.values()),
              'top': [(n, t, count[n]) for n, t in ms.most_common(top)]}
  return out


def main(argv):
  del argv
  config = FLAGS.config
  os.makedirs(FLAGS.out, exist_ok=True)
  train.setup_jax(config)
  dataset = benchmark.synthetic_dataset(FLAGS.images, 1000)
  mesh = sharding.data_mesh()
  programs = train.Programs(config, dataset, mesh)
  steps = loop.num_batches(FLAGS.images, config.batch_size)
  state = train.state_initializer(config, models.create_model(config, 100),
                                  steps, mesh)(jax.random.key(0))
  keys = [jax.device_put(jax.random.key(i)) for i in range(2)]
  programs.compile(state, keys[0])
  if programs.form == 'scan':
    with open(os.path.join(FLAGS.out, 'epoch_hlo.txt'), 'w') as f:
      f.write(programs.train_pass.as_text())
  state, m = programs.train_pass(state, *programs.train_data, keys[0])
  jax.block_until_ready((state, m))
  trace_dir = os.path.join(FLAGS.out, 'trace')
  with jax.profiler.trace(trace_dir):
    t0 = time.perf_counter()
    state, m = programs.train_pass(state, *programs.train_data, keys[1])
    jax.block_until_ready((state, m))
    wall = time.perf_counter() - t0
  summary = {'device': sharding.device_kind(), 'model': config.model,
             'dtype': config.dtype,
             **{f: config[f] for f in config_checks.SPEED_FIELDS},
             'xla_flags': os.environ.get('XLA_FLAGS', ''),
             'loop': programs.form, 'steps': steps,
             'wall_ms': wall * 1e3, 'wall_ms_per_step': wall * 1e3 / steps,
             'lines': summarize(trace_dir, FLAGS.top)}
  with open(os.path.join(FLAGS.out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  print(f"{summary['device']} {config.model} {config.dtype} "
        f"{programs.form}: {steps} steps in {wall * 1e3:.1f} ms "
        f"({wall * 1e3 / steps:.3f} ms/step, traced)")
  for plane, lines in summary['lines'].items():
    for name, line in lines.items():
      print(f"{plane} | {name}: {line['total_ms']:.1f} ms busy in "
            f"{line['events']} events "
            f"({line['total_ms'] / steps:.3f} ms/step)")
      for ev, ms, count in line['top'][:FLAGS.top]:
        print(f'  {ms / steps * 1e3:8.1f} us/step  x{count / steps:5.1f}  '
              f'{ev[:110]}')
  if not summary['lines']:
    print(f'no device lines in the trace ({jax.default_backend()}): the '
          f'per-kernel breakdown needs a GPU (or TPU)')


if __name__ == '__main__':
  app.run(main)
