"""Data parallelism over every device: a 1-D 'data' mesh.

Batches are split along the mesh; parameters, optimizer state and the
dataset itself are replicated. With one device this is the same code path.
Multi-host: call `jax.distributed.initialize()` before anything else (main.py
does when --multihost is given); jax.devices() then lists every host's chips.
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cifar_flax import config_checks


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
