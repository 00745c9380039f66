"""Sampler quality vs NFE: energy distance of 10,000 samples to the truth, oracle and trained scores.

    python benchmarks/samplers.py --write | tee benchmarks/samplers.jsonl   # ~20-30 min on 2 cores
    python benchmarks/samplers.py --from-jsonl benchmarks/samplers.jsonl --write   # tables + plot only

On the default 2-D Gaussian mixture with configs/ve_gmm.py (VESDE 0.01..100) and
configs/vp_gmm.py (VPSDE 0.1..20), for each sampler and NFE budget in --nfes: the energy
distance (`metrics.energy_distance`, mean over --n-refs fixed reference sets of true
samples) of 10,000 samples, for each of --seeds, divided by the floor (the mean energy
distance between two independent true sets, `metrics.metric_floor(..., n_pairs=10)`).
Scores: the oracle (`datasets.GaussianMixture().score_fn(sde)`) and the EMA parameters of a
network trained by `run_lib.train` with the config (trained once into --workdir, reused).
Samplers get the same keys, hence the same prior draws (common random numbers).

Sections: "main" (every sampler at every NFE, both scores), "schedule" (the fast samplers
under each time schedule at --schedule-nfes, oracle), "sigma_end" (dpm_solver_2m+denoise, the
sampler of configs/*_gmm_fast.py, at the end noise levels --sigma-ends, oracle), "ve_offset"
(the VE prior N(0, sigma_max^2) ignores the data mean (1, 0): deterministic samplers started
from the prior vs from exact draws of p_T, for several sigma_max, oracle). Prints one JSON line
per cell; with --write, rewrites the "## Samplers: energy distance vs NFE" section of
benchmarks/RESULTS.md (other sections untouched) and saves benchmarks/samplers_energy_vs_nfe.png.
"""

import argparse
import dataclasses
import functools
import importlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import metrics  # noqa: E402
import run_lib  # noqa: E402
import sampling  # noqa: E402
from results_md import machine as machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

CONFIGS = ("ve_gmm", "vp_gmm")
SIGMA_END = 0.1  # the end noise level (sigma_edm) of the "+denoise" sampler
SECTION = "## Samplers: energy distance vs NFE"
RESULTS = os.path.join(ROOT, "benchmarks", "RESULTS.md")
PLOT = os.path.join(ROOT, "benchmarks", "samplers_energy_vs_nfe.png")


# --- samplers at an NFE budget: (method kwargs, SDE override, exact NFE) ----------------

