"""The signal-to-noise view on the default 2-D Gaussian mixture: the continuous-time bound with
learned and fixed schedules, and the variance of the training objectives' estimators.

    python benchmarks/vdm.py [--steps 3000] [--out benchmarks/vdm.jsonl]
    python benchmarks/vdm.py --checkpoint vdm_digits:runs/vdm_digits --n_points 297

Prints (and appends to --out) JSON lines:

- "bound_exact": the bound of the exact score minus the true NLL for several endpoint pairs
  (linear schedule, 4,000 points x 64 stratified times), >= 0 within its standard error.
- "vdm_train": configs/vdm_gmm.py trained for --steps steps with the learned schedule
  ("learned_logsnr") and with the fixed linear schedule of the same initial endpoints
  ("logsnr"): the bound on 4,000 fresh points (+- standard error), the true NLL, the learned
  endpoints, and the variance over (x, t, eps) of the per-example diffusion-term estimate with
  one uniform t per example, under each model's own schedule.
- "schedule_variance" (--checkpoint CONFIG:WORKDIR): a trained learned-schedule run on held-out
  data under its learned schedule and under the linear one with the same endpoints.
- "is_variance": the likelihood-weighted DSM loss (Song et al. 2021b) of a VE and a VP model
  (configs/ve_gmm.py, configs/vp_gmm.py, --steps steps) with t ~ U(eps, T) and with importance
  sampling (losses.importance_times): per-example mean and variance over 100,000 draws.
"""

import argparse
import json
import math
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import datasets  # noqa: E402
import likelihood  # noqa: E402
import losses  # noqa: E402
import run_lib  # noqa: E402
import sde_lib  # noqa: E402
from configs import ve_gmm, vdm_gmm, vp_gmm  # noqa: E402

TARGET = datasets.GaussianMixture()


def _se(v) -> tuple[float, float]:
  v = np.asarray(v, np.float64)
  return float(v.mean()), float(v.std() / math.sqrt(len(v)))


def bound_exact(emit) -> None:
  x = TARGET.sample(jax.random.key(0), 4000)
  true = -np.asarray(TARGET.log_prob(x), np.float64)
  for g0, g1 in [(-1.0, 1.0), (-3.0, 2.5), (-6.0, 4.0), (-10.0, 6.0), (-13.3, 8.0)]:
    sde = sde_lib.LogSNRSDE(gamma_min=g0, gamma_max=g1)
    fn = likelihood.get_elbo_fn(sde, t0=0.0, n_t=64)
    out = jax.jit(lambda k, x: fn(k, TARGET.score_fn(sde), x))(jax.random.key(1), x)
    gap, se = _se(np.asarray(out["total"], np.float64) - true)
    emit({"benchmark": "bound_exact", "gamma_min": g0, "gamma_max": g1, "gap_nats": gap, "gap_stderr": se})


def _train(config, steps: int, workdir: str):
  config.training.n_iters = steps
  exp = run_lib.build(config)
  state = run_lib.train(exp, workdir)
  return exp, state.ema_params


def vdm_train(emit, steps: int, tmp: str) -> None:
  x = TARGET.sample(jax.random.key(2), 4000)
  true = -np.asarray(TARGET.log_prob(x), np.float64)
  for name in ("learned_logsnr", "logsnr"):
    config = vdm_gmm.get_config()
    if name == "logsnr":
      config.sde = ml_collections.ConfigDict(dict(name="logsnr", gamma_min=-10.0, gamma_max=6.0, schedule="linear",
                                                  N=500))
    exp, params = _train(config, steps, os.path.join(tmp, name))
    sde = sde_lib.bound(exp.sde, params)
    score = lambda z, t: exp.model_score_fn(params, z, t)
    f16, f1 = (likelihood.get_elbo_fn(sde, t0=0.0, n_t=n) for n in (16, 1))
    out = jax.jit(lambda k, x: f16(k, score, x))(jax.random.key(3), x)
    one = jax.jit(lambda k, x: f1(k, score, x))(jax.random.key(4), x)
    bound, se = _se(out["total"])
    g = sde.gamma(jnp.array([0.0, 1.0]))
    emit({"benchmark": "vdm_train", "schedule": name, "steps": steps, "bound_nats": bound, "bound_stderr": se,
          "nll_true": float(true.mean()), "gap_nats": _se(np.asarray(out["total"]) - true)[0],
          "gamma_0": float(g[0]), "gamma_1": float(g[1]),
          "diffusion_var_1t": float(np.var(np.asarray(one["diffusion"], np.float64)))})


