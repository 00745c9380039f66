"""Training data: toy targets with exact densities and scores (`toy`), image datasets (`images`),
built by name from the config's `data` group."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from datasets.bits import AnalogBits, DigitsBits
from datasets.images import DIGITS_N_TEST, DIGITS_SPLIT_SEED, Digits, ImageDataset, NpzImages
from datasets import symmetric
from datasets.posterior import MixturePosterior, linear_gaussian_posterior
from datasets.toy import DEFAULT_COVS, DEFAULT_MEANS, DEFAULT_WEIGHTS, Box1D, GaussianMixture, Target
from utils import Registry

DATASETS = Registry("data", "name")
for _name, _cls in (("gmm", GaussianMixture), ("box1d", Box1D), ("bits", AnalogBits), ("digits", Digits),
                    ("npz", NpzImages), ("digits_bits", DigitsBits)):
  DATASETS.register(_name, _cls)
for _name, _cls in symmetric.TARGETS.items():  # sym_ring, sym_particles, sym_particles_e2
  DATASETS.register(_name, _cls)
from datasets.subspace import PlanarMixture  # noqa: E402
DATASETS.register("planar_gmm", PlanarMixture)


def is_image_dataset_name(name) -> bool:
  """Whether data.name=`name` is a registered image dataset."""
  return name in DATASETS and issubclass(DATASETS.get(name), ImageDataset)


def is_image_dataset(target) -> bool:
  """Whether `target` is an image dataset (no exact density; images [N, H, W, C])."""
  return isinstance(target, ImageDataset)


def register_dataset(name: str, cls) -> None:
  """Adds a target class to the registry used by `get_dataset` and the configs."""
  DATASETS.register(name, cls)


def get_dataset(name: str, **kwargs) -> Target:
  """Builds a target by registry name; kwargs are its fields.

  Raises:
    ValueError: unknown name or field, or a malformed parameter.
  """
  return DATASETS.build(name, **kwargs)


MAX_MOMENT_DIM = 4096  # moments' d x d covariance: 3072^2 (CIFAR-10) is 75 MB in float64, 12288^2 1.2 GB


def moments(target, n: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
  """(mean [d], covariance [d, d]) in float64 of the data flattened to d numbers: a toy target's exact
  `mean()` and `cov()`, else those of n samples of the training data (key(0)).

  Raises:
    ValueError: d above MAX_MOMENT_DIM (the covariance would not fit in memory comfortably).
  """
  if hasattr(target, "mean") and hasattr(target, "cov"):
    return np.asarray(target.mean(), np.float64), np.asarray(target.cov(), np.float64)
  d = int(target.dim)
  if d > MAX_MOMENT_DIM:
    raise ValueError(f"the data's moments (sampling.start_moments=\"data\") need a {d} x {d} covariance; at most "
                     f"{MAX_MOMENT_DIM} numbers per example are allowed. Use start_moments=None.")
  x = np.asarray(target.sample(jax.random.key(0), n), np.float64).reshape(n, -1)
  return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def get_batch_fn(target, *, labelled: bool = False) -> Callable:
  """batch_fn(data, key, n) -> x [n, ...], or {"x", "y" (int32)} when `labelled`; `data` is the
  dataset passed into the jitted step as an argument (an image dataset), or None to use `target`."""

  def batch_fn(data, key, n):
    source = target if data is None else data
    if labelled:
      x, y = source.sample_with_labels(key, n)
      return {"x": x, "y": y.astype(jnp.int32)}
    return source.sample(key, n)

  return batch_fn
