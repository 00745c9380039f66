"""Exact KL(q || p) vs NFE of the deterministic samplers (`metrics.sampler_kl`), exact (oracle) score.

    B=benchmarks/sampler_kl.jsonl
    python benchmarks/sampler_kl.py --section grids --grid "fitted set" --end half >> $B  # ~15 min
    python benchmarks/sampler_kl.py --section grids --grid "fitted set + network" --end half --nfes 10 >> $B
    python benchmarks/sampler_kl.py --section grids --grid ays --end half --nfes 10 >> $B
    python benchmarks/sampler_kl.py --section grids --grid "fitted 2d default" --end direct --nfes 3,4,5,6 >> $B
    python benchmarks/sampler_kl.py --section nfe >> $B                                  # ~6 min
    python benchmarks/sampler_kl.py --section nfe --end direct --samplers dpm_solver_2m >> $B
    python benchmarks/sampler_kl.py --section nfe --end half --samplers dpm_solver_2m,unipc_3 \
        --schedules uniform_t,log_snr,edm,quadratic >> $B
    python benchmarks/sampler_kl.py --section nfe --end half --samplers dpm_solver_2m --targets "3d three modes" >> $B
    python benchmarks/sampler_kl.py --section schedules >> $B
    python benchmarks/sampler_kl.py --section heldout >> $B                              # ~30 min
    python benchmarks/sampler_kl.py --section transfer >> $B
    python benchmarks/sampler_kl.py --section model >> $B                                # trains 2 MLPs
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke 2d default" --nfes 2,3,4,5,6,8 \
        --grid-iters 1500 >> $B                                                           # ~15 min
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke set" --nfes 2,3,4,5,7 \
        --grid-iters 800 --bespoke-lr 0.01 >> $B                                          # ~50 min
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke set" --nfes 10 --bespoke-start fast \
        --grid-iters 600 --bespoke-lr 0.001 >> $B                                         # ~20 min
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke 2d default, free start" --nfes 2,3,4 \
        --grid-iters 1500 >> $B
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke set, free start" --nfes 2,3,4,5 \
        --grid-iters 800 --bespoke-lr 0.01 >> $B
    for t in "3d narrow" "2d ring"; do python benchmarks/sampler_kl.py --section bespoke \
        --bespoke "bespoke $t, free start" --nfes 2,3,4,5 --grid-iters 1500 >> $B; done  # fitted on the mixture
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke set + network, free start" --nfes 10 \
        --bespoke-start fast --grid-iters 1500 --bespoke-lr 0.001 >> $B                   # the fast configs, ~45 min
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke wide set + network, free start" --nfes 10 \
        --bespoke-start fast --grid-iters 1500 --bespoke-lr 0.001 >> $B
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke wide set + network, 8192 latents, free start" \
        --nfes 10 --bespoke-start "bespoke wide set + network, free start" --bespoke-batch 8192 --bespoke-chunks 2 \
        --bespoke-floor 0.003 --grid-iters 600 --bespoke-lr 0.0005 --sde ve >> $B  # ~42 min; --sde vp at once
    for t in "2d ring" "3d narrow" "2d four modes" "fit 3d narrow" "fit 2d circle"; do python benchmarks/sampler_kl.py \
        --section bespoke --bespoke "bespoke $t, free start" --nfes 10 --bespoke-start \
        "bespoke wide set + network, free start" --bespoke-batch 8192 --bespoke-chunks 2 --grid-iters 1000 \
        --bespoke-lr 0.001 >> $B; done                                  # one mixture at 10 NFE, ~5 min each
    python benchmarks/sampler_kl.py --section drop --bespoke-start "bespoke set + network, free start" >> $B
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke wide set + network, gaussian start" \
        --nfes 10 --bespoke-start "bespoke wide set + network, free start" --gaussian-drop 1 --grid-iters 1500 \
        --bespoke-lr 0.0003 >> $B                                          # the fast configs, ~22 min per SDE
    python benchmarks/sampler_kl.py --section model --bespoke-only \
        "bespoke set + network, free start;bespoke wide set + network, free start" >> $B
    python benchmarks/sampler_kl.py --section bespoke --bespoke "bespoke 2d default, gaussian start" --nfes 2,3,4 \
        --grid-iters 1500 >> $B                                            # configs/*_gmm_bespoke.py, ~2 min
    python benchmarks/sampler_kl.py --section model --bespoke-only \
        "bespoke 2d default, gaussian start;bespoke wide set + network, gaussian start" >> $B
    python benchmarks/sampler_kl.py --section folds --sde ve >> $B                      # ~20 min; --sde vp alongside
    python benchmarks/sampler_kl.py --from-jsonl benchmarks/sampler_kl.jsonl --write      # tables + plot

Three ends (`ENDS`): "tweedie", n - 1 solver steps to sigma_edm = 0.1 then the step to sigma = 0
x = x0_hat (Tweedie); "half", n - 1 steps to sigma_edm = 0.05 then x = (x + x0_hat) / 2 (the Euler
step in sigma^2, `schedules.denoise_to_zero`); "direct", n steps to sigma_edm = 0.1, no last step;
n NFE each (EDM Heun: 2 m - 1 NFE, so it lands on odd budgets). KL from 16,384 prior latents
(4 batches of 4,096, keys fold_in(key(0), b), the same for every sampler), with its standard error.
Sections: "grids" fits log-SNR grids for UniPC-3 (the earlier fast configs' sampler): "fitted set"
minimises the mean over the FIT_SET mixtures of log(exact KL + KL_FLOOR) (`sampling.grid_opt`), "fitted set + network"
that and the same term for a trained network on the default mixture (the configs' grids), "fitted 2d default" the
exact KL on the default mixture alone (the earlier grids had the Tweedie end), "ays" Align Your
Steps' KLUB on the default mixture (`sampling.ays`); "nfe" every sampler on a fixed grid (and the
fitted grids) at every NFE; "schedules" every sampler and fixed grid at 5, 10, 20 NFE; "heldout" every setting at
10 NFE on the fitting mixtures and on HELD_OUT ones no grid was fitted on; "transfer" other SDE
parameters; "model" a trained network's score (learned-score KL at 10 vs 500 NFE); "bespoke" fits
bespoke solvers (`sampling.bespoke`, `grid_opt.optimise_bespoke`) per NFE; "drop" leaves a fitted solver's
first evaluations out for the Gaussian start; "folds" finds the settings whose map folds the latent space
(`metrics.sampler_kl`'s "folded"), where a cell's number is not a KL. Each prints one
JSON line per cell; --write rewrites the "## Samplers: exact KL vs NFE" section of
benchmarks/RESULTS.md and saves benchmarks/sampler_kl.png (`sampler_kl_report`).
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
import numpy as np  # noqa: E402

import datasets  # noqa: E402
import metrics  # noqa: E402
import sampling  # noqa: E402
import sde_lib  # noqa: E402
from sampling import ays, grid_opt  # noqa: E402

NFES = (2, 3, 4, 5, 6, 8, 10, 15, 20, 50)
GRID_NFES = (2, 3, 4, 5, 6, 7, 8, 10, 15)
ENDS = {"tweedie": dict(denoise=True, sigma_end=0.1), "direct": dict(denoise=False, sigma_end=0.1),
        "half": dict(denoise=True, denoise_step="half", sigma_end=0.05)}
UNIPC_FAST = ("unipc_3", "half", "fitted set + network")  # the earlier fast configs: sampler, end, grid at 10 NFE
FAST = ("bespoke", "fitted", "bespoke wide set + network, gaussian start")  # configs/*_gmm_fast.py's solver ...
FAST_NFE = {"ve": 9, "vp": 10}  # ... its NFE per SDE: VE leaves its first evaluation out (section "drop")
KL_FLOOR = 1e-3  # the fit minimises the mean over FIT_SET of log(KL + KL_FLOOR) (`grid_opt.optimise_grid`)
FIT_SEED = 1  # "fitted set + network" also fits a network trained by configs/{ve,vp}_gmm.py with this seed;
EVAL_SEED = 0  # the "model" section measures the network of the configs' own seed, which no grid saw

SDES = {"ve": sde_lib.VESDE(sigma_min=0.01, sigma_max=100.0, N=500),
        "vp": sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=500)}
SDE_VARIANTS = {"ve sigma_max=50": ("ve", sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=500)),
                "ve sigma_max=300": ("ve", sde_lib.VESDE(sigma_min=0.01, sigma_max=300.0, N=500)),
                "vp beta_max=15": ("vp", sde_lib.VPSDE(beta_min=0.1, beta_max=15.0, N=500)),
                "vp beta_max=30": ("vp", sde_lib.VPSDE(beta_min=0.1, beta_max=30.0, N=500))}


def _mixture(means, scales, weights, seed):
  """Random rotations of diagonal covariances diag(scales_k)^2 (fixed seed)."""
  rng = np.random.default_rng(seed)
  covs = []
  for s in scales:
    q, _ = np.linalg.qr(rng.normal(size=(len(s), len(s))))
    covs.append((q @ np.diag(np.square(s)) @ q.T).tolist())
  return datasets.GaussianMixture(means=means, covs=covs, weights=weights)


_RING = [[2.0 * np.cos(a), 2.0 * np.sin(a)] for a in np.arange(6) * np.pi / 3]
TARGETS = {
    "2d default": datasets.GaussianMixture(),
    # the fitted grids and bespoke sets are fitted on these four at once (FIT_SET) ...
    "fit 2d narrow": _mixture([[-1.5, -1.0], [1.5, -0.5], [0.0, 1.8]], [[0.4, 0.1], [0.2, 0.2], [0.6, 0.15]],
                              [0.4, 0.35, 0.25], 11),
    "fit 3d narrow": _mixture([[1.2, 1.0, 0.0], [-1.5, 0.5, 1.0], [0.0, -1.5, -0.5], [0.5, 0.0, 2.0]],
                              [[0.4, 0.15, 0.1], [0.5, 0.5, 0.2], [0.3, 0.12, 0.12], [0.25, 0.25, 0.25]],
                              [0.3, 0.3, 0.2, 0.2], 12),
    "fit 3d broad": _mixture([[0.0, 0.0, 0.0], [2.5, 1.0, -1.0]], [[1.5, 1.0, 0.5], [0.8, 0.8, 0.8]], [0.6, 0.4], 13),
    # a fit target of the "wide set" bespoke fit only (WIDE_SET): many isotropic narrow modes
    "fit 2d circle": datasets.GaussianMixture(means=[[2.5 * np.cos(a), 2.5 * np.sin(a)]
                                                     for a in np.arange(8) * np.pi / 4],
                                              covs=[[[0.0225, 0.0], [0.0, 0.0225]]] * 8, weights=[1.0 / 8] * 8),
    # ... and measured on these, which no grid was fitted on (HELD_OUT)
    "2d four modes": _mixture([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5], [0.5, -2.5]],
                              [[0.6, 0.2], [0.4, 0.4], [0.8, 0.3], [0.3, 0.15]], [0.3, 0.3, 0.2, 0.2], 1),
    "2d ring": datasets.GaussianMixture(means=_RING, covs=[[[0.04, 0.0], [0.0, 0.04]]] * 6, weights=[1.0 / 6] * 6),
    "3d three modes": _mixture([[0.0, 0.0, 1.0], [2.0, -1.0, 0.0], [-1.5, 1.0, -1.0]],
                               [[1.0, 1.0, 1.0], [1.3, 0.9, 0.6], [0.55, 0.55, 0.55]], [0.4, 0.35, 0.25], 2),
    "3d narrow": _mixture([[1.5, 0.0, 0.0], [-1.0, 1.5, 0.5], [-0.5, -1.5, -1.0]],
                          [[0.5, 0.2, 0.1], [0.3, 0.3, 0.1], [0.6, 0.25, 0.2]], [0.5, 0.3, 0.2], 3),
    "3d close": _mixture([[0.0, 0.0, 0.0], [1.0, 0.3, 0.0], [-0.6, 0.8, 0.5]],
                         [[0.4, 0.3, 0.15], [0.35, 0.2, 0.2], [0.5, 0.25, 0.12]], [0.4, 0.35, 0.25], 14),
}
FIT_SET = ("2d default", "fit 2d narrow", "fit 3d narrow", "fit 3d broad")
FIT_NAMES = {"fitted set": list(FIT_SET),  # the fitted grids' targets
             "fitted set + network": list(FIT_SET) + [f"2d default, network seed {FIT_SEED}"],
             "fitted 2d default": ["2d default"], "ays": ["2d default"]}
WIDE_SET = FIT_SET + ("fit 2d circle",)
HELD_OUT = tuple(name for name in TARGETS if name not in WIDE_SET)

SAMPLERS = {
    "ddim": dict(method="ddim"),
    "edm_heun": dict(method="edm_heun"),
    "dpm_solver_2m": dict(method="dpm_solver_2m"),
    "dpm_solver_3m": dict(method="dpm_solver_3m"),
    "unipc_2": dict(method="unipc", order=2),
    "unipc_3": dict(method="unipc", order=3),
    "unipc_2_bh1": dict(method="unipc", order=2, variant="bh1"),
}

# (sampler, end, grid) at 10 NFE in the held-out table: the earliest fast setting, DPM-Solver++(2M)
# with the "half" end, the best fixed grid on the default mixture (both SDEs, "schedules"), UniPC-3
# with the "half" end on every fixed grid and on the AYS grids, the first fitted grid, the fitted
# grids of the earlier fast configs, and the bespoke fits at 10 NFE (their cells come from section
# "bespoke"), the fast configs' among them.
HELDOUT_SETTINGS = (("dpm_solver_2m", "tweedie", "log_snr"), ("dpm_solver_2m", "half", "log_snr"),
                    ("unipc_2", "tweedie", "quadratic"),
                    *((UNIPC_FAST[0], UNIPC_FAST[1], grid) for grid in sampling.SCHEDULES),
                    (UNIPC_FAST[0], UNIPC_FAST[1], "ays"), (UNIPC_FAST[0], UNIPC_FAST[1], "ays sd15"),
                    ("unipc_2", "tweedie", "fitted 2d default"), (UNIPC_FAST[0], UNIPC_FAST[1], "fitted set"),
                    UNIPC_FAST,
                    ("bespoke", "fitted", "bespoke set"), ("bespoke", "fitted", "bespoke set + network, free start"),
                    ("bespoke", "fitted", "bespoke wide set + network, free start"),
                    ("bespoke", "fitted", "bespoke wide set + network, 8192 latents, free start"),
                    ("bespoke", "fitted", "bespoke wide set + network, gaussian start"))


def _bounds(end: str) -> dict:
  """The fields of an end that fix the grid's range (`grid_opt.grid_bounds`)."""
  return {k: ENDS[end][k] for k in ("denoise", "sigma_end")}


