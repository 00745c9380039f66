"""Linear measurement operators for inverse problems, y = A x + sigma_y n.

An operator acts on batches: `A(x)` maps x [B, *in_shape] to y [B, *out_shape] and `AT(y)` is
its transpose. Operators with an SVD, A = U diag(s) V^T (as in DDRM, Kawar et al. 2022),
also give it in *spectral coordinates shaped like x*: `Vt(x)` and `V(u)` are the orthogonal
maps x <-> u = V^T x, `s` holds the singular values at their spectral positions (zero on the
null space, broadcastable to in_shape), `Ut(y)` puts U^T y at the positions `rows` (zeros
elsewhere) and `U` inverts it. Then A x = U(s Vt(x)) and the pseudo-inverse is
A^+ y = V(s^+ Ut(y)).

Instances: `Mask` (inpainting; y shaped like x, entries at mask = 0 ignored), `ChannelMix`
(a matrix over the last axis; `ChannelMix.grey` is colorization), `AvgPool` (super-resolution),
`SeparableBlur` (a separable blur with zero boundary), `Dense` (any matrix on flattened x) and
`FunctionOperator` (A and A^T as functions, no SVD).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from utils import bcast

Array = jax.Array


def colorization_basis(n_channels: int) -> np.ndarray:
  """An orthogonal [C, C] matrix M whose first row is (1, ..., 1) / sqrt(C).

  u = M x (per pixel, over channels) has u_0 = sqrt(C) grey with grey the channel mean, and
  u_1.. spanning the colour directions orthogonal to grey (Song et al. 2021, App. I.2).

  Raises:
    ValueError: n_channels < 2.
  """
  if not (isinstance(n_channels, (int, np.integer)) and n_channels >= 2):
    raise ValueError(f"n_channels={n_channels!r} must be an integer >= 2 for colorization.")
  a = np.eye(n_channels)
  a[:, 0] = 1.0
  q, _ = np.linalg.qr(a)
  q = q * np.sign(q[0, 0])  # first column +1/sqrt(C)
  return q.T


def _shape(name: str, shape) -> tuple[int, ...]:
  try:
    shape = tuple(int(s) for s in shape)
  except TypeError:
    raise ValueError(f"{name}={shape!r} must be a tuple of positive integers.") from None
  if not shape or any(s < 1 for s in shape):
    raise ValueError(f"{name}={shape!r} must be a non-empty tuple of positive integers.")
  return shape


def _f32(a) -> Array:
  return jnp.asarray(np.asarray(a, np.float64), jnp.float32)


def _pinv_values(s: np.ndarray) -> np.ndarray:
  """1 / s where s > 0, else 0 (float64, so 1 / (1 / sqrt(C)) rounds as sqrt(C))."""
  return np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)


class LinearOperator:
  """y = A x on batches; subclasses set `in_shape`, `out_shape` and the maps below.

  Attributes:
    in_shape, out_shape: per-sample shapes of x and y.
    has_svd: whether Vt, V, Ut, U, s, rows are available.
    identity_basis: V = I (spectral coordinates are x itself), as for masks.
  """

  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  has_svd = True
  identity_basis = False

  def A(self, x: Array) -> Array:
    raise NotImplementedError

  def AT(self, y: Array) -> Array:
    raise NotImplementedError

  # --- the SVD in x-shaped spectral coordinates (operators with has_svd) ---
  s: Array  # singular values, broadcastable to in_shape; 0 on the null space
  rows: Array  # 1 where a spectral position holds a coordinate of U^T y
  s_pinv: Array  # 1 / s where s > 0, else 0

  def Vt(self, x: Array) -> Array:
    raise NotImplementedError

  def V(self, u: Array) -> Array:
    raise NotImplementedError

  def Ut(self, y: Array) -> Array:
    raise NotImplementedError

  def U(self, v: Array) -> Array:
    raise NotImplementedError

  @property
  def known(self) -> Array:
    """1 at the spectral positions that y determines (s > 0), else 0."""
    return (self.s > 0).astype(jnp.float32)

  def spectral_data(self, y: Array) -> Array:
    """y_bar = s^+ U^T y: the spectral coordinates of A^+ y (zero on the null space)."""
    return self.Ut(y) * self.s_pinv

  def pinv(self, y: Array) -> Array:
    """A^+ y, the least-norm x with A x = y (for y in the range of A)."""
    return self.V(self.spectral_data(y))

  def observe(self, key: Array, x: Array, sigma_y: float = 0.0) -> Array:
    """y = A x + sigma_y n, n ~ N(0, I)."""
    y = self.A(x)
    return y + sigma_y * jax.random.normal(key, y.shape, y.dtype) if sigma_y else y

  def log_likelihood(self, y: Array, x0: Array, r2: Array, sigma_y: float) -> Array:
    """log N(y; A x0, r2 A A^T + sigma_y^2 I) up to a term constant in x0; [B].

    With the SVD the covariance is exact (U diag(r2 s^2 + sigma_y^2) U^T; directions of zero
    variance, possible only when sigma_y = 0, are left out); without it the covariance is
    (r2 + sigma_y^2) I, exact for A with orthonormal rows. r2 is a scalar or [B].
    """
    B = x0.shape[0]
    r2 = jnp.broadcast_to(jnp.asarray(r2, x0.dtype), (B,))
    if not self.has_svd:
      res = y - self.A(x0)
      return -0.5 * jnp.sum(jnp.reshape(res**2, (B, -1)), -1) / (r2 + sigma_y**2)
    v = self.Ut(y - self.A(x0))
    var = bcast(r2, v) * self.s**2 + sigma_y**2
    use = (self.rows > 0) & (var > 0)
    term = jnp.where(use, v**2 / jnp.where(use, var, 1.0), 0.0)
    return -0.5 * jnp.sum(jnp.reshape(term, (B, -1)), -1)

  def check_y(self, y, batch: int) -> None:
    """ValueError unless y has shape [batch, *out_shape]."""
    want = (batch,) + tuple(self.out_shape)
    if tuple(np.shape(y)) != want:
      raise ValueError(f"y.shape={tuple(np.shape(y))} must be [B, *out_shape] = {want} for {self!r}.")

  def check_x_shape(self, shape) -> None:
    """ValueError unless the sampler's shape is [B, *in_shape]."""
    if tuple(shape[1:]) != tuple(self.in_shape):
      raise ValueError(f"shape={tuple(shape)} must be [B, *in_shape] with in_shape={self.in_shape} "
                       f"for {self!r}.")

  def matrix(self) -> np.ndarray:
    """The dense matrix [m, D] of A on flattened x (m, D the sizes of out_shape, in_shape)."""
    d = int(np.prod(self.in_shape))
    basis = jnp.eye(d, dtype=jnp.float32).reshape((d,) + tuple(self.in_shape))
    return np.asarray(self.A(basis), np.float64).reshape(d, -1).T

  def __repr__(self) -> str:
    return f"{type(self).__name__}(in_shape={self.in_shape}, out_shape={self.out_shape})"


