"""Tables and plot of benchmarks/sampler_kl.py from its JSON lines (the "## Samplers: exact KL vs NFE"
section of benchmarks/RESULTS.md and benchmarks/sampler_kl.png). Rows written before the "end" and
"grid" fields existed are the Tweedie end, and their "custom" grid is the one fitted on the default
mixture ("fitted 2d default")."""

import os

import sampling
from sampler_kl import (BESPOKE_MODEL_CELLS, ENDS, FAST, FAST_NFE, FIT_NAMES, FIT_SET, HELD_OUT, HELDOUT_SETTINGS,
                        MODEL_CELLS, NFES, ROOT, SAMPLERS, SDES, WIDE_SET)

SECTION = "## Samplers: exact KL vs NFE"
RESULTS = os.path.join(ROOT, "benchmarks", "RESULTS.md")
PLOT = os.path.join(ROOT, "benchmarks", "sampler_kl.png")
THRESHOLD = 0.003  # nats, the must-show


def _norm(r: dict) -> dict:
  if r.get("benchmark") == "sampler_kl":
    r.setdefault("score", "oracle")
    r.setdefault("end", "tweedie")
    r.setdefault("grid", "fitted 2d default" if r["schedule"] == "custom" else r["schedule"])
  return r


def _odd(nfe: int, label: str) -> int:
  """The NFE a budget gives: EDM Heun lands on the odd NFE at most the budget."""
  return nfe - (nfe % 2 == 0) if label == "edm_heun" else nfe


def _fmt(r) -> str:
  """KL ± SE in 10^-3 nats; a dagger where the sampler folds the latent space (`_with_folds`): not a KL."""
  return "" if r is None else f"{1e3 * r['kl']:.2f} ± {1e3 * r['se']:.2f}" + " †" * bool(r.get("folded"))


def _fold_key(r: dict) -> tuple:
  return r["sde"], r["target"], r["score"], r["sampler"], r["end"], r["grid"], r["nfe"]


def _with_folds(rows) -> list[dict]:
  """The rows with "folded" (`metrics.sampler_kl`) from the "folds" section's cells of the same setting where a
  row has none of its own (rows written before the field existed). Drop-section rows are not looked up: the
  same fit name and NFE there is another solver (the Gaussian start)."""
  folds = {_fold_key(r): r["folded"] for r in rows if r.get("section") == "folds"}
  return [r if "folded" in r or r.get("benchmark") != "sampler_kl" or r.get("section") == "drop"
          else {**r, "folded": folds.get(_fold_key(r))} for r in rows]


def _fold_lines(rows) -> list[str]:
  """The settings that fold the latent space on some mixture (section "folds")."""
  found = {}
  for r in rows:
    if r.get("section") == "folds" and r.get("folded"):
      found.setdefault((r["sde"], r["sampler"], r["end"], r["grid"], r["nfe"]), []).append(r)
  checked = {(r["sde"], r["sampler"], r["grid"], r["nfe"]) for r in rows if r.get("section") == "folds"}
  if not checked:
    return []
  lines = [f"Folds (section \"folds\", {len(checked)} settings on every mixture, 8,192 latents each): a cell marked † "
           "is a setting whose map of the latent reverses orientation (det J_F <= 0) on some latents, so it is not a "
           "bijection there and the change of variables does not hold: its number is not a KL (the sampler does fail "
           "on that mixture, but the number does not say by how much). The probability-flow ODE's own map never "
           "folds. Settings with folds, and the fraction of latents folded per mixture (every other setting "
           "checked folds none of the latents of any mixture):", ""]
  for (sde, label, end, grid, nfe), got in found.items():
    name = grid if label == "bespoke" else _name(label, end, grid)
    lines.append(f"- {sde}, {name}, {nfe} NFE: " + ", ".join(
        f"{r['target']}{' (trained network)' * (r['score'] == 'model')} {r['folded']:.3f}" for r in got))
  if not found:
    lines.append("- none.")
  return lines + [""]


def _pick(rows, **match):
  """The last row matching every field (later runs replace earlier ones)."""
  found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
  return found[-1] if found else None


def _fast(rows, sde: str, target: str):
  """The exact-score cell of configs/*_gmm_fast.py: FAST's solver with the Gaussian start at FAST_NFE[sde]."""
  return _pick(rows, section="drop", sde=sde, target=target, grid=FAST[2], nfe=FAST_NFE[sde], score="oracle")


FAST_NAME = f"{FAST[2]}; " + ", ".join(f"{sde.upper()} {n} NFE" + (f" ({10 - n} left out)" if n < 10 else "")
                                       for sde, n in FAST_NFE.items())


def _name(label: str, end: str, grid: str) -> str:
  return f"{label}, {end}, {grid}"


def _settings(rows, section: str, **match) -> list[tuple[str, str, str]]:
  """The (sampler, end, grid) settings of a section in first-seen order."""
  out = []
  for r in rows:
    if r.get("section") == section and all(r.get(k) == v for k, v in match.items()):
      key = (r["sampler"], r["end"], r["grid"])
      if key not in out:
        out.append(key)
  return out


def _nfe_table(rows, sde, target="2d default") -> list[str]:
  lines = [f"KL vs NFE, {sde.upper()} ({SDES[sde]!r}), {target}; 10^-3 nats ± standard error "
           "(EDM Heun at the odd NFE at most the column's; sampler, end, grid):", "",
           "| setting | " + " | ".join(map(str, NFES)) + " |", "|---|" + "---|" * len(NFES)]
  for label, end, grid in _settings(rows, "nfe", sde=sde, target=target):
    got = [_pick(rows, section="nfe", sde=sde, target=target, sampler=label, end=end, grid=grid,
                 nfe=_odd(n, label)) for n in NFES]
    if any(got):
      bold = "**" if (label, end, grid) == FAST else ""
      lines.append(f"| {bold}{_name(label, end, grid)}{bold} | " + " | ".join(_fmt(g) for g in got) + " |")
  return lines + [""]


