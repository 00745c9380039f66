"""Samplers for the reverse process. Every sampler is built by `get_sampler` and called as

    samples, nfe = sampler(key, score_fn)

with `score_fn(x, t) -> score`, so a trained network and an exact (oracle) score are
interchangeable. `nfe` counts score evaluations per sample.

Per-sample reproducibility: sample i draws all its randomness from fold_in(key, i), so
it does not depend on the batch size or on how the batch is sharded.

Samplers do not jit themselves: wrap the call in `jax.jit` with the network
parameters as an argument (see `run_lib`), so new parameters do not recompile.
"""

from __future__ import annotations

import functools
import numbers
from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
from sde_lib import _bcast

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]


# --- per-sample randomness ------------------------------------------------------

def per_sample_keys(key: Array, n: int) -> Array:
  """Keys [n]: key i is fold_in(key, i), independent of n."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def _fold(keys: Array, data) -> Array:
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def _normal(keys: Array, x: Array) -> Array:
  """Standard normal noise shaped like x [B, ...], row i drawn from keys[i]."""
  return jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)


def prior_sample(keys: Array, sde: sde_lib.SDE, shape: tuple[int, ...]) -> Array:
  """x_T [B, ...] from the prior, row i drawn from keys[i]."""
  return jax.vmap(lambda k: sde.prior_sampling(k, (1,) + tuple(shape[1:]))[0])(keys)


def _norm(x: Array) -> Array:
  """Per-example Euclidean norm over non-batch axes; [B]."""
  return jnp.sqrt(jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=-1))


def tweedie_denoise(sde: sde_lib.SDE, score_fn: ScoreFn, x: Array, t: Array) -> Array:
  """E[x0 | x_t] = (x_t + sigma(t)^2 score(x_t, t)) / alpha(t) (Tweedie's formula); 1 NFE."""
  alpha, sigma = sde.marginal_coeffs(t)
  return (x + _bcast(sigma**2, x) * score_fn(x, t)) / _bcast(alpha, x)


# --- predictors: (keys, rsde, x, t, t_next) -> (x, x_mean); one NFE each --------

def euler_maruyama(keys, rsde, x, t, t_next):
  """Euler-Maruyama step of the reverse SDE from t to t_next < t."""
  dt = t_next - t
  drift, g = rsde.sde(x, t)
  x_mean = x + drift * _bcast(dt, x)
  return x_mean + _bcast(g * jnp.sqrt(-dt), x) * _normal(keys, x), x_mean


def reverse_diffusion(keys, rsde, x, t, t_next):
  """Reverse of the forward discretisation (Song et al. App. E, Eq. 46)."""
  del t_next
  f, G = rsde.discretize(x, t)
  x_mean = x - f
  return x_mean + _bcast(G, x) * _normal(keys, x), x_mean


def ancestral_sampling(keys, rsde, x, t, t_next):
  """Sample the Gaussian posterior q(x_s | x_t, x0) with x0 from Tweedie (s = t_next).

  For any linear SDE, with alpha_{t|s} = alpha_t / alpha_s and
  sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2:
    mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0_hat,
    var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2.
  This is DDPM ancestral sampling (Ho et al. Eq. 7, beta_tilde) for VP and SMLD's
  ancestral sampler for VE (Song et al. App. F, Eq. 47).
  """
  sde = rsde.forward
  a_t, s_t = sde.marginal_coeffs(t)
  a_s, s_s = sde.marginal_coeffs(t_next)
  x0_hat = tweedie_denoise(sde, rsde.score_fn, x, t)
  a_ts = a_t / a_s
  s2_ts = s_t**2 - a_ts**2 * s_s**2
  x_mean = _bcast(a_ts * s_s**2 / s_t**2, x) * x + _bcast(a_s * s2_ts / s_t**2, x) * x0_hat
  std = jnp.sqrt(jnp.maximum(s2_ts * s_s**2 / s_t**2, 0.0))
  return x_mean + _bcast(std, x) * _normal(keys, x), x_mean


def no_predictor(keys, rsde, x, t, t_next):
  del keys, rsde, t, t_next
  return x, x


PREDICTORS = {"euler_maruyama": euler_maruyama, "reverse_diffusion": reverse_diffusion,
              "ancestral_sampling": ancestral_sampling, "none": no_predictor}


# --- correctors: (keys, sde, score_fn, x, t, snr) -> (x, x_mean); one NFE each ---

def langevin(keys, sde, score_fn, x, t, snr):
  """One Langevin MCMC step (Song et al. Alg. 4-5) with a per-sample step size

      eps_i = 2 alpha_i (snr sqrt(d) / max(||s_i||, s_floor))^2,  s_floor = sqrt(d / (a(t)^2 + sigma(t)^2)),

  with the score norm taken per example (not over the whole batch), so samples stay
  independent. Alg. 4 uses ||z|| for the noise norm; in high dimension ||z|| ~ sqrt(d)
  and the two agree, but in low dimension a step size that depends on the very z it
  multiplies gives heavy-tailed moves, so we use E||z||^2 = d. s_floor is the score norm
  of unit-variance data diffused to t: in high dimension ||s_i|| concentrates above it and
  it never binds; in low dimension it stops a sample near a mode (s ~ 0) from taking an
  unbounded step.

  Caveat (low dimension): a step size that depends on x biases unadjusted Langevin,
  whose stationary law becomes proportional to p(x) / eps(x) (Fokker-Planck). In high
  dimension eps_i is nearly the same for every sample and the bias vanishes; on 2-D toy
  targets use `ald` (x-independent steps) or snr <= 0.01 (measured in benchmarks/RESULTS.md).
  """
  grad = score_fn(x, t)
  z = _normal(keys, x)
  a, sigma = sde.marginal_coeffs(t)
  d = x[0].size
  s_floor = jnp.sqrt(d / (a**2 + sigma**2))
  ratio = snr * jnp.sqrt(d) / jnp.maximum(_norm(grad), s_floor)
  step = 2.0 * sde.langevin_alpha(t) * ratio**2
  x_mean = x + _bcast(step, x) * grad
  return x_mean + _bcast(jnp.sqrt(2.0 * step), x) * z, x_mean


def annealed_langevin(keys, sde, score_fn, x, t, snr):
  """Annealed Langevin dynamics (Song & Ermon 2019): eps = 2 alpha (snr sigma(t))^2."""
  grad = score_fn(x, t)
  _, sigma = sde.marginal_coeffs(t)
  step = 2.0 * sde.langevin_alpha(t) * (snr * sigma) ** 2
  x_mean = x + _bcast(step, x) * grad
  return x_mean + _bcast(jnp.sqrt(2.0 * step), x) * _normal(keys, x), x_mean


CORRECTORS = {"langevin": langevin, "ald": annealed_langevin, "none": None}


# --- the PC sampler -----------------------------------------------------------------

def _check_common(sde: sde_lib.SDE, shape, eps: float) -> None:
  if len(shape) < 2 or any(int(s) < 1 for s in shape):
    raise ValueError(f"sampling shape={tuple(shape)} must be [B, ...] with positive sizes.")
  if not 0.0 < eps < sde.T:
    raise ValueError(f"sampling.eps={eps!r} must lie in (0, T={sde.T}).")


def get_pc_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, predictor: str = "reverse_diffusion",
                   corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
                   probability_flow: bool = False, denoise: bool = True, eps: float = 1e-3,
                   n_trajectory: int = 0) -> Callable:
  """Predictor-corrector sampler (Song et al. Alg. 1) over N = sde.N steps from T to eps.

  Time grid t_k = T + k (eps - T) / N, k = 0..N. At each k: `n_steps` corrector steps at t_k,
  then one predictor step t_k -> t_{k+1}. With `denoise`, a final Tweedie step at eps.
  NFE = N (predictor != "none") + N n_steps (corrector != "none") + denoise.

  Returns:
    sampler(key, score_fn) -> (samples, nfe), or (samples, nfe, trajectory [n_trajectory, B, ...])
    when n_trajectory > 0 (states at evenly spaced steps, the last one the final sample).

  Raises:
    ValueError: unknown predictor/corrector, or out-of-range numbers.
  """
  _check_common(sde, shape, eps)
  if predictor not in PREDICTORS:
    raise ValueError(f"sampling.predictor={predictor!r} is unknown; valid: {sorted(PREDICTORS)}.")
  if corrector not in CORRECTORS:
    raise ValueError(f"sampling.corrector={corrector!r} is unknown; valid: {sorted(CORRECTORS)}.")
  if not snr > 0:
    raise ValueError(f"sampling.snr={snr!r} must be > 0.")
  if int(n_steps) != n_steps or n_steps < 0:
    raise ValueError(f"sampling.n_steps={n_steps!r} must be an integer >= 0.")
  if not 0 <= n_trajectory <= sde.N:
    raise ValueError(f"n_trajectory={n_trajectory!r} must lie in [0, N={sde.N}].")
  predictor_fn, corrector_fn = PREDICTORS[predictor], CORRECTORS[corrector]
  n_corr = int(n_steps) if corrector_fn is not None else 0
  nfe = sde.N * ((predictor != "none") + n_corr) + int(denoise)
  ts = jnp.linspace(sde.T, eps, sde.N + 1)
  stride = -(-sde.N // max(n_trajectory, 1))

  def sampler(key, score_fn):
    B = shape[0]
    keys = per_sample_keys(key, B)
    x = prior_sample(_fold(keys, 0), sde, shape)
    keys = _fold(keys, 1)
    rsde = sde.reverse(score_fn, probability_flow)
    traj0 = jnp.zeros((max(n_trajectory, 1),) + tuple(shape), x.dtype)

    def step(carry, k):
      x, traj = carry
      t = jnp.full((B,), ts[k])
      step_keys = _fold(keys, k)
      for j in range(n_corr):
        x, _ = corrector_fn(_fold(step_keys, j + 1), sde, score_fn, x, t, snr)
      x, _ = predictor_fn(_fold(step_keys, 0), rsde, x, t, jnp.full((B,), ts[k + 1]))
      if n_trajectory:
        traj = jax.lax.dynamic_update_index_in_dim(traj, x, k // stride, 0)
      return (x, traj), None

    (x, traj), _ = jax.lax.scan(step, (x, traj0), jnp.arange(sde.N))
    if denoise:
      x = tweedie_denoise(sde, score_fn, x, jnp.full((B,), eps))
    if n_trajectory:
      return x, nfe, traj.at[-1].set(x)
    return x, nfe

  return sampler


# --- probability-flow ODE sampler (diffrax) -------------------------------------------
#
# The probability-flow ODE (Song et al. 2021, Eq. 13)
#
#     dx/dt = f(x, t) - g(t)^2 s(x, t) / 2
#
# shares the marginals p_t of the forward SDE, so integrating it from x_T ~ prior at T down
# to eps samples p_eps, and integrating it from eps up to T encodes data into latents
# (a deterministic, invertible map). diffrax integrates the whole batch as one state: an
# adaptive step size is shared by all examples (chosen from the RMS of the error estimate
# over the batch), so a sample depends on its batch mates through the step sizes, within
# the tolerances. The fixed-step path (`n_steps`) has no such coupling.

ODE_SOLVERS: dict[str, type] = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5,
                                "heun": diffrax.Heun, "euler": diffrax.Euler}


def _stages(solver) -> tuple[int, bool]:
  """(stages per step, first-same-as-last) of an explicit diffrax solver."""
  tableau = getattr(solver, "tableau", None)
  if tableau is None:  # Euler: one stage, no tableau.
    return 1, False
  return len(tableau.c) + 1, bool(tableau.fsal)


def check_ode_args(solver: str, rtol, atol, n_steps: int | None, max_steps: int, *,
                   group: str = "sampling", solver_field: str = "solver") -> None:
  """Validates the ODE-solver settings shared by the ODE sampler, encoder and likelihood.

  Raises:
    ValueError: unknown solver, non-positive tolerances, bad step counts, or an adaptive
      solve requested from a solver without an error estimate (euler).
  """
  if solver not in ODE_SOLVERS:
    raise ValueError(f"{group}.{solver_field}={solver!r} is unknown; valid: {sorted(ODE_SOLVERS)}.")
  for name, tol in (("rtol", rtol), ("atol", atol)):
    if not (isinstance(tol, numbers.Real) and tol > 0):
      raise ValueError(f"{group}.{name}={tol!r} must be a number > 0.")
  if n_steps is not None and (int(n_steps) != n_steps or n_steps < 1):
    raise ValueError(f"{group}.n_steps={n_steps!r} must be None (adaptive) or an integer >= 1.")
  if n_steps is None and solver == "euler":
    raise ValueError(f"{group}.{solver_field}='euler' has no error estimate: set {group}.n_steps "
                     "(fixed steps) or use an adaptive solver (tsit5, dopri5, heun).")
  if int(max_steps) != max_steps or max_steps < 1:
    raise ValueError(f"{group}.max_steps={max_steps!r} must be an integer >= 1.")


def solve_ode(vector_field: Callable, y0, t0: Array, t1: Array, *, solver: str = "tsit5",
              rtol: float | Array = 1e-5, atol: float | Array = 1e-5, n_steps: int | None = None,
              max_steps: int = 4096, save_ts: Array | None = None):
  """Integrates dy/dt = vector_field(t, y) from t0 to t1 (either direction) with diffrax.

  Adaptive (n_steps=None): PID step-size control on the RMS norm, over the whole state, of
  the error estimate scaled by atol + rtol |y|; first trial step (t1 - t0) / 100 (the
  controller shrinks or grows it from there). Fixed: n_steps uniform steps. Every evaluation
  of `vector_field` is counted, rejected steps included:

      nfe = FSAL + (stages - FSAL) num_steps,      num_steps = accepted + rejected steps,

  tsit5 / dopri5: 7 stages, first-same-as-last (FSAL: the last stage of a step is the first
  of the next, so one evaluation for the very first stage, then 6 per step); heun: 2; euler: 1.
  For adaptive FSAL solvers we evaluate that first stage ourselves and hand it to diffrax as
  `solver_state`; otherwise diffrax re-evaluates it after a rejected first step, and the
  count would depend on when the first step was accepted. diffrax marks a passed solver
  state nondifferentiable: the adaptive path is for evaluation, not reverse-mode gradients.

  Args:
    vector_field: f(t, y) for a scalar t and a pytree y.
    y0: initial state (pytree of arrays).
    t0, t1: scalar start and end times (may be traced).
    solver: a name in `ODE_SOLVERS`.
    rtol, atol: tolerances of the adaptive step control (may be traced).
    n_steps: None (adaptive) or the number of fixed steps.
    max_steps: step budget of the adaptive solve (static; diffrax raises if exceeded).
    save_ts: optional [K] times to save at (dense interpolation, no extra evaluations).

  Returns:
    (y1, nfe): the state at t1 (or the states at save_ts, leading axis K) and an int32 scalar.
  """
  solver_obj = ODE_SOLVERS[solver]()
  stages, fsal = _stages(solver_obj)
  term = diffrax.ODETerm(lambda t, y, args: vector_field(t, y))
  saveat = diffrax.SaveAt(t1=True) if save_ts is None else diffrax.SaveAt(ts=save_ts)
  solver_state = None
  if n_steps is None:
    # An explicit first step: diffrax's own guess would cost evaluations of its own.
    controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), (t1 - t0) / 100
    if fsal:
      solver_state = (jnp.asarray(False), vector_field(t0, y0))
  else:
    controller, dt0, max_steps = diffrax.ConstantStepSize(), (t1 - t0) / n_steps, int(n_steps)
  sol = diffrax.diffeqsolve(term, solver_obj, t0, t1, dt0, y0, saveat=saveat,
                            stepsize_controller=controller, max_steps=max_steps,
                            solver_state=solver_state)
  nfe = int(fsal) + (stages - int(fsal)) * sol.stats["num_steps"]
  ys = sol.ys if save_ts is not None else jax.tree_util.tree_map(lambda y: y[0], sol.ys)
  return ys, jnp.asarray(nfe, jnp.int32)


