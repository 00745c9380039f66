"""Every digits config at the same wall-clock training budget: test bits/dim (variational bound
and probability-flow ODE) and the Frechet distance, from one command.

    python benchmarks/digits_table.py [--budget_steps 4000] [--reference vp_digits]
        [--configs ve_digits,vp_digits,subvp_digits,vdm_digits] [--root runs/digits_table]
        [--reuse_plan] [--write_results]

1. Throughput: `train_throughput.measure` times each config's train step back to back (so the
   machine's load is about the same for all), and config c gets
   n_c = budget_steps * (steps/s of c) / (steps/s of the reference), rounded to 100: the
   wall-clock time the reference needs for budget_steps steps (vp_digits: 4,000 steps, about
   10 minutes on an idle 2-core CPU). Ratios, not absolute times, are what the load changes
   least.
2. Training and evaluation: `run_lib.run(config, root/<config>_<n_c>, "all")` (a finished
   workdir is reused: training resumes to n_c and re-evaluates).
   * bound: the negative ELBO of the 297 test images (evaluator `elbo`, 16 stratified times per
     image; for VE, VP and sub-VP uniform in log-SNR, `t_sampling="log_snr"`, whose estimate has a
     fraction of the variance of uniform t). Models of dequantised data (VE, VP, sub-VP) bound -log P of the integer image
     through one uniform dequantisation per image (`elbo.dequantize`); `vdm_digits` models the
     17 levels directly with its discretised decoder.
   * ODE: `bits_per_dim` (dequantisation bound through the probability-flow ODE, Rademacher trace).
   * FD: `frechet` on 1,500 samples (the config's sampler) against the test split, with the
     floor FD(1,500 train images, test).

Prints one JSON line per config (also appended to --out) and rewrites the "Digits at the same
wall-clock budget" section of benchmarks/RESULTS.md from --out with --write_results.
"""

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

RESULTS = os.path.join(ROOT, "benchmarks", "RESULTS.md")
SECTION = "## Digits at the same wall-clock budget"
DEQUANTIZED_ELBO = dict(n_points=297, n_t=16, t0=1e-5, decoder="gaussian", dequantize=True, t_sampling="log_snr")


def get_config(name: str):
  config = importlib.import_module(f"configs.{name}").get_config()
  if "elbo" not in config.eval.evaluators:
    config.eval.evaluators = list(config.eval.evaluators) + ["elbo"]
    config.eval.elbo = dict(DEQUANTIZED_ELBO)
  return config


def budgets(names, reference: str, budget_steps: int, calls: int) -> dict:
  from train_throughput import measure  # benchmarks/ is on sys.path when run as a script

  rate = {name: measure(os.path.join("configs", f"{name}.py"), calls)["steps_per_s"] for name in names}
  if reference not in rate:
    rate[reference] = measure(os.path.join("configs", f"{reference}.py"), calls)["steps_per_s"]
  return {name: (max(100, int(round(budget_steps * rate[name] / rate[reference] / 100.0)) * 100), rate[name])
          for name in names}


def row(name: str, n_iters: int, rate: float, root: str, reference: str, budget_steps: int) -> dict:
  import run_lib

  config = get_config(name)
  config.training.n_iters = n_iters
  workdir = os.path.join(root, f"{name}_{n_iters}")
  t0 = time.time()
  out = run_lib.run(config, workdir, "all")
  ev = out["eval"]
  bound, ode, fd = ev["elbo"]["model"], ev["bits_per_dim"], ev["frechet"]
  return {"benchmark": "digits_table", "config": name, "n_iters": n_iters, "steps_per_s": rate,
          "reference": reference, "budget_steps": budget_steps, "train_s": out.get("train_s"),
          "eval_s": out.get("eval_s"), "wall_s": time.time() - t0,
          "bound_bpd": bound["bits_per_dim"], "bound_stderr": bound["bits_per_dim_stderr"],
          "bound_dequantized": bool(ev["elbo"].get("dequantized", False)),
          "bound_t_sampling": config.eval.elbo.get("t_sampling", "uniform"),
          "ode_bpd": ode["bpd"], "ode_stderr": ode["bpd_stderr"], "fd": fd["fd"], "fd_floor": fd["fd_floor"],
          "load_avg": os.getloadavg()[0], "machine": f"{platform.machine()}, {os.cpu_count()} cores",
          "date": time.strftime("%Y-%m-%d")}


