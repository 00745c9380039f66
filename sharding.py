"""Devices: the 1-D ("data",) mesh, shardings, batches padded to the device count, sharded
sampling and gathering to the host. The library's only device-placement code."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  """A 1-D ("data",) mesh over all devices of all hosts."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def is_primary() -> bool:
  """Only process 0 writes logs, plots and summaries; every process writes checkpoints."""
  return jax.process_index() == 0


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Sharded on the leading (batch) axis."""
  return NamedSharding(mesh, P("data"))


def padded_size(n: int, mesh: Mesh) -> int:
  """n rounded up to a multiple of the device count."""
  n_dev = mesh.devices.size
  return -(-n // n_dev) * n_dev


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly multi-host sharded) array as one numpy array on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def sharded_sampler(sampler, mesh: Mesh, n: int, make_score: Callable, *,
                    n_trajectory: int = 0) -> Callable:
  """fn(key, *args) -> (x [n, ...], nfe) (plus the trajectory [K, n, ...] if n_trajectory > 0).

  `sampler` was built for `padded_size(n, mesh)` samples; its batch is sharded on "data" and cut
  back to n. Sample i depends only on fold_in(key, i), so the first n samples are the same on any
  number of devices. `make_score(*args)` gives the score function; args (network parameters,
  labels) are traced and replicated, so new values do not recompile.
  """
  data = data_sharded(mesh)

  def fn(key, *args):
    score_fn = make_score(*args)
    if n_trajectory:
      x, nfe, traj = sampler.trajectory(key, score_fn, n_trajectory)
      traj = jax.lax.with_sharding_constraint(traj, NamedSharding(mesh, P(None, "data")))
      return jax.lax.with_sharding_constraint(x, data)[:n], nfe, traj[:, :n]
    x, nfe = sampler(key, score_fn)
    return jax.lax.with_sharding_constraint(x, data)[:n], nfe

  jitted, rep = jax.jit(fn), replicated(mesh)
  return lambda key, *args: jitted(*jax.device_put((key, *args), rep))