def as_pytree_fn(fn: Callable) -> jax.tree_util.Partial:
  """A callable as a pytree for a jitted argument: bound arrays become leaves (traced).

  `functools.partial(model_score_fn, params)` becomes `Partial(model_score_fn, params)`, so
  new parameters do not recompile; any other callable is static, compared by identity
  (keep and reuse the same oracle, e.g. `oracle = target.score_fn(sde)`).
  """
  if isinstance(fn, jax.tree_util.Partial):
    return fn
  bound = jax.tree_util.tree_leaves((fn.args, fn.keywords)) if isinstance(fn, functools.partial) else None
  if bound is not None and all(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in bound):
    return jax.tree_util.Partial(fn.func, *fn.args, **fn.keywords)
  return jax.tree_util.Partial(fn)


def pf_ode_drift(sde: sde_lib.SDE, score_fn: ScoreFn) -> Callable[[Array, Array], Array]:
  """v(t, x) = f(x, t) - g(t)^2 s(x, t) / 2 for a scalar t and x [B, ...] (Song et al. Eq. 13)."""
  rsde = sde.reverse(score_fn, probability_flow=True)
  return lambda t, x: rsde.sde(x, jnp.full(x.shape[:1], t, x.dtype))[0]


def _tolerances(rtol, atol, default_rtol, default_atol):
  """Tolerances as float32 arrays (traced under jit), each override checked if concrete."""
  out = []
  for name, tol, default in (("rtol", rtol, default_rtol), ("atol", atol, default_atol)):
    tol = default if tol is None else tol
    if isinstance(tol, numbers.Real) and not tol > 0:
      raise ValueError(f"{name}={tol!r} must be > 0.")
    out.append(jnp.asarray(tol, jnp.float32))
  return out


