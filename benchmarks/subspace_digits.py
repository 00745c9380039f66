"""Subspace diffusion on the 8x8 digits: a small MLP on the 16 coordinates of the 4x4 average-pooling
subspace (`sampling.subspace.avgpool_subspace`) for t > t_s, the full-resolution U-Net of
configs/vp_digits.py for t < t_s, against the U-Net alone.

    python benchmarks/subspace_digits.py --steps 2000 >> benchmarks/subspace_digits.jsonl   # ~20 min, loaded CPU
    python benchmarks/subspace.py --from-jsonl benchmarks/subspace.jsonl --write             # the RESULTS tables

Budget: the U-Net trains `--steps` steps of batch 128 through run_lib.train (the library's loop, VP SDE, the
vp_digits config otherwise); the subspace MLP trains the same number of steps of batch 128 with
`train.fit` on y = U^T x of the same dequantised train digits, times drawn from [t_s, T] (the only
times it is used at). Both samplers are DPM-Solver++ 2M with 50 NFE on the uniform log-SNR grid
(the digits configs' sampler); the subspace one switches at the grid time nearest t_s, where t_s is the
earliest time from which the orthogonal Fisher divergence, estimated with the trained U-Net's score
on noised train digits, stays below --threshold. The lift uses the train digits' orthogonal mean and
per-coordinate variance. Reported per sampler: network GFLOPs per sample (XLA's cost analysis of one
network call, times its NFE), wall time per 1,000 samples, the digits-classifier Frechet distance to
the test split (mean ± SE over 3 sampling seeds of 1,500), and test bits/dim by the dequantisation
bound with the probability-flow ODE (Rademacher probe; for the subspace model the ODE runs in the full
space from eps to t_s, the orthogonal component is scored by its Gaussian, and the 16-D subspace ODE,
exact divergence, from t_s to T).
"""

import argparse
import functools
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

import likelihood  # noqa: E402
import losses  # noqa: E402
import metrics  # noqa: E402
import models  # noqa: E402
import run_lib  # noqa: E402
import sampling  # noqa: E402
import train as train_lib  # noqa: E402
from configs import vp_digits  # noqa: E402
from evaluators.features import train_digits_classifier  # noqa: E402
from likelihood.ode import _nll  # noqa: E402  (the ODE between two given times)
from sampling import subspace as S  # noqa: E402

SUB = S.avgpool_subspace(8, 8, 1)
MLP = dict(name="mlp", hidden=128, depth=3, embed_dim=32, fourier_scale=1.0, parameterization="eps",
           conditioning="auto", input_scaling=True)
DPM = dict(order=2, n_steps=50, schedule="log_snr", eps=1e-3)
ODE = dict(rtol=1e-4, atol=1e-4, solver="tsit5", n_steps=None, max_steps=4096)


def emit(record: dict) -> dict:
  print(json.dumps(record), flush=True)
  return record


def train_full(workdir: str, steps: int):
  config = vp_digits.get_config()
  config.training.update(n_iters=steps, log_freq=min(100, steps), checkpoint_freq=steps, snapshot_freq=steps)
  exp = run_lib.build(config)
  t0 = time.time()
  state = run_lib.train(exp, workdir)
  return exp, state, time.time() - t0


def train_subspace(exp, steps: int, t_s: float):
  """The MLP on y = U^T x, DSM with t ~ U(t_s, T); returns (score_fn(params, y, t), EMA params, seconds)."""
  sde = exp.sde
  model = models.get_score_model(sde, **MLP)
  loss_fn = losses.get_loss_fn(sde, model, reduce_mean=False, likelihood_weighting=False, eps=t_s)
  optimizer = losses.get_optimizer(total_steps=steps, lr=2e-3, warmup_steps=200, final_lr_ratio=0.05)
  step = losses.get_train_step_fn(loss_fn, optimizer, ema_rate=0.999, ema_warmup=True)
  keys = jax.random.split(jax.random.key(1), 3)
  state = losses.init_train_state(models.init_params(keys[0], model.network, (1, SUB.dim)), optimizer)
  job = train_lib.Job(step, lambda data, key, n: SUB.project(data.sample(key, n)), exp.target, keys[1], keys[2])
  t0 = time.time()
  state = jax.block_until_ready(train_lib.fit(job, steps, 128, state))
  return model.score_fn, state.ema_params, time.time() - t0


def flops(fn, shape) -> float:
  cost = jax.jit(fn).lower(jnp.zeros(shape), jnp.full(shape[:1], 0.5)).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def subspace_nll_fn(sde, t_s: float, m_perp, v_perp: float, sub_score):
  """nll_fn(key, full_score, x) of the subspace model (module docstring): the full-space ODE from eps
  to t_s, whose end point z is scored by log p_sub(U^T z) + log N(P_perp z; alpha m_perp, v I)."""
  sub_nll = likelihood.get_likelihood_fn(sde, hutchinson_type="exact", eps=t_s, **ODE)
  d_perp = SUB.full_dim - SUB.dim
  alpha, sigma = (float(c[0]) for c in sde.marginal_coeffs(jnp.array([t_s])))
  v = alpha**2 * v_perp + sigma**2

  def logp_ts(z):
    r = jnp.reshape(SUB.complement(z) - alpha * m_perp[None], (z.shape[0], -1))
    log_perp = -0.5 * jnp.sum(r**2, -1) / v - 0.5 * d_perp * np.log(2 * np.pi * v)
    return -sub_nll(None, sub_score, SUB.project(z))[0] + log_perp

  def nll_fn(key, score_fn, x, rtol=None, atol=None):
    tol = sampling.tolerances(rtol, atol, ODE["rtol"], ODE["atol"])
    return _nll(key, sampling.as_pytree_fn(score_fn), x, *tol, jnp.float32(1e-5), jnp.float32(t_s), sde=sde,
                hutchinson_type="rademacher", solver=ODE["solver"], n_steps=None, max_steps=ODE["max_steps"],
                prior_logp=logp_ts)

  return nll_fn