class Mask(LinearOperator):
  """Inpainting: A x = mask * x, y shaped like x (values at mask = 0 are ignored); U = V = I.

  `mask` (1 = known) is broadcastable to [B, *shape]; it may be per sample and may be traced.
  """

  identity_basis = True

  def __init__(self, mask, shape: Sequence[int]):
    self.in_shape = self.out_shape = _shape("shape", shape)
    try:
      np.broadcast_shapes(tuple(jnp.shape(mask)), (1,) + self.in_shape)
    except ValueError:
      raise ValueError(f"mask.shape={tuple(jnp.shape(mask))} must broadcast to [B, *shape] with "
                       f"shape={self.in_shape}.") from None
    self.mask = jnp.asarray(mask, jnp.float32)
    self.s = self.s_pinv = self.mask
    self.rows = jnp.ones((), jnp.float32)

  def A(self, x):
    return self.mask * x

  def AT(self, y):
    return self.mask * y

  def Vt(self, x):
    return x

  V = U = Ut = Vt

  @property
  def known(self):
    return self.mask

  def spectral_data(self, y):
    return y  # the entries at mask = 0 are ignored by every method


class ChannelMix(LinearOperator):
  """A per-pixel matrix over the last axis: y[..., o] = sum_c W[o, c] x[..., c], W [C_out, C_in].

  SVD W = U_w diag(s_w) V_w^T (numpy), C_out <= C_in; `ChannelMix.grey` is colorization.
  """

  def __init__(self, W, shape: Sequence[int], *, _svd=None):
    self.in_shape = _shape("shape", shape)
    W = np.asarray(W, np.float64)
    if W.ndim != 2 or W.shape[1] != self.in_shape[-1] or W.shape[0] > W.shape[1]:
      raise ValueError(f"W.shape={W.shape} must be [C_out, C_in] with C_in = shape[-1] = "
                       f"{self.in_shape[-1]} and C_out <= C_in.")
    c_out, c_in = W.shape
    self.out_shape = self.in_shape[:-1] + (c_out,)
    u_w, s_w, vh = np.linalg.svd(W) if _svd is None else _svd
    s = np.zeros(c_in)
    s[:c_out] = s_w
    self.W, self._Uw, self._Vh = _f32(W), _f32(u_w), _f32(vh)
    self.s, self.s_pinv = _f32(s), _f32(_pinv_values(s))
    self.rows = _f32(np.arange(c_in) < c_out)
    self._pad = c_in - c_out

  @classmethod
  def grey(cls, shape: Sequence[int]) -> "ChannelMix":
    """The channel mean (colorization), its V^T the `colorization_basis` of shape[-1] channels."""
    c = int(_shape("shape", shape)[-1])
    M = colorization_basis(c)
    return cls(np.ones((1, c)) / c, shape, _svd=(np.ones((1, 1)), np.array([1.0 / np.sqrt(c)]), M))

  def A(self, x):
    return x @ self.W.T

  def AT(self, y):
    return y @ self.W

  def Vt(self, x):
    return x @ self._Vh.T

  def V(self, u):
    return u @ self._Vh

  def Ut(self, y):
    v = y @ self._Uw
    return jnp.concatenate([v, jnp.zeros(v.shape[:-1] + (self._pad,), v.dtype)], -1) if self._pad else v

  def U(self, v):
    return v[..., :self.out_shape[-1]] @ self._Uw.T


