"""Linear inverse problems against exact posteriors: every method's energy ratio, and SMC vs particles.

    python benchmarks/inverse.py | tee benchmarks/inverse.jsonl        # ~15 min on 2 shared cores
    python benchmarks/inverse.py --only gmm8d:general --sigmas 0.1 --particles 256 \
        --methods "smc K=256" | tee -a benchmarks/inverse.jsonl          # one more SMC point, ~4 min
    python benchmarks/inverse.py --table benchmarks/inverse.jsonl      # the RESULTS.md tables

Targets: the default 2-D mixture (`datasets.GaussianMixture()`) and a 4-component mixture in
8-D (seeded). Observations y = A x* + sigma_y n of one fixed x* per problem, for a mask (2-D: x1
observed; 8-D: the first 4 coordinates) and a general A (2-D: (0.6, 0.8); 8-D: a 3 x 8 Gaussian
matrix / sqrt(8)), with sigma_y = 0 and 0.1. The exact posterior p(x | y) is
`datasets.linear_gaussian_posterior`; every score is exact (the oracle), so what is measured is
the conditioning method. Ratio = energy distance of n samples to n exact posterior samples
(mean over --n-refs sets) / the floor (mean energy distance between consecutive pairs of exact
sets of the same size).

Methods (published or default settings, none tuned here): replacement (PC reverse diffusion,
no corrector, N = 500, `get_replacement_sampler`), reconstruction guidance (`linear_guidance`,
scale 1, data_var 1, PC reverse diffusion + ald, N = 500), DPS (zeta' = 1, N = 1000; Chung et
al. 2023), DDRM (20 steps, eta = 0.85, eta_b = 1; Kawar et al. 2022), SMC (the twisted diffusion
sampler, N = 500, data_var 1, resampling at ESS < K / 2) for --particles, over --smc-seeds sample
sets; SMC needs sigma_y > 0. With sigma_y > 0, guidance and every SMC row are also run with
data_var = tr(Cov)/d, the data's mean per-coordinate variance, in place of the default 1.
The rows ", jacobian = gaussian" take the guidance / twist gradient through the Jacobian of
isotropic Gaussian data instead of the score model's (`sampling.inverse.guided_terms`).
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
from sampling import operators as O  # noqa: E402


def mixture_8d():
  rng = np.random.default_rng(0)
  d, k = 8, 4
  a = rng.normal(size=(k, d, d))
  covs = np.einsum("kij,klj->kil", a, a) / d + 0.1 * np.eye(d)
  return datasets.GaussianMixture((2.0 * rng.normal(size=(k, d))).tolist(), covs.tolist(), [0.1, 0.2, 0.3, 0.4])


def problems():
  """(name, target, operator, x*) for the four problems."""
  rng = np.random.default_rng(1)
  t8 = mixture_8d()
  x8 = np.asarray(t8.sample(jax.random.key(11), 1))[0]
  return [("gmm2d", datasets.GaussianMixture(), "mask", O.Mask(jnp.array([1.0, 0.0]), (2,)), np.array([2.0, 0.0])),
          ("gmm2d", datasets.GaussianMixture(), "general", O.Dense([[0.6, 0.8]], (2,)), np.array([0.5, 0.0])),
          ("gmm8d", t8, "mask", O.Mask(jnp.asarray(np.arange(8) < 4, jnp.float32), (8,)), x8),
          ("gmm8d", t8, "general", O.Dense(rng.normal(size=(3, 8)) / np.sqrt(8), (8,)), x8)]


def methods(target, op, sigma_y, n, particles, smc_seeds):
  """name -> (fn(key, y) -> (x, nfe), number of seeds)."""
  sde, sde_dps = sde_lib.VPSDE(N=500), sde_lib.VPSDE(N=1000)
  oracle, oracle_dps = target.score_fn(sde), target.score_fn(sde_dps)
  shape = (n, target.dim)
  pc = sampling.get_sampler(sde, shape, corrector="ald")
  rep = sampling.get_replacement_sampler(sde, shape, op, corrector="none")
  dps = sampling.get_dps_sampler(sde_dps, shape, op, zeta=1.0)
  ddrm = sampling.get_ddrm_sampler(sde, shape, op, sigma_y=sigma_y)
  guided = lambda y, v, j="model": sampling.linear_guidance(sde, oracle, op, y, sigma_y=sigma_y, data_var=v,
                                                            jacobian=j)
  v_data = float(np.trace(target.cov()) / target.dim)  # the data's mean per-coordinate variance
  out = {"replacement": (lambda k, y: rep(k, oracle, y), 1),
         "guidance": (lambda k, y: pc(k, guided(y, 1.0)), 1),
         "dps": (lambda k, y: dps(k, oracle_dps, y), 1),
         "ddrm": (lambda k, y: ddrm(k, oracle, y), 1),
         "guidance, jacobian = gaussian": (lambda k, y: pc(k, guided(y, 1.0, "gaussian")), 1)}
  if sigma_y > 0:
    out["guidance, data_var = tr(Cov)/d"] = (lambda k, y: pc(k, guided(y, v_data)), 1)
    for v, suffix in ((None, ""), (1.0, ", data_var = 1"), (v_data, ", data_var = tr(Cov)/d")):
      for K in particles:
        smc = sampling.get_smc_sampler(sde, shape, op, sigma_y=sigma_y, n_particles=K, data_var=v)
        out[f"smc K={K}{suffix}"] = ((lambda s: lambda k, y: s(k, oracle, y))(smc), smc_seeds)
    for K in particles:
      smc = sampling.get_smc_sampler(sde, shape, op, sigma_y=sigma_y, n_particles=K, jacobian="gaussian")
      out[f"smc K={K}, jacobian = gaussian"] = ((lambda s: lambda k, y: s(k, oracle, y))(smc), smc_seeds)
  return out


def _ed(x, refs):
  return float(np.mean([metrics.energy_distance(x, r) for r in refs]))


def run(n, n_refs, seed, sigmas, particles, smc_seeds, only=None, names=None):
  for (pname, target, oname, op, x_star), n_seeds in zip(problems(), (smc_seeds[0],) * 2 + (smc_seeds[1],) * 2):
    if only and f"{pname}:{oname}" not in only:
      continue
    for sigma_y in sigmas:
      y1 = np.asarray(op.observe(jax.random.key(7), jnp.asarray(x_star[None], jnp.float32), sigma_y))[0]
      post = datasets.linear_gaussian_posterior(target, op.matrix(), y1.reshape(-1), sigma_y)
      refs = [np.asarray(post.sample(jax.random.key(500 + i), n)) for i in range(n_refs + 1)]
      floor = float(np.mean([metrics.energy_distance(refs[i], refs[i + 1]) for i in range(n_refs)]))
      prior_ratio = _ed(np.asarray(target.sample(jax.random.key(99), n)), refs[1:]) / floor
      y = jnp.broadcast_to(jnp.asarray(y1, jnp.float32), (n,) + tuple(op.out_shape))
      for mname, (fn, seeds) in methods(target, op, sigma_y, n, particles, n_seeds).items():
        if names and mname not in names:
          continue
        for s in range(seeds):
          t0 = time.time()
          x, nfe = fn(jax.random.key(seed + s), y)
          x = np.asarray(x)
          ed = _ed(x, refs[1:])
          print(json.dumps(dict(problem=pname, operator=oname, sigma_y=sigma_y, method=mname, seed=seed + s, n=n,
                                nfe=int(nfe), energy_distance=ed, floor=floor, ratio=ed / floor,
                                prior_ratio=prior_ratio, finite=bool(np.all(np.isfinite(x))),
                                time_s=round(time.time() - t0, 1))), flush=True)


def _fmt(v):
  return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def table(path):
  """Markdown tables from the JSON lines: methods x problems (mean over seeds), then the SMC curve."""
  rows = [json.loads(line) for line in open(path) if line.strip().startswith("{")]
  cols = list(dict.fromkeys((r["problem"], r["operator"], r["sigma_y"]) for r in rows))
  ratios, nfe, prior = {}, {}, {}
  for r in rows:
    c = (r["problem"], r["operator"], r["sigma_y"])
    ratios.setdefault((r["method"],) + c, []).append(r["ratio"])
    nfe[r["method"]], prior[c] = r["nfe"], r["prior_ratio"]
  names = list(dict.fromkeys(r["method"] for r in rows))
  print("| method | NFE / sample | " + " | ".join(f"{p} {o}, sigma_y = {s:g}" for p, o, s in cols) + " |")
  print("|---|---|" + "---|" * len(cols))
  print("| prior samples (no conditioning) | | " + " | ".join(_fmt(prior[c]) for c in cols) + " |")
  for m in names:
    vals = [_fmt(np.mean(ratios[(m,) + c])) if (m,) + c in ratios else "" for c in cols]
    print(f"| {m} | {nfe[m]} | " + " | ".join(vals) + " |")
  noisy = [c for c in cols if c[2] > 0]
  for suffix, label in (("", "default: data_var from the model"), (", data_var = 1", "data_var = 1"),
                        (", data_var = tr(Cov)/d", "data_var = tr(Cov)/d"),
                        (", jacobian = gaussian", "data_var from the model, jacobian = gaussian")):
    smc = [m for m in names if m.startswith("smc K=") and m.endswith(suffix) and ("," in m) == bool(suffix)]
    print()
    print(f"| K ({label}) | " + " | ".join(f"{p} {o}" for p, o, _ in noisy) + " |")
    print("|---|" + "---|" * len(noisy))
    for m in smc:
      vals = []
      for c in noisy:
        v = ratios.get((m,) + c, [])
        vals.append("" if not v else _fmt(np.mean(v)) + (" (" + ", ".join(_fmt(x) for x in v) + ")" if len(v) > 1 else ""))
      print(f"| {m[6:len(m) - len(suffix)]} | " + " | ".join(vals) + " |")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--n", type=int, default=1000)
  p.add_argument("--n-refs", type=int, default=4)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--sigmas", default="0,0.1")
  p.add_argument("--particles", default="1,4,16,64")
  p.add_argument("--smc-seeds", default="3,1", help="SMC sample sets (seeds) on the 2-D and the 8-D problems")
  p.add_argument("--only", default="", help="problems to run, e.g. gmm8d:general (default: all)")
  p.add_argument("--methods", default="", help="method names to run, ';'-separated (default: all)")
  p.add_argument("--table", default=None, help="print the markdown tables of a JSON-lines file and exit")
  args = p.parse_args()
  if args.table:
    table(args.table)
    return
  run(args.n, args.n_refs, args.seed, [float(s) for s in args.sigmas.split(",")],
      [int(k) for k in args.particles.split(",")], [int(k) for k in args.smc_seeds.split(",")],
      [o for o in args.only.split(",") if o], [m for m in args.methods.split(";") if m])


if __name__ == "__main__":
  main()
