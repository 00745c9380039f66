"""Shared helpers: broadcasting, per-sample keys, the one `Registry`, argument checks.

Imports nothing of the project, so every module may import it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# --- shapes and per-sample randomness --------------------------------------------------

def bcast(c: Array, x: Array) -> Array:
  """A per-example coefficient [B] reshaped to broadcast against x [B, ...]."""
  return jnp.reshape(c, (-1,) + (1,) * (x.ndim - 1))


def per_sample_keys(key: Array, n: int) -> Array:
  """Keys [n]: key i is fold_in(key, i), independent of n."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def root_keys(seed: int) -> dict:
  """The run's named key streams: init, train, data, sample, eval."""
  names = ("init", "train", "data", "sample", "eval")
  return dict(zip(names, jax.random.split(jax.random.key(seed), len(names))))


def fold(keys: Array, data) -> Array:
  """fold_in(keys[i], data) for every row i; [B] keys."""
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def normal(keys: Array, x: Array) -> Array:
  """Standard normal noise shaped like x [B, ...], row i drawn from keys[i]."""
  return jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)


def flat_norm(x: Array) -> Array:
  """Per-example Euclidean norm over the non-batch axes; [B]."""
  return jnp.sqrt(jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=-1))


# --- argument checks -------------------------------------------------------------------

def is_int(value) -> bool:
  """An integer that is not a bool (numpy integers included)."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(field: str, value, low: int = 1) -> int:
  """value as an int, or ValueError naming `field` unless it is an integer >= low."""
  if not is_int(value) or value < low:
    raise ValueError(f"{field}={value!r} must be an integer >= {low}.")
  return int(value)


def check_real(field: str, value, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
  """value as a float, or ValueError naming `field` unless it is a finite real in the interval."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if not ok:
    lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
    hi = "" if high is None else f"{high}" + (")" if high_open else "]")
    where = f"must lie in {lo}, {hi}" if low is not None and high is not None else (
        f"must be {'>' if low_open else '>='} {low}" if low is not None else
        f"must be {'<' if high_open else '<='} {high}" if high is not None else "must be a finite number")
    raise ValueError(f"{field}={value!r} {where}.")
  return float(value)


def check_bool(field: str, value) -> bool:
  if not isinstance(value, bool):
    raise ValueError(f"{field}={value!r} must be True or False.")
  return value


def check_choice(field: str, value, allowed) -> Any:
  if value not in allowed:
    raise ValueError(f"{field}={value!r} is unknown; valid: {sorted(allowed)}.")
  return value


def check_batch_shape(shape) -> tuple[int, ...]:
  """A sampler's batch shape [B, ...] with positive sizes."""
  if len(shape) < 2 or any(int(s) < 1 for s in shape):
    raise ValueError(f"sampling shape={tuple(shape)} must be [B, ...] with positive sizes.")
  return tuple(int(s) for s in shape)


DATA_RANGES = {"[0,1]": (0.0, 1.0), "[-1,1]": (-1.0, 1.0)}


def as_range(data_range, field: str = "data_range") -> tuple[float, float]:
  """(lo, hi) of a named range ("[0,1]", "[-1,1]") or a finite pair lo < hi."""
  if isinstance(data_range, str) and data_range in DATA_RANGES:
    return DATA_RANGES[data_range]
  ok = (isinstance(data_range, (tuple, list)) and len(data_range) == 2
        and all(isinstance(v, numbers.Real) and math.isfinite(v) for v in data_range)
        and data_range[0] < data_range[1])
  if not ok:
    raise ValueError(f"{field}={data_range!r} is unknown; valid: {list(DATA_RANGES)} or a pair "
                     "(lo, hi) with lo < hi.")
  return float(data_range[0]), float(data_range[1])


# --- the registry ------------------------------------------------------------------------

def _fields(obj) -> set[str] | None:
  """The keyword fields `obj` accepts, or None when it takes **kwargs (not checkable)."""
  if dataclasses.is_dataclass(obj):
    return {f.name for f in dataclasses.fields(obj) if f.init} - {"parent", "name"}
  params = inspect.signature(obj).parameters.values()
  if any(p.kind == p.VAR_KEYWORD for p in params):
    return None
  return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_fields(group: str, fn: Callable, kwargs: dict, what: str | None = None) -> None:
  """ValueError for a field of `kwargs` that `fn` does not take, or a required one it lacks."""
  fields = _fields(fn)
  what = what or getattr(fn, "__name__", group)
  if fields is not None:
    for k in kwargs:
      if k not in fields:
        raise ValueError(f"{group}.{k} is not a field of {what}; allowed fields: {sorted(fields)}.")
  if not dataclasses.is_dataclass(fn):
    required = [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    missing = [k for k in required if k not in kwargs]
    if missing:
      raise ValueError(f"{group} lacks the field {missing[0]}; required fields of {what}: {required}.")


class Registry:
  """Things built by name from a config group: SDEs, datasets, models, samplers, evaluators.

  `build(name, **fields)` looks the name up and calls the entry with the fields; an unknown
  name raises ValueError listing the valid ones, and an unknown field ValueError naming it
  (for dataclasses and functions without **kwargs), before anything is built.

  Args:
    group: the config group that names the entries, used in messages ("sde", "sampling").
    key: the config field holding the name ("name", "method").
  """

  def __init__(self, group: str, key: str = "name"):
    self.group, self.key, self._entries = group, key, {}

  def register(self, name: str, entry: Callable | None = None):
    """Adds `entry` under `name`; without `entry`, a decorator."""
    if entry is None:
      return lambda e: self.register(name, e)
    self._entries[name] = entry
    return entry

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name) -> bool:
    return isinstance(name, str) and name in self._entries

  def get(self, name: str) -> Callable:
    """The entry registered as `name`.

    Raises:
      ValueError: unknown name, listing the valid ones.
    """
    if name not in self:
      raise ValueError(f"{self.group}.{self.key}={name!r} is unknown; valid names: {self.names()}.")
    return self._entries[name]

  def check_fields(self, name: str, kwargs: dict, skip: tuple = ()) -> None:
    """ValueError for a field of `kwargs` that the entry does not accept."""
    entry = self.get(name)
    what = entry.__name__ if isinstance(entry, type) else f"{self.group}.{self.key}={name!r}"
    check_fields(self.group, entry, {k: v for k, v in kwargs.items() if k not in skip}, what)

  def build(self, name: str, /, *args, **kwargs):
    """entry(*args, **kwargs) after the name and field checks."""
    self.check_fields(name, kwargs, skip=())
    return self.get(name)(*args, **kwargs)
