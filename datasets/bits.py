"""Discrete data as analog bits (Chen, Zhang & Hinton 2023, "Analog Bits"): a categorical toy and
the digits with their grey levels as bits.

Category k in [0, 2^n_bits) is encoded as its n_bits binary digits (most significant first)
scaled to {-1, +1}; a continuous diffusion model is trained on these vectors, and a sample is
decoded by thresholding each coordinate at 0. The data distribution is a mixture of point
masses, sum_k pi_k delta(x - c_k), so under a linear SDE

    p_t(x) = sum_k pi_k N(x; alpha c_k, sigma^2 I),
    grad log p_t(x) = -sum_k r_k(x) (x - alpha c_k) / sigma^2,  r_k the responsibilities,

exact for every t > 0 (the oracle). The quality measure is the total variation distance between
the decoded categories' frequencies and pi, against the floor of as many exact draws.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from datasets.images import Digits, _register_image_dataset
from datasets.toy import Target, _per_example

Array = jax.Array


CODES = ("binary", "gray")


def bit_codes(n_bits: int, code: str = "binary") -> np.ndarray:
  """[2^n_bits, n_bits] in {-1, +1}: row k holds the digits of k ("binary") or of its reflected Gray
  code k ^ (k >> 1) ("gray": consecutive k differ in one bit), most significant first."""
  k = np.arange(2**n_bits)[:, None]
  if code == "gray":
    k = k ^ (k >> 1)
  return 2.0 * ((k >> np.arange(n_bits - 1, -1, -1)[None, :]) & 1) - 1.0


def decode_bits(bits, code: str = "binary"):
  """Integers of 0/1 digit arrays [..., n_bits] (most significant first) in `code` (numpy or jax)."""
  n_bits = bits.shape[-1]
  if code == "gray":  # binary digit j = XOR of the Gray digits 0..j
    bits = bits.cumsum(axis=-1) % 2
  shifts = np.arange(n_bits - 1, -1, -1)
  return (bits << shifts).sum(-1)


@dataclasses.dataclass(frozen=True, eq=False)
class AnalogBits(Target):
  """Categories k = 0 .. 2^n_bits - 1 with probabilities pi_k ∝ decay^k, as analog bits.

  Args:
    n_bits: bits per category (6: 64 categories).
    decay: pi_k ∝ decay^k, in (0, 1] (1: uniform).

  Raises:
    ValueError: n_bits outside [1, 12] or decay outside (0, 1].
  """

  n_bits: int = 6
  decay: float = 0.95

  def __post_init__(self):
    if not (isinstance(self.n_bits, (int, np.integer)) and 1 <= self.n_bits <= 12):
      raise ValueError(f"data.n_bits={self.n_bits!r} must be an integer in [1, 12].")
    if not (isinstance(self.decay, (int, float)) and 0 < self.decay <= 1):
      raise ValueError(f"data.decay={self.decay!r} must lie in (0, 1].")
    p = float(self.decay) ** np.arange(2**self.n_bits)
    object.__setattr__(self, "probs", p / p.sum())
    object.__setattr__(self, "_codes", jnp.asarray(bit_codes(self.n_bits), jnp.float32))
    object.__setattr__(self, "_logp", jnp.asarray(np.log(p / p.sum()), jnp.float32))

  @property
  def dim(self) -> int:
    return int(self.n_bits)

  @property
  def n_categories(self) -> int:
    return 2**self.n_bits

  def sample_labels(self, key: Array, n: int) -> Array:
    """n exact category draws [n] (int32)."""
    return jax.random.categorical(key, self._logp, shape=(n,))

  def sample(self, key: Array, n: int) -> Array:
    """n exact draws as analog bits [n, n_bits]."""
    return self._codes[self.sample_labels(key, n)]

  def encode(self, labels: Array) -> Array:
    """Categories [n] -> analog bits [n, n_bits]."""
    return self._codes[jnp.asarray(labels)]

  def decode(self, x: Array) -> Array:
    """Analog bits [n, n_bits] -> categories [n]: each bit is 1 where x > 0."""
    bits = (jnp.asarray(x) > 0).astype(jnp.int32)
    return jnp.sum(bits << jnp.arange(self.n_bits - 1, -1, -1), axis=-1)

  def log_prob_t(self, x, alpha, sigma):
    """log p_t(x) for sigma > 0 (the data themselves are point masses); [B]."""
    a, s = _per_example(alpha, x), _per_example(sigma, x)
    sq = jnp.sum((x[:, None, :] - a[:, :, None] * self._codes[None]) ** 2, -1)  # [B, K]
    d = x.shape[1]
    return logsumexp(self._logp - 0.5 * sq / s**2, axis=-1) - 0.5 * d * jnp.log(2 * jnp.pi * s[:, 0] ** 2)

  def score_t(self, x, alpha, sigma):
    """-sum_k r_k (x - alpha c_k) / sigma^2 (module docstring); [B, n_bits]."""
    a, s = _per_example(alpha, x), _per_example(sigma, x)
    diff = x[:, None, :] - a[:, :, None] * self._codes[None]  # [B, K, d]
    r = jax.nn.softmax(self._logp - 0.5 * jnp.sum(diff**2, -1) / s**2, axis=-1)
    return -jnp.einsum("bk,bkd->bd", r, diff) / s**2

  def mean(self) -> np.ndarray:
    return self.probs @ bit_codes(self.n_bits)

  def cov(self) -> np.ndarray:
    c = bit_codes(self.n_bits)
    m = self.probs @ c
    return np.einsum("k,ki,kj->ij", self.probs, c, c) - np.outer(m, m)

  def total_variation(self, x) -> float:
    """TV = 1/2 sum_k |f_k - pi_k| of the decoded samples' frequencies f against pi."""
    labels = np.asarray(self.decode(x))
    f = np.bincount(labels, minlength=self.n_categories) / len(labels)
    return 0.5 * float(np.sum(np.abs(f - self.probs)))

  def total_variation_floor(self, key: Array, n: int, n_sets: int = 20) -> float:
    """The mean `total_variation` of n exact draws (over n_sets sets): what a perfect sampler gets."""
    return float(np.mean([self.total_variation(self.sample(jax.random.fold_in(key, i), n))
                          for i in range(n_sets)]))