def _pc(predictor: str, corrector: str):
  def spec(sde, nfe):
    n_corr = corrector != "none"
    N = max((nfe - 1) // (1 + n_corr), 2)  # N predictor (+ N corrector) steps + 1 denoising
    kwargs = dict(method="pc", predictor=predictor, corrector=corrector, snr=0.16, n_steps=1,
                  denoise=True, eps=1e-3)
    return kwargs, dataclasses.replace(sde, N=N), N * (1 + n_corr) + 1
  return spec


def _fast(method: str, **extra):
  def spec(sde, nfe):
    n_steps = (nfe + 1) // 2 if method == "edm_heun" else nfe  # Heun: 2 n - 1 NFE
    end = {} if "sigma_end" in extra else dict(eps=1e-3)
    kwargs = dict(method=method, n_steps=n_steps, **end, **extra)
    return kwargs, sde, 2 * n_steps - 1 if method == "edm_heun" else n_steps
  return spec


SAMPLERS = {
    "ddim": _fast("ddim"),
    "edm_heun": _fast("edm_heun"),
    "dpm_solver_2m": _fast("dpm_solver_2m"),
    "dpm_solver_3m": _fast("dpm_solver_3m"),
    # configs/*_gmm_fast.py: 9 steps on the uniform log-SNR grid to sigma_edm = 0.1, then the
    # step to sigma = 0 (x = x0_hat, Tweedie), counted in the NFE.
    "dpm_solver_2m+denoise": _fast("dpm_solver_2m", denoise=True, sigma_end=SIGMA_END),
    "pc rd+none": _pc("reverse_diffusion", "none"),
    "pc rd+ald": _pc("reverse_diffusion", "ald"),
    "pc em+none": _pc("euler_maruyama", "none"),
}
DEFAULT_SCHEDULE = {"ddim": "uniform_t", "edm_heun": "edm", "dpm_solver_2m": "uniform_t",
                    "dpm_solver_3m": "uniform_t", "dpm_solver_2m+denoise": "log_snr"}


class Bench:
  """Reference sets, floor and a cell runner shared by all sections (one target for both configs)."""

  def __init__(self, args):
    self.args = args
    self.records = []  # everything printed, for write_results
    self.exps = {name: run_lib.build(importlib.import_module(f"configs.{name}").get_config())
                 for name in CONFIGS}
    target = self.exps[CONFIGS[0]].target
    self.target, self.n = target, args.n
    sample_fn = jax.jit(target.sample, static_argnums=1)
    self.refs = [sample_fn(k, args.n) for k in jax.random.split(jax.random.key(12), args.n_refs)]
    floor = metrics.metric_floor(jax.random.key(13), sample_fn, args.n,
                                    lambda k, a, b: metrics.energy_distance(a, b), n_pairs=10)
    self.floor, self.floor_std = floor["mean"], floor["std"]
    self.emit({"benchmark": "samplers_floor", "n": args.n, "floor": self.floor,
               "floor_std": self.floor_std, "n_pairs": 10})

  def emit(self, record: dict) -> dict:
    print(json.dumps(record), flush=True)
    self.records.append(record)
    return record

  def energy(self, x) -> float:
    return float(np.mean([float(metrics.energy_distance(x, r)) for r in self.refs]))

  def cell(self, section: str, config: str, score: str, label: str, nfe_budget: int, *,
           sde=None, schedule=None, params=None, start: str = "prior", sigma_end=None) -> dict:
    exp = self.exps[config]
    sde = exp.sde if sde is None else sde
    kwargs, sde, nfe = SAMPLERS[label](sde, nfe_budget)
    if schedule is not None:
      kwargs["schedule"] = schedule
    if sigma_end is not None:
      kwargs["sigma_end"] = sigma_end
    try:
      sampler = sampling.get_sampler(sde, (self.n,) + exp.shape, **kwargs)
    except ValueError as e:  # e.g. a VP DDPM chain with N < beta_max (betas > 1): no such sampler
      print(json.dumps({"benchmark": "samplers", "section": section, "config": config, "sampler": label,
                        "nfe": nfe, "skipped": str(e)}), flush=True)
      return {}
    score_fn = (lambda p: self.target.score_fn(sde)) if score == "oracle" else (
        lambda p: functools.partial(exp.model_score_fn, p))
    if start == "prior":
      fn = jax.jit(lambda key, p: sampler(key, score_fn(p)))
    else:  # exact draws of p_T: x_T = alpha_T x0 + sigma_T z
      alpha_T, sigma_T = (float(c[0]) for c in sde.marginal_coeffs(jnp.array([sde.T])))

      def x_T(key):
        key_x, key_z = jax.random.split(jax.random.fold_in(key, 99))
        return alpha_T * self.target.sample(key_x, self.n) + sigma_T * jax.random.normal(key_z, (self.n, 2))

      fn = jax.jit(lambda key, p: sampler(key, score_fn(p), x_T=x_T(key)))
    ratios, times = [], []
    for seed in self.args.seeds:
      t0 = time.perf_counter()
      x, got = jax.block_until_ready(fn(jax.random.key(seed), params))
      times.append(time.perf_counter() - t0)
      assert int(got) == nfe, (label, got, nfe)
      ratios.append(self.energy(x) / self.floor)
    row = {"benchmark": "samplers", "section": section, "config": config, "score": score,
           "sampler": label, "schedule": kwargs.get("schedule", "pc uniform t"), "nfe": nfe,
           "sde": repr(sde), "sigma_max": getattr(sde, "sigma_max", None), "start": start,
           "sigma_end": kwargs.get("sigma_end"), "ratio_mean": float(np.mean(ratios)),
           "ratio_std": float(np.std(ratios, ddof=1)), "ratios": ratios,
           "ed_mean": float(np.mean(ratios)) * self.floor, "floor": self.floor,
           "first_call_s": times[0], "call_s": float(np.median(times[1:] or times))}
    return self.emit(row)


def _trained_params(bench: Bench, exp, workdir: str):
  t0 = time.perf_counter()
  run_lib.train(exp.config, workdir)
  train_s = time.perf_counter() - t0
  state = run_lib.load_state(exp, workdir)
  bench.emit({"benchmark": "samplers_train", "workdir": workdir, "step": int(state.step),
              "train_s": train_s})
  return state.ema_params


def run_configs(args, configs: list[str]) -> list[dict]:
  """All cells of `configs` in this process (the VE offset study with ve_gmm)."""
  bench = Bench(args)
  for config in configs:
    exp = bench.exps[config]
    scores = {"oracle": None}
    if not args.skip_model:
      scores["model"] = _trained_params(bench, exp, os.path.join(args.workdir, config))
    for score, params in scores.items():
      for label in SAMPLERS:
        for nfe in args.nfes:
          if label.startswith("pc") and nfe > args.pc_max_nfe:
            continue
          if score == "model" and not label.startswith("pc") and nfe > args.fast_model_max_nfe:
            continue  # converged by then (see the oracle rows); 1,000 network NFE cost ~30 s a seed
          schedule = DEFAULT_SCHEDULE.get(label)
          bench.cell("main", config, score, label, nfe, schedule=schedule, params=params)
    for label, default in DEFAULT_SCHEDULE.items():
      for schedule in sampling.SCHEDULES:
        for nfe in args.schedule_nfes:
          if schedule != default:
            bench.cell("schedule", config, "oracle", label, nfe, schedule=schedule)
    for sigma_end in args.sigma_ends:
      for nfe in args.schedule_nfes:
        if sigma_end != SIGMA_END:
          bench.cell("sigma_end", config, "oracle", "dpm_solver_2m+denoise", nfe, schedule="log_snr",
                     sigma_end=sigma_end)
  for sigma_max in args.offset_sigma_max if "ve_gmm" in configs else ():
    sde = dataclasses.replace(bench.exps["ve_gmm"].sde, sigma_max=sigma_max)
    for label, nfe in (("dpm_solver_2m", 10), ("dpm_solver_3m", 10), ("dpm_solver_3m", 100)):
      for start in ("prior", "exact"):
        if sde == bench.exps["ve_gmm"].sde and start == "prior":
          continue  # the main table's cell
        bench.cell("ve_offset", "ve_gmm", "oracle", label, nfe, sde=sde, schedule="uniform_t", start=start)
  return bench.records


def run_parallel(args) -> list[dict]:
  """One child process per config, run at the same time: XLA compiles (most of the time
  spent on the many small sampler programs) are single-threaded, so two children keep both
  cores busy. Each child's JSON lines are echoed once it finishes."""
  children = []
  for config in CONFIGS:
    out = tempfile.TemporaryFile("w+")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", config] + [
        a for a in sys.argv[1:] if a != "--write"]
    children.append((subprocess.Popen(cmd, stdout=out, cwd=ROOT), out))
  rows = []
  for proc, out in children:
    if proc.wait():
      sys.exit(f"child {proc.args} failed with code {proc.returncode}")
    out.seek(0)
    for line in out:
      print(line.rstrip("\n"), flush=True)
      rows.append(json.loads(line))
  return rows


