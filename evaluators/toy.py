"""Evaluations on targets with exact densities and scores (toy targets)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import likelihood
import metrics
import models
import sampling
import sde_lib
import sharding
import workdir as wd
from evaluators.base import Context


def eval_keys(ctx: Context) -> dict:
  """The named eval streams: sample, reference, floor, metric, score."""
  return dict(zip(("sample", "ref", "floor", "metric", "score"), jax.random.split(ctx.key, 5)))


def sample_metrics(key, x, references: list, target, n_projections: int) -> dict:
  """Metrics of samples x against the truth. Energy distance and sliced Wasserstein are means
  over independent reference sets, as the floor is a mean over pairs of true sets."""
  ed = [float(metrics.energy_distance(x, r)) for r in references]
  sw = [float(metrics.sliced_wasserstein(jax.random.fold_in(key, i), x, r, n_projections=n_projections))
        for i, r in enumerate(references)]
  out = {"energy_distance": float(np.mean(ed)), "energy_distance_values": ed,
         "sliced_wasserstein": float(np.mean(sw))}
  out.update({k: float(v) for k, v in metrics.mean_cov_error(x, target.mean(), target.cov()).items()})
  return out


def floors(key, sample_fn, n: int, n_pairs: int, n_projections: int) -> dict:
  """Energy distance and sliced Wasserstein between pairs of true sets of n from sample_fn(key, n)
  (the floor)."""
  key_ed, key_sw, key_x = jax.random.split(key, 3)
  ed = metrics.metric_floor(key_ed, sample_fn, n, lambda k, a, b: metrics.energy_distance(a, b), n_pairs=n_pairs)
  sw = metrics.metric_floor(key_sw, sample_fn, n, functools.partial(metrics.sliced_wasserstein,
                                                                     n_projections=n_projections), n_pairs=n_pairs)
  expected = metrics.energy_distance_expected_floor(sample_fn(key_x, n), n, n)
  return {"energy_distance": float(ed["mean"]), "energy_distance_std": float(ed["std"]),
          "energy_distance_expected": float(expected), "sliced_wasserstein": float(sw["mean"])}


def samples(ctx: Context, *, n_samples: int, n_floor_pairs: int, sw_projections: int) -> tuple[dict, dict]:
  """n_samples samples with the model (and, with eval.oracle, the exact score) against
  n_floor_pairs true reference sets: energy distance, sliced Wasserstein, mean/cov errors, and
  their floor between true sets; energy_ratio = model / floor."""
  keys, method = eval_keys(ctx), ctx.sampler_kwargs.get("method", "")
  with wd.phase(f"sampling {n_samples:,} points with the model ({method})"):
    x, nfe = ctx.model_sampler(n_samples)(keys["sample"], ctx.params)
    x = sharding.to_host(x)
  arrays = {"model": np.asarray(x)}
  if ctx.oracle:
    with wd.phase(f"sampling {n_samples:,} points with the oracle (exact) score ({method})"):
      arrays["oracle"] = np.asarray(sharding.to_host(ctx.oracle_sampler(n_samples)(keys["sample"])[0]))
  sample_fn = ctx.data_sampler()
  summary = {"n_samples": n_samples, "nfe": int(nfe), "sampler": ctx.sampler_summary()}
  with wd.phase(f"metrics against {n_floor_pairs} true sets, floor from {n_floor_pairs} pairs"):
    refs = [sample_fn(k, n_samples) for k in jax.random.split(keys["ref"], n_floor_pairs)]
    arrays["reference"] = np.asarray(refs[0])
    for name in ("model", "oracle") if ctx.oracle else ("model",):
      summary[name] = sample_metrics(keys["metric"], arrays[name], refs, ctx.target, sw_projections)
    summary["floor"] = floors(keys["floor"], sample_fn, n_samples, n_floor_pairs, sw_projections)
  summary["energy_ratio"] = summary["model"]["energy_distance"] / summary["floor"]["energy_distance"]
  if ctx.oracle:
    summary["oracle_energy_ratio"] = summary["oracle"]["energy_distance"] / summary["floor"]["energy_distance"]
  return summary, arrays


def _zero_score(x, t):
  """The score that predicts 0: its error is the exact score itself (the reference of `score_error`)."""
  del t
  return jnp.zeros_like(x)


def score_error(ctx: Context, *, score_error_samples: int) -> tuple[dict, dict]:
  """The model's score against the exact one (`metrics.score_error`, 16 times uniform in [1e-3, T],
  score_error_samples points x_t ~ p_t each): weighted_mse = mean_t E[sigma(t)^2 |s - s*|^2] / d
  (the excess of the denoising score-matching loss), exact_weighted_ms = mean_t E[sigma(t)^2 |s*|^2] / d
  on the same points, and relative = their ratio: the fraction of the exact score's sigma^2-weighted
  energy that the error amounts to (0 exact, 1 as far off as predicting 0); relative_rms its root."""
  key, args = eval_keys(ctx)["score"], (ctx.target.score_fn(ctx.sde), ctx.sde, ctx.data_sampler())
  err = metrics.score_error(key, ctx.score_fn(), *args, n=score_error_samples)["weighted_mse"]
  exact = metrics.score_error(key, _zero_score, *args, n=score_error_samples)["weighted_mse"]
  return {"score_error": {"weighted_mse": err, "exact_weighted_ms": exact, "relative": err / exact,
                          "relative_rms": float(np.sqrt(err / exact))}}, {}


def nll(ctx: Context, *, nll_samples: int) -> tuple[dict, dict]:
  """Test NLL (nats per example) of the model and of the exact score by the probability-flow ODE,
  against the true -log p_0 of the same nll_samples fresh points (0 skips it)."""
  if not nll_samples:
    return {}, {}
  key_x, key_nll, key_kl = jax.random.split(jax.random.fold_in(eval_keys(ctx)["score"], 1), 3)
  sde, target = ctx.sde, ctx.target
  x = ctx.data_sampler()(key_x, nll_samples)
  with wd.phase(f"NLL of {nll_samples:,} test points, model score (probability-flow ODE)"):
    nll_model, _, nfe = jax.block_until_ready(ctx.likelihood_fn(key_nll, ctx.score_fn(), x))
  with wd.phase(f"NLL of {nll_samples:,} test points, oracle score"):
    nll_oracle, z_oracle, _ = jax.block_until_ready(ctx.likelihood_fn(key_nll, target.score_fn(sde), x))
  true = -target.log_prob(x)
  mismatch = likelihood.prior_mismatch(sde, target.log_prob_fn(sde), z_oracle)
  mean = lambda v: float(jnp.mean(v))
  return {"likelihood": {
      "n": nll_samples, "nfe": int(nfe), "nll_model": mean(nll_model), "nll_oracle": mean(nll_oracle),
      "nll_true": mean(true), "gap_model_true": mean(nll_model - true), "gap_model_oracle": mean(nll_model - nll_oracle),
      "gap_oracle_true": mean(nll_oracle - true), "prior_mismatch": mean(mismatch),
      "prior_kl": likelihood.prior_kl(key_kl, sde, target)["kl"],
      "bits_per_dim_model": mean(likelihood.bits_per_dim(nll_model, target.dim, data_range=None))}}, {}


def vlb(ctx: Context, *, vlb: dict) -> tuple[dict, dict]:
  """The discrete model's variational bound (Ho et al. Eq. 5) on vlb["n_points"] fresh points,
  with the model's eps and (eval.oracle) the exact eps, against the true NLL; the other vlb fields
  go to `likelihood.get_vlb_fn`."""
  fields = dict(vlb)
  n_points = fields.pop("n_points")
  schedule = sde_lib.schedule_of(ctx.sde)
  vlb_fn = likelihood.get_vlb_fn(schedule, **fields)
  key_x, key_q = jax.random.split(jax.random.fold_in(eval_keys(ctx)["score"], 2))
  x0 = ctx.target.sample(key_x, n_points)
  eps_fn = models.get_eps_fn(ctx.network, schedule)  # the network's own eps, conditioned on step / T
  model = jax.jit(lambda p, x: vlb_fn(key_q, functools.partial(eps_fn, p), x))(ctx.params, x0)
  oracle = None
  if ctx.oracle:
    oracle = jax.jit(lambda x: vlb_fn(key_q, models.exact_eps_fn(ctx.target, schedule), x))(x0)
  return {"vlb": likelihood.vlb_summary(model, oracle=oracle, true_nll=-ctx.target.log_prob(x0))}, {}


KL_BATCH = 4096  # latents per jitted batch of `sampler_kl` (one Jacobian per latent, jacfwd through the sampler)


def check_sampler_kl(names, sampler, target) -> None:
  """The `sampler_kl` evaluator needs a deterministic sampler (a map of the prior latent) and a target with a
  density.

  Raises:
    ValueError: naming the sampler or the dataset.
  """
  if "sampler_kl" in names and (sampler.needs_key or not hasattr(target, "log_prob")):
    what = (f"a deterministic sampler (sampling.method={sampler.method!r} draws noise)" if sampler.needs_key
            else f"a target with a known density ({type(target).__name__} has no log_prob)")
    raise ValueError(f"eval.evaluators contains 'sampler_kl', which needs {what}. Remove it from eval.evaluators.")


def sampler_kl(ctx: Context, *, kl_samples: int) -> tuple[dict, dict]:
  """The exact KL(q || p) of the configured deterministic sampler's law q against the target
  (`metrics.sampler_kl`: the change of variables through the sampler, Monte Carlo over about kl_samples
  prior latents only), with the model's score and, with eval.oracle, the exact score: their difference
  is the network's share, the exact-score KL the sampler's own error. Each with its standard error and
  "folded", the fraction of latents where the sampler folds the latent space (then the number is not a KL)."""
  n_batches = -(-kl_samples // KL_BATCH)
  batch = -(-kl_samples // n_batches)
  built = sampling.get_sampler(ctx.sde, (batch,) + tuple(ctx.shape), **ctx.sampler_kwargs)
  key, out = jax.random.fold_in(eval_keys(ctx)["sample"], 3), {}
  scores = {"model": ctx.score_fn(), **({"oracle": ctx.target.score_fn(ctx.sde)} if ctx.oracle else {})}
  for name, score_fn in scores.items():
    with wd.phase(f"exact sampler KL, {name} score, {n_batches * batch:,} latents"):
      out[name] = metrics.sampler_kl(key, built, score_fn, ctx.target.log_prob, ctx.sde, n_batches=n_batches)
  return {"sampler_kl": out}, {}


EVALUATORS = {"samples": samples, "score_error": score_error, "likelihood": nll, "vlb": vlb,
              "sampler_kl": sampler_kl}