def _fitted_on(rows, grid: str) -> set:
  """The mixtures a grid or bespoke fit was fitted on (none for a fixed grid)."""
  names = set(FIT_NAMES.get(grid, []))
  for r in rows:
    if r.get("benchmark") == "sampler_kl_bespoke" and r["grid"] == grid:
      names.update(r["fit_targets"])
  return names


def _halving(rows, sde, target) -> list[str]:
  """The NFE ratio curve: for DPM-Solver++(2M) on the log-SNR grid at n NFE (its best end), the fewest
  NFE a setting needs for a KL at most that (cells that fold, `_with_folds`, do not count): among the
  settings not fitted on this mixture, and among all
  (the must-show's "best sampler", marked where the ratio is over 1/2; it may be a bespoke solver fitted
  on the mixture it samples, as Shaul et al. fit one per model)."""
  cands = [r for r in rows if r.get("benchmark") == "sampler_kl" and r["sde"] == sde and r["target"] == target
           and r["section"] in ("nfe", "schedules", "grids") and r["score"] == "oracle" and not r.get("folded")]
  fitted = {grid: _fitted_on(rows, grid) for grid in {r["grid"] for r in cands}}  # one scan of rows per grid
  held = [r for r in cands if target not in fitted[r["grid"]]]
  lines = [f"| {sde.upper()}, {target}: DPM-Solver++(2M) NFE | its KL (best end) | fewest NFE, not fitted "
           "here | ratio | by | fewest NFE, any setting | ratio | by |", "|---|---|---|---|---|---|---|---|"]
  for n in (5, 6, 8, 10, 15, 20):
    refs = [_pick(cands, section="nfe", sampler="dpm_solver_2m", grid="log_snr", end=e, nfe=n) for e in ENDS]
    refs = [r for r in refs if r is not None]
    if not refs:
      continue
    ref = min(refs, key=lambda r: r["kl"])
    cells = []
    for pool, judged in ((held, False), (cands, True)):
      best = min((r for r in pool if r["kl"] <= ref["kl"]), key=lambda r: (r["nfe"], r["kl"]), default=None)
      if best is None:
        cells.append(" | | ")
        continue
      verdict = "" if best["nfe"] <= n / 2 or not judged else " **(> 1/2)**"
      cells.append(f"{best['nfe']} | {best['nfe'] / n:.2f}{verdict} | "
                   f"{_name(best['sampler'], best['end'], best['grid'])}: {_fmt(best)}")
    lines.append(f"| {n} | {_fmt(ref)} ({ref['end']}) | " + " | ".join(cells) + " |")
  return lines + [""]


def _grid_table(rows) -> list[str]:
  lines = ["Fitted grids: interior log-SNRs, the fit objective over its last 50 iterations and the KL on the "
           "default mixture from fresh latents (\"fitted set\": mean log(KL + 0.001) over "
           + ", ".join(FIT_NAMES["fitted set"]) + "; \"fitted set + network\": the same and "
           + FIT_NAMES["fitted set + network"][-1] + "; \"fitted 2d default\": KL on the default mixture alone; \"ays\": the AYS KLUB on the default "
           "mixture):", "",
           "| grid | SDE | NFE | end | timesteps (log-SNR) | fit objective | KL on 2d default (10^-3) | fit s |",
           "|---|---|---|---|---|---|---|---|"]
  last = {}
  for r in rows:  # later fits of the same grid replace earlier ones
    if r.get("benchmark") == "sampler_kl_grid":
      last[(r.get("grid", "fitted 2d default"), r.get("end", "tweedie"), r["sde"], r["nfe"])] = r
  for (grid, end, sde, nfe), r in last.items():
    kl = _pick(rows, section="grids", sde=sde, nfe=nfe, grid=grid, end=end)
    ts = ", ".join(f"{v:.3f}" for v in r["timesteps"])
    lines.append(f"| {grid} | {sde} | {nfe} | {end} | {ts} | {r['train_loss_last50']:.4f} | {_fmt(kl)} | "
                 f"{r['seconds']} |")
  return lines + [""]


def _bespoke_table(rows) -> list[str]:
  last = {}
  for r in rows:  # later fits replace earlier ones
    if r.get("benchmark") == "sampler_kl_bespoke":
      last[(r["grid"], r["sde"], r["nfe"])] = r
  if not last:
    return []
  lines = ["Bespoke solvers (`sampling.bespoke`, fitted by `grid_opt.optimise_bespoke`): evaluation log-SNRs "
           "after lambda(T), the fit objective over the last 50 iterations for each start (the best is kept) and "
           "the KL from fresh latents on the first fit target (\"bespoke 2d default\": the exact KL on the default "
           "mixture; \"bespoke set\": mean log(KL + 0.001) over " + ", ".join(FIT_SET) + "); the coefficients are "
           "in the JSON lines:", "",
           "| fit | SDE | NFE | evaluation log-SNRs (\"T\": the first at T) | Adam steps, step size | objective per start | "
           "KL on the first fit target (10^-3) | fit s |", "|---|---|---|---|---|---|---|---|"]
  for (grid, sde, nfe), r in last.items():
    kl = _pick(rows, section="nfe", sde=sde, nfe=nfe, grid=grid, sampler="bespoke", target=r["fit_targets"][0])
    first = "T" if r.get("start_log_snr") is None else f"{r['start_log_snr']:.3f}"
    ts = ", ".join([first] + [f"{v:.3f}" for v in r["timesteps"]])
    starts = ", ".join(f"{v:.4f}" for v in r["init_losses"])
    lines.append(f"| {grid} | {sde} | {nfe} | {ts} | {r['iters']}, {r['learning_rate']:g} | {starts} | "
                 f"{r['fit_targets'][0]}: {_fmt(kl)} | {r['seconds']} |")
  return lines + [""]