# --- RESULTS.md and the plot ------------------------------------------------------------

def _fmt(row) -> str:
  if not np.isfinite(row["ratio_mean"]):
    return "NaN"
  return f"{row['ratio_mean']:.3g} ± {row['ratio_std']:.2g}"


def _main_tables(rows: list[dict], nfes: list[int]) -> list[str]:
  out = []
  for config in CONFIGS:
    for score in ("oracle", "model"):
      cells = [r for r in rows if r["section"] == "main" and r["config"] == config and r["score"] == score]
      if not cells:
        continue
      out += [f"**{config}, {score} score** (energy distance / floor, mean ± std over seeds; "
              "NFE budget -> exact NFE in brackets where it differs)", "",
              "| sampler | schedule | " + " | ".join(f"NFE {n}" for n in nfes) + " | first NFE <= 2x |",
              "|---|---|" + "---|" * (len(nfes) + 1)]
      for label in SAMPLERS:
        by_budget = {}
        for r in cells:
          if r["sampler"] == label:
            by_budget[_budget(r["nfe"], nfes)] = r
        if not by_budget:
          continue
        entries = []
        for n in nfes:
          r = by_budget.get(n)
          entries.append("—" if r is None else _fmt(r) + ("" if r["nfe"] == n else f" [{r['nfe']}]"))
        first = next((r["nfe"] for n, r in sorted(by_budget.items()) if r["ratio_mean"] <= 2.0), None)
        schedule = next(iter(by_budget.values()))["schedule"]
        out.append(f"| {label} | {schedule} | " + " | ".join(entries) + f" | {first or '> max'} |")
      out.append("")
  return out