def emit(record: dict) -> dict:
  print(json.dumps(record), flush=True)
  return record


def kl_cell(section: str, sde_name: str, sde, target_name: str, label: str, nfe: int, grid: str,
            timesteps=None, *, end: str = "tweedie", score_fn=None, score: str = "oracle",
            n_batches: int = 4, coefficients=None, start_log_snr=None, gaussian_start: bool = False) -> dict:
  """One KL estimate at the budget nfe (EDM Heun: the odd NFE at most nfe) on a fixed or given grid
  (label "bespoke": the bespoke solver of timesteps and coefficients, with gaussian_start from the
  target's own mean and covariance)."""
  n_steps = (nfe + 1) // 2 if label == "edm_heun" else nfe  # Heun: 2 n_steps - 1 NFE, <= nfe
  schedule = grid if grid in sampling.SCHEDULES else "custom"
  target = TARGETS[target_name]
  t0 = time.perf_counter()
  if label == "bespoke":  # its own end: timesteps and coefficients of a fit (`bespoke_section`)
    sampler = sampling.get_sampler(sde, (4096, target.dim), method="bespoke", n_steps=nfe, timesteps=timesteps,
                                   coefficients=coefficients, start_log_snr=start_log_snr,
                                   start_moments=datasets.moments(target) if gaussian_start else None)
  else:
    sampler = sampling.get_sampler(sde, (4096, target.dim), n_steps=n_steps, schedule=schedule,
                                   timesteps=timesteps, **SAMPLERS[label], **ENDS[end])
  score_fn = target.score_fn(sde) if score_fn is None else score_fn
  out = metrics.sampler_kl(jax.random.key(0), sampler, score_fn, target.log_prob, sde, n_batches=n_batches)
  return emit({"benchmark": "sampler_kl", "section": section, "score": score, "sde": sde_name,
               "target": target_name, "sampler": label, "end": end, "schedule": schedule, "grid": grid,
               "nfe": out["nfe"], "kl": out["kl"], "se": out["se"], "n": out["n"], "folded": out["folded"],
               "seconds": round(time.perf_counter() - t0, 2)})


