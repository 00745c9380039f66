"""Symmetric against plain score networks on targets with a known symmetry, at equal training steps.

    nice -n 10 python benchmarks/symmetry.py --seeds 0 1 2 >> benchmarks/symmetry.jsonl   # ~15 min, 2 cores
    python benchmarks/symmetry.py --from-jsonl benchmarks/symmetry.jsonl --write          # RESULTS section + plot

For each case (a config of configs/sym_*.py and a network), each seed trains the network with
`run_lib.train` for --steps steps (the config's SDE, loss, optimizer and EMA; batch --batch), then
measures with the EMA parameters: the test NLL gap, mean over --nll-points fresh points of the
probability-flow ODE NLL (`likelihood.get_likelihood_fn`, the config's likelihood group) minus the
exact -log p(x); the energy-distance ratio of --samples samples (the config's PC sampler) against a
true set, divided by the floor (the mean energy distance between --floor-pairs pairs of true sets of
the same size); and the trained network's equivariance error max |s(g x) - g s(x)| / max |s(x)| over
the target's group (random rotations too for E(2)). The exact score's ODE gap is reported once per
target (what the ODE and prior leave at a perfect score). Each cell prints one JSON line; --write
turns the lines into the "## Symmetry: equivariant scores on symmetric targets" section of
benchmarks/RESULTS.md (mean ± standard error over seeds) and benchmarks/symmetry.png.
"""

import argparse
import collections
import json
import math
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

SECTION = "## Symmetry: equivariant scores on symmetric targets"
RESULTS = os.path.join(ROOT, "benchmarks", "RESULTS.md")
PLOT = os.path.join(ROOT, "benchmarks", "symmetry.png")

# (target label, config module, config argument, overrides, network label, role)
CASES = [
    ("ring C5 (2-D)", "sym_ring", None, {}, "MLP averaged over C5", "symmetric"),
    ("ring C5 (2-D)", "sym_ring", None, {"symmetry": "none"}, "MLP", "plain"),
    ("particles S4 (8-D)", "sym_particles", "deepsets", {}, "DeepSets", "symmetric"),
    ("particles S4 (8-D)", "sym_particles", "mlp", {}, "MLP", "plain"),
    ("particles E(2) x S4, zero CoM (6-D)", "sym_particles_e2", "egnn", {}, "EGNN", "symmetric"),
    ("particles E(2) x S4, zero CoM (6-D)", "sym_particles_e2", "mlp", {}, "MLP", "plain"),
    ("particles S4, zero CoM (6-D)", "sym_particles_com", "deepsets", {}, "DeepSets", "symmetric"),
    ("particles S4, zero CoM (6-D)", "sym_particles_com", "mlp", {}, "MLP", "plain"),
    ("particles S4, zero CoM (6-D)", "sym_particles_com", "egnn", {}, "EGNN", "misspecified"),
]


def emit(record: dict) -> dict:
  print(json.dumps(record), flush=True)
  return record


def get_config(module: str, arg, overrides: dict, args):
  import importlib

  mod = importlib.import_module(f"configs.{module}")
  config = mod.get_config() if arg is None else mod.get_config(arg)
  config.model.update(overrides)
  config.training.update(dict(n_iters=args.steps, batch_size=args.batch, log_freq=math.gcd(250, args.steps),
                              checkpoint_freq=args.steps, snapshot_freq=args.steps))
  return config


def test_group(target, key) -> np.ndarray:
  """The target's group as matrices on x, with 8 random rotations (and reflections) of the plane
  for the E(2)-invariant particles."""
  from datasets import symmetric

  if not isinstance(target, symmetric.E2Particles):
    return np.asarray(target.group)
  n = target.n_particles
  perms = symmetric.restrict_to_com(symmetric.particle_permutations(n, 2), n, 2)
  thetas = np.asarray(jax.random.uniform(key, (8,), maxval=2 * math.pi))
  rots = [symmetric.rotation_2d(th) @ np.diag([1.0, (-1.0) ** i]) for i, th in enumerate(thetas)]
  planar = symmetric.restrict_to_com(np.stack([symmetric.particle_transform(n, r) for r in rots]), n, 2)
  return np.concatenate([perms, planar])