def evaluate(label, exp, sampler, score, nll_fn, clf, gflops, seeds: int = 3, n: int = 1500) -> dict:
  target = exp.target
  run = lambda k, s: sampler(k, s)[0]  # noqa: E731  (the sampler is compiled once)
  jax.block_until_ready(run(jax.random.key(0), score))  # compile
  t0 = time.time()
  xs = [np.asarray(jax.block_until_ready(run(jax.random.key(s), score))) for s in range(seeds)]
  wall = (time.time() - t0) / seeds
  fds, floor = [], None
  for s, x in enumerate(xs):
    out = metrics.classifier_frechet_distance(jax.random.key(50 + s), np.asarray(target.quantize(jnp.asarray(x))),
                                              target.train_x, target.test_x, classifier=clf)
    fds.append(out["fd"])
    floor = out["fd_floor"]
  t0 = time.time()
  bpd = likelihood.dequantized_bits_per_dim(jax.random.key(7), nll_fn, exp.model_score_fn_bound, target.test_x,
                                            n_bins=target.levels, data_range=target.data_range, batch_size=297)
  split = getattr(sampler, "nfe_split", {"subspace": 0, "full": DPM["n_steps"]})
  return emit({"section": "digits_eval", "sampler": label, "t_switch": getattr(sampler, "t_switch", None),
               "nfe": DPM["n_steps"], "nfe_split": split, "gflops_per_sample": gflops(split),
               "seconds_per_1000": wall / n * 1000, "fd": float(np.mean(fds)),
               "fd_se": float(np.std(fds, ddof=1) / np.sqrt(seeds)), "fd_values": fds, "fd_floor": floor,
               "bits_per_dim": bpd["bpd"], "bpd_se": bpd["bpd_stderr"], "bpd_seconds": time.time() - t0})


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--threshold", type=float, default=1e-2)
  parser.add_argument("--workdir", default="/tmp/subspace_digits")
  args = parser.parse_args()
  exp, state, train_s = train_full(os.path.join(args.workdir, f"unet_{args.steps}"), args.steps)
  sde, target = exp.sde, exp.target
  full_score = functools.partial(exp.model_score_fn, state.ema_params)
  x_train = np.asarray(target.scale(jnp.asarray(target.train_x)), np.float64).reshape(len(target.train_x), -1)
  m_perp, v_perp = S.orthogonal_moments(SUB, x_train.mean(0), np.cov(x_train, rowvar=False))
  t0 = time.time()
  fd = S.orthogonal_fisher_divergence(jax.random.key(3), SUB, sde, full_score, target.sample,
                                      np.round(np.arange(0.05, 1.0001, 0.05), 2), perp_mean=m_perp,
                                      perp_var=v_perp, n=512, threshold=args.threshold)
  emit({"section": "digits_fisher", "steps": args.steps, "unet_train_seconds": train_s, "perp_var": v_perp,
        "seconds": time.time() - t0, **fd})
  t_s = fd["t_switch"] if fd["t_switch"] is not None else 1.0 - 1e-3
  sub_fn, sub_params, sub_train_s = train_subspace(exp, args.steps, min(t_s, 0.95))
  sub_score = functools.partial(sub_fn, sub_params)
  emit({"section": "digits_train", "steps": args.steps, "batch_size": 128, "unet_train_seconds": train_s,
        "mlp_train_seconds": sub_train_s, "t_switch": t_s,
        "unet_params": int(sum(p.size for p in jax.tree.leaves(state.ema_params))),
        "mlp_params": int(sum(p.size for p in jax.tree.leaves(sub_params)))})
  f_unet, f_mlp = flops(full_score, (1, 8, 8, 1)), flops(sub_score, (1, SUB.dim))
  gflops = lambda split: (split["subspace"] * f_mlp + split["full"] * f_unet) / 1e9  # noqa: E731
  clf = train_digits_classifier(jax.random.key(11), target.train_x, target.train_y, target.test_x, target.test_y,
                                data_range=(0.0, target.levels - 1.0), n_steps=600, batch_size=128,
                                learning_rate=2e-3, feature_dim=64)
  shape = (1500, 8, 8, 1)
  full = sampling.get_sampler(sde, shape, method="dpm_solver", **DPM)
  exp = _Bound(exp, full_score)
  evaluate("full U-Net", exp, full, full_score, exp.likelihood_fn, clf, gflops)
  subs = sampling.get_sampler(sde, shape, method="subspace_dpm_solver", subspace=SUB, t_switch=t_s,
                              perp_mean=m_perp, perp_var=v_perp, **DPM)
  evaluate("4x4 MLP above t_s + U-Net below", exp, subs, S.subspace_score_fn(full_score, sub_score, SUB.dim),
           subspace_nll_fn(sde, subs.t_switch, jnp.asarray(m_perp, jnp.float32), v_perp, sub_score), clf, gflops)


class _Bound:
  """The experiment's target and likelihood with the trained full score bound (for `evaluate`)."""

  def __init__(self, exp, full_score):
    self.target, self.likelihood_fn, self.model_score_fn_bound = exp.target, exp.likelihood_fn, full_score


if __name__ == "__main__":
  main()