def _check_image_shape(shape) -> tuple[int, int, int]:
  shape = _shape("shape", shape)
  if len(shape) != 3:
    raise ValueError(f"shape={shape} must be an image shape (H, W, C).")
  return shape


class AvgPool(LinearOperator):
  """Super-resolution: the mean over factor x factor pixel blocks of x [B, H, W, C].

  Per block, V^T is the `colorization_basis` of the factor^2 pixels (first row constant), so
  s = 1 / factor at each block's corner and 0 elsewhere; U = I.
  """

  def __init__(self, factor: int, shape: Sequence[int]):
    H, W, C = self.in_shape = _check_image_shape(shape)
    if not (isinstance(factor, (int, np.integer)) and factor >= 2 and H % factor == 0 and W % factor == 0):
      raise ValueError(f"factor={factor!r} must be an integer >= 2 dividing H={H} and W={W}.")
    self.f = f = int(factor)
    self.out_shape = (H // f, W // f, C)
    self._Q = _f32(colorization_basis(f * f))
    corner = np.zeros((H, W, C))
    corner[::f, ::f, :] = 1.0
    self.s, self.s_pinv, self.rows = _f32(corner / f), _f32(corner * f), _f32(corner)

  def _blocks(self, x):  # [B, H, W, C] -> [B, H/f, W/f, f*f, C]
    B, (H, W, C), f = x.shape[0], self.in_shape, self.f
    return x.reshape(B, H // f, f, W // f, f, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, H // f, W // f, f * f, C)

  def _unblocks(self, b):
    B, (H, W, C), f = b.shape[0], self.in_shape, self.f
    return b.reshape(B, H // f, W // f, f, f, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)

  def A(self, x):
    return jnp.mean(self._blocks(x), axis=3)

  def AT(self, y):
    f = self.f
    return jnp.repeat(jnp.repeat(y, f, axis=1), f, axis=2) / (f * f)

  def Vt(self, x):
    return self._unblocks(jnp.einsum("ij,bhwjc->bhwic", self._Q, self._blocks(x)))

  def V(self, u):
    return self._unblocks(jnp.einsum("ji,bhwjc->bhwic", self._Q, self._blocks(u)))

  def Ut(self, y):
    B, (H, W, C) = y.shape[0], self.in_shape
    return jnp.zeros((B, H, W, C), y.dtype).at[:, ::self.f, ::self.f, :].set(y)

  def U(self, v):
    return v[:, ::self.f, ::self.f, :]


def _apply2(x: Array, P: Array, Q: Array) -> Array:
  """y[b, i, k, c] = sum_{j, l} P[i, j] Q[k, l] x[b, j, l, c]."""
  return jnp.einsum("ij,kl,bjlc->bikc", P, Q, x)


def _blur_matrix(n: int, kernel: np.ndarray) -> np.ndarray:
  r = len(kernel) // 2
  M = np.zeros((n, n))
  for i in range(n):
    for j in range(max(0, i - r), min(n, i + r + 1)):
      M[i, j] = kernel[j - i + r]
  return M


class SeparableBlur(LinearOperator):
  """A blur of x [B, H, W, C] by the outer product of a 1-D kernel with itself, zero boundary
  ("same" size): A = B_H (x) B_W per channel, its SVD from the two 1-D matrices' SVDs.

  Args:
    kernel: an odd-length 1-D kernel (e.g. `gaussian_kernel(1.0)`).
    shape: (H, W, C).
  """

  def __init__(self, kernel, shape: Sequence[int]):
    H, W, C = self.in_shape = self.out_shape = _check_image_shape(shape)
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim != 1 or len(kernel) % 2 != 1 or not np.all(np.isfinite(kernel)):
      raise ValueError(f"kernel={kernel.tolist()} must be a finite 1-D array of odd length.")
    mats = [_blur_matrix(n, kernel) for n in (H, W)]
    svds = [np.linalg.svd(m) for m in mats]
    (self._Bh, self._Bw) = (_f32(m) for m in mats)
    (self._Uh, sh, self._Vh), (self._Uw, sw, self._Vw) = [(_f32(u), s, _f32(vh)) for u, s, vh in svds]
    s = np.broadcast_to((sh[:, None] * sw[None, :])[:, :, None], (H, W, C))
    self.s, self.s_pinv, self.rows = _f32(s), _f32(_pinv_values(s)), jnp.ones((), jnp.float32)

  def A(self, x):
    return _apply2(x, self._Bh, self._Bw)

  def AT(self, y):
    return _apply2(y, self._Bh.T, self._Bw.T)

  def Vt(self, x):
    return _apply2(x, self._Vh, self._Vw)

  def V(self, u):
    return _apply2(u, self._Vh.T, self._Vw.T)

  def Ut(self, y):
    return _apply2(y, self._Uh.T, self._Uw.T)

  def U(self, v):
    return _apply2(v, self._Uh, self._Uw)


def gaussian_kernel(std: float, radius: int | None = None) -> np.ndarray:
  """A normalised 1-D Gaussian kernel of width 2 radius + 1 (default radius ceil(2 std)).

  Raises:
    ValueError: std <= 0 or radius < 1.
  """
  if not (isinstance(std, (int, float)) and std > 0):
    raise ValueError(f"std={std!r} must be > 0.")
  radius = int(np.ceil(2 * std)) if radius is None else radius
  if not (isinstance(radius, (int, np.integer)) and radius >= 1):
    raise ValueError(f"radius={radius!r} must be an integer >= 1.")
  k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / std) ** 2)
  return k / k.sum()


class Dense(LinearOperator):
  """Any matrix A [m, D] on the flattened x [B, *shape] (D = prod(shape), m <= D); SVD by numpy."""

  def __init__(self, matrix, shape: Sequence[int]):
    self.in_shape = _shape("shape", shape)
    A = np.asarray(matrix, np.float64)
    d = int(np.prod(self.in_shape))
    if A.ndim != 2 or A.shape[1] != d or A.shape[0] > d or not np.all(np.isfinite(A)):
      raise ValueError(f"matrix.shape={A.shape} must be [m, D] with D = prod(shape) = {d}, m <= D, finite.")
    m = A.shape[0]
    self.out_shape = (m,)
    u, s_m, vh = np.linalg.svd(A)
    s = np.zeros(d)
    s[:len(s_m)] = s_m
    self._A, self._U, self._Vh, self._m, self._d = _f32(A), _f32(u), _f32(vh), m, d
    self.s, self.s_pinv = _f32(s.reshape(self.in_shape)), _f32(_pinv_values(s).reshape(self.in_shape))
    self.rows = _f32((np.arange(d) < m).reshape(self.in_shape))

  def _flat(self, x):
    return x.reshape(x.shape[0], self._d)

  def A(self, x):
    return self._flat(x) @ self._A.T

  def AT(self, y):
    return (y @ self._A).reshape((y.shape[0],) + self.in_shape)

  def Vt(self, x):
    return (self._flat(x) @ self._Vh.T).reshape(x.shape)

  def V(self, u):
    return (self._flat(u) @ self._Vh).reshape(u.shape)

  def Ut(self, y):
    v = y @ self._U
    v = jnp.concatenate([v, jnp.zeros((v.shape[0], self._d - self._m), v.dtype)], -1)
    return v.reshape((y.shape[0],) + self.in_shape)

  def U(self, v):
    return self._flat(v)[:, :self._m] @ self._U.T


class FunctionOperator(LinearOperator):
  """A and A^T given as functions of batches, without an SVD (`has_svd` False): methods that
  need the SVD (replacement, DDRM) refuse it; guidance, DPS and SMC use the isotropic likelihood."""

  has_svd = False

  def __init__(self, A: Callable[[Array], Array], AT: Callable[[Array], Array], in_shape: Sequence[int],
               out_shape: Sequence[int]):
    if not (callable(A) and callable(AT)):
      raise ValueError(f"A={A!r} and AT={AT!r} must be callables on batches.")
    self._fn, self._fn_t = A, AT
    self.in_shape, self.out_shape = _shape("in_shape", in_shape), _shape("out_shape", out_shape)

  def A(self, x):
    return self._fn(x)

  def AT(self, y):
    return self._fn_t(y)


def require_svd(op: LinearOperator, method: str) -> None:
  """ValueError unless op is a LinearOperator with an SVD (method names the caller)."""
  if not isinstance(op, LinearOperator):
    raise ValueError(f"operator={op!r} must be a sampling.operators.LinearOperator.")
  if not op.has_svd:
    raise ValueError(f"operator={op!r} has no SVD, which {method} needs; use Mask, ChannelMix, AvgPool, "
                     "SeparableBlur or Dense.")