def trained_score(sde_name: str, seed: int, workdir: str):
  """(experiment, score_fn) of the MLP of configs/{ve,vp}_gmm.py trained with `seed` (EMA parameters;
  `run_lib.train` resumes, so a finished run is not trained again)."""
  import importlib

  import run_lib

  config = importlib.import_module(f"configs.{sde_name}_gmm").get_config()
  config.seed = seed
  run = os.path.join(workdir, f"{sde_name}_gmm" + ("" if seed == EVAL_SEED else f"_seed{seed}"))
  exp = run_lib.build(config)
  t0 = time.perf_counter()
  run_lib.train(config, run)
  emit({"benchmark": "sampler_kl_train", "config": f"{sde_name}_gmm", "seed": seed, "workdir": run,
        "train_s": round(time.perf_counter() - t0, 1), "n_iters": config.training.n_iters})
  return exp, jax.tree_util.Partial(exp.model_score_fn, run_lib.load_state(exp, run).ema_params)


def fit_grid(grid: str, end: str, sde_name: str, nfe: int, iters: int, workdir: str) -> dict:
  """A log-SNR grid for UNIPC_FAST's sampler with `end`: "fitted set" (mean log exact KL over FIT_SET with
  the exact score), "fitted set + network" (the same and the default mixture with the FIT_SEED
  network), "fitted 2d default" (exact KL on the default mixture) or "ays" (the KLUB on the default
  mixture)."""
  sde, default = SDES[sde_name], TARGETS["2d default"]
  if grid == "ays":
    return ays.optimise_grid_ays(jax.random.key(1), sde, default.score_fn(sde), default.sample, n_steps=nfe,
                                 batch_size=4096, n_iters=iters, learning_rate=0.05, **_bounds(end))
  names = FIT_SET if grid.startswith("fitted set") else ("2d default",)
  fit = [(TARGETS[n].score_fn(sde), TARGETS[n].log_prob, TARGETS[n].dim) for n in names]
  if grid == "fitted set + network":
    fit.append((trained_score(sde_name, FIT_SEED, workdir)[1], default.log_prob, default.dim))
  n_solver, _, lam_end = grid_opt.grid_bounds(sde, nfe, **_bounds(end))
  init = np.linspace(-3.0, lam_end, n_solver + 1)[1:-1]  # uniform in log-SNR above -3
  return grid_opt.optimise_grid(jax.random.key(1), sde, fit, n_steps=nfe, batch_size=2048, n_iters=iters,
                                learning_rate=0.02, init=init,
                                kl_floor=KL_FLOOR if grid.startswith("fitted set") else None,
                                **SAMPLERS[UNIPC_FAST[0]], **ENDS[end])