@functools.partial(jax.jit, static_argnames=("sde", "shape", "solver", "n_steps", "max_steps",
                                             "denoise", "n_trajectory"))
def _ode_sample(key, score_fn, z, rtol, atol, t_start, t_end, *, sde, shape, solver, n_steps,
                max_steps, denoise, n_trajectory):
  if z is None:
    # The same prior draw as the PC sampler: row i from fold_in(fold_in(key, i), 0).
    z = prior_sample(_fold(per_sample_keys(key, shape[0]), 0), sde, shape)
  save_ts = None
  if n_trajectory:
    # The PC sampler's thinned grid t_k = T + k (eps - T) / N, k = min(j stride, N), j = 1..K.
    stride = -(-sde.N // n_trajectory)
    k = jnp.minimum(jnp.arange(1, n_trajectory + 1) * stride, sde.N)
    save_ts = t_start + (t_end - t_start) * k / sde.N
  x, nfe = solve_ode(pf_ode_drift(sde, score_fn), z, t_start, t_end, solver=solver, rtol=rtol,
                     atol=atol, n_steps=n_steps, max_steps=max_steps, save_ts=save_ts)
  traj, x = (x, x[-1]) if n_trajectory else (None, x)
  if denoise:
    x = tweedie_denoise(sde, score_fn, x, jnp.full(shape[:1], t_end, x.dtype))
    nfe = nfe + 1
  return (x, nfe) if not n_trajectory else (x, nfe, traj.at[-1].set(x))


def get_ode_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, solver: str = "tsit5",
                    rtol: float = 1e-5, atol: float = 1e-5, n_steps: int | None = None,
                    denoise: bool = False, eps: float = 1e-3, max_steps: int = 4096,
                    n_trajectory: int = 0) -> Callable:
  """Probability-flow ODE sampler: integrates dx/dt = f(x, t) - g(t)^2 s(x, t) / 2 from T to eps.

  x_T is drawn from the prior (row i from fold_in(key, i), as the PC sampler) or given as z,
  then integrated with diffrax (`solve_ode`) entirely on device; with `denoise`, a final
  Tweedie step at eps (1 NFE). nfe counts every score evaluation, rejected steps included.

  Compilation: the solve is jitted once per (sde, shape, solver, n_steps, max_steps, denoise,
  n_trajectory) and the score function's identity; rtol, atol, the time span and the score's
  bound arrays (`functools.partial(model_score_fn, params)`) are traced arguments, so
  changing them does not recompile. Inside an outer `jax.jit` it is simply traced.

  Args:
    sde: the forward SDE.
    shape: [B, ...] of the batch.
    solver: "tsit5" (default), "dopri5", "heun" (adaptive or fixed) or "euler" (fixed only).
    rtol, atol: tolerances of the adaptive step control, shared by the whole batch.
    n_steps: None for adaptive steps, or a number of uniform steps.
    denoise: finish with Tweedie's formula E[x_0 | x_eps].
    eps: end time (> 0: the ODE is stiff at t = 0).
    max_steps: step budget of the adaptive solve.
    n_trajectory: if > 0, also return the states at that many times of the PC sampler's grid.

  Returns:
    sampler(key, score_fn, z=None, rtol=None, atol=None) -> (samples, nfe), or
    (samples, nfe, trajectory [n_trajectory, B, ...]) when n_trajectory > 0. Given z
    [B, ...] the sampler starts from it (the decoder of `get_ode_encoder`; key may be None).

  Raises:
    ValueError: bad shape, eps, solver name, tolerance or step count (also a z of the wrong shape).
  """
  _check_common(sde, shape, eps)
  check_ode_args(solver, rtol, atol, n_steps, max_steps)
  if not 0 <= n_trajectory <= sde.N:
    raise ValueError(f"n_trajectory={n_trajectory!r} must lie in [0, N={sde.N}].")
  static = dict(sde=sde, shape=tuple(shape), solver=solver, n_steps=n_steps, max_steps=int(max_steps),
                denoise=bool(denoise), n_trajectory=int(n_trajectory))
  defaults = (rtol, atol)

  def sampler(key, score_fn, z=None, rtol=None, atol=None):
    if z is not None and tuple(z.shape) != tuple(shape):
      raise ValueError(f"z.shape={tuple(z.shape)} must equal the sampler's shape={tuple(shape)}.")
    tol = _tolerances(rtol, atol, *defaults)
    return _ode_sample(key, as_pytree_fn(score_fn), z, *tol, jnp.float32(sde.T), jnp.float32(eps),
                       **static)

  return sampler


