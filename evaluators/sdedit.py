"""SDEdit on the digits with the trained score model: the realism / faithfulness trade-off over t0
(Meng et al. 2022) for a coarse guide (2x2-pooled, then block-upsampled) and a noisy guide."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

import sampling
import utils
import workdir as wd
from evaluators.base import Context
from evaluators.images import _frechet, feature_classifier, image_keys
from evaluators.inverse import GRID_IMAGES, observation_image
from sampling import operators as O

NOISE_STD = 0.5  # the noisy guide: x + NOISE_STD z on the [-1, 1] scale


def guides(key, x: np.ndarray) -> dict:
  """name -> guide images: "coarse" = A^+ A x for 2x2 average pooling; "noisy" = x + 0.5 z."""
  pool = O.AvgPool(2, x.shape[1:])
  return {"coarse": observation_image(pool, pool.A(jnp.asarray(x))),
          "noisy": x + NOISE_STD * np.asarray(jax.random.normal(key, x.shape))}


def sdedit_digits(ctx: Context, *, sdedit_n: int, sdedit_t0: list, sdedit_n_steps: int,
                  classifier: dict) -> tuple[dict, dict]:
  """SDEdit (`sampling.get_sdedit_sampler`, reverse SDE and probability-flow ODE) of the first
  sdedit_n test digits' coarse and noisy guides at each t0 of sdedit_t0; per guide, solver and t0:
  the Frechet distance to the test split (realism), the RMSE to the guide (faithfulness), the
  RMSE to the source image and the classifier's agreement with its class. Figures:
  plots/sdedit_tradeoff.png (FD against the distance to the guide), plots/sdedit_<guide>.png
  (rows: the guide, the SDE output at each t0, the source)."""
  utils.check_int("eval.sdedit_n", sdedit_n, 2)
  for v in sdedit_t0:
    utils.check_real("eval.sdedit_t0", v, low=0.0, high=ctx.sde.T, low_open=True)
  t, clf = ctx.target, feature_classifier(ctx, classifier)
  x_src = np.asarray(t.scale(t.test_x[:sdedit_n]))
  labels = np.asarray(t.test_y[:sdedit_n])
  key = jax.random.fold_in(image_keys(ctx)["sample"], 19)
  key_fd = jax.random.fold_in(image_keys(ctx)["frechet"], 19)
  rmse = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))
  summary, curves, arrays = {}, {}, {}
  for gname, g in guides(jax.random.fold_in(key, 1), x_src).items():
    rows = {"guide": g[:GRID_IMAGES]}
    summary[gname] = {"guide": {"frechet": _frechet(key_fd, t, g, clf)["fd"], "rmse_source": rmse(g, x_src)}}
    for mode, pf in (("sde", False), ("ode", True)):
      sampler = sampling.get_sdedit_sampler(ctx.sde, g.shape, n_steps=sdedit_n_steps, probability_flow=pf)
      for t0 in sdedit_t0:
        with wd.phase(f"sdedit {gname} {mode} t0 = {t0}"):
          x, nfe = jax.block_until_ready(sampler(key, ctx.score_fn(), g, float(t0)))
        x = np.asarray(x)
        pred = np.asarray(jnp.argmax(clf.logits(np.asarray(t.quantize(jnp.asarray(x)))), -1))
        row = {"t0": float(t0), "frechet": _frechet(key_fd, t, x, clf)["fd"], "rmse_guide": rmse(x, g),
               "rmse_source": rmse(x, x_src), "class_agreement": float(np.mean(pred == labels)), "nfe": int(nfe)}
        summary[gname].setdefault(mode, []).append(row)
        curves.setdefault(f"{gname}, {mode}", []).append(row)
        if mode == "sde":
          rows[f"t0={t0:g}"] = x[:GRID_IMAGES]
          arrays[f"sdedit_{gname}_t{t0:g}"] = x
    rows["source"] = x_src[:GRID_IMAGES]
    if ctx.plots_dir:
      import plotting_inverse
      plotting_inverse.plot_rows(os.path.join(ctx.plots_dir, f"sdedit_{gname}.png"), rows, t.data_bounds)
  if ctx.plots_dir:
    import plotting_inverse
    plotting_inverse.plot_tradeoff(os.path.join(ctx.plots_dir, "sdedit_tradeoff.png"), curves)
  return {"sdedit": summary}, arrays


EVALUATORS = {"sdedit_digits": sdedit_digits}