def grids_section(args) -> None:
  label = UNIPC_FAST[0]
  for sde_name in args.sdes:
    for nfe in args.nfes:
      if nfe - int(ENDS[args.end].get("denoise", False)) < 2:  # one solver step: nothing to fit
        continue
      t0 = time.perf_counter()
      out = fit_grid(args.grid, args.end, sde_name, nfe, args.grid_iters, args.workdir)
      emit({"benchmark": "sampler_kl_grid", "grid": args.grid, "sde": sde_name, "nfe": nfe, "sampler": label,
            "end": args.end, "fit_targets": FIT_NAMES[args.grid],
            "timesteps": out["timesteps"], "train_loss_last50": float(np.mean(out["loss"][-50:])),
            "iters": args.grid_iters, "seconds": round(time.perf_counter() - t0, 1)})
      kl_cell("grids", sde_name, SDES[sde_name], "2d default", label, nfe, args.grid, out["timesteps"], end=args.end)


BESPOKE_FITS = {"bespoke 2d default": ("2d default",), "bespoke set": FIT_SET,
                "bespoke 2d default, free start": ("2d default",), "bespoke set, free start": FIT_SET,
                "bespoke 2d default, gaussian start": ("2d default",),
                "bespoke set + network, free start": FIT_SET,  # and the FIT_SEED network (as the fast grids)
                "bespoke wide set + network, free start": WIDE_SET,
                # the first state from the Gaussian approximation's flow (`bespoke.bespoke_solve`), each
                # target's (and the network's, the default mixture's) own mean and covariance
                "bespoke wide set + network, gaussian start": WIDE_SET,
                # started from the one above, 8,192 latents per target and step (`--bespoke-batch`)
                "bespoke wide set + network, 8192 latents, free start": WIDE_SET,
                # fitted on the mixture they are measured on, as Shaul et al. fit one solver per model
                "bespoke 3d narrow, free start": ("3d narrow",), "bespoke 2d ring, free start": ("2d ring",),
                "bespoke 2d four modes, free start": ("2d four modes",),
                "bespoke fit 3d narrow, free start": ("fit 3d narrow",),
                "bespoke fit 2d circle, free start": ("fit 2d circle",)}
