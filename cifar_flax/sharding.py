"""Data parallelism over every device: a 1-D 'data' mesh.

Batches are split along the mesh; parameters, optimizer state and the
dataset itself are replicated. With one device this is the same code path.
Multi-host: call `jax.distributed.initialize()` before anything else (main.py
does when --multihost is given); jax.devices() then lists every host's chips.
"""

import os
import platform

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cifar_flax import config_checks


CPUINFO = '/proc/cpuinfo'


def cpu_description(cpuinfo_text=None):
  """Which CPU, for a result measured on one: its model, the cores this
  process may use and its widest vector instructions. XLA:CPU compiles for
  the processor it runs on, so the same seed can give other numbers (and
  other speeds) on another CPU, while on one processor runs repeat bitwise."""
  if cpuinfo_text is None:
    try:
      with open(CPUINFO) as f:
        cpuinfo_text = f.read()
    except OSError:  # Not Linux.
      cpuinfo_text = ''
  fields = {}
  for line in cpuinfo_text.splitlines():
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  model = fields.get('model name') or platform.processor() or platform.machine()
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
           else os.cpu_count())
  flags = set(fields.get('flags', '').split())
  vector = next((name for flag, name in (('avx512f', 'AVX-512'),
                                         ('avx2', 'AVX2'), ('avx', 'AVX'))
                 if flag in flags), None)
  return ', '.join([model, f'{cores} cores'] + ([vector] if vector else []))


def device_kind():
  """What a result was measured on: the first device's kind ('NVIDIA H200'),
  or on a CPU 'cpu (' + cpu_description() + ')'."""
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return f'cpu ({cpu_description()})'
  return device.device_kind


def data_mesh(devices=None):
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(devices, ('data',))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh):
  return NamedSharding(mesh, P('data'))


def check_batch_size(batch_size, mesh, name='batch_size'):
  n = mesh.devices.size
  if batch_size % n:
    raise config_checks.ConfigError(
        f'config.{name}={batch_size} is not divisible by the {n} devices of '
        f'the data mesh')


def replicate(tree, mesh):
  """Places host arrays (or device arrays) replicated on every device."""
  return jax.device_put(tree, replicated(mesh))
