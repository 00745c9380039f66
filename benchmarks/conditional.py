"""Conditional generation with exact references: guidance per class, imputation, colorization.

    python benchmarks/conditional.py | tee conditional.jsonl     # ~5-10 min on 2 cores

Every score here is exact, so what is measured is the conditioning method itself:

  * "guided": configs/cond_gmm.py's 3-component mixture and SDE/sampler (VPSDE, N = 500, PC
    reverse diffusion + ald). Per class k: classifier-free guidance with the exact conditional
    score (w = 0 and w = 1), classifier guidance of the exact marginal score with the exact
    posterior p_t(k | x) (scale 1), and the unguided marginal score (a control), each vs
    true samples of component k, for --seeds sample sets. Ratio = energy distance (mean over
    the reference sets) / the expected floor E|X - X'| (2 / n); the pair floor (mean over
    consecutive pairs of true class-k sets) is printed too.
  * "imputation": the default 2-D mixture, x1 known, x2 sampled, vs the exact p(x2 | x1)
    (`GaussianMixture.condition`), for replacement (`get_inpainting_sampler`, with and without
    the ald corrector), reconstruction guidance (`reconstruction_guidance`, gradient through
    Tweedie's denoiser, PC sampler) and both combined. Also the energy distance to the
    marginal p(x2), and a "joint" row: x1 ~ p(x1) per sample, (x1, x2) vs the true joint.
  * "colorization": a correlated Gaussian "image" [1, 2, 3] (2 pixels, 3 channels), one fixed
    grey image; colour sampled by `get_colorization_sampler` vs the exact conditional.

Prints one JSON line per cell.
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
import sampling  # noqa: E402
import sde_lib  # noqa: E402
from configs import cond_gmm  # noqa: E402


def _ed_mean(x, refs):
  return float(np.mean([metrics.energy_distance(x, r) for r in refs]))


def _floor(refs):
  return float(np.mean([metrics.energy_distance(refs[i], refs[i + 1]) for i in range(len(refs) - 1)]))


def _emit(**row):
  print(json.dumps(row), flush=True)


def guided(n: int, n_refs: int, seed: int, seeds: int):
  cfg = cond_gmm.get_config()
  target = datasets.get_dataset(**cfg.data)
  sde = sde_lib.get_sde(**cfg.sde)
  kw = cfg.sampling.to_dict()
  sampler = sampling.get_sampler(sde, (n, target.dim), **kw)
  cond, marg = target.conditional_score_fn(sde), target.score_fn(sde)
  post = target.class_log_posterior_fn(sde)
  methods = {
      "cfg_exact_w0": jax.jit(lambda k, y: sampler(k, sampling.classifier_free_guidance(cond, y, 0.0))),
      "cfg_exact_w1": jax.jit(lambda k, y: sampler(k, sampling.classifier_free_guidance(cond, y, 1.0))),
      "classifier_exact_s1": jax.jit(lambda k, y: sampler(k, sampling.classifier_guidance(marg, post, y, 1.0))),
      "unguided": jax.jit(lambda k, y: sampler(k, marg)),
  }
  for label in range(target.num_classes):
    comp = target.component(label)
    refs = [np.asarray(comp.sample(jax.random.key(1000 * label + i), n)) for i in range(n_refs + 1)]
    floor = _floor(refs)
    expected = metrics.energy_distance_expected_floor(refs[0], n, n)
    for name, fn in methods.items():
      t0 = time.time()
      ratios = []
      for s in range(seeds):
        x, nfe = fn(jax.random.key(1000 * s + seed + label), jnp.full((n,), label, jnp.int32))
        ratios.append(_ed_mean(np.asarray(x), refs[1:]) / expected)
      _emit(section="guided", cls=label, method=name, n=n, nfe=int(nfe), seeds=seeds,
            ratio_expected_floor=[round(r, 3) for r in ratios], mean_ratio=float(np.mean(ratios)),
            expected_floor=expected, pair_floor=floor, time_s=round(time.time() - t0, 1))


def _imputers(sde, n, oracle):
  mask = jnp.array([1.0, 0.0])
  pc = dict(predictor="reverse_diffusion", snr=0.16)
  rep = sampling.get_inpainting_sampler(sde, (n, 2), corrector="none", **pc)
  rep_ald = sampling.get_inpainting_sampler(sde, (n, 2), corrector="ald", **pc)
  plain_ald = sampling.get_sampler(sde, (n, 2), corrector="ald", **pc)
  rg = lambda xk: sampling.reconstruction_guidance(sde, oracle, xk, mask)
  return {
      "replacement": jax.jit(lambda k, xk: rep(k, oracle, xk, mask)),
      "replacement_ald": jax.jit(lambda k, xk: rep_ald(k, oracle, xk, mask)),
      "recon_guidance_ald": jax.jit(lambda k, xk: plain_ald(k, rg(xk))),
      "replacement_recon_guidance": jax.jit(lambda k, xk: rep(k, rg(xk), xk, mask)),
  }


def imputation(n: int, n_refs: int, seed: int, x1_values):
  target = datasets.GaussianMixture()
  sde = sde_lib.VPSDE(N=500)
  oracle = target.score_fn(sde)
  methods = _imputers(sde, n, oracle)
  marg = np.asarray(target.sample(jax.random.key(99), n))[:, 1:]
  for a in x1_values:
    cond = target.condition([0], [a])
    refs = [np.asarray(cond.sample(jax.random.key(500 + i), n)) for i in range(n_refs + 1)]
    floor = _floor(refs)
    xk = jnp.zeros((n, 2)).at[:, 0].set(a)
    for name, fn in methods.items():
      t0 = time.time()
      x, nfe = fn(jax.random.key(seed), xk)
      x2 = np.asarray(x)[:, 1:]
      ed = _ed_mean(x2, refs[1:])
      _emit(section="imputation", x1=a, method=name, n=n, nfe=int(nfe), energy_distance=ed, floor=floor,
            ratio=ed / floor, energy_distance_to_marginal=float(metrics.energy_distance(x2, marg)),
            marginal_vs_exact=_ed_mean(marg, refs[1:]), time_s=round(time.time() - t0, 1))
  # Joint: x1 from p(x1), one imputation per row, against the true joint.
  refs = [np.asarray(target.sample(jax.random.key(700 + i), n)) for i in range(n_refs + 1)]
  floor = _floor(refs)
  xk = jnp.asarray(target.sample(jax.random.key(701 + n_refs), n)).at[:, 1].set(0.0)
  for name, fn in methods.items():
    x, nfe = fn(jax.random.key(seed), xk)
    ed = _ed_mean(np.asarray(x), refs[1:])
    _emit(section="imputation_joint", method=name, n=n, energy_distance=ed, floor=floor, ratio=ed / floor)


def colorization_target():
  """A correlated Gaussian over [1, 2, 3] images (flattened: pixel-major, channels last)."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 6))
  cov = 0.3 * a @ a.T / 6 + 0.1 * np.eye(6)
  mean = rng.uniform(-0.5, 0.5, size=6)
  return datasets.GaussianMixture([mean.tolist()], [cov.tolist()], [1.0])