def _budget(nfe: int, nfes: list[int]) -> int:
  """The budget a run belongs to: the smallest budget >= its exact NFE."""
  return min(n for n in nfes if n >= nfe)


def _schedule_table(rows: list[dict], nfes: list[int], small: list[int]) -> list[str]:
  cells = [r for r in rows if r["score"] == "oracle" and r["section"] in ("main", "schedule")
           and _budget(r["nfe"], nfes) in small and r["sampler"] in DEFAULT_SCHEDULE]
  if not cells:
    return []
  out = ["**Time schedules, oracle score** (energy distance / floor)", "",
         "| sampler | schedule | " + " | ".join(f"{c} NFE {n}" for c in CONFIGS for n in small) + " |",
         "|---|---|" + "---|" * (len(CONFIGS) * len(small))]
  for label in DEFAULT_SCHEDULE:
    for schedule in sampling.SCHEDULES:
      entries = []
      for config in CONFIGS:
        for n in small:
          r = [c for c in cells if c["sampler"] == label and c["schedule"] == schedule
               and c["config"] == config and _budget(c["nfe"], nfes) == n]
          entries.append(_fmt(r[0]) if r else "—")
      out.append(f"| {label} | {schedule} | " + " | ".join(entries) + " |")
  return out + [""]


def _offset_table(rows: list[dict]) -> list[str]:
  config_sigma_max = next((r["sigma_max"] for r in rows if r["config"] == "ve_gmm"), None)
  cells = [r for r in rows if r["section"] == "ve_offset" or (
      r["section"] == "main" and r["config"] == "ve_gmm" and r["score"] == "oracle"
      and (r["sampler"], r["nfe"]) in (("dpm_solver_2m", 10), ("dpm_solver_3m", 10), ("dpm_solver_3m", 100)))]
  if not cells:
    return []
  out = ["**VE prior offset** (oracle, uniform_t; `prior`: x_T ~ N(0, sigma_max^2 I) as configured; "
         "`exact`: x_T ~ p_T, i.e. what a prior with the data mean would give)", "",
         "| sigma_max | sampler | NFE | prior start | exact p_T start |", "|---|---|---|---|---|"]
  def sigma_max(r):
    return float(r["sigma_max"])
  keys = sorted({(sigma_max(r), r["sampler"], r["nfe"]) for r in cells})
  for s, label, nfe in keys:
    got = {r["start"]: r for r in cells if (sigma_max(r), r["sampler"], r["nfe"]) == (s, label, nfe)}
    out.append(f"| {s:g}{' (config)' if s == config_sigma_max else ''} | {label} | {nfe} | " + " | ".join(
        _fmt(got[k]) if k in got else "—" for k in ("prior", "exact")) + " |")
  return out + [""]