def is_variance(emit, steps: int, tmp: str) -> None:
  x = TARGET.sample(jax.random.key(5), 100_000)[:, None, :]
  for mod in (ve_gmm, vp_gmm):
    exp, params = _train(mod.get_config(), steps, os.path.join(tmp, mod.__name__.split(".")[-1]))
    for is_ in (False, True):
      fn = losses.get_sde_loss_fn(exp.sde, exp.model_score_fn, likelihood_weighting=True, importance_sampling=is_)
      per = jax.jit(jax.vmap(lambda k, b: fn(k, params, b)))(jax.random.split(jax.random.key(6), len(x)), x)
      mean, se = _se(per)
      emit({"benchmark": "is_variance", "sde": exp.config.sde.name, "steps": steps, "importance_sampling": is_,
            "loss_mean": mean, "loss_stderr": se, "loss_var": float(np.var(np.asarray(per, np.float64)))})


def _linear_shape(params):
  """params with the schedule's sigmoid branch switched off: shape(t) = t, the same endpoints."""
  shape = dict(params["schedule"]["shape"], w3=jnp.full_like(params["schedule"]["shape"]["w3"], -40.0))
  return {**params, "schedule": {**params["schedule"], "shape": shape}}


def schedule_variance(emit, config_name: str, workdir: str, n_points: int) -> None:
  """A trained learned-schedule model, on held-out data, under its learned schedule and under the
  linear schedule with the same endpoints (the network sees -log SNR, so both are valid and
  have the same bound in expectation): the bound +- standard error and the variance of the
  per-example diffusion-term estimate with one uniform t (the training loss's estimator)."""
  import importlib
  config = importlib.import_module(f"configs.{config_name}").get_config()
  exp = run_lib.build(config)
  params = run_lib.load_state(exp, workdir).ema_params
  if datasets.is_image_dataset(exp.target):
    x = jnp.asarray(exp.target.scale(exp.target.test_x[:n_points]))
  else:
    x = exp.target.sample(jax.random.key(7), n_points)
  fields = {k: v for k, v in config.eval.elbo.to_dict().items() if k not in ("n_points", "n_t")}
  for label, p in (("learned", params), ("linear", _linear_shape(params))):
    sde = sde_lib.bound(exp.sde, p)
    score = lambda z, t, p=p: exp.model_score_fn(p, z, t)
    f16, f1 = (likelihood.get_elbo_fn(sde, n_t=n, **fields) for n in (16, 1))
    out = jax.jit(lambda k, x: f16(k, score, x))(jax.random.key(8), x)
    one = jax.jit(lambda k, x: f1(k, score, x))(jax.random.key(9), x)
    d = int(np.prod(x.shape[1:]))
    bound, se = _se(out["total"])
    emit({"benchmark": "schedule_variance", "config": config_name, "schedule": label, "n_points": n_points,
          "step": int(run_lib.load_state(exp, workdir).step), "bound_nats": bound, "bound_stderr": se,
          "bits_per_dim": bound / (d * math.log(2)), "bits_per_dim_stderr": se / (d * math.log(2)),
          "diffusion_var_1t": float(np.var(np.asarray(one["diffusion"], np.float64)))})


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "vdm.jsonl"))
  parser.add_argument("--checkpoint", default=None,
                      help="CONFIG:WORKDIR of a trained learned-schedule run: only the schedule_variance rows")
  parser.add_argument("--n_points", type=int, default=297)
  args = parser.parse_args()
  machine = {"nproc": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}

  def emit(row):
    row = {**row, **machine}
    print(json.dumps(row), flush=True)
    with open(args.out, "a") as f:
      f.write(json.dumps(row) + "\n")

  if args.checkpoint:
    schedule_variance(emit, *args.checkpoint.split(":", 1), args.n_points)
    return
  bound_exact(emit)
  with tempfile.TemporaryDirectory() as tmp:
    vdm_train(emit, args.steps, tmp)
    is_variance(emit, args.steps, tmp)


if __name__ == "__main__":
  main()
