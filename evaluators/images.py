"""Evaluations on image datasets: samples, test bits/dim, a digits Frechet distance, class samples."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import likelihood
import metrics
import sharding
from evaluators.base import Context
from evaluators.conditional import class_sampler, guided_scores
from evaluators.features import train_digits_classifier
from models import digits


def image_keys(ctx: Context) -> dict:
  """The named eval streams of image runs: sample, nll, frechet, feature classifier, class."""
  key_sample, key_metrics = jax.random.split(ctx.key)
  key_metrics, key_clf, key_class = jax.random.split(key_metrics, 3)
  key_nll, key_fd = jax.random.split(key_metrics)
  return {"sample": key_sample, "nll": key_nll, "frechet": key_fd, "classifier": key_clf, "class": key_class}


def check_digits(target, names) -> None:
  """The Frechet distance and per-class accuracy need labelled 8x8 grey images.

  Raises:
    ValueError: naming the evaluator and the dataset's shape.
  """
  for name in ("frechet", "class_images"):
    if name in names and (tuple(target.shape) != digits.IMAGE_SHAPE or not target.has_labels):
      raise ValueError(f"eval.evaluators contains {name!r}, which needs labelled 8x8 grey images (the digits "
                       f"classifier's input); the dataset has shape {target.shape}"
                       f"{'' if target.has_labels else ' and no labels'}. Remove it from eval.evaluators.")


def feature_classifier(ctx: Context, classifier: dict):
  """The digits classifier of the Frechet distance and the per-class accuracy, trained once."""
  if "feature_classifier" not in ctx.cache:
    t = ctx.target
    ctx.cache["feature_classifier"] = train_digits_classifier(
        image_keys(ctx)["classifier"], t.train_x, t.train_y, t.test_x, t.test_y,
        data_range=(0.0, t.levels - 1.0), **classifier)
  return ctx.cache["feature_classifier"]


def image_samples(ctx: Context, *, n_samples: int) -> tuple[dict, dict]:
  """n_samples samples with the configured sampler (in the data range)."""
  x, nfe = jax.block_until_ready(ctx.model_sampler(n_samples)(image_keys(ctx)["sample"], ctx.params))
  x = sharding.to_host(x)
  return ({"n_samples": n_samples, "nfe": int(nfe), "sampler": ctx.sampler_summary(),
           "n_nonfinite": int(np.sum(~np.isfinite(x)))}, {"model": x})


def bits_per_dim(ctx: Context, *, nll_samples: int, nll_batch_size: int) -> tuple[dict, dict]:
  """Test-split bits/dim of the first nll_samples test images by the dequantisation bound
  (`likelihood.dequantized_bits_per_dim`); 0 skips it."""
  if not nll_samples:
    return {}, {}
  t, t0 = ctx.target, time.time()
  out = likelihood.dequantized_bits_per_dim(
      image_keys(ctx)["nll"], ctx.likelihood_fn, ctx.score_fn(), t.test_x[:nll_samples], n_bins=t.levels,
      data_range=t.data_range, batch_size=nll_batch_size)
  out["wall_s"] = time.time() - t0
  return {"bits_per_dim": out}, {}


def _frechet(key, target, x: np.ndarray, clf) -> dict:
  u = np.asarray(target.quantize(jnp.asarray(x)))
  out = metrics.classifier_frechet_distance(key, u, target.train_x, target.test_x, classifier=clf)
  out.update(classifier_train_accuracy=clf.train_accuracy, ratio=out["fd"] / out["fd_floor"])
  return out


def frechet(ctx: Context, *, classifier: dict) -> tuple[dict, dict]:
  """The digits-classifier Frechet distance of the samples (quantised to the data's levels) to the
  test split, with its train-vs-test floor at the same set sizes."""
  clf = feature_classifier(ctx, classifier)
  return {"frechet": _frechet(image_keys(ctx)["frechet"], ctx.target, ctx.arrays["model"], clf)}, {}


def class_images(ctx: Context, *, n_class_samples: int, classifier: dict) -> tuple[dict, dict]:
  """n_class_samples samples of every class with classifier-free guidance at guidance.w; per class
  the fraction the digits classifier assigns to the class asked for; pooled, the Frechet distance."""
  t, key = ctx.target, image_keys(ctx)["class"]
  make_score, _ = guided_scores(ctx)["cfg"]
  fn = class_sampler(ctx, n_class_samples, make_score)
  x = np.stack([sharding.to_host(fn(jax.random.fold_in(key, k), k, ctx.params)[0]) for k in range(t.num_classes)])
  clf = feature_classifier(ctx, classifier)
  pooled = x.reshape((-1,) + x.shape[2:])
  pred = np.asarray(jnp.argmax(clf.logits(np.asarray(t.quantize(jnp.asarray(pooled)))), axis=-1)).reshape(x.shape[:2])
  out = {"guidance_w": float(ctx.guidance.get("w", 0.0)), "n_per_class": n_class_samples,
         "classes": {str(k): {"classifier_accuracy": float(np.mean(pred[k] == k))} for k in range(len(x))},
         "classifier_accuracy": float(np.mean(pred == np.arange(len(x))[:, None])),
         "frechet": _frechet(jax.random.fold_in(key, 10_000), t, pooled, clf)}
  return {"per_class": out}, {"per_class": x}


EVALUATORS = {"image_samples": image_samples, "bits_per_dim": bits_per_dim, "frechet": frechet,
              "class_images": class_images}