def equivariance_error(score_fn, group, x, t) -> float:
  """max over g of max |s(g x) - g s(x)| / max |s(x)| (float32)."""
  s = score_fn(x, t)
  errs = [jnp.max(jnp.abs(score_fn(x @ g.T, t) - s @ g.T)) for g in jnp.asarray(group, jnp.float32)]
  return float(jnp.max(jnp.stack(errs)) / jnp.max(jnp.abs(s)))


def floor_of(key, target, n: int, n_pairs: int) -> float:
  import metrics

  out = metrics.metric_floor(key, target.sample, n, lambda k, a, b: metrics.energy_distance(a, b), n_pairs=n_pairs)
  return float(out["mean"])


def run_cell(case, seed: int, args, cache: dict) -> dict:
  import likelihood
  import metrics
  import run_lib
  import sampling

  label, module, arg, overrides, net_label, role = case
  config = get_config(module, arg, overrides, args)
  config.seed = seed
  exp = run_lib.build(config)
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    params = run_lib.train(config, workdir).ema_params
  train_s = time.perf_counter() - t0
  score_fn = jax.tree_util.Partial(exp.model_score_fn, params)
  target, sde = exp.target, exp.sde
  key_x, key_s, key_r, key_g, key_f = jax.random.split(jax.random.fold_in(jax.random.key(1000), seed), 5)
  x = target.sample(key_x, args.nll_points)
  nll_fn = likelihood.get_likelihood_fn(sde, **config.likelihood)
  true = -target.log_prob(x)
  gap = float(jnp.mean(nll_fn(None, score_fn, x)[0] - true))
  if label not in cache:  # the exact score's ODE gap and the energy floor, once per target
    cache[label] = dict(oracle_gap=float(jnp.mean(nll_fn(None, target.score_fn(sde), x)[0] - true)),
                        floor=floor_of(key_f, target, args.samples, args.floor_pairs))
  sampler_kwargs = dict(config.sampling) if args.sampler == "config" else dict(method="ode")
  sampler = sampling.get_sampler(sde, (args.samples, target.dim), **sampler_kwargs)
  samples, nfe = sampler(key_s, score_fn)
  energy = float(metrics.energy_distance(samples, target.sample(key_r, args.samples)))
  t = jnp.full((64,), 0.1, jnp.float32) * sde.T
  eq = equivariance_error(jax.jit(score_fn), test_group(target, key_g), x[:64], t)
  n_params = int(sum(p.size for p in jax.tree_util.tree_leaves(params)))
  return emit({"benchmark": "symmetry", "target": label, "config": module, "config_arg": arg, "overrides": overrides,
               "network": net_label, "role": role, "seed": seed, "steps": args.steps, "batch": args.batch,
               "params": n_params, "nll_gap": gap, "oracle_nll_gap": cache[label]["oracle_gap"],
               "energy": energy, "floor": cache[label]["floor"], "energy_ratio": energy / cache[label]["floor"],
               "equivariance_error": eq, "sampler": sampler_kwargs["method"], "nfe": int(nfe), "nll_points": args.nll_points, "samples": args.samples,
               "train_s": round(train_s, 1), "total_s": round(time.perf_counter() - t0, 1)})


# --- the RESULTS section from the JSON lines -----------------------------------------------------

