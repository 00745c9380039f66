"""The continuous-time variational bound (`likelihood.elbo`) of a run's model on held-out data."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import datasets
import likelihood
import workdir as wd
from evaluators.base import Context


def _stats(v) -> dict:
  v = np.asarray(v, np.float64)
  return {"mean": float(v.mean()), "stderr": float(v.std() / math.sqrt(len(v)))}


def _terms(out: dict, d: int) -> dict:
  row = {name: float(np.mean(np.asarray(v, np.float64))) for name, v in out.items()}
  row.update(total_stderr=_stats(out["total"])["stderr"])
  row["bits_per_dim"] = row["total"] / (d * math.log(2))
  row["bits_per_dim_stderr"] = row["total_stderr"] / (d * math.log(2))
  return row


def _dequantized(ctx: Context, fn, key, n_points: int) -> dict:
  """The bound of a model of continuous data on integer-level test images: each image is
  dequantised once and `likelihood.dequantized_bits_per_dim` adds D log(L / (hi - lo)) to its
  negative ELBO (Gaussian decoder), a bound on -log P of the integer image."""
  t = ctx.target
  if not datasets.is_image_dataset(t):
    raise ValueError("eval.elbo.dequantize=True needs an image dataset of integer levels; "
                     f"data.name is {type(t).__name__}.")
  run = jax.jit(lambda k, p, y: fn(k, functools.partial(ctx.model_score_fn, p), y)["total"])
  nll_fn = lambda k, _score_fn, y: (run(k, ctx.params, y), y, 0)  # noqa: E731
  with wd.phase(f"dequantised variational bound of {n_points:,} test images"):
    out = likelihood.dequantized_bits_per_dim(key, nll_fn, None, t.test_x[:n_points], n_bins=t.levels,
                                              data_range=t.data_range, batch_size=n_points)
  model = {"bits_per_dim": out["bpd"], "bits_per_dim_stderr": out["bpd_stderr"], "total": out["nll_nats"]}
  return {"model": model, "n": n_points, "dequantized": True}


def elbo(ctx: Context, *, elbo: dict) -> tuple[dict, dict]:
  """Negative ELBO (nats per example, and bits/dim) of elbo["n_points"] held-out points with the
  model's score and, with eval.oracle on a toy target, the exact score, against the true NLL.

  elbo fields: n_points (toy: fresh draws; images: the first n of the test split), and
  `likelihood.get_elbo_fn`'s t0, n_t, decoder, levels, data_range, t_sampling.
  """
  fields = dict(elbo)
  n_points = int(fields.pop("n_points"))
  dequantize = bool(fields.pop("dequantize", False))
  fn = likelihood.get_elbo_fn(ctx.sde, **fields)
  key_x, key_b = jax.random.split(jax.random.fold_in(ctx.key, 23))
  if dequantize:
    return {"elbo": _dequantized(ctx, fn, key_b, n_points)}, {}
  if datasets.is_image_dataset(ctx.target):
    x = jnp.asarray(ctx.target.scale(ctx.target.test_x[:n_points]))
  else:
    x = ctx.data_sampler()(key_x, n_points)
  d = int(np.prod(x.shape[1:]))
  run = jax.jit(lambda p, x: fn(key_b, functools.partial(ctx.model_score_fn, p), x))
  with wd.phase(f"variational bound of {n_points:,} held-out points"):
    model = jax.block_until_ready(run(ctx.params, x))
  out = {"model": _terms(model, d), "n": n_points}
  if ctx.oracle and hasattr(ctx.target, "score_fn"):
    out["oracle"] = _terms(jax.jit(lambda x: fn(key_b, ctx.target.score_fn(ctx.sde), x))(x), d)
  if hasattr(ctx.target, "log_prob"):
    true = -np.asarray(ctx.target.log_prob(x), np.float64)
    out["nll_true"] = float(true.mean())
    out["gap_model_true"] = _stats(np.asarray(model["total"], np.float64) - true)
  return {"elbo": out}, {}


EVALUATORS = {"elbo": elbo}