def _sigma_end_table(rows: list[dict], nfes: list[int], small: list[int]) -> list[str]:
  label = "dpm_solver_2m+denoise"
  cells = [r for r in rows if r["score"] == "oracle" and r["sampler"] == label and r["schedule"] == "log_snr"
           and r["section"] in ("main", "sigma_end") and _budget(r["nfe"], nfes) in small]
  if not cells:
    return []
  out = [f"**End noise level of {label}** (oracle, log_snr; the solver stops at sigma_edm = sigma_end "
         "and the last NFE is the step to sigma = 0; energy distance / floor, per seed in brackets)", "",
         "| sigma_end | " + " | ".join(f"{c} NFE {n}" for c in CONFIGS for n in small) + " |",
         "|---|" + "---|" * (len(CONFIGS) * len(small))]
  for s in sorted({r["sigma_end"] for r in cells}):
    entries = []
    for config in CONFIGS:
      for n in small:
        r = [c for c in cells if c["sigma_end"] == s and c["config"] == config and _budget(c["nfe"], nfes) == n]
        entries.append(f"{_fmt(r[0])} {_seeds(r[0])}" if r else "—")
    out.append(f"| {s:g}{' (config)' if s == SIGMA_END else ''} | " + " | ".join(entries) + " |")
  return out + [""]


def _must_show(rows: list[dict]) -> list[str]:
  out = []
  for config in CONFIGS:
    cells = [r for r in rows if r["section"] in ("main", "schedule") and r["config"] == config
             and r["score"] == "oracle" and r["nfe"] <= 10 and r["start"] == "prior"]
    if not cells:
      continue
    best = min(cells, key=lambda r: (round(r["ratio_mean"], 3), r["section"] != "main"))  # ties: main
    ok = best["ratio_mean"] <= 2.0
    out.append(f"- {config}, oracle, NFE <= 10: best {best['sampler']} ({best['schedule']}) at "
               f"NFE {best['nfe']}: {_fmt(best)} x floor (per seed "
               f"{', '.join(f'{v:.2f}' for v in best['ratios'])}) -> "
               f"{'meets' if ok else 'misses'} <= 2x.")
  return out


def _find(rows: list[dict], sections=("main", "ve_offset"), **match):
  return next((r for r in rows if r["section"] in sections
               and all(r.get(k) == v for k, v in match.items())), None)


def _seeds(r) -> str:
  return "—" if r is None else "[" + ", ".join(f"{v:.2f}" for v in r["ratios"]) + "]"


def _log_snr_ranges(config: str) -> tuple[float, float]:
  """(lambda(T) - lambda(eps = 1e-3), lambda(T) - lambda(sigma_edm = SIGMA_END)) of a config's SDE."""
  sde = run_lib.build(importlib.import_module(f"configs.{config}").get_config()).sde
  lam_T, lam_eps = (float(v) for v in sde.log_snr(jnp.array([sde.T, 1e-3], jnp.float32)))
  return lam_eps - lam_T, -np.log(SIGMA_END) - lam_T


def _denoise_note(rows: list[dict]) -> str:
  label = "dpm_solver_2m+denoise"
  found = {c: _find(rows, sections=("main",), config=c, score="oracle", sampler=label, nfe=10)
           for c in CONFIGS}
  converged = {c: _find(rows, sections=("main",), config=c, score="oracle", sampler=label, nfe=100)
               for c in CONFIGS}
  ranges = {c: _log_snr_ranges(c) for c in CONFIGS}
  return (
      f"- The step to sigma = 0 (`denoise`): stopping the solver at sigma_edm = {SIGMA_END:g} and "
      "spending the last NFE on x = x0_hat (Tweedie; for DPM-Solver++ the first-order step to "
      "lambda = +inf is exactly this) drops the low-noise end of the log-SNR range, which this "
      "target (component std 0.9-1.5) hardly needs: the range shrinks from "
      + ", ".join(f"{ranges[c][0]:.1f} to {ranges[c][1]:.1f} ({c})" for c in CONFIGS)
      + ", so 9 steps cover it with smaller h. At 10 NFE, per seed: "
      + ", ".join(f"{c} {_seeds(found[c])}" for c in CONFIGS)
      + ". Its cost is a bias, since x0_hat = E[x0 | x_t] has covariance smaller by about "
      "E Cov(x0 | x_t) ~ sigma_end^2 I; at NFE 100 (converged): "
      + ", ".join(f"{c} {_seeds(converged[c])}" for c in CONFIGS)
      + ", against the eps = 1e-3 rows above. At 10 NFE the end level trades the two (end-noise "
      "table): lower levels leave a longer range to the 9 steps, higher ones a larger bias.")