def _schedule_table(rows, sde) -> list[str]:
  lines = [f"Every fixed grid, {sde.upper()}, default 2-D mixture, Tweedie end (10^-3 nats) at 5 / 10 / 20 NFE "
           "(EDM Heun: 5 / 9 / 19):", "", "| sampler | " + " | ".join(sampling.SCHEDULES) + " |",
           "|---|" + "---|" * len(sampling.SCHEDULES)]
  for label in SAMPLERS:
    cells = []
    for schedule in sampling.SCHEDULES:
      section = "nfe" if schedule == "log_snr" else "schedules"
      got = [_pick(rows, section=section, sde=sde, sampler=label, grid=schedule, end="tweedie", nfe=_odd(n, label))
             for n in (5, 10, 20)]
      cells.append(" / ".join(f"{1e3 * g['kl']:.2f}" if g else "-" for g in got))
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return lines + [""]


def _heldout_table(rows, sde) -> list[str]:
  settings = [s for s in HELDOUT_SETTINGS if _pick(rows, section="heldout", sde=sde, sampler=s[0], end=s[1], grid=s[2])]
  if not settings:
    return []
  head = ["**" + _name(*s) + "** (the fast configs' solver at 10 NFE)" if s == FAST else _name(*s) for s in settings]
  # (configs/*_gmm_fast.py: FAST_NFE; the drop tables and the must-show list have the cells at fewer NFE)
  lines = [f"10 NFE, {sde.upper()}, every setting on the fitting mixtures and on held-out ones (10^-3 nats ± SE; "
           f"at most {1e3 * THRESHOLD:g} in bold):", "", "| target | " + " | ".join(head) + " |",
           "|---|" + "---|" * len(settings)]
  for target in WIDE_SET + HELD_OUT:
    got = [_pick(rows, section="heldout", sde=sde, target=target, sampler=s[0], end=s[1], grid=s[2]) for s in settings]
    if not any(got):
      continue
    cells = [f"**{_fmt(g)}**" if g and g["kl"] <= THRESHOLD and not g.get("folded") else _fmt(g) for g in got]
    kind = "fit" if target in FIT_SET else "wide-set fit" if target in WIDE_SET else "held out"
    lines.append(f"| {target} ({kind}) | " + " | ".join(cells) + " |")
  return lines + [""]


SET_FITS_10 = {"bespoke set + network, free start": "set (the earlier fast configs)",
               "bespoke wide set + network, free start": "wide set",
               "bespoke wide set + network, 8192 latents, free start": "wide set, 8,192 latents",
               "bespoke wide set + network, gaussian start": "wide set, Gaussian start"}


def _one_mixture_table(rows, sde) -> list[str]:
  """10 NFE: a bespoke solver fitted on one narrow mixture alone against the set fits on that mixture,
  and the one-mixture solver's worst KL on the other mixtures (does one solver serve them all?)."""
  ones = list({r["grid"]: r for r in rows if r.get("benchmark") == "sampler_kl_bespoke" and r["sde"] == sde
               and r["nfe"] == 10 and len(r.get("fit_targets", [])) == 1}.values())  # the last fit of each
  if not ones:
    return []
  head = " | ".join(SET_FITS_10.values())
  lines = [f"10 NFE, {sde.upper()}: solvers fitted on one narrow mixture alone (Adam's step size, latents per step) "
           "against the set fits on it, 10^-3 nats ± SE:", "",
           f"| mixture | fitted on it alone | {head} | the one-mixture solver, worst elsewhere |",
           "|---|---|" + "---|" * len(SET_FITS_10) + "---|"]
  for fit in ones:
    target = fit["fit_targets"][0]
    cell = lambda grid, t=target: _pick(rows, section="heldout", sde=sde, target=t, sampler="bespoke", grid=grid)
    others = {r["target"]: r for r in rows if r.get("benchmark") == "sampler_kl" and r.get("section") == "heldout"
              and r["sde"] == sde and r["grid"] == fit["grid"] and r["target"] != target}.values()
    worst = max(others, key=lambda r: r["kl"], default=None)
    lines.append(f"| {target} | {_fmt(cell(fit['grid']))} ({fit['learning_rate']:g}, {fit.get('batch_size', 2048):,}) | "
                 + " | ".join(_fmt(cell(g)) for g in SET_FITS_10)
                 + f" | {worst['target'] + ': ' + _fmt(worst) if worst else '-'} |")
  return lines + [""]


def _drop_table(rows, sde) -> list[str]:
  """Section "drop": 10-NFE solvers with their first k evaluations left out for the Gaussian start."""
  fits = list(dict.fromkeys(r["grid"] for r in rows if r.get("section") == "drop" and r["sde"] == sde))
  return [line for fit in fits for line in _drop_table_of(rows, sde, fit)]


def _drop_table_of(rows, sde, fit) -> list[str]:
  """One fit's table; a free-start fit's own 10-NFE cells (section "heldout", the rescaled latent) come first."""
  got = [r for r in rows if r.get("section") == "drop" and r["sde"] == sde and r["grid"] == fit]
  nfes, free = sorted({r["nfe"] for r in got}, reverse=True), not fit.endswith("gaussian start")
  lines = [f"{sde.upper()}, \"{fit}\" with its first evaluations left out for the Gaussian start from each "
           "mixture's own mean and covariance (`grid_opt.with_gaussian_start`, no refit; 10^-3 nats ± SE, 65,536 "
           "latents):", "", "| mixture | " + "10 NFE, rescaled latent | " * free
           + " | ".join(f"{n} NFE, Gaussian start" + (f" ({10 - n} left out)" if n < 10 else "") for n in nfes)
           + " |", "|---|" + "---|" * (len(nfes) + free)]
  for target in WIDE_SET + HELD_OUT:
    base = [_pick(rows, section="heldout", sde=sde, target=target, sampler="bespoke", grid=fit)] * free
    cells = [_pick(rows, section="drop", sde=sde, target=target, grid=fit, nfe=n, score="oracle") for n in nfes]
    lines.append(f"| {target} | " + " | ".join(_fmt(c) for c in base + cells) + " |")
  base = [_pick(rows, section="model", sde=sde, sampler="bespoke", grid=fit, nfe=10, score="model")] * free
  cells = [_pick(rows, section="drop", sde=sde, target="2d default", grid=fit, nfe=n, score="model") for n in nfes]
  lines.append("| 2d default, trained network (seed 0) | " + " | ".join(_fmt(c) for c in base + cells) + " |")
  return lines + [""]