@_register_image_dataset
@dataclasses.dataclass(frozen=True, eq=False)
class DigitsBits(Digits):
  """The 8x8 digits with each pixel's grey level (0..16) as n_bits analog bits (Chen et al. 2023):
  images [N, 8, 8, n_bits] in {-1, +1}, most significant bit first. `quantize` decodes by
  thresholding at 0 and clips codes above 16 to 16, giving the integer images of `Digits`.

  Args:
    n_bits: bits per pixel, >= 5 (17 levels need 5).
    code: "binary" (Chen et al.) or "gray" (the reflected Gray code: neighbouring grey levels differ
      in one bit, so one wrong bit near a level's neighbours moves the pixel by one level, where in
      binary it can move it by up to 16).
    data_range, random_flip: as `Digits` (the range only matters for `scale` of integer images).

  Raises:
    ValueError: n_bits < 5 or > 8, or dequantize=True (bits are exact).
  """

  dequantize: bool = False
  n_bits: int = 5
  code: str = "binary"

  def __post_init__(self):
    if not (isinstance(self.n_bits, (int, np.integer)) and 5 <= self.n_bits <= 8):
      raise ValueError(f"data.n_bits={self.n_bits!r} must be an integer in [5, 8] (17 grey levels).")
    if self.code not in CODES:
      raise ValueError(f"data.code={self.code!r} must be one of {list(CODES)}.")
    if self.dequantize:
      raise ValueError("data.dequantize=True does not apply to analog bits (they are exact); set it to False.")
    super().__post_init__()
    object.__setattr__(self, "_codes", jnp.asarray(bit_codes(self.n_bits, self.code), jnp.float32))

  @property
  def shape(self) -> tuple[int, int, int]:
    return tuple(int(s) for s in self._train_x.shape[1:3]) + (int(self.n_bits),)

  def dequantized(self, key: Array, u: Array) -> Array:
    """The analog bits [..., H, W, n_bits] of integer images u [..., H, W, 1] (key unused)."""
    del key
    return self._codes[jnp.asarray(u)[..., 0].astype(jnp.int32)]

  def quantize(self, x: Array) -> Array:
    """Analog bits [..., n_bits] -> integer images [..., 1] in 0..levels-1 (threshold at 0, clip)."""
    u = decode_bits((jnp.asarray(x) > 0).astype(jnp.int32), self.code)[..., None]
    return jnp.minimum(u, self.levels - 1)
