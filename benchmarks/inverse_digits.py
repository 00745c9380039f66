"""Digits inverse problems and SDEdit: JSON lines and markdown tables from a run of
configs/inverse_digits.py (its eval/summary.json), and its figures copied next to RESULTS.md.

    python run.py --config=configs/inverse_digits.py --workdir=/tmp/inv_digits     # train + eval
    python benchmarks/inverse_digits.py --workdir=/tmp/inv_digits | tee benchmarks/inverse_digits.jsonl
    python benchmarks/inverse_digits.py --table benchmarks/inverse_digits.jsonl     # the RESULTS tables

One line per (task, method) of `inverse_digits` (classifier agreement with the source class,
Frechet distance to the test split, RMSE to the truth, residual RMSE ||A x - y||, NFE) and per
(guide, solver, t0) of `sdedit_digits`. With --workdir the plots inverse_sr.png,
inverse_inpaint.png, sdedit_coarse.png, sdedit_noisy.png and sdedit_tradeoff.png are copied to
benchmarks/ with the prefix inverse_digits_.
"""

import argparse
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURES = ("inverse_sr", "inverse_inpaint", "sdedit_coarse", "sdedit_noisy", "sdedit_tradeoff")


def lines(workdir, sdedit_workdir=None):
  s = json.load(open(os.path.join(workdir, "eval", "summary.json")))
  base = dict(step=s["step"])
  for task, rows in s["inverse"].items():
    for method, r in rows.items():
      print(json.dumps(dict(kind="inverse", task=task, method=method, **r, **base)))
  if sdedit_workdir:
    s = json.load(open(os.path.join(sdedit_workdir, "eval", "summary.json")))
  print(json.dumps(dict(kind="samples", fd=s["frechet"]["fd"], fd_floor=s["frechet"]["fd_floor"], n=s["frechet"]["n"],
                        **base)))
  for guide, modes in s["sdedit"].items():
    print(json.dumps(dict(kind="sdedit_guide", guide=guide, **modes["guide"], **base)))
    for mode in ("sde", "ode"):
      for r in modes[mode]:
        print(json.dumps(dict(kind="sdedit", guide=guide, solver=mode, **r, **base)))
  for name in FIGURES:
    src = os.path.join(sdedit_workdir if sdedit_workdir and "sdedit" in name else workdir, "plots", name + ".png")
    if os.path.exists(src):
      shutil.copy(src, os.path.join(HERE, f"inverse_digits_{name.replace('inverse_', '')}.png"))


def table(path):
  rows = [json.loads(line) for line in open(path) if line.strip()]
  inv = [r for r in rows if r["kind"] == "inverse"]
  print("| task | method | NFE | classifier agrees with the source class | Frechet distance | RMSE to truth | residual RMSE |")
  print("|---|---|---|---|---|---|---|")
  for r in inv:
    nfe = r.get("nfe", "")
    print(f"| {r['task']} | {r['method']} | {nfe} | {r['class_agreement']:.3f} | {r['frechet']:.2f} | "
          f"{r['rmse_truth']:.3f} | {r['residual_rmse']:.2g} |")
  for r in rows:
    if r["kind"] == "samples":
      print(f"\nUnconditional samples of the same model: FD {r['fd']:.2f} (n = {r['n']}; floor {r['fd_floor']:.2f}).")
  print()
  print("| guide | solver | t0 | Frechet distance | RMSE to the guide | RMSE to the source | class agreement |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    if r["kind"] == "sdedit_guide":
      print(f"| {r['guide']} | (the guide itself) | | {r['frechet']:.2f} | 0 | {r['rmse_source']:.3f} | |")
    elif r["kind"] == "sdedit":
      print(f"| {r['guide']} | {r['solver']} | {r['t0']:g} | {r['frechet']:.2f} | {r['rmse_guide']:.3f} | "
            f"{r['rmse_source']:.3f} | {r['class_agreement']:.3f} |")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", default=None)
  p.add_argument("--sdedit-workdir", default=None, help="take SDEdit and the samples' FD from this run instead")
  p.add_argument("--table", default=None)
  args = p.parse_args()
  if args.table:
    table(args.table)
  else:
    lines(args.workdir, args.sdedit_workdir)


if __name__ == "__main__":
  main()