def _transfer_table(rows) -> list[str]:
  keys = []
  for r in rows:
    if r.get("section") == "transfer" and (r["sde"], r["target"]) not in keys:
      keys.append((r["sde"], r["target"]))
  settings = _settings(rows, "transfer")
  lines = ["Other SDE parameters at 10 NFE (10^-3 nats ± SE; the fitted grids of the base SDE):", "",
           "| SDE | target | " + " | ".join(_name(*s) for s in settings) + " |",
           "|---|---|" + "---|" * len(settings)]
  for sde, target in keys:
    got = [_pick(rows, section="transfer", sde=sde, target=target, sampler=s[0], end=s[1], grid=s[2], nfe=10)
           for s in settings]
    lines.append(f"| {sde} | {target} | " + " | ".join(_fmt(g) for g in got) + " |")
  return lines + [""]


def _must_show(rows) -> list[str]:
  lines = [f"Must-show, KL <= {THRESHOLD} nats at <= 10 NFE with the exact score, configs/*_gmm_fast.py "
           f"({FAST_NAME}, each mixture's own mean and covariance), per mixture (10^-3 nats ± SE; the estimate, and "
           "whether estimate + 2 SE is also below):", ""]
  fitted = _fitted_on(rows, FAST[2])
  for sde in SDES:
    for target in WIDE_SET + HELD_OUT:
      r = _fast(rows, sde, target)
      if r:
        verdict = "yes" if r["kl"] <= THRESHOLD and not r.get("folded") else "**no**"
        sure = " (also + 2 SE)" if r["kl"] + 2 * r["se"] <= THRESHOLD else ""
        kind = "fitted on" if target in fitted else "held out"
        lines.append(f"- {sde}, {target} ({kind}): {_fmt(r)} -> {verdict}{sure}")
  return lines + [""]


def _model_table(rows) -> list[str]:
  train = {r["config"]: r for r in rows if r.get("benchmark") == "sampler_kl_train" and r.get("seed", 0) == 0}
  if not train:
    return []
  lines = ["Trained score (MLP of configs/{ve,vp}_gmm.py, seed 0, which no grid was fitted with; EMA parameters after "
           + ", ".join(f"{c}: {t['n_iters']} steps" for c, t in train.items())
           + "), default mixture, 10^-3 nats ± SE; the learned-score KL at 500 NFE is the model's own "
           "error, the excess at 10 NFE the sampler's:", "",
           "| SDE | setting, NFE | learned score | exact score |", "|---|---|---|---|"]
  cells = list(MODEL_CELLS) + [(("bespoke", "fitted", fit), nfe) for fit, nfe in BESPOKE_MODEL_CELLS]
  for sde in SDES:
    for (label, end, grid), nfe in cells:
      got = [_pick(rows, section="model", sde=sde, sampler=label, end=end, grid=grid, nfe=nfe, score=sc)
             for sc in ("model", "oracle")]
      if any(got):
        name = _name(label, end, grid) + (" (the fast configs' solver)" if (label, end, grid) == FAST else "")
        lines.append(f"| {sde} | {name}, {nfe} | {_fmt(got[0])} | {_fmt(got[1])} |")
  return lines + [""]


