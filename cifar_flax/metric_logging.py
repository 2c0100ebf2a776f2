"""Scalars to TensorBoard event files (and the INFO log), plus progress.

clu.metric_writers imports TensorFlow at import time (and tensorboard's
EventFileWriter imports it whenever it is installed), which the archive data
path must avoid, so events go through tensorboard's pure-Python RecordWriter.
"""

import os
import socket
import time

from absl import logging
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter


class MetricWriter:
  """Writes scalar dicts to the log and to TensorBoard under `logdir`."""

  def __init__(self, logdir):
    self._events = None
    if logdir:
      name = (f'events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.'
              f'{os.getpid()}')
      self._file = open(os.path.join(logdir, name), 'wb')
      self._events = RecordWriter(self._file)
      self._add(event_pb2.Event(wall_time=time.time(),
                                file_version='brain.Event:2'))

  def _add(self, event):
    self._events.write(event.SerializeToString())

  def write_scalars(self, step, scalars):
    logging.info('[%d] %s', step, ', '.join(
        f'{k}={v:.6g}' for k, v in scalars.items()))
    if self._events is None:
      return
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=k, simple_value=float(v))
        for k, v in scalars.items()])
    self._add(event_pb2.Event(wall_time=time.time(), step=int(step),
                              summary=summary))

  def flush(self):
    if self._events is not None:
      self._events.flush()

  def close(self):
    if self._events is not None:
      self._events.close()
      self._file.close()
      self._events = None


class ProgressReporter:
  """Steps/s and ETA, reported once per epoch (no per-step host sync)."""

  def __init__(self, total_steps, first_step=0):
    self.total_steps = total_steps
    self._t0 = time.perf_counter()
    self._step0 = first_step

  def __call__(self, step):
    elapsed = time.perf_counter() - self._t0
    rate = (step - self._step0) / max(elapsed, 1e-9)
    eta = (self.total_steps - step) / max(rate, 1e-9)
    return {'steps_per_sec': rate, 'eta_seconds': eta}


def format_duration(seconds):
  seconds = int(np.round(seconds))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'