def _notes(rows: list[dict], total, train: list[dict]) -> list[str]:
  """Observations that hold for the figures above, computed from them."""
  det = dict(score="oracle", sampler="dpm_solver_3m", start="prior")
  vp = _find(rows, config="vp_gmm", nfe=100, **det)
  ve_sigma = next((r["sigma_max"] for r in rows if r["config"] == "ve_gmm"), None)
  offset = []
  for s in sorted({r["sigma_max"] for r in rows if r["section"] == "ve_offset"}):
    prior = _find(rows, config="ve_gmm", nfe=100, sigma_max=s, **det)
    exact = _find(rows, config="ve_gmm", nfe=100, sigma_max=s, score="oracle", sampler="dpm_solver_3m",
                  start="exact")
    cost = f", offset cost {prior['ratio_mean'] - vp['ratio_mean']:+.2f}x" if prior and vp else ""
    offset.append(f"sigma_max {s:g}: {_seeds(prior)} vs {_seeds(exact)}{cost}")
  nfe20 = [_find(rows, sections=("main",), config="ve_gmm", score="oracle", sampler=m, nfe=20)
           for m in ("dpm_solver_2m", "dpm_solver_3m")]
  out = ["Notes:", ""]
  if total:
    out.append(f"- Wall time of the command: {total['wall_s'] / 60:.1f} min (the two configs run in "
               "parallel processes; includes training, " + ", ".join(f"{t['train_s']:.0f} s" for t in train) + ").")
  out += [
      "- Deterministic samplers given the same prior draws converge to the same samples, so their "
      "converged rows are one realisation of sampling noise, not a bias: per seed (DPM-Solver++ 3M, "
      f"oracle, NFE 100) vp_gmm {_seeds(vp)}, ve_gmm {_seeds(_find(rows, config='ve_gmm', nfe=100, **det))}. "
      "Seed 2's 10,000 prior draws have a sample mean about 2 standard errors off, which alone puts a "
      "perfect deterministic sampler near 1.9x on VP; stochastic samplers draw fresh noise at every "
      "step and land at 0.4-0.8x.",
      "- VE prior offset: x_T ~ N(0, sigma_max^2 I) ignores the data mean (1, 0), and the "
      "probability-flow map carries the offset to about |mean| sqrt(cov) / sigma_max at the end. "
      "DPM-Solver++ 3M at NFE 100, per seed, from the prior vs from exact p_T draws (offset cost = "
      "mean minus the VP mean with the same prior draws): " + "; ".join(offset) + ". The exact start "
      "also removes the seed-2 effect (its draws differ).",
      f"- VE at <= 10 NFE (config sigma_max = {ve_sigma:g}), ending at eps = 1e-3: the 10-step "
      "discretisation of the log-SNR range misses 2x even from exact p_T draws (offset table); a "
      "smaller sigma_max shortens the range but enlarges the offset, a larger one the reverse, and "
      "no sigma_max in the study passes at 10 NFE from the prior. 20 NFE passes: "
      + ", ".join(f"{r['sampler']} {r['ratio_mean']:.2f}x" for r in nfe20 if r) + ".",
      _denoise_note(rows),
      "- PC `reverse_diffusion` on the VP SDE returns NaN for N <= 20: the DDPM discretisation "
      "beta_i = beta_min / N + i (beta_max - beta_min) / (N (N - 1)) exceeds 1 and sqrt(1 - beta_i) "
      "is undefined; a limit of that discretisation, not of the sampler code.",
      "- Fast samplers with the trained score stop at NFE 100 (`--fast-model-max-nfe`): the oracle "
      "rows show they have converged by then, and 1,000 network evaluations on 10,000 points cost "
      "~20-30 s a seed here. PC samplers run to NFE 1000.",
      "- DPM-Solver++ 3M needs steps h <~ 1 in log-SNR: at NFE 5 its quadratic extrapolation is "
      "worse than 2M's linear one. EDM Heun spends 2 NFE a step, and its rho = 7 schedule makes its "
      "smallest log-SNR steps at high noise, where this 2-D target needs few.", ""]
  return out


