"""Digits inverse problems and SDEdit with the trained score model: super-resolution 4x4 -> 8x8,
inpainting of half images (replacement, reconstruction guidance, DPS, DDRM) and SDEdit from
coarse and corrupted guides, scored by the digits classifier (agreement with the source image's
class) and the Frechet distance to the test split."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

import sampling
import utils
import workdir as wd
from evaluators.base import Context
from evaluators.images import _frechet, feature_classifier, image_keys
from sampling import operators as O

INVERSE_METHODS = ("replacement", "guidance", "dps", "ddrm", "smc")
GRID_IMAGES, GRID_DRAWS = 10, 2  # grid columns (test images) and samples per method and image
LABELS = {"replacement": "repl", "guidance": "guid", "dps": "dps", "ddrm": "ddrm", "smc": "smc"}
SMC_SIGMA_Y = 0.05  # the observation noise SMC's final weights assume (the observations are exact)


def tasks(shape) -> dict:
  """name -> operator: "sr" (2x2 average pooling: 4x4 observed of 8x8), "inpaint" (top half known)."""
  mask = np.zeros(shape, np.float32)
  mask[: shape[0] // 2] = 1.0
  return {"sr": O.AvgPool(2, shape), "inpaint": O.Mask(jnp.asarray(mask), shape)}


def observation_image(op: O.LinearOperator, y) -> np.ndarray:
  """What the observation looks like as an image: A^+ y (block-constant for pooling, zero = mid-grey
  on the unknown pixels of a mask)."""
  return np.asarray(op.pinv(jnp.asarray(y)))


def _method(ctx: Context, name: str, op, n: int, n_steps: int, smc_particles: int = 8):
  """fn(key, y) -> (x, nfe) for one method with the model's score; published settings:
  replacement and guidance on PC reverse diffusion without
  corrector (n_steps), DPS zeta' = 1 on 2 n_steps steps, DDRM 20 steps with eta = 0.85, SMC
  (twisted diffusion sampler) with smc_particles particles on n_steps steps, sigma_y = SMC_SIGMA_Y.
  Guidance and SMC take their gradient through the Jacobian of Gaussian data
  (`sampling.inverse.guided_terms`, jacobian="gaussian"): through the U-Net's own Jacobian,
  guidance diverged to NaN on every digit (its error times sigma_t^2 / alpha_t at high noise;
  benchmarks/RESULTS.md, "Digits inverse problems")."""
  shape, score = (n,) + tuple(ctx.shape), ctx.score_fn()
  sde = dataclasses.replace(ctx.sde, N=n_steps)
  if name == "replacement":
    rep = sampling.get_replacement_sampler(sde, shape, op, corrector="none")
    return lambda key, y: rep(key, score, y)
  if name == "guidance":
    pc = sampling.get_sampler(sde, shape, corrector="none")
    return lambda key, y: pc(key, sampling.linear_guidance(sde, score, op, y, jacobian="gaussian"))
  if name == "dps":
    dps = sampling.get_dps_sampler(dataclasses.replace(ctx.sde, N=2 * n_steps), shape, op)
    return lambda key, y: dps(key, score, y)
  if name == "ddrm":
    ddrm = sampling.get_ddrm_sampler(sde, shape, op)
    return lambda key, y: ddrm(key, score, y)
  if name == "smc":
    smc = sampling.get_smc_sampler(sde, shape, op, sigma_y=SMC_SIGMA_Y, n_particles=smc_particles,
                                   jacobian="gaussian")
    return lambda key, y: smc(key, score, y)
  raise ValueError(f"eval.inverse_methods contains {name!r}; valid: {list(INVERSE_METHODS)}.")


def _scores(ctx: Context, clf, key, x, x_true, labels, op, y) -> dict:
  """Classifier agreement with the source class, FD to the test split, RMSE to the truth and the
  observation residual RMSE ||A x - y||."""
  t = ctx.target
  pred = np.asarray(jnp.argmax(clf.logits(np.asarray(t.quantize(jnp.asarray(x)))), -1))
  rmse = lambda a, b: float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))
  return {"class_agreement": float(np.mean(pred == labels)), "frechet": _frechet(key, t, x, clf)["fd"],
          "rmse_truth": rmse(x, x_true), "residual_rmse": rmse(op.A(jnp.asarray(x)), y),
          "n_nonfinite": int(np.sum(~np.isfinite(x)))}


def inverse_digits(ctx: Context, *, inverse_n: int, inverse_methods: list, inverse_n_steps: int,
                   classifier: dict, inverse_smc_particles: int = 8) -> tuple[dict, dict]:
  """Super-resolution and half-image inpainting of the first inverse_n test digits (sigma_y = 0)
  with each method of inverse_methods; per task and method the scores of `_scores`, and for the
  observations themselves (A^+ y) and the truth. Figures plots/inverse_<task>.png: rows the
  observation, GRID_DRAWS samples per method, the truth; columns GRID_IMAGES test images."""
  utils.check_int("eval.inverse_n", inverse_n, 2)
  utils.check_int("eval.inverse_n_steps", inverse_n_steps, 1)
  utils.check_int("eval.inverse_smc_particles", inverse_smc_particles, 1)
  bad = [m for m in inverse_methods if m not in INVERSE_METHODS]
  if bad or not inverse_methods:
    raise ValueError(f"eval.inverse_methods={list(inverse_methods)!r} must be a non-empty list of "
                     f"{list(INVERSE_METHODS)}.")
  t, clf = ctx.target, feature_classifier(ctx, classifier)
  x_true = np.asarray(t.scale(t.test_x[:inverse_n]))
  labels = np.asarray(t.test_y[:inverse_n])
  key = jax.random.fold_in(image_keys(ctx)["sample"], 18)
  key_fd = jax.random.fold_in(image_keys(ctx)["frechet"], 18)
  summary, arrays = {}, {}
  for task, op in tasks(tuple(ctx.shape)).items():
    y = op.A(jnp.asarray(x_true))
    n_img = min(GRID_IMAGES, inverse_n)
    rows = {"input": observation_image(op, y[:n_img])}
    out = {"observation": _scores(ctx, clf, key_fd, observation_image(op, y), x_true, labels, op, y),
           "truth": _scores(ctx, clf, key_fd, x_true, x_true, labels, op, y)}
    # One batch: the inverse_n images, then the first n_img again (GRID_DRAWS - 1) times for the grid.
    y_all = jnp.concatenate([y] + [y[:n_img]] * (GRID_DRAWS - 1))
    for name in inverse_methods:
      with wd.phase(f"inverse {task}: {name} on {inverse_n} test digits"):
        x, nfe = jax.block_until_ready(_method(ctx, name, op, len(y_all), inverse_n_steps,
                                                    inverse_smc_particles)(key, y_all))
        x = np.asarray(x)
        out[name] = _scores(ctx, clf, key_fd, x[:inverse_n], x_true, labels, op, y) | {"nfe": int(nfe)}
        for d in range(GRID_DRAWS):
          start = 0 if d == 0 else inverse_n + (d - 1) * n_img
          rows[f"{LABELS[name]} {d + 1}"] = x[start:start + n_img]
      arrays[f"inverse_{task}_{name}"] = x[:inverse_n]
    rows["truth"] = x_true[:n_img]
    summary[task] = out
    if ctx.plots_dir:
      import plotting_inverse
      plotting_inverse.plot_rows(os.path.join(ctx.plots_dir, f"inverse_{task}.png"), rows, t.data_bounds)
  return {"inverse": summary}, arrays


EVALUATORS = {"inverse_digits": inverse_digits}
