"""Bits per dimension of integer-level data through uniform dequantisation.

`dequantize` maps level k to a uniform point of its cell in the data range (lo, hi), and
`bits_per_dim` / `dequantized_bits_per_dim` turn the continuous NLL of those points into an
upper bound on the discrete model's bits/dim (Theis et al. 2016; Ho et al. 2019, Sec. 3.1).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from utils import as_range, check_int, per_sample_keys

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]


def _check_n_bins(n_bins) -> None:
  check_int("likelihood.n_bins", n_bins, 2)


def dequantization_offset(n_bins: int, data_range) -> float:
  """log(n_bins / (hi - lo)) nats per dimension: the term `bits_per_dim` adds (see there)."""
  _check_n_bins(n_bins)
  lo, hi = as_range(data_range, "likelihood.data_range")
  return math.log(n_bins) - math.log(hi - lo)


def bits_per_dim(nll: Array, dim: int, *, data_range: str | tuple[float, float] | None = "[-1,1]",
                 n_bins: int = 256) -> Array:
  """Converts a continuous NLL (nats per example) of dequantised n_bins-level data to bits/dim.

  The dequantisation bound (Theis et al. 2016; Ho et al. 2019, Sec. 3.1; derived in
  docs/likelihood.md): with y = lo + (hi - lo)(k + u) / L, u ~ U[0, 1)^D,

      -log P(k) <= E_u[-log p_Y(y)] + D log(L / (hi - lo)),   bpd = (nll / D + log(L / (hi - lo))) / ln 2.

  data_range=None gives continuous bits/dim, nll / (D ln 2), with no offset.

  Args:
    nll: negative log-likelihood in nats per example, any shape (e.g. E_u[-log p_Y(y)]).
    dim: D, the number of dimensions per example.
    data_range: "[0,1]", "[-1,1]", a pair (lo, hi), or None (continuous data, no offset).
    n_bins: L, the number of quantisation levels (256 for 8-bit data, 17 for sklearn digits).

  Returns:
    Bits per dimension, shaped like nll.

  Raises:
    ValueError: unknown data_range, dim < 1 or n_bins < 2.
  """
  if data_range is not None:
    as_range(data_range, "likelihood.data_range")
  check_int("dim", dim, 1)
  _check_n_bins(n_bins)
  nats = jnp.asarray(nll) / dim
  if data_range is not None:
    nats = nats + dequantization_offset(n_bins, data_range)
  return nats / math.log(2.0)


def _check_levels(images, n_bins: int) -> np.ndarray:
  """images as int32 numpy [N, ...], or a ValueError unless integer-valued in 0..n_bins - 1."""
  x = np.asarray(images)
  if x.ndim < 2 or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"images.shape={x.shape} (dtype {x.dtype}) is invalid: must be a numeric "
                     "array [N, ...] with N >= 1 and at least one axis per example.")
  if not (np.all(np.isfinite(x)) and np.all(x == np.round(x)) and x.min() >= 0
          and x.max() <= n_bins - 1):
    raise ValueError(f"images hold values in [{x.min()!r}, {x.max()!r}]: they must be the integer "
                     f"levels 0..{n_bins - 1} (n_bins={n_bins}), before any scaling.")
  return x.astype(np.int32)


def dequantize(key: Array, k, *, n_bins: int,
               data_range: str | tuple[float, float] = (-1.0, 1.0)) -> Array:
  """Uniform dequantisation of integer levels into the model's continuous data range.

      y = lo + (hi - lo) (k + u) / L,      u ~ U[0, 1)^D,

  so y is uniform on the cell of level k (see `bits_per_dim`). The noise of example i is drawn
  from fold_in(key, i), so it does not depend on how the data are batched.

  Args:
    key: PRNG key.
    k: integer levels [N, ...] in 0..n_bins - 1 (ints or integer-valued floats).
    n_bins: L, the number of levels.
    data_range: "[0,1]", "[-1,1]" or a pair (lo, hi).

  Returns:
    y, float32 [N, ...].

  Raises:
    ValueError: bad n_bins or data_range, or k not integer levels in 0..n_bins - 1.
  """
  _check_n_bins(n_bins)
  lo, hi = as_range(data_range, "likelihood.data_range")
  k = _check_levels(k, n_bins)
  return _dequantize(key, k, jnp.float32(lo), jnp.float32((hi - lo) / n_bins))


@jax.jit
def _dequantize(key, k, lo, width):
  """lo + width (k + u) with u ~ U[0, 1)^D drawn per example from fold_in(key, i)."""
  keys = per_sample_keys(key, k.shape[0])
  u = jax.vmap(lambda key_i: jax.random.uniform(key_i, k.shape[1:], jnp.float32))(keys)
  return lo + width * (k.astype(jnp.float32) + u)


def dequantized_bits_per_dim(key: Array, nll_fn: Callable, score_fn: ScoreFn, images, *,
                             n_bins: int, data_range: str | tuple[float, float] = (-1.0, 1.0),
                             batch_size: int = 256) -> dict:
  """Bits/dim of integer-level data (e.g. a test split) by the dequantisation bound.

  Each image is dequantised once, y = `dequantize(key_u, images)`, its continuous NLL
  -log p_Y(y) is computed by `nll_fn` (the probability-flow ODE), and `bits_per_dim` adds the
  offset D log(L / (hi - lo)). The mean over images is an unbiased estimate of the bound
  E_{k, u}[...] >= E_k[-log2 P(k)] / D, with the standard error of the per-image values
  (which include the dequantisation and Hutchinson noise).

  Batches of `batch_size` images run one after another (one compilation: the last batch is
  padded with the first images, whose results are dropped). key_u, key_probe = split(key);
  batch j's Hutchinson probes come from fold_in(key_probe, j).

  Args:
    key: PRNG key (dequantisation noise and Hutchinson probes).
    nll_fn: from `get_likelihood_fn`; nll_fn(key, score_fn, y) -> (nll [B], z, nfe).
    score_fn: score_fn(y, t), the model's score on the continuous data range.
    images: integer levels [N, ...] in 0..n_bins - 1 (e.g. raw digits 0..16, [N, 8, 8, 1]).
    n_bins: L, the number of levels (17 for sklearn digits, 256 for 8-bit images).
    data_range: the model's data range (lo, hi) (or "[0,1]" / "[-1,1]").
    batch_size: images per ODE solve.

  Returns:
    {"bpd": mean bits/dim, "bpd_stderr", "nll_nats": mean continuous NLL per image,
     "offset_bits": log2(L / (hi - lo)), "n", "dim", "n_bins", "nfe": total score evaluations},
    python numbers.

  Raises:
    ValueError: bad n_bins, data_range or batch_size, or images not integer levels (before
      anything is compiled).
  """
  _check_n_bins(n_bins)
  lo, hi = as_range(data_range, "likelihood.data_range")
  check_int("batch_size", batch_size, 1)
  levels = _check_levels(images, n_bins)
  key_u, key_probe = jax.random.split(key)
  y = dequantize(key_u, levels, n_bins=n_bins, data_range=(lo, hi))
  n, dim, b = levels.shape[0], math.prod(levels.shape[1:]), min(int(batch_size), levels.shape[0])
  nll, nfe = [], 0
  for j, start in enumerate(range(0, n, b)):
    batch = y[start:start + b]
    m = batch.shape[0]
    batch = jnp.concatenate([batch, y[:b - m]]) if m < b else batch
    out, _, batch_nfe = nll_fn(jax.random.fold_in(key_probe, j), score_fn, batch)
    nll.append(np.asarray(out, np.float64)[:m])
    nfe += int(batch_nfe)
  nll = np.concatenate(nll)
  offset = dequantization_offset(n_bins, (lo, hi))
  bpd = (nll / dim + offset) / math.log(2.0)
  stderr = float(bpd.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
  return {"bpd": float(bpd.mean()), "bpd_stderr": stderr, "nll_nats": float(nll.mean()),
          "offset_bits": offset / math.log(2.0), "n": int(n), "dim": int(dim),
          "n_bins": int(n_bins), "nfe": nfe}