def write_results(rows: list[dict], machine: dict, args) -> None:
  floor = next((r for r in rows if r.get("benchmark") == "samplers_floor"), None)
  train = [r for r in rows if r.get("benchmark") == "samplers_train"]
  total = next((r for r in rows if r.get("benchmark") == "samplers_total"), None)
  rows = [r for r in rows if r.get("benchmark") == "samplers"]
  nfes = sorted({_budget(r["nfe"], args.nfes) for r in rows if r["section"] == "main"})
  lines = [SECTION, "",
           "Command (prints JSON lines; tables, notes and plot are generated from them):", "",
           "    " + args.command, "",
           f"Machine: `nproc` = {machine.get('nproc')}, CPU \"{machine.get('cpu')}\", JAX {machine.get('jax')} "
           f"CPU backend, float32; 1-minute load average {machine.get('load_avg_1m', 0):.1f} at the start "
           "(the machine is shared, so times are noisy).", "",
           f"Setup: default 2-D Gaussian mixture, {args.n:,} samples per run, seeds "
           f"{', '.join(map(str, args.seeds))} (`jax.random.key(seed)`; every sampler sees the same "
           f"prior draws), energy distance = mean over {args.n_refs} fixed reference sets of "
           f"{args.n:,} true samples; floor = mean over 10 pairs of independent true sets"
           + (f" = {floor['floor']:.3e} ± {floor['floor_std']:.1e} (std over pairs)" if floor else "")
           + ". Entries are energy distance / floor. PC samplers run on a copy of the SDE with N "
           "steps chosen for the budget (N predictor + N corrector steps + 1 denoising step; "
           "snr = 0.16), uniform in t as in Song et al.; fast samplers end at eps = 1e-3 without "
           f"a denoising step, except `dpm_solver_2m+denoise` (configs/*_gmm_fast.py): n - 1 steps to "
           f"sigma_edm = sigma_t / alpha_t = {SIGMA_END:g}, then the step to sigma = 0, x = x0_hat "
           "(Tweedie), n NFE in all. EDM Heun uses 2 n - 1 NFE, so its budgets land on odd NFE. "
           "Trained scores: EMA parameters after `run_lib.train` with the unchanged config"
           + (" (" + ", ".join(f"{os.path.basename(t['workdir'])}: {t['step']} steps" for t in train) + ")"
              if train else "") + ".", "",
           "Must-show (oracle score, <= 10 NFE, <= 2x floor):", ""] + _must_show(rows) + [""]
  lines += _main_tables(rows, nfes) + _schedule_table(rows, args.nfes, args.schedule_nfes)
  lines += _sigma_end_table(rows, args.nfes, args.schedule_nfes) + _offset_table(rows)
  lines += _notes(rows, total, train)
  lines += [f"Plot: `benchmarks/{os.path.basename(PLOT)}` (log-log energy distance vs NFE, mean and "
            "std over seeds; floor as a band of ± 1 std over pairs, 2x floor dashed; the y axis is "
            "cut at 1.0, so the PC samplers' first points are off the top).", ""]
  text = "\n".join(lines)
  from results_md import replace_section  # benchmarks/ is on sys.path when run as a script
  replace_section(args.results_md, SECTION, text)
  _plot(rows, floor, args.plot)