NOTES = """Notes. Ends: "tweedie" = n - 1 solver steps to sigma_edm = {tw}, then x = x0_hat; "half" = n - 1
steps to sigma_edm = {hf}, then x = (x / alpha + x0_hat) / 2, the Euler step of the probability-flow ODE in
sigma^2 (`schedules.denoise_to_zero`); "direct" = n steps to sigma_edm = {di} and no last step. For a mixture
component of standard deviation s the exact map from sigma to 0 is x~ - c (x~ - x0_hat) with c = 1/2 +
sigma^2 / (8 s^2) + ...: the Tweedie step (c = 1) shrinks the component's variance by s^2 / (s^2 + sigma^2),
~0.1 nats per direction with s = 0.1 at sigma = 0.1, which is why the earlier fitted grid failed on narrow
modes; "half" leaves an O(sigma^4 / s^4) error and "direct" adds sigma^2 to the variance (harmless on the
default mixture, whose smallest s is 0.89). "fitted set" grids minimise the mean of log(KL + 0.001) over
the four fitting mixtures with the exact score, 300 Adam steps of 2,048 latents each, so no single mixture
decides the grid; "fitted set + network" (the fast configs' grids, 10 NFE) adds the default mixture with a
trained network (seed 1; the "model" rows use the configs' seed-0 network, which no grid saw). The network is
in the fit because grids fitted to exact scores alone take long steps at high noise, where a learned x0_hat
errs by sigma^2 times the score's error: such a grid (first points -2.07, -1.28 in log-SNR) gave the seed-0
network 0.030 nats at 10 NFE against 0.0028 for the earlier grid, and adding one point at -3.3 brought it to
0.0015 (helper's side runs, not in the JSON lines; the "model" table has the final grids). On the mixtures
with modes of standard deviation 0.1-0.2 (fit 2d narrow, fit 3d narrow, 2d four modes, 2d ring, 3d narrow)
every fitted grid stays at 4-8e-3 nats at 10 NFE, fitted on or not: an exact-Gaussian spectrum check shows
the within-mode error is small there, and higher solver orders in the last steps (lower_order_final=False)
make these mixtures worse (0.012-0.02), so what remains is the switching of x0_hat between narrow modes.
Their KL falls ~2.5x per 2 NFE (8 NFE: 0.015-0.018), so ~12 NFE reach 0.003. Also tried and dropped (VE,
10 NFE, same fit): per-step multipliers on UniPC's predictor and corrector terms and per-step shifts of the
model's evaluation time, fitted with the grid; the held-out narrow mixtures moved between 0.0017 and 0.006
from one fit to the next (2,048- and 4,096-latent batches), within the fit's own noise, not reliably below
0.003. A grid fitted to 3d narrow alone (200 Adam steps, then 8,192 fresh latents; side runs, not in the JSON
lines) reaches 3.7e-3 with UniPC-3 bh2, 4.4e-3 with UniPC-2 and 5.8e-3 with UniPC-3 bh1 at 10 NFE, and
sigma_end 0.02 / 0.08 in place of 0.05 gave 9.4e-3 / 2.8e-3 there but 0.008 on the ring: the grid alone
does not bring this solver family under 0.003 on narrow modes at 10 NFE.

AYS (Sabour et al. 2024):
"ays" minimises our implementation of their KLUB for the first-order stochastic sampler (`sampling/ays.py`,
the expectation over the true path's forward-process pairs) on the default mixture; "ays sd15" is their
published 10-step Stable Diffusion 1.5 schedule (DDPM timesteps 999, 850, 736, 645, 545, 455, 343, 233,
124, 24, 0 from research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html, as sigmas of SD's
scaled-linear betas, 14.615 ... 0.029) with its log-sigma profile mapped onto our range and interpolated
log-linearly for other step counts, as they recommend. The KLUB of the stochastic sampler grows with the
ratio of consecutive noise levels even where the ODE is nearly linear, so it spends the steps at low noise
and leaves one long first step; with these ODE samplers the AYS grids are far worse than the exact-KL grids
and, on broad mixtures, than the fixed log-SNR grid.

Bespoke solvers (Shaul et al. 2024, "Bespoke
Non-Stationary Solvers"; `sampling/bespoke.py`): n NFE, the state at which the model is evaluated next is
r_i y_i + sum_j w_ij d_j over all evaluations so far (y = x / alpha, d = x0_hat), so every step has its own
weights; DDIM, DPM-Solver++ and UniPC with its corrector are points of this family
(`grid_opt.coefficients_of` reads their weights off one run on coefficient vectors; tests check that the
solver rebuilt from them is the sampler). `grid_opt.optimise_bespoke` fits the evaluation points and all
n + n (n + 1) / 2 weights to the exact KL, starting from DPM-Solver++(2M) with the half step (three starts
per NFE, two with a free start, the best by training loss kept), 1,500 Adam steps of 2,048 latents at step size 0.05 for one
mixture and 800 at 0.01 for the set, and returns the mean of the last 20% of the iterates: the last iterate
of such a fit rattles across the valley (on the default mixture at 6 NFE it measured 0.81e-3 nats against
0.18e-3 for the average, same latents). Their cells use 65,536 latents. "bespoke 2d default" is fitted on
the default mixture alone and "bespoke set" on the four fitting mixtures; neither saw the held-out ones.
The "bespoke set" at 10 NFE instead starts from the fast configs' UniPC-3 weights (`grid_opt.coefficients_of`,
600 Adam steps at 0.001): on the held-out mixtures it moves the fast configs' 3.2-8.3e-3 to 2.7-8.6e-3
(3d close 2.65e-3 with VE; the ring stays at 7.5-8.6e-3), so the fast configs keep UniPC-3.
"free start" fits also fit the first evaluation point (`start_log_snr`): the model's output at T says
almost nothing about the data, so the prior latent is rescaled to a lower noise level and evaluated there
first, which is worth about one NFE at 2-5 NFE. It also removes the evaluation where a learned x0_hat errs
most (by sigma^2 times the score's error): the free-start fits on the default mixture carry over to the
trained networks, 2.2-2.9e-3 nats at 3 NFE and 1.7-1.9e-3 at 4 NFE against the networks' own 1.7-2.1e-3
at 500 NFE (configs/{{ve,vp}}_gmm_bespoke.py sample with the 4-NFE ones). The fits with the first evaluation
at T do not carry over at 4-5 NFE (0.05-0.34 nats). "bespoke 3d narrow" and "bespoke 2d ring" are fitted
on the mixture they are measured on (1,500 Adam steps at 0.05, two free starts), as Shaul et al. fit one
solver per model: at 2 NFE they give 0.27 (3d narrow) and 0.11 nats (ring), where the set fits, which
never saw these mixtures, give 1.4-1.7 and DPM-Solver++(2M) needs 5 NFE for 0.9-1.4; they decide the
ratio table's "any setting" column on those mixtures. At 10 NFE a fit's Monte Carlo objective is noisy
against the KL itself (per-latent terms of standard deviation ~ sqrt(2 KL), so ~45% relative at 2,048
latents and 0.005 nats), and Adam's step size sets how far it gets: fitted on "3d narrow" alone from the
UniPC-3 weights (free start), 0.003 reached 4.9-5.8e-3, 0.001 reached 3.2e-3 and 0.0003 (3,000 steps)
3.7e-3 on fresh latents, while 8,192 latents per step at 0.001 (1,000 steps) reached 2.8e-3 (one fixed
batch of 4,096 latents at 0.001: 3.0e-3, with a training objective below zero, i.e. fitted to the batch;
side runs, not in the JSON lines): a one-mixture fit at 10 NFE is limited by the objective's noise. "bespoke set + network, free start" (the earlier fast configs)
fits the four fitting mixtures and the seed-1 network from the earlier fast setting's UniPC-3 weights
(`grid_opt.coefficients_of`, moved to a free start by `grid_opt.with_free_start`), 1,500 steps at 0.001
(its start stayed within 0.1 of lambda(T)); against that UniPC-3 setting it lowers the held-out narrow
mixtures from 5.3-8.3e-3 to 2.8-6.9e-3 and leaves the seed-0 networks at 2.1-2.2e-3 (UniPC-3: 2.2 ± 0.3 and
3.6 ± 1.0e-3 from 65,536 latents, the model section's cell re-measured with n_batches=16 by a side
script whose rows are in the JSON lines; the section's 16,384 latents had read 3.3 and 5.7), but the ring stays
at 5.3 (VE) and 6.9e-3 (VP). "bespoke wide set + network, free start" adds "fit 2d circle" (eight modes of
standard deviation 0.15 on a circle of radius 2.5), a mixture chosen after the ring had failed: the held-out
ring then reaches 2.7e-3 (VE) and 2.6e-3 (VP) but "2d four modes" rises to 4.0 and 4.5e-3, so this family
at 10 NFE trades narrow mixtures against one another, and no 10-NFE solver here is under 0.003 nats on all
nine (a refit of the fast configs' VE solver on the plain mean KL, which weighs the narrow mixtures most,
800 steps at 0.0005: 3d narrow 3.0e-3, ring 4.9e-3, four modes 4.0e-3; side run, not in the JSON lines).
A set fit is not limited by noise: "bespoke wide set + network, 8192 latents, free start" continues the
wide-set fit with 8,192 latents per target and step (two chunks of 4,096, `grid_opt.mean_kl_loss`; one
8,192-latent XLA call never finished on this CPU, with or without --xla_cpu_multi_thread_eigen=false),
600 steps at 0.0005 with the objective's floor at the bound, 0.003, and moves no mixture by more than its
noise with VE (ring 2.7 -> 2.5e-3, four modes 4.0 -> 4.2e-3) and makes VP worse on several (fit 3d narrow
3.2 -> 4.5e-3). Fitted on one narrow mixture alone (8,192 latents, 1,000 steps from the wide-set solver;
the table above), the ring, the circle, four modes and 3d narrow reach 1.3-2.8e-3 at 10 NFE, but each such
solver is 2-7x the bound (6.7-20e-3) on another narrow mixture: the narrow mixtures want different 10-NFE solvers,
and a single linear solver of this family trades them. "fit 3d narrow" (four rotated modes, standard deviations
0.1-0.5) stays above the bound even fitted alone: 4.1e-3 at step size 0.001 and 3.3e-3 at
0.0003, against 3.5e-3 from the set fits (VP 3d narrow at 0.001 also went up, to 6.5e-3, and reached
2.3e-3 at 0.0003; both runs are in the JSON lines, the table shows the later). Where the
error sits: with the earlier fast configs' VE solver on "3d narrow", 66 of 65,536 latents (0.1%), mapped between
the modes (median log p -8.1 against -0.56 overall), carry 1.55 of its 2.01e-3 nats, and on the ring 66
latents carry 3.0 of 6.0e-3: mass left between narrow modes by steps across the noise levels where x0_hat
switches between them. The per-latent terms are therefore heavy-tailed: randomised quasi-Monte Carlo
latents (scrambled Sobol, a shifted rank-1 lattice) did not narrow the estimate's spread at 2,048 latents,
and half the mean square of the log-ratio (KL + O(error^3)), which narrows it 45x on the broad mixtures,
does not on the narrow ones (side runs, not in the JSON lines).

Gaussian start (`sampling.bespoke`, `start_moments`; Wang & Vastola 2024, "The Unreasonable Effectiveness of
Gaussian Score Approximation for Diffusion Models"): the first state is the probability-flow ODE of the
data's Gaussian approximation N(m, C), solved in closed form from T, y_0 = m + (C + e^(-2 lambda_0) I)^(1/2) z.
What that costs by itself is KL(N(m, C + sigma^2 I) || p_sigma) at the first evaluation: at most 0.011e-3
nats at lambda = -2 (sigma = 7.4) and 0.14e-3 at -1.4 on all ten mixtures, against up to 13e-3 and 43e-3
for the rescaled latent N(0, sigma^2 I) of the free start (side computation by Monte Carlo, 200,000 draws;
not in the JSON lines). So the evaluations at sigma = 20-140 carry nothing the first two moments do not: the
"drop" tables above leave the first evaluation of the earlier fast configs' solver ("bespoke set + network,
free start") out (`grid_opt.with_gaussian_start`, each later
step's weights on it moved to the next evaluation, no refit) and measure 9 NFE at the 10-NFE KL on every
mixture, both SDEs, within the standard errors; two left out (8 NFE) cost 0.9-2.3x on the narrow mixtures
(the broad ones stay below 1.8e-3), three (7 NFE) 1-7x on the narrow ones and 3-16e-3 on the broad ones. With the trained networks the Gaussian start helps more: 1.58e-3 (VE) and 1.30e-3 (VP) at
9 NFE against 2.2 and 2.0e-3 at 10 NFE and the networks' own 1.69 and 2.10e-3 at 500 NFE (their x0_hat errs
most at high noise, by sigma^2 times the score's error, and the Gaussian start replaces those evaluations);
at 8 NFE 0.97e-3 (VE) and 1.38e-3 (VP). The last stop's configs/*_gmm_fast.py sampled with that 9-NFE
solver. Spending the
freed evaluation where the modes separate did not lower the narrow mixtures' KL at 10 NFE. Three fits of
"bespoke wide set + network, gaussian start" (all in the JSON lines; the tables show the last): from
DPM-Solver++(2M) on ten points from -2 (1,500 steps at 0.01) VE diverged (KL of nats) and VP reached
7-26e-3; from the wide-set solver with the Gaussian start at its own first point (1,500 steps at 0.001) the
first point did not move (its gradient vanishes where the Gaussian start is exact) and the narrow mixtures
got worse (VE fit 3d narrow 3.5 -> 7.2e-3); from the wide-set solver with its first evaluation left out and
one inserted in the widest gap (`grid_opt.with_inserted_evaluation`, which keeps the output; `--gaussian-drop
1`, 1,500 steps at 0.0003) every mixture stayed within noise of the wide-set solver (VE ring 2.7, four modes
4.1, circle 5.6e-3; VP 2.3, 3.9, 4.9e-3) and the inserted point stayed where it was put; with the trained
networks this last solver measures 1.25e-3 (VE) and 1.10e-3 (VP). It is the fast configs' solver now: against
the earlier one it has the same number of mixtures under the bound (VE) or two more (VP), its worst mixture
(the circle) at 5.6 and 4.9e-3 against 10 and 13e-3, and the trained networks at 1.0 and 1.1e-3 against 1.6 and
1.3e-3. Left out, its first evaluation (at sigma = 18, lambda = -2.9) changes no mixture's KL by more than
0.35e-3 (its drop table), so VE samples in 9 NFE; with VP two mixtures rise from 2.9e-3 to 3.2-3.3e-3, so VP
keeps all 10. Fitted on the default mixture alone at 2-4
NFE ("bespoke 2d default, gaussian start", one start from DPM-Solver++(2M) on points in [-2, 3], 1,500 steps
at 0.05), the Gaussian start matches the free start at 2-3 NFE (a one-mixture fit can learn that mixture's
moments into its weights) and beats it at 4 NFE: 0.23 and 0.22e-3 against 0.34 and 0.32e-3 with the exact
score, 1.45 and 1.43e-3 against 1.69 and 1.85e-3 with the trained networks (configs/*_gmm_bespoke.py sample
with it); on the narrow mixtures it folds 13-63% of the latents (the "Folds" list), so the 1.3-2.3 nats its
cells read there are not KLs.

Folds: `metrics.sampler_kl` also reports the fraction of latents where det J_F <=
0 (the change of variables needs a bijection; the ODE's own map keeps orientation everywhere), found while
prototyping a solver whose weights depend on the state (below). Every fixed sampler but EDM Heun at 5 NFE,
every 10-NFE fit and the configs' solvers keep orientation on all 8,192 latents of every mixture; the few-NFE
fits on one mixture fold up to 67% of the latents of the narrow mixtures they never saw, and "bespoke 2d
default" (2, 3, 8 NFE) and "bespoke set" (2-5 NFE) fold 0.06-4.7% with VP's trained network, whose x0_hat
these fits never saw.

Tried at 10 NFE and dropped (VE; side scripts, not in the JSON lines): (a) a
state-dependent solver, each weight and ratio of step i affine in a per-sample feature, the normalised ratio
log(|y_i - d_i| / |y_(i-1) - d_(i-1)|) that tells a sample's local mode width (exact within one isotropic
Gaussian mode), fitted from the earlier fast configs' solver on the wide set, 300 steps at 1e-4: the circle went from
8.6 to 5.6e-3 and four modes from 3.3 to 1.2e-3 (the same fit without the feature: 8.6 and 3.3e-3), but fit 2d
narrow read -5.0 ± 0.8e-3, six standard errors below zero, which no bijection can give: the solver had learnt to
fold, which the objective rewards; with a tanh of the feature and a penalty on det J_F < 0 (600 steps) it still
folded 0.04-0.15% of the latents and every narrow mixture got worse (ring 4.9, circle 24e-3). (b) The soft maximum
over the mixtures of log(KL + 0.001) (temperature 0.3) instead of the mean, from the wide-set Gaussian-start
solver, 600 steps at 3e-4: the objective did not move (-5.2 to -5.4) and the broad mixtures lost (default
0.02 -> 2.1e-3) while no narrow one gained (circle 5.5, four modes 4.6, fit 3d narrow 4.2e-3). (c) A fit to
the exact flow instead of the KL, the mean squared distance to DPM-Solver++(3M)'s 400-NFE sample of the same
latent (KL -0.02 ± 0.05e-3), on fit 3d narrow alone, which has little gradient noise: the distance fell 2.7x
in 600 steps while the KL stayed at 3.3e-3 (5,000 steps at 1e-3: 3.7e-3), as in the KL fits on that mixture
alone. So one solver of this linear family at 10 NFE sits at about 3e-3 there whichever way it is fitted.
(d) But fitted on each failing mixture alone, with the Gaussian start, from the fast configs' 10-NFE solver
(1,000 steps of 4,096 latents, about 2 min each; step size 3e-4, the circle 1e-3), every one reaches the
bound: VE fit 3d narrow 2.55 ± 0.32, four modes 1.95 ± 0.27, circle 2.49 ± 0.39e-3; VP 2.63 ± 0.37, 2.71 ±
0.32, 2.12 ± 0.36e-3 (65,536 latents), each at 5.6-18e-3 on some other narrow mixture. A solver fitted to the
target it samples, as Shaul et al. fit one per model, meets 0.003 at 10 NFE on all of them; one solver for all
of them does not."""