@functools.partial(jax.jit, static_argnames=("sde", "solver", "n_steps", "max_steps"))
def _ode_encode(score_fn, x, rtol, atol, t_start, t_end, *, sde, solver, n_steps, max_steps):
  return solve_ode(pf_ode_drift(sde, score_fn), x, t_start, t_end, solver=solver, rtol=rtol,
                   atol=atol, n_steps=n_steps, max_steps=max_steps)


def get_ode_encoder(sde: sde_lib.SDE, *, solver: str = "tsit5", rtol: float = 1e-5,
                    atol: float = 1e-5, n_steps: int | None = None, eps: float = 1e-3,
                    max_steps: int = 4096) -> Callable:
  """Encoder x -> z of the probability-flow ODE: integrates dx/dt = f - g^2 s / 2 from eps to T.

  The inverse of `get_ode_sampler(..., denoise=False)` called with z (the decoder), up to the
  solver tolerances. Compiles as the sampler does (rtol, atol traced).

  Returns:
    encoder(score_fn, x, rtol=None, atol=None) -> (z [B, ...], nfe).

  Raises:
    ValueError: bad eps, solver name, tolerance or step count.
  """
  if not 0.0 < eps < sde.T:
    raise ValueError(f"sampling.eps={eps!r} must lie in (0, T={sde.T}).")
  check_ode_args(solver, rtol, atol, n_steps, max_steps)
  defaults = (rtol, atol)

  def encoder(score_fn, x, rtol=None, atol=None):
    tol = _tolerances(rtol, atol, *defaults)
    return _ode_encode(as_pytree_fn(score_fn), x, *tol, jnp.float32(eps), jnp.float32(sde.T),
                       sde=sde, solver=solver, n_steps=n_steps, max_steps=int(max_steps))

  return encoder


# --- end of the probability-flow ODE sampler -------------------------------------------

# --- fast samplers: time schedules, DDIM, EDM Heun, DPM-Solver++ ---
#
# Few-step solvers for the reverse process of any linear SDE, written in the variables of its
# perturbation kernel p_t(x | x0) = N(alpha_t x0, sigma_t^2 I): the Tweedie denoiser
# x0_hat = (x + sigma_t^2 s) / alpha_t and eps_hat = -sigma_t s, the log-SNR
# lambda_t = log(alpha_t / sigma_t) and sigma_edm = sigma_t / alpha_t = exp(-lambda_t). So one code
# path serves VE, VP, sub-VP, OU and lambda-VE. Each grid point is a time t and every coefficient
# is recomputed from t, so an inexact inverse t(lambda) (float32 bisection) moves a grid point
# slightly but never makes a step inconsistent. All return (samples, nfe) with the exact count and
# accept an optional starting point: sampler(key, score_fn, x_T=None). All end at the time eps, or
# at the noise level sigma_edm = sigma_end (`end_time`, the same level for every SDE), and with
# `denoise` spend the last of their NFE on the step from there to sigma = 0, x = x0_hat (Tweedie),
# as EDM's last step (Karras et al. 2022, Alg. 1, sigma_N = 0).

SCHEDULES = ("uniform_t", "log_snr", "edm", "quadratic")


