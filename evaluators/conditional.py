"""Class-conditional evaluation on toy targets: guided samples of each class against the truth."""

from __future__ import annotations

import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import metrics
import sampling
import sharding
from evaluators.base import Context


def class_sampler(ctx: Context, n: int, make_score: Callable) -> Callable:
  """fn(key, label, *args) -> (x [n, ...], nfe): n samples of class `label` (traced), with the
  score make_score(y [n_pad], *args)."""
  n_pad = sharding.padded_size(n, ctx.mesh)
  fn = ctx.sampler(n, lambda label, *args: make_score(jnp.full((n_pad,), label, jnp.int32), *args))
  return lambda key, label, *args: fn(key, jnp.int32(label), *args)


def guided_scores(ctx: Context) -> dict:
  """name -> (make_score(y, *args), arg names) for every guidance the run allows: "cfg" (a
  class-conditional model at guidance w), "classifier" (the trained classifier at
  classifier_scale), and with ctx.oracle the exact conditional score and exact classifier."""
  w = float(ctx.guidance.get("w", 0.0))
  scale = float(ctx.guidance.get("classifier_scale", 0.0))
  out = {}
  if ctx.num_classes:
    out["cfg"] = (lambda y, p: sampling.classifier_free_guidance(functools.partial(ctx.model_score_fn, p), y, w),
                  ("params",))
  if ctx.classifier is not None and scale > 0:
    log_prob_fn, _ = ctx.classifier
    out["classifier"] = (lambda y, p, c: sampling.classifier_guidance(
        functools.partial(ctx.model_score_fn, p), functools.partial(log_prob_fn, c), y, scale), ("params", "classifier"))
  if ctx.oracle and hasattr(ctx.target, "conditional_score_fn"):
    cond, marginal = ctx.target.conditional_score_fn(ctx.sde), ctx.target.score_fn(ctx.sde)
    posterior = ctx.target.class_log_posterior_fn(ctx.sde)
    out["oracle_cfg"] = (lambda y: sampling.classifier_free_guidance(cond, y, w), ())
    # scale 1 with the exact posterior is Bayes' rule: exactly the conditional score.
    exact_scale = scale if scale > 0 else 1.0
    out["oracle_classifier"] = (lambda y: sampling.classifier_guidance(marginal, posterior, y, exact_scale), ())
  return out


def class_reference(target, label: int, key: jax.Array, n: int) -> np.ndarray:
  """n true samples of class `label`: the exact component, or labelled draws filtered by label."""
  if hasattr(target, "component"):
    return np.asarray(target.component(label).sample(key, n))
  chunks, have, i = [], 0, 0
  while have < n:
    x, y = target.sample_with_labels(jax.random.fold_in(key, i), 4 * n)
    keep = np.asarray(x)[np.asarray(y) == label]
    chunks.append(keep)
    have, i = have + len(keep), i + 1
    if i > 100:
      raise ValueError(f"class {label} is too rare to draw {n} reference samples.")
  return np.concatenate(chunks)[:n]


def per_class(ctx: Context, *, n_class_samples: int, n_floor_pairs: int) -> tuple[dict, dict]:
  """Per-class energy distances of guided samples (every guidance of `guided_scores`) against the
  true class distribution: n_class_samples samples vs n_floor_pairs true sets of the class; the
  floor is the mean energy distance between pairs of true class sets. Plots per class."""
  n = n_class_samples
  key = jax.random.fold_in(ctx.key, 11)
  bound = {"params": ctx.params, "classifier": None if ctx.classifier is None else ctx.classifier[1]}
  out, sets_by_label = {}, {}
  for name, (make_score, arg_names) in guided_scores(ctx).items():
    fn = class_sampler(ctx, n, make_score)
    args = [bound[a] for a in arg_names]
    for label in range(ctx.target.num_classes):
      x, _ = fn(jax.random.fold_in(key, label), label, *args)
      sets_by_label.setdefault(label, {})[name] = sharding.to_host(x)
  for label, sets in sets_by_label.items():
    k_ref = jax.random.fold_in(key, 1000 + label)
    refs = [class_reference(ctx.target, label, jax.random.fold_in(k_ref, i), n) for i in range(n_floor_pairs + 1)]
    floor = float(np.mean([metrics.energy_distance(refs[i], refs[i + 1]) for i in range(n_floor_pairs)]))
    row = {"floor": floor}
    for name, x in sets.items():
      ed = float(np.mean([metrics.energy_distance(x, r) for r in refs[1:]]))
      row[name] = {"energy_distance": ed, "energy_ratio": ed / floor}
    out[str(label)] = row
    sets["reference"] = refs[0]
  if ctx.plots_dir and sharding.is_primary():
    _plot_per_class(ctx, sets_by_label)
  return {"per_class": out}, {}


def _plot_per_class(ctx: Context, sets_by_label: dict) -> None:
  import plotting  # matplotlib only when plotting

  for label, sets in sets_by_label.items():
    target = ctx.target.component(label) if hasattr(ctx.target, "component") else None
    plotting.plot_samples(os.path.join(ctx.plots_dir, f"samples_class_{label}.png"), target, sets,
                          title=f"class {label}")


EVALUATORS = {"per_class": per_class}
