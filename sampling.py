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



_SAMPLERS: dict[str, Callable] = {"pc": get_pc_sampler, "ode": get_ode_sampler}


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