def _mean_se(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def summarise(records: list) -> list:
  """One row per (target, network): means and standard errors over seeds (the latest line of each seed)."""
  latest = {}
  for r in records:
    if r.get("benchmark") == "symmetry":
      latest[(r["target"], r["network"], r["seed"])] = r
  groups = collections.defaultdict(list)
  for (target, network, _), r in latest.items():
    groups[(target, network)].append(r)
  rows = []
  for (target, network), rs in groups.items():
    row = dict(target=target, network=network, role=rs[0]["role"], n=len(rs), steps=rs[0]["steps"],
               samples=rs[0]["samples"], nll_points=rs[0]["nll_points"],
               params=rs[0]["params"], oracle_nll_gap=rs[0]["oracle_nll_gap"],
               eq=max(r["equivariance_error"] for r in rs), train_s=float(np.mean([r["train_s"] for r in rs])))
    row["gap"], row["gap_se"] = _mean_se([r["nll_gap"] for r in rs])
    row["ratio"], row["ratio_se"] = _mean_se([r["energy_ratio"] for r in rs])
    rows.append(row)
  order = {c[0]: i for i, c in enumerate(CASES)}
  return sorted(rows, key=lambda r: (order.get(r["target"], 99), r["role"] != "symmetric", r["role"]))


def table(rows: list) -> str:
  lines = ["| target | network | role | params | seeds | NLL gap to exact (nats) | energy / floor (samples) | "
           "equivariance error | train s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['target']} | {r['network']} | {r['role']} | {r['params']:,} | {r['n']} | "
                 f"{r['gap']:.3f} ± {r['gap_se']:.3f} | {r['ratio']:.2f} ± {r['ratio_se']:.2f} ({r['samples']:,}) | "
                 f"{r['eq']:.1e} | {r['train_s']:.0f} |")
  return "\n".join(lines)


def plot(rows: list, path: str) -> None:
  """Bars (mean ± standard error over seeds) of the NLL gap and the energy ratio, one group per target."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  targets = list(dict.fromkeys(r["target"] for r in rows))
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
  colors = {"symmetric": "tab:blue", "plain": "tab:gray", "misspecified": "tab:red"}
  for ax, (key, name) in zip(axes, (("gap", "test NLL gap to the exact NLL (nats, log scale)"),
                                    ("ratio", "energy distance / floor (1 = floor)"))):
    ticks, labels = [], []
    for i, target in enumerate(targets):
      trs = [r for r in rows if r["target"] == target]
      for j, r in enumerate(trs):
        pos = i + (j - (len(trs) - 1) / 2) * 0.27
        ax.bar(pos, r[key], 0.24, yerr=r[key + "_se"], color=colors[r["role"]], capsize=3)
        ticks.append(pos)
        labels.append(r["network"].replace("MLP averaged over C5", "MLP avg C5"))
      ax.text(i, -0.2, target.replace(" (", "\n("), transform=ax.get_xaxis_transform(), ha="center", va="top",
              fontsize=7.5)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
    ax.set_title(f"{name}, mean ± s.e. over seeds", fontsize=9)
    if key == "gap":
      ax.set_yscale("log")
    else:
      ax.axhline(1.0, color="k", lw=0.8, ls="--")
  handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
  axes[0].legend(handles, list(colors), loc="upper left", fontsize=8)
  fig.tight_layout()
  fig.subplots_adjust(bottom=0.3)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def verdicts(rows: list) -> list:
  """Per target, each non-plain network against the plain one: the differences of the means (plain minus
  it, positive = it is better) with their standard errors, and "better" / "worse" where the difference
  exceeds twice its standard error, "no clear difference" otherwise."""

  def call(d, se):
    return "better" if d > 2 * se else "worse" if d < -2 * se else "no clear difference"

  lines = []
  for target in dict.fromkeys(r["target"] for r in rows):
    plain = next((r for r in rows if r["target"] == target and r["role"] == "plain"), None)
    for r in (r for r in rows if r["target"] == target and r["role"] != "plain" and plain):
      parts = []
      for key, name in (("gap", "NLL gap"), ("ratio", "energy / floor")):
        d, se = plain[key] - r[key], math.hypot(plain[key + "_se"], r[key + "_se"])
        parts.append(f"{name} {call(d, se)} ({d:+.3f} ± {se:.3f})")
      lines.append(f"- {target}, {r['network']} ({r['role']}) against the plain MLP: " + "; ".join(parts) + ".")
  return lines


NOTES = """The permutation-only particle targets (with or without the centre of mass) are not rotation-invariant, so
their scores are not rotation-equivariant and an EGNN cannot represent them (docs/symmetry.md): the row
"misspecified" measures that. `sym_particles_e2` is the target whose symmetry is E(2) x S4, the EGNN's own,
with an exact density (Bessel I_0). The C5 average costs 5 network evaluations per score; DeepSets and EGNN
one (EGNN's pairwise messages make it the slowest per step)."""


def superseded(records: list, rows: list) -> list:
  """A line on the earlier runs with fewer samples that the table's later lines replace (kept in the jsonl)."""
  shown = {(r["target"], r["samples"]) for r in rows}
  old = [r for r in records if r.get("benchmark") == "symmetry" and (r["target"], r["samples"]) not in shown]
  if not old:
    return []
  parts = [f"{r['target']}, {r['network']}: {r['ratio']:.2f} ± {r['ratio_se']:.2f} ({r['n']} seeds)"
           for r in summarise(old)]
  return [f"Energy / floor of the earlier runs with {old[0]['samples']:,} samples (the same seeds 0-2 and networks, "
          "too noisy to separate the models, so rerun with more samples): " + "; ".join(parts) + ".", ""]


def write(records: list, args) -> str:
  from benchmarks.results_md import replace_section

  del args
  rows = summarise(records)
  steps = rows[0]["steps"] if rows else "?"
  text = "\n".join([
      SECTION, "",
      "    nice -n 10 python benchmarks/symmetry.py --seeds 0 1 2 --only sym_particles sym_particles_com >> benchmarks/symmetry.jsonl",
      "    nice -n 10 python benchmarks/symmetry.py --seeds 0 1 2 --only sym_particles_e2 --samples 4000 >> benchmarks/symmetry.jsonl",
      "    nice -n 10 python benchmarks/symmetry.py --seeds $(seq 0 19) --only sym_ring --samples 4000 >> benchmarks/symmetry.jsonl",
      "    python benchmarks/symmetry.py --from-jsonl benchmarks/symmetry.jsonl --write", "",
      f"Every network trained {steps} steps (batch {records[-1]['batch']}) on its config of `configs/sym_*.py`, "
      "VE SDE, EMA parameters; the networks of one target have the same parameter budget "
      "(within 1%). NLL gap: probability-flow ODE NLL minus the exact -log p(x), mean over "
      f"{records[-1]['nll_points']} fresh points per seed (the exact score's gap, the ODE's own floor, is below "
      "the table). Energy / floor: samples of the probability-flow ODE sampler (tsit5, adaptive) against a true "
      "set of the same size, divided by the mean energy distance between pairs of true sets (1 = indistinguishable). "
      "Equivariance error: max |s(g x) - g s(x)| / max |s(x)| of the trained score over the target's group "
      "(E(2): permutations and 8 random rotations and reflections), the largest over seeds. "
      "Mean ± standard error over seeds. Machine: 2-core CPU shared with four other agents (load average "
      "10-12 during the run); train s is wall time under that load, the first seed's including compilation.", "",
      table(rows), "",
      "Exact score's ODE NLL gap per target: " + ", ".join(
          f"{r['target']}: {r['oracle_nll_gap']:.4f}" for r in rows if r["role"] == "symmetric") + ".", "",
      "Symmetric against plain (difference of means ± its standard error; \"better\" beyond two standard errors):", "",
      *verdicts(rows), "",
      *superseded(records, rows), NOTES, "",
      "![symmetry](symmetry.png)", ""])
  replace_section(RESULTS, SECTION, text)
  plot(rows, PLOT)
  return text


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--nll-points", type=int, default=128)
  parser.add_argument("--samples", type=int, default=1000)
  parser.add_argument("--sampler", choices=("ode", "config"), default="ode",
                      help="ode: the probability-flow ODE (tsit5, adaptive); config: the config's PC sampler")
  parser.add_argument("--floor-pairs", type=int, default=4)
  parser.add_argument("--only", nargs="*", default=None, help="config modules to run (default: all)")
  parser.add_argument("--roles", nargs="*", default=None, help="symmetric, plain, misspecified (default: all)")
  parser.add_argument("--from-jsonl", default=None)
  parser.add_argument("--write", action="store_true")
  args = parser.parse_args()
  if args.from_jsonl:
    records = [json.loads(line) for line in open(args.from_jsonl) if line.strip()]
    print(write(records, args) if args.write else table(summarise(records)))
    return
  cache = {}
  for case in CASES:
    if (args.only and case[1] not in args.only) or (args.roles and case[5] not in args.roles):
      continue
    for seed in args.seeds:
      run_cell(case, seed, args, cache)


if __name__ == "__main__":
  main()
