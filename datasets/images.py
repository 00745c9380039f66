"""Image datasets with a fixed train/test split: the sklearn digits and a user's .npz file.

They have no exact density; they hold the integer train images on device and draw dequantised,
scaled batches there (see `ImageDataset`). They are pytrees whose leaves are those arrays, so a
jitted train step can take the dataset as an argument instead of baking the images into the
executable.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from utils import DATA_RANGES

Array = jax.Array

DIGITS_N_TEST = 297  # of 1,797; the rest (1,500) train
DIGITS_SPLIT_SEED = 0


class _Identity:
  """Pytree aux data: the dataset's static fields and host arrays, compared by the identity
  of the dataset they were built with (a token copied into every unflattened copy)."""

  def __init__(self, obj):
    self.obj = obj

  def __eq__(self, other):
    return isinstance(other, _Identity) and other.obj._token is self.obj._token

  def __hash__(self):
    return id(self.obj._token)


class ImageDataset:
  """Integer images u in {0, ..., levels - 1}^(H x W x C) with a fixed train/test split.

  Training batches are drawn on device: random indices, a gather, uniform dequantisation
  and scaling to the data range,

      x = a (u + v) / levels + b,   v ~ U[0, 1)^D,   (a, b) = (2, -1) for [-1, 1], (1, 0) for [0, 1],

  and optional horizontal flips. x lies in the half-open cell [a u / levels + b, a (u + 1) / levels + b),
  so `quantize` recovers u exactly, and a density p_X on these x gives the discrete
  likelihood bound of `likelihood.bits_per_dim` with n_bins = levels (Theis et al. 2016).
  Without dequantisation, x is the cell centre, v = 1/2.

  Subclasses set, in __post_init__: `levels`, `_train_x` (uint8 device array [N, H, W, C]),
  `_train_y` (int32 [N], -1 where unlabelled), `test_x` / `test_y` (numpy), `has_labels`.
  """

  data_range: str
  dequantize: bool
  random_flip: bool
  levels: int

  def _init_arrays(self, train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, levels: int) -> None:
    if self.data_range not in DATA_RANGES:
      raise ValueError(f"data.data_range={self.data_range!r} is unknown; valid: {list(DATA_RANGES)}.")
    has_labels = train_y is not None
    set_ = functools.partial(object.__setattr__, self)
    set_("_token", object())
    set_("levels", int(levels))
    set_("has_labels", has_labels)
    set_("_train_x", jnp.asarray(train_x, jnp.uint8))
    set_("_train_y", jnp.asarray(train_y if has_labels else np.full(len(train_x), -1), jnp.int32))
    set_("test_x", np.asarray(test_x, np.uint8))
    set_("test_y", None if test_y is None else np.asarray(test_y, np.int64))

  @property
  def shape(self) -> tuple[int, int, int]:
    """One example's shape (H, W, C)."""
    return tuple(int(s) for s in self._train_x.shape[1:])

  @property
  def dim(self) -> int:
    return math.prod(self.shape)

  @property
  def n_train(self) -> int:
    return int(self._train_x.shape[0])

  @property
  def train_x(self) -> np.ndarray:
    """The integer train images [N, H, W, C] (host copy)."""
    return np.asarray(self._train_x)

  @property
  def train_y(self) -> np.ndarray:
    return np.asarray(self._train_y)

  @property
  def num_classes(self) -> int:
    """1 + the largest label (0 without labels)."""
    return int(self.train_y.max()) + 1 if self.has_labels else 0

  def _affine(self) -> tuple[float, float]:
    """(a, b) = (hi - lo, lo) of the data range (lo, hi): x = a w / levels + b."""
    lo, hi = DATA_RANGES[self.data_range]
    return hi - lo, lo

  @property
  def data_bounds(self) -> tuple[float, float]:
    """The data range as (lo, hi)."""
    return DATA_RANGES[self.data_range]

  def scale(self, u: Array, v: Array | float = 0.5) -> Array:
    """x = a (u + v) / levels + b: integer images u and offsets v in [0, 1) to the data range."""
    a, b = self._affine()
    return a * (jnp.asarray(u, jnp.float32) + v) / self.levels + b

  def quantize(self, x: Array) -> Array:
    """The integer image u whose cell holds x (the inverse of `scale`), clipped to 0..levels-1; int32."""
    a, b = self._affine()
    return jnp.clip(jnp.floor((x - b) / a * self.levels), 0, self.levels - 1).astype(jnp.int32)

  def to_unit(self, x: Array) -> Array:
    """x in the data range mapped to [0, 1] (for plotting)."""
    a, b = self._affine()
    return (x - b) / a

  def dequantized(self, key: Array, u: Array) -> Array:
    """u + v, v ~ U[0, 1), scaled (or the cell centres without `dequantize`); float32, shaped like u."""
    if not self.dequantize:
      return self.scale(u)
    return self.scale(u, jax.random.uniform(key, u.shape))

  def sample_with_labels(self, key: Array, n: int) -> tuple[Array, Array]:
    """n training images [n, H, W, C] (dequantised, scaled, maybe flipped) and labels [n] (-1: none)."""
    key_i, key_v, key_f = jax.random.split(key, 3)
    idx = jax.random.randint(key_i, (n,), 0, self.n_train)
    x = self.dequantized(key_v, self._train_x[idx])
    if self.random_flip:
      flip = jax.random.bernoulli(key_f, 0.5, (n, 1, 1, 1))
      x = jnp.where(flip, x[:, :, ::-1, :], x)
    return x, self._train_y[idx]

  def sample(self, key: Array, n: int) -> Array:
    """n training images; [n, H, W, C]."""
    return self.sample_with_labels(key, n)[0]

  def _tree_flatten(self):
    return (self._train_x, self._train_y), _Identity(self)

  @classmethod
  def _tree_unflatten(cls, aux: _Identity, leaves):
    obj = object.__new__(cls)
    obj.__dict__.update(aux.obj.__dict__)
    object.__setattr__(obj, "_train_x", leaves[0])
    object.__setattr__(obj, "_train_y", leaves[1])
    return obj