def latest_rows(path: str) -> dict:
  """The last row of each config in the JSON-lines file `path` ({} if it is missing)."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {r["config"]: r for r in rows if r.get("benchmark") == "digits_table"}


def table(path: str) -> str:
  latest = latest_rows(path)
  ref = next(iter(latest.values()))
  lines = [SECTION, "",
           "Command: `python benchmarks/digits_table.py --write_results` (" + ref["machine"] + ", CPU; "
           f"{ref['date']}). Each config trains for the wall-clock time `{ref['reference']}` needs for "
           f"{ref['budget_steps']:,} steps, converted to steps by the train-step throughputs measured back to "
           "back; then the 297 test images are scored by the variational bound (VE, VP, sub-VP through one "
           "uniform dequantisation per image; vdm on the integer levels with its discretised decoder) and by "
           "the probability-flow ODE (dequantisation bound), and 1,500 samples by the classifier Frechet "
           "distance (floor: 1,500 train images). Standard errors over the test images.", "",
           "| config | steps | steps/s (measured) | train s (load) | bound bits/dim | ODE bits/dim | FD (floor) |",
           "|---|---|---|---|---|---|---|"]
  for r in latest.values():
    lines.append(f"| {r['config']} | {r['n_iters']:,} | {r['steps_per_s']:.2f} | {r['train_s']:.0f} ({r['load_avg']:.1f}) | "
                 f"{r['bound_bpd']:.3f} ± {r['bound_stderr']:.3f} | {r['ode_bpd']:.3f} ± {r['ode_stderr']:.3f} | "
                 f"{r['fd']:.3f} ({r['fd_floor']:.3f}) |")
  lines += ["", *comparison(latest)]
  return "\n".join(lines) + "\n"


def comparison(latest: dict) -> list[str]:
  """Sentences comparing the best bound with the best ODE figure of the other configs (unpaired
  standard errors: the two numbers come from different estimators of the same test images)."""
  best_bound = min(latest.values(), key=lambda r: r["bound_bpd"])
  others = [r for r in latest.values() if r is not best_bound]
  if not others:
    return []
  best_ode = min(others, key=lambda r: r["ode_bpd"])
  diff = best_bound["bound_bpd"] - best_ode["ode_bpd"]
  se = math.hypot(best_bound["bound_stderr"], best_ode["ode_stderr"])
  return [f"The lowest bound, {best_bound['config']}'s {best_bound['bound_bpd']:.3f}, is {-diff:.3f} bits/dim "
          f"below the best likelihood of the other configs ({best_ode['config']} by the ODE, "
          f"{best_ode['ode_bpd']:.3f}): {-diff / se:.1f} combined standard errors. The ODE figure of a model "
          "trained on the integer levels (vdm) scores dequantised points off those levels and is not comparable. "
          "The bounds of the dequantised-data models are looser than their ODE figures by the bound's gap. "
          "Throughputs were measured back to back under the load of other jobs; 'train s' is the wall time "
          "under the load average shown, not the budget."]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default="ve_digits,vp_digits,subvp_digits,vdm_digits")
  p.add_argument("--reference", default="vp_digits")
  p.add_argument("--budget_steps", type=int, default=4000)
  p.add_argument("--calls", type=int, default=2, help="timed calls of log_freq steps per config")
  p.add_argument("--root", default=os.path.join(ROOT, "runs", "digits_table"))
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "digits_table.jsonl"))
  p.add_argument("--reuse_plan", action="store_true",
                 help="reuse the steps and measured throughputs of --out's latest rows (re-evaluates the same workdirs)")
  p.add_argument("--write_results", action="store_true", help="rewrite the RESULTS.md section from --out")
  p.add_argument("--table_only", action="store_true", help="only rewrite the RESULTS.md section")
  args = p.parse_args()
  if not args.table_only:
    names = [n for n in args.configs.split(",") if n]
    for name in names:
      get_config(name)  # an unknown config fails here, before any training
    old = latest_rows(args.out) if args.reuse_plan else {}
    if args.reuse_plan:
      missing = [n for n in names if n not in old]
      if missing:
        raise ValueError(f"--reuse_plan: {args.out} has no row for {missing}; run without --reuse_plan first.")
      plan = {n: (old[n]["n_iters"], old[n]["steps_per_s"]) for n in names}
    else:
      plan = budgets(names, args.reference, args.budget_steps, args.calls)
    print(json.dumps({"benchmark": "digits_table_plan", **{k: v[0] for k, v in plan.items()}}), flush=True)
    for name in names:
      r = row(name, *plan[name], args.root, args.reference, args.budget_steps)
      if name in old:  # training was done by the earlier run (this one only resumed and evaluated)
        r.update(train_s=old[name]["train_s"], load_avg=old[name]["load_avg"], retrained=False)
      print(json.dumps(r), flush=True)
      with open(args.out, "a") as f:
        f.write(json.dumps(r) + "\n")
  if args.write_results or args.table_only:
    from results_md import replace_section

    replace_section(RESULTS, SECTION, table(args.out))


if __name__ == "__main__":
  main()
