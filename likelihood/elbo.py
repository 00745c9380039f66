"""The continuous-time variational bound in the signal-to-noise view (Kingma et al. 2021, "Variational
Diffusion Models", Eqs. 11-17; Okanohara, "Diffusion models", App. A.2-A.3).

For any linear SDE with marginals q(z_t | x) = N(alpha_t x, sigma_t^2 I), write
gamma(t) = -log SNR(t) = -2 lambda(t) (lambda = `sde.log_snr`, increasing gamma). With the model's
noise prediction eps_hat(z_t, t) = -sigma_t s(z_t, t), the negative ELBO of x in [t0, T] is

    -log p(x) <= E[-log p(x | z_t0)]                                   (reconstruction)
               + KL(q(z_T | x) || N(0, prior_std^2 I))                   (prior)
               + 1/2 int_t0^T gamma'(t) E_eps ||eps - eps_hat(z_t, t)||^2 dt   (diffusion, VDM Eq. 17)

The diffusion term depends on the schedule only through its endpoints gamma(t0), gamma(T): in
the variable v = SNR it is 1/2 int ||x - x_hat(z_v)||^2 dv (VDM sec. 3.3); two schedules with
the same endpoints give the same bound for a score that depends on (z, SNR) only.

Decoders p(x | z_t0):
- "gaussian" (continuous data): N(x; z_t0 / alpha_t0, e^gamma(t0) I), whose expected negative
  log-likelihood over eps is d/2 (log(2 pi) + gamma(t0) + 1) exactly (used in closed form).
- "discretized" (integer-level data: `levels` cells of equal width over `data_range`, level k at
  the cell centre v_k = lo + (hi - lo)(k + 1/2) / levels, as `datasets`' `scale`): per coordinate
  a softmax over the levels of -(z_t0 / alpha_t0 - v_k)^2 / (2 e^gamma(t0)) (VDM App. C); the
  bound is then on -log P(x) of the discrete data, no dequantisation needed.

The diffusion term is estimated by Monte Carlo over t and eps: each example draws n_t times
stratified on [t0, T] (t_j = t0 + (T - t0) (u + j) / n_t, one u per example: the "low-discrepancy"
sampler of VDM sec. 5.1, per example so examples stay independent and standard errors valid) and
one eps per time.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
from likelihood.vlb import normal_kl
from utils import bcast, check_choice, check_int, check_real

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]
ELBO_DECODERS = ("gaussian", "discretized")
ELBO_T_SAMPLING = ("uniform", "log_snr")


def gamma_fn(sde: sde_lib.SDE, t: Array) -> tuple[Array, Array]:
  """(gamma(t), gamma'(t)) = (-2 lambda(t), -2 lambda'(t)), the derivative by forward mode; each [B]."""
  t = jnp.asarray(t, jnp.float32)
  lam, dlam = jax.jvp(sde.log_snr, (t,), (jnp.ones_like(t),))
  return -2.0 * lam, -2.0 * dlam


def eps_error(sde: sde_lib.SDE, score_fn: ScoreFn, x: Array, t: Array, noise: Array) -> Array:
  """1/2 ||noise - eps_hat(z_t, t)||^2 at z_t = alpha_t x + sigma_t noise, eps_hat = -sigma_t s(z_t, t); [B]."""
  alpha, sigma = sde.marginal_coeffs(t)
  z = bcast(alpha, x) * x + bcast(sigma, x) * noise
  eps_hat = -bcast(sigma, x) * score_fn(z, t)
  return 0.5 * jnp.sum(jnp.reshape(noise - eps_hat, (x.shape[0], -1)) ** 2, axis=-1)


def diffusion_integrand(sde: sde_lib.SDE, score_fn: ScoreFn, x: Array, t: Array, noise: Array) -> Array:
  """1/2 gamma'(t) ||noise - eps_hat(z_t, t)||^2 at z_t = alpha_t x + sigma_t noise; [B].

  Its expectation over t ~ U(t0, T) and noise ~ N(0, I), times (T - t0), is the diffusion term."""
  _, dgamma = gamma_fn(sde, t)
  return dgamma * eps_error(sde, score_fn, x, t, noise)


def reconstruction_nll(key: Array, x: Array, gamma0: Array, decoder: str, levels: int | None = None,
                       data_range: tuple[float, float] = (-1.0, 1.0)) -> Array:
  """-log p(x | z_t0) per example ([B]) for gamma0 = gamma(t0) ([B] or scalar): it depends on z_t0
  only through x_hat = z_t0 / alpha_t0 = x + e^{gamma0 / 2} eps, for every linear SDE.

  "gaussian": its expectation over eps, d/2 (log 2 pi + gamma0 + 1), exactly; "discretized": one
  draw of eps, -log softmax_k(-(x_hat - v_k)^2 / (2 e^gamma0)) at x's level, summed over coordinates.
  """
  b, d = x.shape[0], int(np.prod(x.shape[1:]))
  gamma0 = jnp.broadcast_to(jnp.asarray(gamma0, jnp.float32), (b,))
  if decoder == "gaussian":
    return 0.5 * d * (math.log(2 * math.pi) + gamma0 + 1.0)
  lo, hi = data_range
  values = lo + (hi - lo) * (jnp.arange(levels) + 0.5) / levels  # cell centres, as datasets' `scale`
  x_hat = x + bcast(jnp.exp(0.5 * gamma0), x) * jax.random.normal(key, x.shape)
  logits = -0.5 * (x_hat[..., None] - values) ** 2 / bcast(jnp.exp(gamma0), x)[..., None]
  index = jnp.clip(jnp.floor((x - lo) / (hi - lo) * levels), 0, levels - 1).astype(jnp.int32)
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), index[..., None], axis=-1)[..., 0]
  return -jnp.sum(jnp.reshape(logp, (b, -1)), axis=-1)


def encoder_prior_kl(x: Array, alpha_T: Array, sigma_T: Array, prior_std: float) -> Array:
  """KL(N(alpha_T x, sigma_T^2 I) || N(0, prior_std^2 I)) per example; [B]."""
  mean = bcast(alpha_T, x) * x
  kl = normal_kl(mean, bcast(sigma_T, x) ** 2 * jnp.ones_like(x), 0.0, prior_std**2)
  return jnp.sum(jnp.reshape(kl, (x.shape[0], -1)), axis=-1)


def get_elbo_fn(sde: sde_lib.SDE, *, t0: float = 1e-5, n_t: int = 1, decoder: str = "gaussian",
                levels: int | None = None, data_range: tuple[float, float] = (-1.0, 1.0),
                t_sampling: str = "uniform") -> Callable:
  """The negative ELBO of the module docstring, per example, in nats.

  Args:
    sde: any linear SDE (its `marginal_coeffs`, `log_snr` and prior); `sde_lib.LogSNRSDE` allows
      t0 = 0 (gamma(0) is finite), the others need t0 > 0 (sigma(0) = 0).
    t0: the lower end of the time integral, where the decoder reads z.
    n_t: stratified time samples per example.
    decoder: one of ELBO_DECODERS.
    levels: the number of data levels, required by (and only used with) "discretized".
    data_range: (lo, hi) of the levels.
    t_sampling: one of ELBO_T_SAMPLING. "uniform": t ~ U(t0, T), the estimate
      (T - t0) 1/2 gamma'(t) ||eps - eps_hat||^2. "log_snr": gamma ~ U(gamma(t0), gamma(T)) mapped to
      t by `sde_lib.t_of_log_snr`, the estimate (gamma(T) - gamma(t0)) 1/2 ||eps - eps_hat||^2: the
      same expectation (change of variable), without the weight gamma'(t), which spans orders of
      magnitude for VE and VP schedules and makes the uniform estimate's variance explode near t0.

  Returns:
    elbo_fn(key, score_fn, x) -> dict of [B] arrays in nats: "diffusion", "prior",
    "reconstruction" and "total" (their sum, an upper bound on -log p(x)).

  Raises:
    ValueError: t0 outside [0, T) (or 0 where sigma(0) = 0), n_t < 1, an unknown decoder, or
      levels missing or < 2 for "discretized".
  """
  check_real("elbo.t0", t0, low=0.0, high=sde.T, high_open=True)
  if t0 == 0.0 and not float(sde.marginal_coeffs(jnp.zeros((1,)))[1][0]) > 0.0:
    raise ValueError(f"elbo.t0=0.0 is invalid for {type(sde).__name__}: sigma(0) = 0; use t0 > 0.")
  check_int("elbo.n_t", n_t, 1)
  check_choice("elbo.decoder", decoder, ELBO_DECODERS)
  check_choice("elbo.t_sampling", t_sampling, ELBO_T_SAMPLING)
  if decoder == "discretized":
    check_int("elbo.levels", levels, 2)
  T = sde.T

  def elbo_fn(key: Array, score_fn: ScoreFn, x: Array) -> dict:
    b = x.shape[0]
    k_t, k_eps, k_rec = jax.random.split(key, 3)
    u = (jax.random.uniform(k_t, (b, 1)) + jnp.arange(n_t)) / n_t  # [B, n_t], stratified per example
    x_rep = jnp.repeat(x, n_t, axis=0)
    noise = jax.random.normal(k_eps, x_rep.shape)
    if t_sampling == "log_snr":
      g0, g1 = (gamma_fn(sde, jnp.full((1,), s, jnp.float32))[0][0] for s in (t0, T))
      t = sde_lib.t_of_log_snr(sde, -0.5 * (g0 + (g1 - g0) * u), t_max=T)
      vals = eps_error(sde, score_fn, x_rep, t.reshape(-1), noise).reshape(b, n_t)
      diffusion = (g1 - g0) * jnp.mean(vals, axis=1)
    else:
      t = t0 + (T - t0) * u
      vals = diffusion_integrand(sde, score_fn, x_rep, t.reshape(-1), noise).reshape(b, n_t)
      diffusion = (T - t0) * jnp.mean(vals, axis=1)
    prior = encoder_prior_kl(x, *sde.marginal_coeffs(jnp.full((b,), T)), sde.prior_std)
    gamma0, _ = gamma_fn(sde, jnp.full((b,), t0, jnp.float32))
    rec = reconstruction_nll(k_rec, x, gamma0, decoder, levels, data_range)
    return {"diffusion": diffusion, "prior": prior, "reconstruction": rec, "total": diffusion + prior + rec}

  return elbo_fn