def _plot(rows: list[dict], floor, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  scores = [s for s in ("oracle", "model") if any(r["section"] == "main" and r["score"] == s for r in rows)]
  fig, axes = plt.subplots(len(CONFIGS), len(scores), figsize=(5.5 * len(scores), 4.2 * len(CONFIGS)),
                           sharex=True, sharey=True, squeeze=False)
  f_std = floor["floor_std"] if floor else 0.0
  for (i, config), (j, score) in itertools.product(enumerate(CONFIGS), enumerate(scores)):
    ax = axes[i][j]
    cells = [r for r in rows if r["section"] == "main" and r["config"] == config and r["score"] == score]
    if not cells:
      continue
    f = cells[0]["floor"]
    ax.axhspan(max(f - f_std, f / 10), f + f_std, color="0.85", label="floor ± std over pairs")
    ax.axhline(2 * f, color="0.4", ls="--", lw=1, label="2x floor")
    for label in SAMPLERS:
      rs = sorted((r for r in cells if r["sampler"] == label), key=lambda r: r["nfe"])
      if rs:
        ed = np.array([r["ed_mean"] for r in rs])
        err = np.array([r["ratio_std"] * r["floor"] for r in rs])
        ax.errorbar([r["nfe"] for r in rs], ed, yerr=err, marker="o", ms=3, capsize=2, label=label,
                    ls=":" if label.startswith("pc") else "-")
    ax.set(xscale="log", yscale="log", ylim=(f / 10, 1.0), title=f"{config}, {score} score")
    if i == len(CONFIGS) - 1:
      ax.set_xlabel("NFE")
    if j == 0:
      ax.set_ylabel("energy distance (10,000 samples)")
  axes[0][-1].legend(fontsize=7, loc="upper right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--n", type=int, default=10_000, help="samples per run")
  parser.add_argument("--nfes", default="5,10,20,50,100,1000")
  parser.add_argument("--pc-max-nfe", type=int, default=1000, help="skip PC samplers above this NFE")
  parser.add_argument("--fast-model-max-nfe", type=int, default=100,
                      help="skip fast samplers with the trained score above this NFE")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--n-refs", type=int, default=2, help="reference sets per energy distance")
  parser.add_argument("--schedule-nfes", default="10", help="NFE budgets of the schedule comparison")
  parser.add_argument("--sigma-ends", default="0.02,0.05,0.1,0.2",
                      help="end noise levels of the dpm_solver_2m+denoise study")
  parser.add_argument("--offset-sigma-max", default="50,100,200", help="VE sigma_max for the offset study")
  parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "bench_samplers"))
  parser.add_argument("--skip-model", action="store_true", help="oracle score only (no training)")
  parser.add_argument("--write", action="store_true", help="update RESULTS.md and the plot")
  parser.add_argument("--from-jsonl", help="rebuild tables and plot from a saved run's JSON lines")
  parser.add_argument("--results-md", default=RESULTS, help=argparse.SUPPRESS)
  parser.add_argument("--plot", default=PLOT, help=argparse.SUPPRESS)
  parser.add_argument("--jobs", type=int, default=2, help="1: run the configs one after the other")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  args.nfes = [int(n) for n in args.nfes.split(",")]
  args.seeds = [int(s) for s in args.seeds.split(",")]
  args.schedule_nfes = [int(n) for n in args.schedule_nfes.split(",") if n]
  args.offset_sigma_max = [float(s) for s in args.offset_sigma_max.split(",") if s]
  args.sigma_ends = [float(s) for s in args.sigma_ends.split(",") if s]
  args.command = "python benchmarks/samplers.py " + " ".join(
      a for a in sys.argv[1:] if not a.startswith("--from-jsonl") and a != args.from_jsonl)
  if args.child:
    run_configs(args, [args.child])
    return
  if args.from_jsonl:
    with open(args.from_jsonl) as f:
      rows = [json.loads(line) for line in f if line.startswith("{")]
    machine = next(r for r in rows if r.get("benchmark") == "machine")
    args.command = machine.get("command", args.command)
  else:
    machine = {"benchmark": "machine", **machine_info(), "command": args.command}
    print(json.dumps(machine), flush=True)
    t0 = time.perf_counter()
    rows = run_parallel(args) if args.jobs > 1 else run_configs(args, list(CONFIGS))
    total = {"benchmark": "samplers_total", "wall_s": time.perf_counter() - t0}
    print(json.dumps(total), flush=True)
    rows.append(total)
  if args.write:
    write_results(rows, machine, args)


if __name__ == "__main__":
  main()