FREE_START_SHIFT = 0.1  # a free-start fit from a solver that evaluates at T first starts at lambda(T) + this
BESPOKE_TARGETS = ("2d default", "3d three modes", "3d narrow", "2d ring")  # the "nfe" tables' targets


def bespoke_inits(grids: dict, sde_name: str, nfe: int, free: bool = False,
                  gaussian: bool = False) -> list[list[float]]:
  """Where the bespoke fits start (the best by training loss is kept; the fit has local minima): the
  evaluation points of the "fitted set" grid with the "half" end at nfe (its interior points and
  sigma_end), and n - 1 points at the bin midpoints of [-1, 1] and of [-2, 2.5] in log-SNR (with a free
  start, n points there)."""
  mid = lambda a, b, k=nfe - 1: list(a + (b - a) * (np.arange(k) + 0.5) / k)
  if gaussian:  # the Gaussian start covers the flow down to lambda_0 ~ -2 (RESULTS' notes)
    return [mid(-2.0, 3.0, nfe)]
  if free:  # all n points are fitted
    return [mid(-1.0, 1.0, nfe), mid(-2.0, 2.5, nfe)]
  interior = grids.get(("fitted set", "half", sde_name, nfe))
  inits = [list(interior) + [float(-np.log(ENDS["half"]["sigma_end"]))]] if interior is not None else []
  return inits + [mid(-1.0, 1.0), mid(-2.0, 2.5)]


def fast_start(sde, nfe: int, timesteps, free: bool) -> tuple[list, list]:
  """(points, coefficients) of the earlier fast configs' UniPC-3 on its grid at nfe (`grid_opt.coefficients_of`;
  with a free start `grid_opt.with_free_start`, the first point at lambda(T) + FREE_START_SHIFT)."""
  lams, coefficients = grid_opt.coefficients_of(sde, n_steps=nfe, **SAMPLERS[UNIPC_FAST[0]], **ENDS[UNIPC_FAST[1]],
                                                schedule="custom", timesteps=timesteps)
  return grid_opt.with_free_start(sde, lams, coefficients, FREE_START_SHIFT) if free else (lams, coefficients)


def gaussian_drop(points: list, coefficients: list, drop: int) -> tuple[list, list]:
  """The solver of (points, coefficients) with its first `drop` evaluations left out for the Gaussian
  start (`grid_opt.with_gaussian_start`) and `drop` evaluations inserted, each at the middle of the widest
  gap between its points (`grid_opt.with_inserted_evaluation`): the same NFE and almost the same output
  (RESULTS' notes), a start from which a fit can spend the evaluations where the modes separate."""
  points, coefficients = grid_opt.with_gaussian_start(points, coefficients, drop)
  for _ in range(drop):
    after = int(np.argmax(np.diff(points)))
    points, coefficients = grid_opt.with_inserted_evaluation(points, coefficients, after,
                                                             0.5 * (points[after] + points[after + 1]))
  return points, coefficients