def t_of_log_snr(sde: sde_lib.SDE, lam: Array, *, t_max: float | None = None,
                 n_iters: int = 64) -> Array:
  """The inverse t(lambda) of the decreasing log-SNR lambda(t) = log(alpha_t / sigma_t).

  Vectorised bisection on [0, t_max] (any SDE, no closed form needed); float32 bisection
  stops moving once the bracket is one ulp wide. t_max defaults to 2 T, which leaves room
  for EDM's churn (sigma_hat <= sqrt(2) sigma_edm(T)); lambdas outside the bracket clip to it.
  """
  t_max = 2.0 * sde.T if t_max is None else t_max
  lam = jnp.asarray(lam, jnp.float32)

  def bisect(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    later = sde.log_snr(mid.reshape(-1)).reshape(mid.shape) > lam  # lambda decreases: t > mid
    return jnp.where(later, mid, lo), jnp.where(later, hi, mid)

  lo, hi = jax.lax.fori_loop(0, n_iters, bisect, (jnp.zeros_like(lam), jnp.full_like(lam, t_max)))
  return 0.5 * (lo + hi)


def sigma_edm(sde: sde_lib.SDE, t: Array) -> Array:
  """Karras et al.'s noise level sigma_t / alpha_t = exp(-lambda_t) (EDM Eq. 4 with s = alpha)."""
  alpha, sigma = sde.marginal_coeffs(t)
  return sigma / alpha


def _check_schedule(sde: sde_lib.SDE, n_steps: int, schedule: str, eps: float) -> None:
  if schedule not in SCHEDULES:
    raise ValueError(f"sampling.schedule={schedule!r} is unknown; valid: {list(SCHEDULES)}.")
  if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
    raise ValueError(f"sampling.n_steps={n_steps!r} must be an integer >= 1.")
  if not 0.0 < eps < sde.T:
    raise ValueError(f"sampling.eps={eps!r} must lie in (0, T={sde.T}).")


def end_time(sde: sde_lib.SDE, *, eps: float = 1e-3, sigma_end: float | None = None) -> float:
  """The fast samplers' end time: eps, or with sigma_end the t where sigma_edm(t) = sigma_end.

  sigma_end is a noise level in data units, the same for every SDE (for VE sigma_edm = sigma_t):
  t = t(lambda = -log sigma_end) by `t_of_log_snr`, evaluated now (also inside a jit trace).

  Raises:
    ValueError: sigma_end outside (0, sigma_edm(T)).
  """
  if sigma_end is None:
    return eps
  with jax.ensure_compile_time_eval():
    sigma_T = float(sigma_edm(sde, jnp.array([sde.T], jnp.float32))[0])
    if not (isinstance(sigma_end, numbers.Real) and 0.0 < sigma_end < sigma_T):
      raise ValueError(f"sampling.sigma_end={sigma_end!r} must lie in (0, sigma_edm(T)={sigma_T:.4g}).")
    return float(t_of_log_snr(sde, jnp.array([-np.log(sigma_end)], jnp.float32))[0])


def _check_denoise(n_steps: int, denoise: bool) -> int:
  """The number of solver steps from T to eps: n_steps, less the final step to sigma = 0 if denoise."""
  if not isinstance(denoise, bool):
    raise ValueError(f"sampling.denoise={denoise!r} must be True or False.")
  if denoise and n_steps < 2:
    raise ValueError(f"sampling.n_steps={n_steps!r} must be >= 2 with sampling.denoise=True "
                     "(at least one solver step before the step to sigma = 0).")
  return n_steps - int(denoise)


def get_time_schedule(sde: sde_lib.SDE, n_steps: int, *, schedule: str = "log_snr",
                      eps: float = 1e-3, rho: float = 7.0) -> Array:
  """Times ts [n_steps + 1], decreasing from ts[0] = T to ts[-1] = eps (both exact).

  With u_i = i / n_steps:
    "uniform_t": t_i = T + u_i (eps - T);
    "log_snr":   lambda_i = lambda_T + u_i (lambda_eps - lambda_T) (DPM-Solver's uniform-lambda grid);
    "edm":       sigma_i = (sigma_max^(1/rho) + u_i (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho in
                 sigma_edm = sigma_t / alpha_t, between sigma_edm(T) and sigma_edm(eps)
                 (Karras et al. 2022, Eq. 5);
    "quadratic": t_i = eps + (T - eps) (1 - u_i)^2, denser near eps.
  lambda and sigma_edm grids are mapped back to t with `t_of_log_snr`.

  Raises:
    ValueError: unknown schedule, n_steps < 1, eps outside (0, T) or rho <= 0.
  """
  _check_schedule(sde, n_steps, schedule, eps)
  if not rho > 0:
    raise ValueError(f"sampling.rho={rho!r} must be > 0.")
  T = sde.T
  u = jnp.linspace(0.0, 1.0, n_steps + 1)
  if schedule == "uniform_t":
    ts = T + u * (eps - T)
  elif schedule == "quadratic":
    ts = eps + (T - eps) * (1.0 - u) ** 2
  else:
    lam_T, lam_eps = sde.log_snr(jnp.array([T, eps], jnp.float32))
    if schedule == "log_snr":
      lam = lam_T + u * (lam_eps - lam_T)
    else:  # sigma^(1/rho) = exp(-lambda / rho)
      root_max, root_min = jnp.exp(-lam_T / rho), jnp.exp(-lam_eps / rho)
      lam = -rho * jnp.log(root_max + u * (root_min - root_max))
    ts = t_of_log_snr(sde, lam)
  return ts.at[0].set(T).at[-1].set(eps)


def _start(key: Array, sde: sde_lib.SDE, shape: tuple[int, ...], x_T: Array | None):
  """(x_T [B, ...], per-sample step keys): the prior draw from fold_in(key_i, 0) unless x_T is given."""
  keys = per_sample_keys(key, shape[0])
  x = prior_sample(_fold(keys, 0), sde, shape) if x_T is None else jnp.asarray(x_T).reshape(shape)
  return x, _fold(keys, 1)


def _data_and_noise(sde: sde_lib.SDE, score_fn: ScoreFn, x: Array, t: Array) -> tuple[Array, Array]:
  """Tweedie: eps_hat = -sigma_t s(x, t) and x0_hat = (x - sigma_t eps_hat) / alpha_t; 1 NFE."""
  alpha, sigma = sde.marginal_coeffs(t)
  eps_hat = -_bcast(sigma, x) * score_fn(x, t)
  return (x - _bcast(sigma, x) * eps_hat) / _bcast(alpha, x), eps_hat


def get_ddim_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, n_steps: int = 50,
                     schedule: str = "uniform_t", eps: float = 1e-3, eta: float = 0.0,
                     denoise: bool = False, sigma_end: float | None = None) -> Callable:
  """DDIM (Song, Meng & Ermon 2021, Eq. 12) for any linear SDE; NFE = n_steps.

  A step from t to s < t, with (x0_hat, eps_hat) from Tweedie at (x_t, t):
      x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,
      c^2 = eta^2 sigma_{t|s}^2 sigma_s^2 / sigma_t^2 = eta^2 sigma_s^2 (1 - exp(2 (lambda_t - lambda_s))),
  c^2 / eta^2 being the variance of the Gaussian posterior q(x_s | x_t, x0) (as in
  `ancestral_sampling`; for VP it is DDIM's sigma_tau(eta)^2). eta = 0 is deterministic, the
  first-order exponential integrator of the probability-flow ODE in lambda (= DPM-Solver-1);
  eta = 1 is ancestral sampling. The last step lands at eps; with `denoise`, n_steps - 1 steps
  land at eps and the last one goes to sigma = 0, where the step above is x_0 = x0_hat(x_eps, eps)
  (Tweedie; the same NFE).

  Returns:
    sampler(key, score_fn, x_T=None) -> (samples, nfe).

  Raises:
    ValueError: bad shape, n_steps, schedule, eps, eta outside [0, 1], denoise with n_steps < 2,
      or sigma_end out of range (`end_time`).
  """
  eps = end_time(sde, eps=eps, sigma_end=sigma_end)
  _check_common(sde, shape, eps)
  _check_schedule(sde, n_steps, schedule, eps)
  n_solver = _check_denoise(n_steps, denoise)
  if not 0.0 <= eta <= 1.0:
    raise ValueError(f"sampling.eta={eta!r} must lie in [0, 1].")

  def sampler(key, score_fn, x_T=None):
    x, keys = _start(key, sde, shape, x_T)
    ts = get_time_schedule(sde, n_solver, schedule=schedule, eps=eps)

    def step(x, i):
      t, s = jnp.full(shape[:1], ts[i]), jnp.full(shape[:1], ts[i + 1])
      alpha_s, sigma_s = sde.marginal_coeffs(s)
      x0_hat, eps_hat = _data_and_noise(sde, score_fn, x, t)
      r = -jnp.expm1(2.0 * (sde.log_snr(t) - sde.log_snr(s)))  # sigma_{t|s}^2 / sigma_t^2, in [0, 1]
      x = _bcast(alpha_s, x) * x0_hat + _bcast(sigma_s * jnp.sqrt(1.0 - eta**2 * r), x) * eps_hat
      if eta > 0:
        x = x + _bcast(eta * sigma_s * jnp.sqrt(r), x) * _normal(_fold(keys, i), x)
      return x, None

    x, _ = jax.lax.scan(step, x, jnp.arange(n_solver))
    if denoise:
      x = tweedie_denoise(sde, score_fn, x, jnp.full(shape[:1], eps))
    return x, n_steps

  return sampler


