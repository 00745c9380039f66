"""Analog bits evaluations: the total variation of decoded categories on the categorical toy, and
the Frechet distance of decoded digits (Chen, Zhang & Hinton 2023)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

import sharding
from datasets.bits import decode_bits
from evaluators.base import Context
from evaluators.images import _frechet, feature_classifier, image_keys


def bits_tv(ctx: Context, *, n_floor_sets: int = 20) -> tuple[dict, dict]:
  """Total variation 1/2 sum_k |f_k - pi_k| of the model's decoded samples (ctx.arrays["model"],
  from the `samples` evaluator) against the floor of as many exact draws (mean over n_floor_sets)."""
  t, x = ctx.target, ctx.arrays["model"]
  floor = t.total_variation_floor(jax.random.fold_in(ctx.key, 64), len(x), n_floor_sets)
  tv = t.total_variation(x)
  return {"bits_tv": {"tv": tv, "floor": floor, "ratio": tv / floor, "n": len(x)}}, {}


def bits_frechet(ctx: Context, *, classifier: dict, n_grid: int) -> tuple[dict, dict]:
  """Decoded analog-bit digits (`DigitsBits.quantize`: threshold, clip to 16): the Frechet distance
  to the test split in the digits classifier's features with its train-vs-test floor at the same
  n, the fraction of pixels whose code exceeded 16, and plots/samples_grid.png of the decoded images."""
  t, x = ctx.target, ctx.arrays["model"]
  clf = feature_classifier(ctx, classifier)
  out = _frechet(image_keys(ctx)["frechet"], t, x, clf)
  codes = decode_bits((np.asarray(x) > 0).astype(np.int64), t.code)
  out["frac_codes_above_max"] = float(np.mean(codes > t.levels - 1))
  out["frac_bits_near_zero"] = float(np.mean(np.abs(np.asarray(x)) < 0.5))
  if ctx.plots_dir and sharding.is_primary():
    import plotting

    u = np.asarray(t.quantize(jnp.asarray(x[:n_grid])))
    plotting.plot_image_grid(os.path.join(ctx.plots_dir, "samples_grid.png"), u / (t.levels - 1.0))
  return {"frechet": out}, {}


EVALUATORS = {"bits_tv": bits_tv, "bits_frechet": bits_frechet}