def bespoke_section(args, grids: dict) -> None:
  """Fits a bespoke solver (`grid_opt.optimise_bespoke`) per SDE and NFE on args.bespoke's targets
  (one mixture: its exact KL; a set: the mean of log(KL + KL_FLOOR)) and measures it at that NFE on
  the fit targets and BESPOKE_TARGETS (section "nfe") and, at 10 NFE, on every mixture ("heldout"), from
  65,536 latents (the first 16,384 those of the other cells): the fitted solvers' per-sample terms spread
  more than the fitted grids', so 16,384 leave a standard error of ~0.35e-3 at a KL of ~0.5e-3."""
  names, gauss = BESPOKE_FITS[args.bespoke], args.bespoke.endswith("gaussian start")
  free = gauss or args.bespoke.endswith("free start")
  if args.gaussian_drop and not (gauss and args.bespoke_start in BESPOKE_FITS):
    raise ValueError(f"--gaussian-drop={args.gaussian_drop} needs a gaussian-start fit (--bespoke) started from "
                     f"another fit (--bespoke-start); got {args.bespoke!r} from {args.bespoke_start!r}.")
  floor = (args.bespoke_floor or KL_FLOOR) if len(names) > 1 else None
  for sde_name in args.sdes:
    sde = SDES[sde_name]
    fit = [(TARGETS[n].score_fn(sde), TARGETS[n].log_prob, TARGETS[n].dim) for n in names]
    if "+ network" in args.bespoke:
      default = TARGETS["2d default"]
      fit.append((trained_score(sde_name, FIT_SEED, args.workdir)[1], default.log_prob, default.dim))
    fit_moments = [datasets.moments(TARGETS[n]) for n in names + ("2d default",) * ("+ network" in args.bespoke)]
    for nfe in args.nfes:
      t0, fits = time.perf_counter(), []
      starts = [(init, None) for init in bespoke_inits(grids, sde_name, nfe, free, gauss)]
      if args.bespoke_start == "fast":  # the earlier fast configs' UniPC-3 on its grid (`grid_opt.coefficients_of`)
        starts = [fast_start(sde, nfe, grids[(UNIPC_FAST[2], UNIPC_FAST[1], sde_name, nfe)], free)]
      elif args.bespoke_start != "dpm":  # another fit's solver in the JSON lines
        fits_there = load_bespoke(args.grids)
        if (args.bespoke_start, sde_name, nfe) not in fits_there:
          raise ValueError(f"--bespoke-start={args.bespoke_start!r}: no such fit for {sde_name} at {nfe} NFE in "
                           f"--grids={args.grids!r}; there: {sorted({k[0] for k in fits_there})}.")
        timesteps, coefficients, start_log_snr = fits_there[(args.bespoke_start, sde_name, nfe)]
        if (start_log_snr is not None) != free:
          raise ValueError(f"--bespoke-start={args.bespoke_start!r}: its free start must match {args.bespoke!r}'s.")
        starts = [([start_log_snr] * free + timesteps, coefficients)]
        if args.gaussian_drop:  # its first evaluations left out for the Gaussian start, as many put back
          starts = [gaussian_drop(*starts[0], args.gaussian_drop)]
      for init, coefficients in starts:
        out = grid_opt.optimise_bespoke(jax.random.key(1), sde, fit, n_steps=nfe, init_timesteps=init,
                                        init_coefficients=coefficients, batch_size=args.bespoke_batch,
                                        chunks=args.bespoke_chunks, n_iters=args.grid_iters,
                                        learning_rate=args.bespoke_lr, kl_floor=floor, free_start=free,
                                        start_moments=fit_moments if gauss else None)
        fits.append((float(np.mean(out["loss"][-50:])), init, out))
      loss, init, out = min(fits, key=lambda f: f[0])
      emit({"benchmark": "sampler_kl_bespoke", "grid": args.bespoke, "sde": sde_name, "nfe": nfe,
            "start": args.bespoke_start, "gaussian_drop": args.gaussian_drop,
            "fit_targets": list(names) + FIT_NAMES["fitted set + network"][-1:] * ("+ network" in args.bespoke),
            "timesteps": out["timesteps"], "coefficients": out["coefficients"],
            "start_log_snr": out["start_log_snr"], "gaussian_start": gauss, "folded": out["folded"],
            "train_loss_last50": loss, "init": init, "init_losses": [f[0] for f in fits], "iters": args.grid_iters,
            "learning_rate": args.bespoke_lr, "batch_size": args.bespoke_batch, "kl_floor": floor,
            "seconds": round(time.perf_counter() - t0, 1)})
      cells = [("nfe", t) for t in dict.fromkeys(list(names) + list(BESPOKE_TARGETS))]
      cells += [("heldout", t) for t in TARGETS] if nfe == 10 else []
      for section, target in cells:
        kl_cell(section, sde_name, sde, target, "bespoke", nfe, args.bespoke, out["timesteps"], end="fitted",
                coefficients=out["coefficients"], start_log_snr=out["start_log_snr"], n_batches=16,
                gaussian_start=gauss)


def drop_section(args) -> None:
  """The fit --bespoke-start (a 10-NFE free-start solver in the JSON lines) with its first k = 0..3
  evaluations left out for the Gaussian start (`grid_opt.with_gaussian_start`, no refit), 10 - k NFE,
  on every mixture from 65,536 latents, and with the trained network of the configs' seed (EVAL_SEED) on
  the default mixture: how many evaluations the data's mean and covariance replace."""
  fits = load_bespoke(args.grids)
  for sde_name in args.sdes:
    timesteps, coefficients, start_log_snr = fits[(args.bespoke_start, sde_name, 10)]
    network = trained_score(sde_name, EVAL_SEED, args.workdir)[1]
    for drop in range(4):
      points, kept = [start_log_snr] + timesteps, coefficients
      if drop:
        points, kept = grid_opt.with_gaussian_start(points, coefficients, drop)
      for target, score in [(t, "oracle") for t in TARGETS] + [("2d default", "model")]:
        kl_cell("drop", sde_name, SDES[sde_name], target, "bespoke", len(points), args.bespoke_start, points[1:],
                end="fitted", coefficients=kept, start_log_snr=points[0], n_batches=16, gaussian_start=True,
                score=score, score_fn=network if score == "model" else None)


def folds_section(args) -> None:
  """Where a sampler folds the latent space (det J_F <= 0 somewhere, `metrics.sampler_kl`'s "folded"): the
  change of variables fails there, so a table's KL for that cell is not a KL. Every bespoke fit in the JSON
  lines at its NFE on every mixture (and with the configs' trained network on the default one), and the
  fixed samplers on the log-SNR grid at 3, 4 and 6 NFE (the "half" end; EDM Heun, which has none, the
  Tweedie end); 8,192 latents each. --folds-part runs one of the two. The report marks the cells of the
  other sections by these rows (the "drop" section records its own)."""
  fits = load_bespoke(args.grids)
  for sde_name in args.sdes:
    sde = SDES[sde_name]
    network = None if args.folds_part == "fixed" else trained_score(sde_name, EVAL_SEED, args.workdir)[1]
    for (fit, s, nfe), (timesteps, coefficients, start_log_snr) in fits.items():
      if s != sde_name or args.folds_part == "fixed":
        continue
      for target, score in [(t, "oracle") for t in TARGETS] + [("2d default", "model")]:
        kl_cell("folds", sde_name, sde, target, "bespoke", nfe, fit, timesteps, end="fitted", coefficients=coefficients,
                start_log_snr=start_log_snr, n_batches=2, gaussian_start=fit.endswith("gaussian start"),
                score=score, score_fn=network if score == "model" else None)
    for label in SAMPLERS if args.folds_part != "bespoke" else []:
      for nfe in (3, 4, 6):
        for target in TARGETS:
          kl_cell("folds", sde_name, sde, target, label, nfe, "log_snr", n_batches=2,
                  end="tweedie" if label == "edm_heun" else "half")