def get_edm_heun_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, n_steps: int = 18,
                         schedule: str = "edm", eps: float = 1e-3, S_churn: float = 0.0,
                         S_tmin: float = 0.0, S_tmax: float = float("inf"),
                         S_noise: float = 1.0, denoise: bool = False,
                         sigma_end: float | None = None) -> Callable:
  """Karras et al. 2022 Heun sampler: Alg. 1 (S_churn = 0, deterministic) or Alg. 2 (churn).

  In x_edm = x / alpha_t and sigma = sigma_edm(t) = sigma_t / alpha_t the probability-flow ODE
  of every linear SDE is EDM's Eq. 4 with s = 1:  dx_edm / dsigma = (x_edm - D(x_edm; sigma)) / sigma,
  D the Tweedie denoiser at x = alpha_t x_edm, t = t(sigma). Step i, sigma_{i+1} < sigma_i:
      gamma_i = min(S_churn / n_steps, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0
      sigma_hat = sigma_i (1 + gamma_i),  x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise z
      d = (x_hat - D(x_hat; sigma_hat)) / sigma_hat,  x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) d
      d' = (x_{i+1} - D(x_{i+1}; sigma_{i+1})) / sigma_{i+1}
      x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) (d + d') / 2
  The last step, to sigma_edm(eps), is Euler: NFE = 2 n_steps - 1. With `denoise`, the grid is
  n_steps - 1 steps from T to eps and then sigma = 0, as Alg. 1's grid: the last, Euler, step
  x_edm + (0 - sigma) (x_edm - D) / sigma = D is the Tweedie denoiser at eps (the same NFE).
  t_hat = t(sigma_hat) comes from `t_of_log_snr`, and sigma_hat is recomputed from t_hat.
  S_tmin, S_tmax are in units of sigma_edm.

  Returns:
    sampler(key, score_fn, x_T=None) -> (samples, nfe).

  Raises:
    ValueError: bad shape, n_steps, schedule, eps, S_churn < 0, S_noise < 0, S_tmin > S_tmax, or
      denoise with n_steps < 2, or sigma_end out of range (`end_time`).
  """
  eps = end_time(sde, eps=eps, sigma_end=sigma_end)
  _check_common(sde, shape, eps)
  _check_schedule(sde, n_steps, schedule, eps)
  n_solver = _check_denoise(n_steps, denoise)
  for name, value in (("S_churn", S_churn), ("S_noise", S_noise), ("S_tmin", S_tmin)):
    if not value >= 0:
      raise ValueError(f"sampling.{name}={value!r} must be >= 0.")
  if not S_tmax >= S_tmin:
    raise ValueError(f"sampling.S_tmax={S_tmax!r} must be >= sampling.S_tmin={S_tmin!r}.")
  B = shape[0]

  def sampler(key, score_fn, x_T=None):
    x, keys = _start(key, sde, shape, x_T)
    ts = get_time_schedule(sde, n_solver, schedule=schedule, eps=eps)
    if denoise:  # t = 0: sigma_edm = 0 and alpha = 1 for every SDE
      ts = jnp.append(ts, 0.0)
    sigmas = sigma_edm(sde, ts)
    t_hats, sigma_hats = ts, sigmas
    if S_churn > 0:
      in_range = (sigmas >= S_tmin) & (sigmas <= S_tmax) & (sigmas > 0)
      gamma = jnp.where(in_range, min(S_churn / n_steps, 2**0.5 - 1), 0.0)
      t_hats = jnp.where(gamma > 0, t_of_log_snr(sde, -jnp.log(sigmas * (1 + gamma))), ts)
      sigma_hats = sigma_edm(sde, t_hats)

    def D(x_edm, t):  # the denoiser in EDM variables: Tweedie at x = alpha_t x_edm
      t = jnp.full((B,), t)
      return tweedie_denoise(sde, score_fn, _bcast(sde.marginal_coeffs(t)[0], x_edm) * x_edm, t)

    def euler(x, i):  # churn, then d = dx/dsigma at (x_hat, sigma_hat); 1 NFE
      if S_churn > 0:
        noise = jnp.sqrt(jnp.maximum(sigma_hats[i]**2 - sigmas[i]**2, 0.0)) * S_noise
        x = x + noise * _normal(_fold(keys, i), x)
      d = (x - D(x, t_hats[i])) / sigma_hats[i]
      return x, d, x + (sigmas[i + 1] - sigma_hats[i]) * d

    def heun(x, i):  # 2 NFE
      x_hat, d, x_next = euler(x, i)
      d_prime = (x_next - D(x_next, ts[i + 1])) / sigmas[i + 1]
      return x_hat + (sigmas[i + 1] - sigma_hats[i]) * 0.5 * (d + d_prime), None

    alpha_T, alpha_eps = sde.marginal_coeffs(ts[jnp.array([0, -1])])[0]
    x_edm, _ = jax.lax.scan(heun, x / alpha_T, jnp.arange(n_steps - 1))
    return alpha_eps * euler(x_edm, n_steps - 1)[2], 2 * n_steps - 1

  return sampler


def get_dpm_solver_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, order: int = 2,
                           n_steps: int = 20, schedule: str = "uniform_t", eps: float = 1e-3,
                           lower_order_final: bool = True, denoise: bool = False,
                           sigma_end: float | None = None) -> Callable:
  """DPM-Solver++ multistep (Lu et al. 2022b, "DPM-Solver++", Alg. 2 for 2M; 3M); NFE = n_steps.

  The probability-flow ODE of a linear SDE, solved exactly in its linear part (Lu et al. 2022b):
      x_t = sigma_t / sigma_s x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0(lambda) dlambda,
  with the data prediction x0 = x0_hat (Tweedie), one NFE per step. With h = lambda_t - lambda_s,
  the last predictions m0 (at s), m1, m2 at lambda_s - h0, lambda_s - h0 - h1, and the weights
  w_k = int_0^h e^(u - h) u^k / k! du  (w0 = 1 - e^-h, w1 = h - w0, w2 = h^2 / 2 - w1):
      order 1 (= DDIM, eta = 0):  x_t = sigma_t / sigma_s x_s + alpha_t w0 m0
      2M (Alg. 2):  m0 -> D = (1 + 1 / (2 r)) m0 - 1 / (2 r) m1,  r = h0 / h
      3M:  + alpha_t (w1 p' + w2 p''), p the quadratic through (m0, m1, m2) in lambda, at lambda_s.
  Warm-up: step i uses order min(order, i + 1); with `lower_order_final`, also at most
  n_steps - i (the last step first order), which keeps few-step sampling stable.
  With `denoise`, n_steps - 1 steps (orders as above) land at eps and the last goes to lambda = +inf
  (sigma = 0): there h = inf and w0 = 1, so the first-order step is x_0 = m0 = x0_hat(x_eps, eps)
  (Tweedie; a higher order is undefined, since m0 - m1 is weighted by h / h0). It spends the last
  NFE on the data prediction instead of on the low-noise end of the log-SNR range.

  Returns:
    sampler(key, score_fn, x_T=None) -> (samples, nfe).

  Raises:
    ValueError: bad shape, n_steps, schedule, eps, order not in {1, 2, 3}, denoise with n_steps < 2,
      or sigma_end out of range (`end_time`).
  """
  eps = end_time(sde, eps=eps, sigma_end=sigma_end)
  _check_common(sde, shape, eps)
  _check_schedule(sde, n_steps, schedule, eps)
  n_solver = _check_denoise(n_steps, denoise)
  if order not in (1, 2, 3) or isinstance(order, bool):
    raise ValueError(f"sampling.order={order!r} must be 1, 2 or 3.")
  orders = jnp.array([min(order, i + 1, n_solver - i if lower_order_final else order)
                      for i in range(n_solver)])
  B = shape[0]

  def sampler(key, score_fn, x_T=None):
    x, _ = _start(key, sde, shape, x_T)
    ts = get_time_schedule(sde, n_solver, schedule=schedule, eps=eps)
    lams = sde.log_snr(ts)

    def step(carry, i):
      x, m1, m2, h0, h1 = carry
      s, t = jnp.full((B,), ts[i]), jnp.full((B,), ts[i + 1])
      (_, sigma_s), (alpha_t, sigma_t) = sde.marginal_coeffs(s), sde.marginal_coeffs(t)
      m0 = tweedie_denoise(sde, score_fn, x, s)
      h = lams[i + 1] - lams[i]
      w0 = -jnp.expm1(-h)
      a = _bcast(alpha_t, x)
      x_1 = _bcast(sigma_t / sigma_s, x) * x + a * w0 * m0
      x_2 = x_1 + a * w0 * h / (2 * h0) * (m0 - m1)
      f01, f12 = (m0 - m1) / h0, (m1 - m2) / h1  # divided differences in lambda
      f012 = (f01 - f12) / (h0 + h1)
      x_3 = x_1 + a * ((h - w0) * (f01 + h0 * f012) + (0.5 * h**2 - (h - w0)) * 2.0 * f012)
      x_next = jnp.select([orders[i] == 1, orders[i] == 2], [x_1, x_2], x_3)
      return (x_next, m0, m1, h, h0), None

    carry = (x, jnp.zeros_like(x), jnp.zeros_like(x), jnp.ones(()), jnp.ones(()))
    (x, *_), _ = jax.lax.scan(step, carry, jnp.arange(n_solver))
    if denoise:
      x = tweedie_denoise(sde, score_fn, x, jnp.full((B,), eps))
    return x, n_steps

  return sampler


def _dpm_solver_fixed_order(order: int) -> Callable:
  """The registry entries "dpm_solver_2m" / "dpm_solver_3m": DPM-Solver++ with `order` fixed."""

  def factory(sde: sde_lib.SDE, shape: tuple[int, ...], **kwargs) -> Callable:
    if "order" in kwargs:
      raise ValueError(f"sampling.order={kwargs['order']!r} is fixed to {order} by this method; "
                       "use method='dpm_solver' to choose it.")
    return get_dpm_solver_sampler(sde, shape, order=order, **kwargs)

  return factory

