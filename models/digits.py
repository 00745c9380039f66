"""A small digits classifier trained by the project: the feature space of a digits "FID".

FID (Heusel et al. 2017) compares Gaussian fits of Inception-v3 features of generated and
real images. The 8x8 sklearn digits have no pretrained network, so the project trains its
own: a small MLP whose penultimate activations (`DigitsClassifier.features`) play the
role of the Inception pool features, and whose test accuracy is reported with every
distance (a feature space is only meaningful if the classifier actually separates digits).
`metrics.classifier_frechet_distance` computes the distance.

It is trained by `evaluators.features.train_digits_classifier` with the project's training
loop (`train.fit`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from utils import as_range

Array = jax.Array

N_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
_CHUNK = 512  # images per network call when computing features or logits


class DigitsNet(nn.Module):
  """MLP 64 - hidden - feature_dim [features] - 10 [logits], ReLU.

  Input: [n, 8, 8, 1] in [0, 1], flattened. Returns (logits [n, 10], features [n, feature_dim]).
  An MLP rather than a CNN: on 8x8 images it is as accurate (~98% test) and trains in
  a fraction of the time on a CPU.
  """

  feature_dim: int = 64
  hidden: int = 256

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    h = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1) - 0.5))
    features = nn.relu(nn.Dense(self.feature_dim)(h))
    return nn.Dense(N_CLASSES)(features), features


def check_range(data_range) -> tuple[float, float]:
  """(lo, hi) of the classifier's input range; the pair check is likelihood's."""
  return as_range(data_range, "data_range")


def images(x, name: str) -> np.ndarray:
  """x as float32 numpy [n, 8, 8, 1] (accepts [n, 8, 8] and [n, 64]), or a ValueError."""
  x = np.asarray(x)
  n = x.shape[0] if x.ndim else 0
  if x.ndim < 2 or n < 1 or math.prod(x.shape[1:]) != math.prod(IMAGE_SHAPE):
    raise ValueError(f"{name}.shape={x.shape} is invalid: must be [n, 8, 8, 1], [n, 8, 8] or "
                     "[n, 64] with n >= 1 (8x8 grey digits).")
  return x.reshape((n,) + IMAGE_SHAPE).astype(np.float32)


def to_unit(x: np.ndarray, data_range: tuple[float, float]) -> np.ndarray:
  """Maps data_range to [0, 1] and clips; non-finite values (a diverged sampler) become the
  nearest end (NaN -> lo), so they count as bad images rather than breaking the statistics."""
  lo, hi = data_range
  x = np.nan_to_num(x, nan=lo, posinf=hi, neginf=lo)
  return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


@functools.partial(jax.jit, static_argnames="feature_dim")
def _apply(params, x, *, feature_dim):
  return DigitsNet(feature_dim).apply({"params": params}, x)


@dataclasses.dataclass(frozen=True, eq=False)
class DigitsClassifier:
  """A trained `DigitsNet` and the data range its inputs are given in.

  Attributes:
    params: the network parameters.
    data_range: (lo, hi) of the inputs; they are mapped to [0, 1] and clipped.
    feature_dim: width of the penultimate layer (the features).
    test_accuracy: accuracy on the test split it was trained with.
    train_accuracy: accuracy on its training split.
  """

  params: Any
  data_range: tuple[float, float]
  feature_dim: int
  test_accuracy: float
  train_accuracy: float

  def _run(self, x, name: str = "x") -> tuple[Array, Array]:
    # Fixed-size chunks (the last one zero-padded): one compilation serves every set size.
    x = to_unit(images(x, name), self.data_range)
    n = x.shape[0]
    x = np.concatenate([x, np.zeros((-n % _CHUNK,) + IMAGE_SHAPE, np.float32)])
    outs = [_apply(self.params, jnp.asarray(x[i:i + _CHUNK]), feature_dim=self.feature_dim)
            for i in range(0, len(x), _CHUNK)]
    return tuple(jnp.concatenate(parts)[:n] for parts in zip(*outs))

  def logits(self, x) -> Array:
    """Class logits [n, 10] of images x ([n, 8, 8, 1], [n, 8, 8] or [n, 64]) in data_range."""
    return self._run(x)[0]

  def features(self, x) -> Array:
    """Penultimate-layer activations [n, feature_dim] of images x in data_range."""
    return self._run(x)[1]

  def accuracy(self, x, y) -> float:
    """Fraction of images x whose arg-max logit is the label y [n]."""
    return float(np.mean(np.argmax(np.asarray(self.logits(x)), axis=1) == np.asarray(y)))

  def with_data_range(self, data_range: tuple[float, float]) -> "DigitsClassifier":
    """The same network taking inputs in another range (e.g. a model's (-1, 1) samples)."""
    return dataclasses.replace(self, data_range=check_range(data_range))


def labels(y, n: int, name: str) -> np.ndarray:
  y = np.asarray(y)
  if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= N_CLASSES:
    raise ValueError(f"{name} (shape {y.shape}, dtype {y.dtype}) is invalid: must be integer "
                     f"labels 0..{N_CLASSES - 1}, shape ({n},).")
  return y.astype(np.int32)