def records(path: str, benchmark: str) -> list[dict]:
  """The JSON lines of one benchmark name in the file at path (none if there is no file)."""
  if not (path and os.path.exists(path)):
    return []
  rows = [json.loads(line) for line in open(path) if line.startswith("{")]
  return [r for r in rows if r.get("benchmark") == benchmark]


def load_grids(path: str) -> dict:
  """{(grid, end, sde, nfe): interior log-SNRs} of the fitted grids in the JSON lines (the last one
  wins; lines without "grid" and "end" are the earlier grids, fitted on the default mixture, Tweedie end)."""
  return {(r.get("grid", "fitted 2d default"), r.get("end", "tweedie"), r["sde"], r["nfe"]): r["timesteps"]
          for r in records(path, "sampler_kl_grid")}


def grid_points(grids: dict, grid: str, sde_name: str, sde, nfe: int, end: str):
  """(the interior log-SNRs, whether the grid exists) of a grid name at nfe (None: a fixed grid)."""
  if grid in sampling.SCHEDULES:
    return None, True
  if nfe - int(ENDS[end].get("denoise", False)) == 1:  # one solver step: no interior points
    return [], True
  if grid == "ays sd15":
    return ays.published_grid(sde, nfe, **_bounds(end)), True
  key = (grid, end, sde_name, nfe)
  return grids.get(key), key in grids


def run_section(args) -> None:
  grids = load_grids(args.grids)
  if args.section == "grids":
    return grids_section(args)
  if args.section == "model":
    return model_section(args, grids)
  if args.section == "bespoke":
    return bespoke_section(args, grids)
  if args.section == "drop":
    return drop_section(args)
  if args.section == "folds":
    return folds_section(args)
  for sde_name in args.sdes:
    sde = SDES[sde_name]
    if args.section == "nfe":
      for label in args.samplers:
        for schedule in args.schedules:
          for nfe in NFES:
            if (nfe >= 4 or args.end != "tweedie") and (nfe >= 3 or label != "edm_heun"):
              for target in args.targets:
                kl_cell("nfe", sde_name, sde, target, label, nfe, schedule, end=args.end)
      fitted = sorted({(g, e) for g, e, s, _ in grids if s == sde_name and (g, e) != ("fitted 2d default", "tweedie")})
      for grid, end in fitted + [("ays sd15", UNIPC_FAST[1])]:
        for nfe in GRID_NFES:
          timesteps, ok = grid_points(grids, grid, sde_name, sde, nfe, end)
          if ok and args.end == end:
            for target in args.targets:
              kl_cell("nfe", sde_name, sde, target, UNIPC_FAST[0], nfe, grid, timesteps, end=end)
    if args.section == "schedules":
      for label in args.samplers:
        for schedule in sampling.SCHEDULES:
          for nfe in (5, 10, 20):
            if schedule != "log_snr":  # the "nfe" section has it
              kl_cell("schedules", sde_name, sde, "2d default", label, nfe, schedule, end=args.end)
    if args.section == "heldout":
      for target in TARGETS:
        for label, end, grid in args.settings or HELDOUT_SETTINGS:
          timesteps, ok = grid_points(grids, grid, sde_name, sde, 10, end)
          if ok:
            kl_cell("heldout", sde_name, sde, target, label, 10, grid, timesteps, end=end)
    if args.section == "transfer":  # the base SDE's grids on other SDE parameters
      for name, (base, s) in SDE_VARIANTS.items():
        for target in ("2d default", "3d three modes", "3d narrow"):
          for label, end, grid in (HELDOUT_SETTINGS[0], HELDOUT_SETTINGS[2], UNIPC_FAST):
            if base == sde_name:
              kl_cell("transfer", name, s, target, label, 10, grid,
                      grid_points(grids, grid, sde_name, sde, 10, end)[0], end=end)


def model_section(args, grids: dict) -> None:
  """The learned score: the network of configs/{ve,vp}_gmm.py (seed EVAL_SEED, which no grid was
  fitted with), its KL at 10 NFE (the fast configs' setting, the earlier ones and DPM-Solver++(2M)
  on the log-SNR grid) against UniPC at 500 NFE, where the sampler error is gone and what is left
  is the model's."""
  for sde_name in args.sdes:
    exp, score_fn = trained_score(sde_name, EVAL_SEED, args.workdir)
    for (label, end, grid), nfe in () if args.bespoke_only else MODEL_CELLS:
      timesteps = grid_points(grids, grid, sde_name, exp.sde, nfe, end)[0]
      for score in ("model", "oracle"):
        kl_cell("model", sde_name, exp.sde, "2d default", label, nfe, grid, timesteps, end=end,
                score_fn=score_fn if score == "model" else None, score=score)
    fits = load_bespoke(args.grids)
    for fit, nfe in BESPOKE_MODEL_CELLS:
      if (fit, sde_name, nfe) in fits and (not args.bespoke_only or fit in args.bespoke_only.split(";")):
        timesteps, coefficients, start_log_snr = fits[(fit, sde_name, nfe)]
        for score in ("model", "oracle"):
          kl_cell("model", sde_name, exp.sde, "2d default", "bespoke", nfe, fit, timesteps, end="fitted",
                  score_fn=score_fn if score == "model" else None, score=score, coefficients=coefficients,
                  start_log_snr=start_log_snr, n_batches=16, gaussian_start=fit.endswith("gaussian start"))