def exact_colour_conditional(target, grey):
  """p(u_colour | u_grey) in the basis u = M x per pixel, as a GaussianMixture over 4 coords."""
  M = sampling.colorization_basis(3)
  R = np.kron(np.eye(2), M)  # [6, 6]: u = R x_flat
  mu, S = np.asarray(target.means[0]), np.asarray(target.covs[0])
  rot = datasets.GaussianMixture([(R @ mu).tolist()], [(R @ S @ R.T).tolist()], [1.0])
  return rot.condition([0, 3], np.sqrt(3.0) * np.asarray(grey).reshape(-1)), R


def colorization(n: int, n_refs: int, seed: int):
  target = colorization_target()
  sde = sde_lib.VPSDE(N=500)
  flat_score = target.score_fn(sde)
  score = lambda x, t: flat_score(x.reshape(x.shape[0], -1), t).reshape(x.shape)
  grey = np.array([1.0, -0.8])  # ~2 sd from the mean grey, where colour depends on it
  cond, R = exact_colour_conditional(target, grey)
  refs = [np.asarray(cond.sample(jax.random.key(800 + i), n)) for i in range(n_refs + 1)]
  floor = _floor(refs)
  uncond = np.asarray(target.sample(jax.random.key(900), n)) @ R.T
  uncond_vs_exact = _ed_mean(uncond[:, [1, 2, 4, 5]], refs[1:])
  for corrector, scale, data_var in (("none", 0.0, 1.0), ("ald", 0.0, 1.0), ("none", 1.0, 1.0), ("none", 1.0, 0.25),
                                     ("ald", 1.0, 0.25)):
    sampler = sampling.get_colorization_sampler(sde, (n, 1, 2, 3), corrector=corrector, guidance_scale=scale,
                                                data_var=data_var)
    x, nfe = jax.jit(lambda k: sampler(k, score, jnp.broadcast_to(jnp.asarray(grey), (n, 1, 2))))(jax.random.key(seed))
    u = np.asarray(x).reshape(n, 6) @ R.T
    ed = _ed_mean(u[:, [1, 2, 4, 5]], refs[1:])
    _emit(section="colorization", corrector=corrector, guidance_scale=scale, data_var=data_var,
          unconditional_vs_exact=uncond_vs_exact, n=n, nfe=int(nfe), energy_distance=ed, floor=floor,
          ratio=ed / floor, energy_distance_to_unconditional=float(metrics.energy_distance(u[:, [1, 2, 4, 5]], uncond[:, [1, 2, 4, 5]])),
          grey_max_abs_err=float(np.max(np.abs(np.asarray(x).mean(-1) - grey))))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--n", type=int, default=5000)
  p.add_argument("--n-refs", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--seeds", type=int, default=3, help="sample sets per class (guided section)")
  p.add_argument("--sections", default="guided,imputation,colorization")
  p.add_argument("--x1", default="-1,0,1,2,3")
  args = p.parse_args()
  sections = args.sections.split(",")
  if "guided" in sections:
    guided(args.n, args.n_refs, args.seed, args.seeds)
  if "imputation" in sections:
    imputation(args.n, args.n_refs, args.seed, [float(v) for v in args.x1.split(",")])
  if "colorization" in sections:
    colorization(args.n, args.n_refs, args.seed)


if __name__ == "__main__":
  main()
