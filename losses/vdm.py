"""The continuous-time variational bound as a training objective, with a fixed or a learned
noise schedule (Kingma et al. 2021, "Variational Diffusion Models", secs. 3-5).

The loss of a batch is the mean over examples of the negative ELBO (`likelihood.elbo`) in nats
per data dimension:

    L(x) = 1/2 (T - t0) gamma'(t) ||eps - eps_hat(z_t, t)||^2 + KL(q(z_T | x) || N(0, I)) - log p(x | z_t0),

one t per example, drawn low-discrepancy over the batch (t_i = t0 + (T - t0) ((u + i / B) mod 1),
one u per batch: VDM sec. 5.1), which keeps the estimate unbiased and lowers its variance.

With `sde_lib.LearnedLogSNRSDE`, gamma(t) = g0 + (g1 - g0) shape(t) is learned with the network:
the network and the endpoints (g0, g1) descend the bound, while the shape network descends the
variance of the diffusion term's estimate (VDM sec. 5.2; the bound itself does not depend on the
shape). The diffusion term reaches the shape only through s_i = shape(t_i) and s'_i = shape'(t_i)
of its own example i, so replacing their cotangents c_i dL_i/ds_i by 2 L_i c_i dL_i/ds_i turns
the shape's gradient into that of mean_i L_i^2 = variance + (a shape-independent) mean^2, in the
same backward pass (`_variance_gradient`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import likelihood
import sde_lib
from utils import bcast, check_choice, check_int, check_real

Array = jax.Array


def _variance_gradient(per_example: Callable) -> Callable:
  """per_example(net_params, s, ds, g0, g1, x, noise) -> L [B], with the cotangents of s and ds
  scaled by 2 L (module docstring); the other arguments get their ordinary gradients."""

  @jax.custom_vjp
  def f(net_params, s, ds, g0, g1, x, noise):
    return per_example(net_params, s, ds, g0, g1, x, noise)

  def fwd(*args):
    value, vjp = jax.vjp(per_example, *args)
    return value, (value, vjp)

  def bwd(res, cot):
    value, vjp = res
    g_net, g_s, g_ds, g_0, g_1, g_x, g_noise = vjp(cot)
    return g_net, 2.0 * value * g_s, 2.0 * value * g_ds, g_0, g_1, g_x, g_noise

  f.defvjp(fwd, bwd)
  return f


def get_vdm_loss_fn(sde: sde_lib.SDE, network, model_score_fn: Callable, *, t0: float = 0.0,
                    decoder: str = "gaussian", levels: int | None = None,
                    data_range: tuple[float, float] = (-1.0, 1.0)) -> Callable:
  """The bound of the module docstring as loss_fn(key, params, batch) -> scalar (nats per dimension).

  Args:
    sde: any linear SDE; a `sde_lib.LearnedLogSNRSDE` learns its schedule (params["schedule"]).
    network: the score model's network (`models.ScoreModel.network`); with a learned schedule it
      is called directly as eps_hat = network(z_t, -lambda_t, train=True).
    model_score_fn: model_score_fn(params, x, t) -> score (training mode), for a fixed schedule.
    t0, decoder, levels, data_range: as `likelihood.get_elbo_fn`.

  Raises:
    ValueError: as `likelihood.get_elbo_fn` (t0, decoder, levels).
  """
  likelihood.get_elbo_fn(sde, t0=t0, decoder=decoder, levels=levels, data_range=data_range)  # checks
  learned = isinstance(sde, sde_lib.LearnedLogSNRSDE)
  T = sde.T

  def diffusion_fixed(params, x, t, noise):
    return likelihood.diffusion_integrand(sde, lambda z, s: model_score_fn(params, z, s), x, t, noise)

  def diffusion_learned(params, s, ds, g0, g1, x, noise):
    gamma, dgamma = g0 + (g1 - g0) * s, (g1 - g0) * ds
    alpha, sigma = jnp.sqrt(jax.nn.sigmoid(-gamma)), jnp.sqrt(jax.nn.sigmoid(gamma))
    z = bcast(alpha, x) * x + bcast(sigma, x) * noise
    eps_hat = network.apply({"params": params}, z, 0.5 * gamma, train=True)
    return 0.5 * dgamma * jnp.sum(jnp.reshape(noise - eps_hat, (x.shape[0], -1)) ** 2, axis=-1)

  diffusion_learned_vg = _variance_gradient(diffusion_learned)

  def loss_fn(key, params, batch):
    x = batch["x"] if isinstance(batch, dict) else batch
    b, d = x.shape[0], int(np.prod(x.shape[1:]))
    k_t, k_noise, k_rec = jax.random.split(key, 3)
    u = jnp.mod(jax.random.uniform(k_t, ()) + jnp.arange(b) / b, 1.0)
    t = t0 + (T - t0) * u
    noise = jax.random.normal(k_noise, x.shape)
    if learned:
      bound = sde.bind(params)
      g0, g1 = bound.endpoints()
      s, ds = jax.jvp(bound.shape, (t,), (jnp.ones_like(t),))
      diffusion = (T - t0) * diffusion_learned_vg(params, s, ds, g0, g1, x, noise)
      alpha_T, sigma_T = jnp.sqrt(jax.nn.sigmoid(-g1)), jnp.sqrt(jax.nn.sigmoid(g1))
      gamma0 = g0 + (g1 - g0) * bound.shape(jnp.full((1,), t0))[0]
    else:
      diffusion = (T - t0) * diffusion_fixed(params, x, t, noise)
      alpha_T, sigma_T = (c[0] for c in sde.marginal_coeffs(jnp.full((1,), T)))
      gamma0 = likelihood.gamma_fn(sde, jnp.full((1,), t0, jnp.float32))[0][0]
    prior = likelihood.elbo.encoder_prior_kl(x, jnp.full((b,), alpha_T), jnp.full((b,), sigma_T), sde.prior_std)
    rec = likelihood.reconstruction_nll(k_rec, x, gamma0, decoder, levels, data_range)
    return jnp.mean(diffusion + prior + rec) / d

  return loss_fn


def vdm_loss(sde: sde_lib.SDE, score_model, /, *, num_classes: int = 0, t0: float = 0.0, decoder: str = "gaussian",
             levels: int | None = None, data_range: tuple[float, float] = (-1.0, 1.0)) -> Callable:
  """The consumer of `loss.name="vdm"`: `get_vdm_loss_fn` for a score model (unconditional, no dropout)."""
  if num_classes:
    raise ValueError(f"model.num_classes={num_classes} is not supported with loss.name='vdm'; set it to 0.")
  if score_model.dropout:
    raise ValueError(f"model.dropout={score_model.dropout} is not supported with loss.name='vdm'; set it to 0.")
  check_real("loss.t0", t0, low=0.0, high=sde.T, high_open=True)
  check_choice("loss.decoder", decoder, likelihood.ELBO_DECODERS)
  if decoder == "discretized":
    check_int("loss.levels", levels, 2)
  return get_vdm_loss_fn(sde, score_model.network, score_model.train_score_fn, t0=t0, decoder=decoder,
                         levels=levels, data_range=tuple(data_range))
