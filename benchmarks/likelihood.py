"""Likelihood by the probability-flow ODE with the oracle score: accuracy, NFE, time, compile time.

    python benchmarks/likelihood.py                  # exact trace, 4 SDEs, rtol = atol in {1e-5, 1e-3}
    python benchmarks/likelihood.py --hutchinson     # also the Rademacher estimator
    python benchmarks/likelihood.py --sampler        # also the ODE sampler's energy ratios and round trip

Prints one JSON line per (SDE, estimator, tolerance). On the default 2-D Gaussian mixture
the exact -log p_eps(x) is known, so `nll_mae` is the mean absolute error over 1,000 points
of NLL_ode - (log p_T(z) - log prior(z)) against it (the prior mismatch removed per point);
`nll_err_mean` +- `nll_err_mean_se` is its signed mean (for Hutchinson the per-point error
is probe noise and the mean should be ~0); `raw_mae` is the error of the NLL itself, which
includes the mismatch (mean `mean_prior_mismatch`, an estimate of KL(p_T || prior), also
estimated by Monte Carlo as `prior_kl_mc`). The first tolerance is called twice
(compile_s = first call - second call); the second tolerance is passed to the already built
function, and `retraced` says whether that traced (and so compiled) again.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import datasets  # noqa: E402
import metrics  # noqa: E402
import likelihood  # noqa: E402
import sampling  # noqa: E402
import sde_lib  # noqa: E402
from results_md import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

TARGET = datasets.GaussianMixture()
SDES = {"vesde(0.01,50)": sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0), "vpsde": sde_lib.VPSDE(),
        "subvpsde": sde_lib.SubVPSDE(), "ousde(1,1,5)": sde_lib.OUSDE(B=1.0, R=1.0, T=5.0)}


def _timed(fn, *args, **kwargs):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args, **kwargs))
  return out, time.perf_counter() - t0


def bench_likelihood(name: str, sde, hutchinson_type: str, tols: list[float], n: int) -> None:
  oracle = TARGET.score_fn(sde)
  traces = []

  def score(x, t):
    traces.append(1)  # runs only when traced
    return oracle(x, t)

  x = TARGET.sample(jax.random.key(2), n)
  truth = -TARGET.log_prob_fn(sde)(x, jnp.full((n,), 1e-5))
  kl = likelihood.prior_kl(jax.random.key(3), sde, TARGET, n=100_000)
  nll_fn = likelihood.get_likelihood_fn(sde, hutchinson_type=hutchinson_type, rtol=tols[0], atol=tols[0])
  key = jax.random.key(4)
  _, first_s = _timed(nll_fn, key, score, x)
  for i, tol in enumerate(tols):
    n_traces = len(traces)
    (nll, z, nfe), wall_s = _timed(nll_fn, key, score, x, rtol=tol, atol=tol)
    mismatch = likelihood.prior_mismatch(sde, TARGET.log_prob_fn(sde), z)
    err = np.asarray(nll - mismatch - truth, np.float64)
    row = {"benchmark": "likelihood", "sde": name, "hutchinson_type": hutchinson_type,
           "rtol": tol, "atol": tol, "n_points": n, "nll_mae": float(np.mean(np.abs(err))),
           "nll_err_mean": float(err.mean()), "nll_err_mean_se": float(err.std(ddof=1) / np.sqrt(n)),
           "raw_mae": float(jnp.mean(jnp.abs(nll - truth))),
           "mean_prior_mismatch": float(jnp.mean(mismatch)), "prior_kl_mc": kl["kl"],
           "prior_kl_mc_stderr": kl["stderr"], "nfe": int(nfe), "wall_s_per_1000": wall_s * 1000 / n}
    if i == 0:
      row.update(first_call_s=first_s, compile_s=first_s - wall_s)
    else:
      row["retraced"] = len(traces) > n_traces
    print(json.dumps(row), flush=True)


def bench_sampler(n: int, seeds: list[int]) -> None:
  refs = [TARGET.sample(k, n) for k in jax.random.split(jax.random.key(12), 10)]
  floor = metrics.metric_floor(jax.random.key(13), jax.jit(TARGET.sample, static_argnums=1), n,
                                  lambda k, a, b: metrics.energy_distance(a, b), n_pairs=10)
  for name, sde in [("vesde(sigma_max=50)", sde_lib.VESDE(sigma_max=50.0)),
                    ("vesde(sigma_max=100)", sde_lib.VESDE(sigma_max=100.0)), ("vpsde", sde_lib.VPSDE())]:
    oracle = TARGET.score_fn(sde)
    sampler = sampling.get_ode_sampler(sde, (n, 2))
    ratios, nfes, walls = [], [], []
    for seed in seeds:
      (x, nfe), wall_s = _timed(sampler, jax.random.key(seed), oracle)
      ratios.append(np.mean([float(metrics.energy_distance(x, r)) for r in refs]) / floor["mean"])
      nfes.append(int(nfe))
      walls.append(wall_s)
    x0 = TARGET.sample(jax.random.key(5), 256)
    encoder = sampling.get_ode_encoder(sde, rtol=1e-6, atol=1e-6)
    decoder = sampling.get_ode_sampler(sde, x0.shape, rtol=1e-6, atol=1e-6)
    z, nfe_enc = encoder(oracle, x0)
    x_back, nfe_dec = decoder(None, oracle, z=z)
    print(json.dumps({"benchmark": "ode_sampler", "sde": name, "n_samples": n, "seeds": seeds,
                      "energy_ratio": ratios, "energy_ratio_mean": float(np.mean(ratios)),
                      "energy_floor": floor["mean"], "energy_floor_std": floor["std"],
                      "nfe": nfes, "wall_s_after_first": walls[1:],
                      "round_trip_max_abs_err_tol1e-6": float(jnp.max(jnp.abs(x_back - x0))),
                      "round_trip_nfe": [int(nfe_enc), int(nfe_dec)]}), flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--n", type=int, default=1000, help="points per NLL evaluation")
  parser.add_argument("--tols", default="1e-5,1e-3", help="rtol = atol values; the first is compiled")
  parser.add_argument("--hutchinson", action="store_true", help="also the Rademacher estimator")
  parser.add_argument("--sampler", action="store_true", help="also ODE-sampler energy ratios (slow)")
  parser.add_argument("--seeds", default="11,31,41,51,61,71", help="sampler seeds")
  args = parser.parse_args()
  print(json.dumps({"benchmark": "machine", **machine()}), flush=True)
  tols = [float(t) for t in args.tols.split(",")]
  for name, sde in SDES.items():
    for hutchinson_type in ["exact"] + (["rademacher"] if args.hutchinson else []):
      bench_likelihood(name, sde, hutchinson_type, tols, args.n)
  if args.sampler:
    bench_sampler(10_000, [int(s) for s in args.seeds.split(",")])


if __name__ == "__main__":
  main()