# --- end of the fast samplers ---


def _ddpm_ancestral(sde: sde_lib.SDE, shape: tuple[int, ...], **kwargs) -> Callable:
  """Ho et al.'s Algorithm 2 driven by a score_fn (ddpm.get_vp_ancestral_sampler); lazy import,
  since ddpm imports this module."""
  import ddpm
  return ddpm.get_vp_ancestral_sampler(sde, shape, **kwargs)


_SAMPLERS: dict[str, Callable] = {"pc": get_pc_sampler, "ode": get_ode_sampler,
                                 "ddpm_ancestral": _ddpm_ancestral,
                                 "ddim": get_ddim_sampler, "edm_heun": get_edm_heun_sampler,
                                 "dpm_solver": get_dpm_solver_sampler,
                                 "dpm_solver_2m": _dpm_solver_fixed_order(2),
                                 "dpm_solver_3m": _dpm_solver_fixed_order(3)}


def register_sampler(name: str, factory: Callable) -> None:
  """Adds a sampler factory `factory(sde, shape, **kwargs) -> sampler` to the registry."""
  _SAMPLERS[name] = factory


def get_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, method: str = "pc", **kwargs) -> Callable:
  """Builds a sampler by method name; kwargs go to its factory (see e.g. `get_pc_sampler`).

  Raises:
    ValueError: unknown method or keyword.
  """
  if method not in _SAMPLERS:
    raise ValueError(f"sampling.method={method!r} is unknown; valid: {sorted(_SAMPLERS)}.")
  factory = _SAMPLERS[method]
  try:
    return factory(sde, tuple(shape), **kwargs)
  except TypeError as e:
    raise ValueError(f"sampling: bad field for method={method!r}: {e}") from None


# --- conditional generation: guidance, inpainting / imputation, colorization ---
#
# Guidance turns a conditional model into an ordinary score_fn(x, t) by closing over the
# labels, so every sampler above samples p_t(x | c) unchanged. The closures are
# jax.tree_util.Partial objects whose labels, scales and bound parameters are leaves: jitted
# samplers (the ODE sampler) trace them instead of recompiling per label. Labels are [B]
# (one per sample; a scalar broadcasts): row i of the batch depends only on label i and
# key i, so per-sample reproducibility is kept.

CondScoreFn = Callable[..., Array]  # cond_score_fn(x, t, y) -> score; y=None is the null label


def _labels(y, x: Array) -> Array:
  return jnp.broadcast_to(jnp.asarray(y, jnp.int32), x.shape[:1])


def _cfg_score(cond_score_fn, y, w, x, t):
  s_c = cond_score_fn(x, t, _labels(y, x))
  s_u = cond_score_fn(x, t, None)
  return (1.0 + w) * s_c - w * s_u


def classifier_free_guidance(cond_score_fn: CondScoreFn, y, w) -> ScoreFn:
  """Classifier-free guidance (Ho & Salimans 2022, Eq. 6 in score form):

      s_w(x, t) = (1 + w) s(x, t, y) - w s(x, t, null) = s(x, t, y) + w grad log p_t(y | x)_implicit.

  w = 0 is the conditional score; w > 0 sharpens towards the class. Each call evaluates the
  network twice (conditional and null label): the network NFE is twice the sampler's nfe.

  Args:
    cond_score_fn: cond_score_fn(x, t, y) -> score, y [B] int or None for the null label
      (e.g. functools.partial(model_score_fn, params), or target.conditional_score_fn(sde)).
    y: labels [B] (or a scalar for the whole batch).
    w: guidance weight (a float or a traced scalar).

  Returns:
    score_fn(x, t), a pytree-callable for any sampler.
  """
  return jax.tree_util.Partial(_cfg_score, as_pytree_fn(cond_score_fn), jnp.asarray(y, jnp.int32),
                               jnp.asarray(w, jnp.float32))


def _label_log_prob_grad(log_prob_fn, y, x, t):
  """grad_x log p(y_i | x_i, t) row by row; the log-softmax makes logits and log-probs interchangeable."""
  y = _labels(y, x)

  def total(x_):
    log_p = jax.nn.log_softmax(log_prob_fn(x_, t), axis=-1)
    return jnp.sum(jnp.take_along_axis(log_p, y[:, None], axis=1))

  return jax.grad(total)(x)


def _classifier_guided_score(score_fn, log_prob_fn, y, scale, x, t):
  return score_fn(x, t) + scale * _label_log_prob_grad(log_prob_fn, y, x, t)


def classifier_guidance(score_fn: ScoreFn, log_prob_fn: Callable[[Array, Array], Array], y,
                        scale) -> ScoreFn:
  """Classifier guidance (Song et al. 2021, Eq. 14; Dhariwal & Nichol 2021, Alg. 1 as a score):

      s(x, t | y) = s(x, t) + scale grad_x log p_t(y | x).

  With the exact score and the exact posterior p_t(y | x) and scale = 1 this is exactly the
  conditional score grad log p_t(x | y) (Bayes). The classifier gradient is one extra
  forward and backward pass per sampler evaluation (not counted in the sampler's nfe).

  Args:
    score_fn: the unconditional score, score_fn(x, t).
    log_prob_fn: log_prob_fn(x, t) -> [B, K] log p(c | x_t) or logits (e.g. the exact
      `target.class_log_posterior_fn(sde)` or functools.partial(classifier_fn, params)).
    y: labels [B] (or a scalar).
    scale: guidance scale (1 = Bayes).

  Returns:
    score_fn(x, t), a pytree-callable for any sampler.
  """
  return jax.tree_util.Partial(_classifier_guided_score, as_pytree_fn(score_fn), as_pytree_fn(log_prob_fn),
                               jnp.asarray(y, jnp.int32), jnp.asarray(scale, jnp.float32))


def impose_known(x: Array, x_known: Array, mask: Array) -> Array:
  """mask * x_known + (1 - mask) * x: the known coordinates (mask = 1) set exactly."""
  mask = jnp.broadcast_to(jnp.asarray(mask, x.dtype), x.shape)
  return mask * jnp.asarray(x_known, x.dtype) + (1.0 - mask) * x


def _diffused_known(keys: Array, sde: sde_lib.SDE, x_known: Array, t: Array) -> Array:
  """A fresh forward-diffused copy alpha_t x_known + sigma_t z of the known data; row i from keys[i]."""
  mean, std = sde.marginal_prob(x_known, t)
  return mean + _bcast(std, x_known) * _normal(keys, x_known)


def _check_mask(shape, x_known, mask) -> None:
  if tuple(jnp.shape(x_known)) != tuple(shape):
    raise ValueError(f"x_known.shape={tuple(jnp.shape(x_known))} must equal the sampler's shape={tuple(shape)}.")
  try:
    np.broadcast_shapes(tuple(jnp.shape(mask)), tuple(shape))
  except ValueError:
    raise ValueError(f"mask.shape={tuple(jnp.shape(mask))} must broadcast to shape={tuple(shape)}.") from None