BESPOKE_MODEL_CELLS = (("bespoke 2d default", 4), ("bespoke 2d default", 6), ("bespoke set", 5),
                       ("bespoke 2d default, free start", 3), ("bespoke 2d default, free start", 4),
                       ("bespoke set + network, free start", 10), ("bespoke wide set + network, free start", 10),
                       ("bespoke wide set + network, gaussian start", 10),
                       ("bespoke 2d default, gaussian start", 2), ("bespoke 2d default, gaussian start", 3),
                       ("bespoke 2d default, gaussian start", 4))


def load_bespoke(path: str) -> dict:
  """{(fit, sde, nfe): (timesteps, coefficients, start_log_snr)} of the bespoke solvers in the JSON lines
  (the last wins)."""
  return {(r["grid"], r["sde"], r["nfe"]): (r["timesteps"], r["coefficients"], r.get("start_log_snr"))
          for r in records(path, "sampler_kl_bespoke")}


MODEL_CELLS = ((UNIPC_FAST, 10), ((UNIPC_FAST[0], UNIPC_FAST[1], "fitted set"), 10),
               (("unipc_2", "tweedie", "fitted 2d default"), 10),
               (HELDOUT_SETTINGS[0], 10),
               (("unipc_2", "tweedie", "log_snr"), 10), (("unipc_2", "tweedie", "log_snr"), 500))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--section", choices=("grids", "nfe", "schedules", "heldout", "transfer", "model",
                                                "bespoke", "drop", "folds"))
  parser.add_argument("--bespoke", default="bespoke 2d default", choices=tuple(BESPOKE_FITS),
                      help="section bespoke: its fit targets (with --nfes, --grid-iters)")
  parser.add_argument("--bespoke-lr", type=float, default=0.05, help="section bespoke: Adam's step size")
  parser.add_argument("--bespoke-start", default="dpm", choices=("dpm", "fast") + tuple(BESPOKE_FITS),
                      help="section bespoke: DPM-Solver++(2M) on three grids, the earlier fast configs' UniPC-3 "
                           "(10 NFE), or a fit's solver in the JSON lines (--grids)")
  parser.add_argument("--gaussian-drop", type=int, default=0,
                      help="section bespoke, a gaussian-start fit from another fit (--bespoke-start): leave out its "
                           "first evaluations and insert as many (`gaussian_drop`)")
  parser.add_argument("--bespoke-batch", type=int, default=2048, help="section bespoke: latents per target and step")
  parser.add_argument("--bespoke-chunks", type=int, default=1,
                      help="section bespoke: slices of those latents (`grid_opt.mean_kl_loss`)")
  parser.add_argument("--bespoke-floor", type=float, default=None,
                      help=f"section bespoke, a set: the floor of the mean log KL (default KL_FLOOR = {KL_FLOOR})")
  parser.add_argument("--bespoke-only", default="",
                      help="section model: only these bespoke fits' cells (names separated by ';')")
  parser.add_argument("--folds-part", default="all", choices=("all", "bespoke", "fixed"),
                      help="section folds: the bespoke fits, the fixed samplers, or both")
  parser.add_argument("--grid", default="fitted set + network", choices=tuple(FIT_NAMES),
                      help="section grids (with --end)")
  parser.add_argument("--targets", default="2d default", help="section nfe")
  parser.add_argument("--settings", default="", help="section heldout: sampler/end/grid;... (default: all)")
  parser.add_argument("--nfes", default=",".join(map(str, GRID_NFES)), help="section grids")
  parser.add_argument("--grid-iters", type=int, default=300)
  parser.add_argument("--workdir", default="/tmp/sampler_kl_runs", help="trained models (section model)")
  parser.add_argument("--sde", default="ve,vp")
  parser.add_argument("--end", default="tweedie", choices=tuple(ENDS), help="sections grids, nfe and schedules")
  parser.add_argument("--samplers", default=",".join(SAMPLERS), help="sections nfe and schedules")
  parser.add_argument("--schedules", default="log_snr", help="section nfe")
  parser.add_argument("--grids", default=os.path.join(ROOT, "benchmarks", "sampler_kl.jsonl"),
                      help="JSON lines holding the fitted grids")
  parser.add_argument("--from-jsonl", help="rebuild tables and plot from saved JSON lines")
  parser.add_argument("--write", action="store_true")
  args = parser.parse_args()
  args.sdes, args.samplers, args.schedules = args.sde.split(","), args.samplers.split(","), args.schedules.split(",")
  args.targets = args.targets.split(",")
  args.settings = [tuple(x.split("/")) for x in args.settings.split(";") if x]
  args.nfes = [int(n) for n in args.nfes.split(",")]
  if args.from_jsonl:
    import sampler_kl_report  # benchmarks/ is on sys.path when run as a script

    rows = [json.loads(line) for line in open(args.from_jsonl) if line.startswith("{")]
    text = sampler_kl_report.report(rows)
    print(text)
    if args.write:
      sampler_kl_report.write(rows, text)
  else:
    run_section(args)


if __name__ == "__main__":
  main()