def report(rows) -> str:
  rows = _with_folds([_norm(dict(r)) for r in rows])
  lines = [SECTION, "", "Commands: see `benchmarks/sampler_kl.py` (its docstring); every table below is "
           "generated from `benchmarks/sampler_kl.jsonl` by `--from-jsonl ... --write`. Oracle (exact) "
           "score unless stated; KL(q || p) by `metrics.sampler_kl` from 16,384 prior latents (exact change "
           "of variables, jacfwd Jacobians), ± its standard error. 2-core CPU, JAX CPU backend, float32.", ""]
  lines += _must_show(rows) + _fold_lines(rows)
  for sde in SDES:
    lines += _heldout_table(rows, sde)
  for sde in SDES:
    lines += _one_mixture_table(rows, sde)
  for sde in SDES:
    lines += _drop_table(rows, sde)
  for sde in SDES:
    lines += _nfe_table(rows, sde)
  for sde in SDES:
    lines += _nfe_table(rows, sde, "3d three modes")
  lines += ["NFE ratio curve: DPM-Solver++(2M) on the log-SNR grid (the best of its ends at each NFE) "
            "against the fewest NFE of a setting in these tables with at most its KL (the must-show asks for "
            "a ratio <= 1/2 for the best sampler), first among the settings not fitted on that mixture (fixed "
            "grids, and fits on other mixtures: on the default mixture the \"fitted set\" grids and \"bespoke "
            "set\" solvers count as fitted on it), then among all, with the bespoke solvers fitted on the "
            "mixture itself (\"bespoke 2d default\", \"bespoke 3d narrow\", \"bespoke 2d ring\"; Shaul et al. fit "
            "one solver per model):", ""]
  for target in ("2d default", "3d three modes", "3d narrow", "2d ring"):
    for sde in SDES:
      lines += _halving(rows, sde, target)
  lines += _grid_table(rows) + _bespoke_table(rows)
  for sde in SDES:
    lines += _schedule_table(rows, sde)
  lines += _transfer_table(rows) + _model_table(rows)
  notes = NOTES.format(tw=ENDS["tweedie"]["sigma_end"], hf=ENDS["half"]["sigma_end"], di=ENDS["direct"]["sigma_end"])
  lines += ["\n\n".join(p.replace("\n", " ") for p in notes.split("\n\n")), "",
            f"Plot: `benchmarks/{os.path.basename(PLOT)}` (KL vs NFE, log-log, ± 1 SE; top: the default mixture, "
            "bottom: 3d narrow, held out but for the bespoke solver fitted on it; the star is the fast "
            "configs' setting (" + ", ".join(f"{k.upper()} {n} NFE" for k, n in FAST_NFE.items())
            + "); a red x marks a point whose sampler folds the latent space).", ""]
  return "\n".join(lines)