def get_inpainting_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, predictor: str = "reverse_diffusion",
                           corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
                           probability_flow: bool = False, denoise: bool = True,
                           eps: float = 1e-3) -> Callable:
  """Inpainting / imputation by replacement (Song et al. 2021, App. I.2) on the PC sampler's grid.

  The unknown coordinates (mask = 0) follow the PC sampler; after every corrector step at t_k
  and every predictor step to t_{k+1} the known ones (mask = 1) are replaced by a fresh
  forward-diffused copy alpha_t x_known + sigma_t z of the data at that time (t_{k+1} after the
  predictor). At the end the sample is denoised with Tweedie's formula at eps (`denoise`) and
  then the known coordinates are set to x_known exactly: the final mean is computed from
  the sample, not from an already re-noised copy of it. Replacement is an approximation: the
  noised known part is drawn independently of the unknown part's path, which biases
  p(x_unknown | x_known) where the two are strongly dependent (measured in benchmarks/RESULTS.md);
  pass a `reconstruction_guidance` score to correct it with the gradient of the known part.
  NFE as `get_pc_sampler`.

  Returns:
    sampler(key, score_fn, x_known, mask) -> (samples, nfe); x_known [B, ...] (values at
    mask = 0 are ignored), mask broadcastable to [B, ...], 1 = known.

  Raises:
    ValueError: as `get_pc_sampler`; at call time, x_known or mask of the wrong shape.
  """
  get_pc_sampler(sde, shape, predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps,
                 probability_flow=probability_flow, denoise=denoise, eps=eps)  # validates the settings
  predictor_fn, corrector_fn = PREDICTORS[predictor], CORRECTORS[corrector]
  n_corr = int(n_steps) if corrector_fn is not None else 0
  nfe = sde.N * ((predictor != "none") + n_corr) + int(denoise)
  ts = jnp.linspace(sde.T, eps, sde.N + 1)
  B = shape[0]

  def sampler(key, score_fn, x_known, mask):
    _check_mask(shape, x_known, mask)
    keys = per_sample_keys(key, B)
    known_keys = _fold(keys, 2)
    replace = lambda x, t, k: impose_known(x, _diffused_known(_fold(known_keys, k), sde, x_known, t), mask)
    x = replace(prior_sample(_fold(keys, 0), sde, shape), jnp.full((B,), sde.T), 0)
    keys = _fold(keys, 1)
    rsde = sde.reverse(score_fn, probability_flow)

    def step(x, k):
      t, t_next = jnp.full((B,), ts[k]), jnp.full((B,), ts[k + 1])
      step_keys = _fold(keys, k)
      for j in range(n_corr):
        x, _ = corrector_fn(_fold(step_keys, j + 1), sde, score_fn, x, t, snr)
        x = replace(x, t, (n_corr + 1) * k + j + 1)
      x, _ = predictor_fn(_fold(step_keys, 0), rsde, x, t, t_next)
      return replace(x, t_next, (n_corr + 1) * (k + 1)), None

    x, _ = jax.lax.scan(step, x, jnp.arange(sde.N))
    if denoise:
      x = tweedie_denoise(sde, score_fn, x, jnp.full((B,), eps))
    return impose_known(x, x_known, mask), nfe

  return sampler


def _reconstruction_guided_score(sde, score_fn, x_known, mask, scale, data_var, x, t):
  alpha, sigma = sde.marginal_coeffs(t)
  mask = jnp.broadcast_to(jnp.asarray(mask, x.dtype), x.shape)

  def denoised(x_):
    s = score_fn(x_, t)
    return (x_ + _bcast(sigma**2, x_) * s) / _bcast(alpha, x_), s

  x0_hat, vjp_fn, s = jax.vjp(denoised, x, has_aux=True)
  r2 = data_var * sigma**2 / (alpha**2 * data_var + sigma**2)  # Var[x0 | x_t] for N(0, data_var I) data
  # grad_x log N(x_known; x0_hat(x), r_t^2) on the known coordinates = J^T mask (x_known - x0_hat) / r_t^2.
  (grad,) = vjp_fn(mask * (x_known - x0_hat) / _bcast(r2, x))
  return s + scale * grad


def reconstruction_guidance(sde: sde_lib.SDE, score_fn: ScoreFn, x_known: Array, mask: Array, *,
                            scale: float = 1.0, data_var: float = 1.0) -> ScoreFn:
  """Gradient-based conditioning on known coordinates (Ho et al. 2022, "Video diffusion models",
  Eq. 7; Chung et al. 2023, DPS; variance as Song et al. 2023, PiGDM):

      s(x_t | x_known) ~ s(x_t) + scale grad_{x_t} log N(x_known; M x0_hat(x_t), r_t^2 I),
      x0_hat = (x_t + sigma_t^2 s(x_t)) / alpha_t,  r_t^2 = v sigma_t^2 / (alpha_t^2 v + sigma_t^2),

  M the mask and r_t^2 the posterior variance of x0 given x_t for N(0, v I) data (v = data_var).
  The gradient goes through the network (a vector-Jacobian product), so it corrects the
  unknown coordinates for what the known ones imply, which replacement does not. It is an
  ordinary score_fn: use it with any sampler (then `impose_known` on the result), or with
  `get_inpainting_sampler` to combine both (Ho et al.'s reconstruction-guided replacement).

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
  return jax.tree_util.Partial(functools.partial(_reconstruction_guided_score, sde), as_pytree_fn(score_fn),
                               jnp.asarray(x_known), jnp.asarray(mask), jnp.asarray(scale, jnp.float32),
                               jnp.asarray(data_var, jnp.float32))


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


def _rotated_score(score_fn, M, u, t):
  return score_fn(u @ M, t) @ M.T  # orthogonal change of variables: s_u(u) = M s_x(M^T u)


def get_colorization_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, guidance_scale: float = 0.0,
                             data_var: float = 1.0, **kwargs) -> Callable:
  """Colorization: samples x [B, ..., C] (channels last) given its grey image mean_c x.

  The forward noise is isotropic, so in the orthogonal basis u = M x of `colorization_basis`
  the SDE is unchanged and the score is M s(M^T u). There the grey image is the known
  coordinate u_0 = sqrt(C) grey, and colorization is `get_inpainting_sampler` on u with a
  mask on channel 0; the result is rotated back, so mean_c x = grey exactly. With
  guidance_scale > 0 the rotated score is also `reconstruction_guidance`d towards the grey
  image (scale, data_var as there), which removes most of the replacement bias.

  Args:
    sde, shape: as `get_inpainting_sampler`; shape[-1] = C >= 2.
    guidance_scale: reconstruction-guidance weight (0: replacement only).
    data_var: the data variance assumed by the guidance.
    **kwargs: PC settings of `get_inpainting_sampler`.

  Returns:
    sampler(key, score_fn, grey) -> (samples [B, ..., C], nfe); grey [B, ...] (= shape[:-1]).

  Raises:
    ValueError: bad settings or C < 2; at call time, grey of the wrong shape.
  """
  M = jnp.asarray(colorization_basis(shape[-1]), jnp.float32)
  inpaint = get_inpainting_sampler(sde, shape, **kwargs)
  mask = jnp.zeros(shape[-1]).at[0].set(1.0)

  def sampler(key, score_fn, grey):
    if tuple(jnp.shape(grey)) != tuple(shape[:-1]):
      raise ValueError(f"grey.shape={tuple(jnp.shape(grey))} must equal shape[:-1]={tuple(shape[:-1])}.")
    u_known = jnp.zeros(shape).at[..., 0].set(jnp.sqrt(float(shape[-1])) * grey)
    u_score = jax.tree_util.Partial(_rotated_score, as_pytree_fn(score_fn), M)
    if guidance_scale > 0:
      u_score = reconstruction_guidance(sde, u_score, u_known, mask, scale=guidance_scale, data_var=data_var)
    u, nfe = inpaint(key, u_score, u_known, mask)
    return u @ M, nfe

  return sampler
