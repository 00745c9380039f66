"""Linear inverse problems y = A x + sigma_y n by replacement and reconstruction guidance:
inpainting, colorization and any `sampling.operators` operator (Song et al. 2021, App. I.2;
Ho et al. 2022; Chung et al. 2023; Song et al. 2023). DPS, DDRM and the SMC sampler live in
`dps.py`, `ddrm.py` and `smc.py`."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import utils
from sampling.base import ScoreFn, as_pytree_fn, start
from sampling.operators import ChannelMix, LinearOperator, Mask, colorization_basis, require_svd
from sampling.pc import PCSettings, pc_settings, pc_solve
from utils import bcast, fold, normal

Array = jax.Array


def impose_known(x: Array, x_known: Array, mask: Array) -> Array:
  """mask * x_known + (1 - mask) * x: the known coordinates (mask = 1) set exactly."""
  mask = jnp.broadcast_to(jnp.asarray(mask, x.dtype), x.shape)
  return mask * jnp.asarray(x_known, x.dtype) + (1.0 - mask) * x


def _diffused_known(keys: Array, sde: sde_lib.SDE, x_known: Array, t: Array) -> Array:
  """A fresh forward-diffused copy alpha_t x_known + sigma_t z of the known data; row i from keys[i]."""
  mean, std = sde.marginal_prob(x_known, t)
  return mean + bcast(std, x_known) * normal(keys, x_known)


def _check_mask(shape, x_known, mask) -> None:
  if tuple(jnp.shape(x_known)) != tuple(shape):
    raise ValueError(f"x_known.shape={tuple(jnp.shape(x_known))} must equal the sampler's shape={tuple(shape)}.")
  try:
    np.broadcast_shapes(tuple(jnp.shape(mask)), tuple(shape))
  except ValueError:
    raise ValueError(f"mask.shape={tuple(jnp.shape(mask))} must broadcast to shape={tuple(shape)}.") from None


def _inpaint(cfg: PCSettings, key, score_fn, x_known, mask):
  """The PC loop with the known coordinates replaced after every step; (x, nfe)."""
  sde, B = cfg.sde, cfg.shape[0]
  x, keys = start(key, sde, cfg.shape, None)
  known_keys = fold(keys, 2)

  def replace(x, t, m):  # substep m draws the known part's noise from fold_in(fold_in(key_i, 2), m)
    return impose_known(x, _diffused_known(fold(known_keys, m), sde, x_known, t), mask)

  x = replace(x, jnp.full((B,), sde.T), 0)
  x, _ = pc_solve(cfg, score_fn, fold(keys, 1), x, hook=replace)
  return impose_known(x, x_known, mask), cfg.nfe


def get_inpainting_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, predictor: str = "reverse_diffusion",
                           corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
                           probability_flow: bool = False, denoise: bool = True,
                           eps: float = 1e-3) -> Callable:
  """Inpainting / imputation by replacement (Song et al. 2021, App. I.2) on the PC sampler's grid.

  The unknown coordinates (mask = 0) follow the PC sampler; after every corrector step at t_k
  and every predictor step to t_{k+1} the known ones (mask = 1) are replaced by a fresh
  forward-diffused copy alpha_t x_known + sigma_t z of the data at that time. At the end the
  sample is denoised with Tweedie's formula at eps (`denoise`) and then the known coordinates are
  set to x_known exactly. Replacement draws the noised known part independently of the unknown
  part's path, which biases p(x_unknown | x_known) where the two are strongly dependent; pass a
  `reconstruction_guidance` score to correct it. NFE as `get_pc_sampler`. Compiled once per
  sampler (the score function a pytree, as `Sampler`).

  Args:
    sde, shape: the forward SDE and the batch shape [B, ...].
    predictor, corrector, snr, n_steps, probability_flow, denoise, eps: as `get_pc_sampler`.

  Returns:
    sampler(key, score_fn, x_known, mask) -> (x, nfe); x_known [B, ...] (values at
    mask = 0 are ignored), mask broadcastable to [B, ...], 1 = known.

  Raises:
    ValueError: as `get_pc_sampler`; at call time, x_known or mask of the wrong shape.
  """
  cfg = pc_settings(sde, shape, predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps,
                    probability_flow=probability_flow, denoise=denoise, eps=eps)
  compiled = jax.jit(lambda key, score_fn, x_known, mask: _replace(cfg, key, score_fn, Mask(mask, cfg.shape[1:]),
                                                                    x_known, None))

  def sampler(key, score_fn, x_known, mask):
    _check_mask(cfg.shape, x_known, mask)
    return compiled(key, as_pytree_fn(score_fn), x_known, mask)

  return sampler


@dataclasses.dataclass(frozen=True)
class _ReconstructionGuided:
  """The guided score of `reconstruction_guidance`; a value-compared callable keeps the pytree
  structure of the guided score the same for the same SDE (no retracing)."""
  sde: sde_lib.SDE

  def __call__(self, score_fn, x_known, mask, scale, data_var, x, t):
    alpha, sigma = self.sde.marginal_coeffs(t)
    mask = jnp.broadcast_to(jnp.asarray(mask, x.dtype), x.shape)

    def denoised(x_):
      s = score_fn(x_, t)
      return (x_ + bcast(sigma**2, x_) * s) / bcast(alpha, x_), s

    x0_hat, vjp_fn, s = jax.vjp(denoised, x, has_aux=True)
    r2 = data_var * sigma**2 / (alpha**2 * data_var + sigma**2)  # Var[x0 | x_t] for N(0, data_var I) data
    # grad_x log N(x_known; x0_hat(x), r_t^2) on the known coordinates = J^T mask (x_known - x0_hat) / r_t^2.
    (grad,) = vjp_fn(mask * (x_known - x0_hat) / bcast(r2, x))
    return s + scale * grad


def reconstruction_guidance(sde: sde_lib.SDE, score_fn: ScoreFn, x_known: Array, mask: Array, *,
                            scale: float = 1.0, data_var: float = 1.0) -> ScoreFn:
  """Gradient-based conditioning on known coordinates (Ho et al. 2022, "Video diffusion models",
  Eq. 7; Chung et al. 2023, DPS; variance as Song et al. 2023, PiGDM):

      s(x_t | x_known) ~ s(x_t) + scale grad_{x_t} log N(x_known; M x0_hat(x_t), r_t^2 I),
      x0_hat = (x_t + sigma_t^2 s(x_t)) / alpha_t,  r_t^2 = v sigma_t^2 / (alpha_t^2 v + sigma_t^2),

  M the mask and r_t^2 the posterior variance of x0 given x_t for N(0, v I) data (v = data_var).
  The gradient goes through the network (a vector-Jacobian product). It is an ordinary
  score_fn: use it with any sampler (then `impose_known` on the result), or with
  `get_inpainting_sampler` to combine both (reconstruction-guided replacement).

  Args:
    sde: the forward SDE.
    score_fn: the unconditional score.
    x_known: data [B, ...] (values at mask = 0 ignored).
    mask: 1 = known, broadcastable to x_known.shape.
    scale: guidance weight w_r (1: the Gaussian approximation of p(x_known | x_t) as it is).
    data_var: v, the per-coordinate data variance assumed in r_t^2.

  Returns:
    score_fn(x, t), a pytree-callable for any sampler.

  Raises:
    ValueError: data_var <= 0.
  """
  if not data_var > 0:
    raise ValueError(f"data_var={data_var!r} must be > 0.")
  return jax.tree_util.Partial(_ReconstructionGuided(sde), as_pytree_fn(score_fn), jnp.asarray(x_known),
                               jnp.asarray(mask), jnp.asarray(scale, jnp.float32),
                               jnp.asarray(data_var, jnp.float32))


def posterior_var(alpha: Array, sigma: Array, data_var) -> Array:
  """r_t^2 = v sigma_t^2 / (alpha_t^2 v + sigma_t^2): Var[x0 | x_t] for N(0, v I) data (Song et al. 2023)."""
  return data_var * sigma**2 / (alpha**2 * data_var + sigma**2)


JACOBIANS = ("model", "gaussian")


def guided_terms(sde: sde_lib.SDE, score_fn: ScoreFn, op: LinearOperator, y: Array, sigma_y, data_var,
                 x: Array, t: Array, jacobian: str = "model") -> tuple[Array, Array, Array]:
  """(s(x, t), grad_x log p~_t(y | x), log p~_t(y | x) [B]) for the Gaussian approximation
  (Chung et al. 2023; Song et al. 2023, PiGDM)

      p~_t(y | x_t) = N(y; A x0_hat(x_t), r_t^2 A A^T + sigma_y^2 I),  x0_hat = (x_t + sigma_t^2 s) / alpha_t,

  log p~ up to a term constant in x (`LinearOperator.log_likelihood`). One NFE, and the gradient
  goes through d x0_hat / d x_t:
    "model":    the score model's own Jacobian, one vector-Jacobian product;
    "gaussian": the Jacobian of N(mu, v I) data, alpha_t r_t^2 / sigma_t^2 I (second-order Tweedie,
                Cov[x0 | x_t] = sigma_t^2 / alpha_t d x0_hat / d x_t), no backward pass through the
                model. It tends to alpha_t / sigma_t^2 ~ 0 at high noise, where the model's Jacobian
                multiplies the network's error by sigma_t^2 / alpha_t (150 at T for the VP SDE), and to
                1 / alpha_t at low noise, as the model's does for any smooth density.
  Both are exact for N(mu, v I) data with its exact score."""
  alpha, sigma = sde.marginal_coeffs(t)
  r2 = posterior_var(alpha, sigma, data_var)
  x0_of = lambda x_, s: (x_ + bcast(sigma**2, x_) * s) / bcast(alpha, x_)

  def log_lik(x0):
    ll = op.log_likelihood(y, x0, r2, sigma_y)
    return jnp.sum(ll), ll

  if jacobian == "gaussian":
    s = score_fn(x, t)
    g0, ll = jax.grad(log_lik, has_aux=True)(x0_of(x, s))
    return s, bcast(alpha * r2 / sigma**2, x) * g0, ll

  def through_model(x_):
    s = score_fn(x_, t)
    total, ll = log_lik(x0_of(x_, s))
    return total, (s, ll)

  grad, (s, ll) = jax.grad(through_model, has_aux=True)(x)
  return s, grad, ll


@dataclasses.dataclass(frozen=True)
class _OperatorGuided:
  """The guided score of `linear_guidance` (value-compared, as `_ReconstructionGuided`)."""
  sde: sde_lib.SDE
  op: LinearOperator
  jacobian: str = "model"

  def __call__(self, score_fn, y, sigma_y, scale, data_var, x, t):
    s, grad, _ = guided_terms(self.sde, score_fn, self.op, y, sigma_y, data_var, x, t, self.jacobian)
    return s + scale * grad


def linear_guidance(sde: sde_lib.SDE, score_fn: ScoreFn, operator: LinearOperator, y: Array, *,
                    sigma_y: float = 0.0, scale: float = 1.0, data_var: float = 1.0,
                    jacobian: str = "model") -> ScoreFn:
  """Reconstruction guidance for y = A x + sigma_y n with any operator:

      s(x_t | y) ~ s(x_t) + scale grad_{x_t} log N(y; A x0_hat(x_t), r_t^2 A A^T + sigma_y^2 I)

  (`guided_terms`; the covariance from the operator's SVD, or (r_t^2 + sigma_y^2) I without
  one). For a `Mask` with sigma_y = 0 this is `reconstruction_guidance`. Use the result as the
  score of any sampler.

  Args:
    sde: the forward SDE.
    score_fn: the unconditional score.
    operator: a `sampling.operators` operator.
    y: observations [B, *operator.out_shape].
    sigma_y: the observation noise standard deviation (>= 0).
    scale: guidance weight.
    data_var: v, the per-coordinate data variance assumed in r_t^2.
    jacobian: d x0_hat / d x_t from the "model" (autodiff) or for "gaussian" data (`guided_terms`).

  Returns:
    score_fn(x, t), a pytree-callable for any sampler.

  Raises:
    ValueError: a bad operator, y shape, sigma_y < 0, data_var <= 0 or jacobian.
  """
  if not isinstance(operator, LinearOperator):
    raise ValueError(f"operator={operator!r} must be a sampling.operators.LinearOperator.")
  operator.check_y(y, int(np.shape(y)[0]) if np.ndim(y) else -1)
  utils.check_real("sigma_y", sigma_y, low=0.0)
  utils.check_real("data_var", data_var, low=0.0, low_open=True)
  utils.check_choice("jacobian", jacobian, JACOBIANS)
  return jax.tree_util.Partial(_OperatorGuided(sde, operator, jacobian), as_pytree_fn(score_fn), jnp.asarray(y),
                               jnp.asarray(sigma_y, jnp.float32), jnp.asarray(scale, jnp.float32),
                               jnp.asarray(data_var, jnp.float32))


def _replace(cfg: PCSettings, key, score_fn, op: LinearOperator, y, guidance: tuple | None):
  """Replacement in the operator's spectral coordinates u = V^T x, where y fixes the positions
  with s > 0 to y_bar = s^+ U^T y; optionally with mask reconstruction guidance there; (x, nfe)."""
  u_known, known = op.spectral_data(y), op.known
  u_score = score_fn if op.identity_basis else (lambda u, t: op.Vt(score_fn(op.V(u), t)))
  if guidance is not None:
    scale, data_var = guidance
    u_score = reconstruction_guidance(cfg.sde, u_score, u_known, known, scale=scale, data_var=data_var)
  u, nfe = _inpaint(cfg, key, u_score, u_known, known)
  return (u if op.identity_basis else op.V(u)), nfe


def get_replacement_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], operator: LinearOperator, *,
                            guidance_scale: float = 0.0, data_var: float = 1.0, **pc_kwargs) -> Callable:
  """Replacement for any operator with an SVD (Song et al. 2021, App. I.2; Kawar et al. 2022).

  The noise is isotropic, so in the spectral coordinates u = V^T x the SDE is unchanged and the
  score is V^T s(V u). There y determines u at the positions with s > 0 (u = s^+ U^T y), and the
  sampler is `get_inpainting_sampler` on u with that mask; the result is rotated back, so
  A x = y exactly for y in the range of A. Observation noise is ignored (y is taken as exact).
  With guidance_scale > 0 the spectral score is also `reconstruction_guidance`d towards the
  known coordinates. For a `Mask` this is `get_inpainting_sampler`; for `ChannelMix.grey`,
  `get_colorization_sampler`.

  Args:
    sde, shape: the forward SDE and the batch shape [B, *operator.in_shape].
    operator: a `sampling.operators` operator with an SVD.
    guidance_scale, data_var: reconstruction guidance in spectral coordinates (0: none).
    **pc_kwargs: the PC settings of `get_pc_sampler`.

  Returns:
    sampler(key, score_fn, y) -> (x, nfe); y [B, *operator.out_shape].

  Raises:
    ValueError: bad settings, an operator without an SVD or of another shape; at call time, y of
      the wrong shape.
  """
  require_svd(operator, "replacement")
  cfg = pc_settings(sde, shape, **pc_kwargs)
  operator.check_x_shape(cfg.shape)
  utils.check_real("guidance_scale", guidance_scale, low=0.0)
  guidance = None
  if guidance_scale > 0:
    guidance = (guidance_scale, utils.check_real("data_var", data_var, low=0.0, low_open=True))
  run = jax.jit(lambda key, score_fn, y: _replace(cfg, key, score_fn, operator, y, guidance))

  def sampler(key, score_fn, y):
    operator.check_y(y, cfg.shape[0])
    return run(key, as_pytree_fn(score_fn), y)

  return sampler


def get_colorization_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, guidance_scale: float = 0.0,
                             data_var: float = 1.0, **pc_kwargs) -> Callable:
  """Colorization: samples x [B, ..., C] (channels last) given its grey image mean_c x.

  `get_replacement_sampler` with the operator `ChannelMix.grey`: in the orthogonal basis
  u = M x of `colorization_basis` the grey image is the known coordinate u_0 = sqrt(C) grey;
  the result is rotated back, so mean_c x = grey exactly. With guidance_scale > 0 the rotated
  score is also `reconstruction_guidance`d towards the grey image (scale, data_var as there),
  which removes most of the replacement bias. Compiled once per sampler.

  Args:
    sde, shape: as `get_inpainting_sampler`; shape[-1] = C >= 2.
    guidance_scale: reconstruction-guidance weight (0: replacement only).
    data_var: the data variance assumed by the guidance.
    **pc_kwargs: PC settings of `get_inpainting_sampler`.

  Returns:
    sampler(key, score_fn, grey) -> (x [B, ..., C], nfe); grey [B, ...] (= shape[:-1]).

  Raises:
    ValueError: bad settings or C < 2; at call time, grey of the wrong shape.
  """
  colorization_basis(shape[-1])  # C >= 2
  op = ChannelMix.grey(tuple(shape)[1:])
  replace = get_replacement_sampler(sde, shape, op, guidance_scale=guidance_scale, data_var=data_var, **pc_kwargs)

  def sampler(key, score_fn, grey):
    if tuple(jnp.shape(grey)) != tuple(shape[:-1]):
      raise ValueError(f"grey.shape={tuple(jnp.shape(grey))} must equal shape[:-1]={tuple(shape[:-1])}.")
    return replace(key, score_fn, jnp.asarray(grey)[..., None])

  return sampler