def _register_image_dataset(cls):
  jax.tree_util.register_pytree_node(cls, cls._tree_flatten, cls._tree_unflatten)
  return cls


@_register_image_dataset
@dataclasses.dataclass(frozen=True, eq=False)
class Digits(ImageDataset):
  """The 8x8 handwritten digits of scikit-learn (UCI optdigits; 1,797 images, grey levels 0..16).

  Shipped with scikit-learn, so nothing is downloaded. Fixed split: a permutation of the
  1,797 images by numpy's default_rng(0); the first 297 are the test set, the other 1,500
  the train set. levels = 17, shape (8, 8, 1); labels 0..9.
  """

  data_range: str = "[-1,1]"
  dequantize: bool = True
  random_flip: bool = False

  def __post_init__(self):
    from sklearn.datasets import load_digits  # only when the digits are used

    bunch = load_digits()
    u = np.rint(bunch.images).astype(np.uint8)[..., None]
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(u))
    test, train = perm[:DIGITS_N_TEST], perm[DIGITS_N_TEST:]
    self._init_arrays(u[train], bunch.target[train], u[test], bunch.target[test], levels=17)


def _load_npz_array(path: str, f, key: str, *, ndim: int, dtype) -> np.ndarray:
  a = np.asarray(f[key])
  if a.ndim != ndim or a.dtype != dtype:
    want = "[N, H, W, C]" if ndim == 4 else "[N]"
    raise ValueError(f"data.path={path!r}: array {key!r} must be {np.dtype(dtype).name} {want}; "
                     f"got {a.dtype} with shape {a.shape}.")
  return a


@_register_image_dataset
@dataclasses.dataclass(frozen=True, eq=False)
class NpzImages(ImageDataset):
  """Images from a user's .npz: `x` uint8 [N, H, W, C], optional `y` integer labels [N],
  and optionally a test split `x_test` (and `y_test`); e.g. CIFAR-10 or MNIST saved as a file.

  Without `x_test`, a fixed split holds out `n_test` images (a permutation by
  default_rng(0)). `levels` is the number of grey levels (256 for 8-bit images); every
  value must be below it.
  """

  path: str = ""
  data_range: str = "[-1,1]"
  dequantize: bool = True
  random_flip: bool = False
  levels: int = 256
  n_test: int = 1000

  def __post_init__(self):
    if not self.path or not os.path.isfile(self.path):
      raise ValueError(f"data.path={self.path!r} is not a file; give a .npz with x (uint8 [N, H, W, C]).")
    try:
      f = np.load(self.path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for a file that is not an npz
      raise ValueError(f"data.path={self.path!r} is not a readable .npz: {type(e).__name__}: {e}") from None
    with f:
      if "x" not in f:
        raise ValueError(f"data.path={self.path!r} has no array 'x'; it holds {sorted(f.keys())}.")
      get = functools.partial(_load_npz_array, self.path, f)
      x = get("x", ndim=4, dtype=np.uint8)
      y = self._labels(f, "y", len(x))
      if "x_test" in f:
        x_test, y_test = get("x_test", ndim=4, dtype=np.uint8), self._labels(f, "y_test", None)
      else:
        x, y, x_test, y_test = self._split(x, y)
    if x_test.shape[1:] != x.shape[1:]:
      raise ValueError(f"data.path={self.path!r}: x_test images {x_test.shape[1:]} differ from x {x.shape[1:]}.")
    if not 2 <= self.levels <= 256 or max(int(x.max()), int(x_test.max())) >= self.levels:
      raise ValueError(f"data.levels={self.levels!r} must lie in 2..256 and exceed every value in "
                       f"{self.path!r} (max {max(int(x.max()), int(x_test.max()))}).")
    self._init_arrays(x, y, x_test, y_test, levels=self.levels)

  def _labels(self, f, key: str, n: int | None):
    if key not in f:
      return None
    y = np.asarray(f[key])
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (n is not None and len(y) != n):
      raise ValueError(f"data.path={self.path!r}: {key!r} must be integer labels [N]; "
                       f"got {y.dtype} with shape {y.shape}.")
    return y

  def _split(self, x, y):
    if not isinstance(self.n_test, int) or not 1 <= self.n_test < len(x):
      raise ValueError(f"data.n_test={self.n_test!r} must lie in 1..{len(x) - 1} (the file has no x_test).")
    perm = np.random.default_rng(0).permutation(len(x))
    test, train = perm[:self.n_test], perm[self.n_test:]
    return x[train], None if y is None else y[train], x[test], None if y is None else y[test]