COLORS = [f"C{i}" for i in range(10)] + ["0.35", "navy", "darkgoldenrod"]  # one per curve of `plot`


def plot(rows) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

  rows = _with_folds([_norm(dict(r)) for r in rows])
  shown = (("dpm_solver_2m", "tweedie", "log_snr"), ("dpm_solver_2m", "half", "log_snr"),
           ("unipc_3", "half", "log_snr"), ("unipc_3", "half", "quadratic"), ("unipc_3", "half", "ays"),
           ("unipc_2", "tweedie", "fitted 2d default"), ("unipc_3", "direct", "fitted 2d default"),
           ("unipc_3", "half", "fitted set"), ("bespoke", "fitted", "bespoke 2d default"),
           ("bespoke", "fitted", "bespoke set"), ("bespoke", "fitted", "bespoke set, free start"),
           ("bespoke", "fitted", "bespoke 3d narrow, free start"))
  panels = [(sde, target) for target in ("2d default", "3d narrow") for sde in SDES]
  fig, axes = plt.subplots(2, len(SDES), figsize=(11, 9.6), sharey=True)
  for ax, (sde, target) in zip(axes.ravel(), panels):
    for i, (label, end, grid) in enumerate(shown):
      rs = sorted({r["nfe"]: r for r in rows if r.get("section") == "nfe" and r["sde"] == sde and r["sampler"] == label
                   and r["target"] == target and r["end"] == end and r["grid"] == grid}.values(),
                  key=lambda r: r["nfe"])  # a later fit at an NFE replaces the earlier
      if rs:
        ax.errorbar([r["nfe"] for r in rs], [max(r["kl"], 1e-5) for r in rs], yerr=[r["se"] for r in rs],
                    marker="o", ms=3, capsize=2, ls="--" if "fitted" in grid or "ays" in grid else "-",
                    lw=2.2 if grid in ("fitted set", "bespoke set") else 1.2, color=COLORS[i],
                    label=_name(label, end, grid))
        folded = [r for r in rs if r.get("folded")]
        if folded:
          ax.plot([r["nfe"] for r in folded], [max(r["kl"], 1e-5) for r in folded], ls="", marker="x", ms=9,
                  mew=1.6, color="red", zorder=5, label="folds the latent space (section folds): not a KL")
    fast = _fast(rows, sde, target)
    if fast:
      ax.errorbar([FAST_NFE[sde]], [max(fast["kl"], 1e-5)], yerr=[fast["se"]], marker="*", ms=11, color="k", ls="",
                  label="fast configs: " + FAST_NAME)
    ax.axhline(THRESHOLD, color="0.5", ls=":", lw=1, label=f"{THRESHOLD} nats")
    kind = "fitted on by the fitted-set grids" if target in FIT_SET else f"held out but for bespoke {target}"
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylim=(1e-5, 5.0))
    ax.set_title(f"{sde.upper()}, {target} ({kind}), exact score", fontsize=9)
    ax.set_xticks(NFES, [str(n) for n in NFES])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  for row in axes:
    row[0].set_ylabel("KL(q || p) [nats]")
  legend = {}  # every panel's entries, once each (the fold marker is on some panels only)
  for ax in axes.ravel():
    legend.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels()) if lab not in legend})
  fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=3, fontsize=7)
  fig.tight_layout(rect=(0, 0.12, 1, 1))
  fig.savefig(PLOT, dpi=120)
  plt.close(fig)


def write(rows, text: str) -> None:
  from results_md import replace_section

  replace_section(RESULTS, SECTION, text)
  plot(rows)

