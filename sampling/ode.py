"""The probability-flow ODE (Song et al. 2021, Eq. 13)

    dx/dt = f(x, t) - g(t)^2 s(x, t) / 2,

which shares the marginals p_t of the forward SDE: integrated from x_T ~ prior at T down to eps
it samples p_eps (`get_ode_sampler`), from eps up to T it encodes data into latents
(`get_ode_encoder`). `solve_ode` integrates it with diffrax, the whole batch as one state: an
adaptive step size is shared by all examples (from the RMS error over the batch), so a sample
depends on its batch mates through the step sizes, within the tolerances; fixed steps
(`n_steps`) have no such coupling.
"""

from __future__ import annotations

import numbers
from typing import Callable

import diffrax
import jax
import jax.numpy as jnp

import sde_lib
import utils
from sampling.base import (ScoreFn, Sampler, as_pytree_fn, check_common, finish_trajectory, start, trajectory_stride,
                           tweedie_denoise)

Array = jax.Array

ODE_SOLVERS: dict[str, type] = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5,
                                "heun": diffrax.Heun, "euler": diffrax.Euler}


def _stages(solver) -> tuple[int, bool]:
  """(stages per step, first-same-as-last) of an explicit diffrax solver."""
  tableau = getattr(solver, "tableau", None)
  if tableau is None:  # Euler: one stage, no tableau.
    return 1, False
  return len(tableau.c) + 1, bool(tableau.fsal)


def check_ode_args(solver: str, rtol, atol, n_steps: int | None, max_steps: int, *,
                   group: str = "sampling") -> None:
  """Validates the ODE-solver settings shared by the ODE sampler, encoder and likelihood.

  Args:
    solver, rtol, atol, n_steps, max_steps: as `solve_ode`.
    group: the config group named in messages (`<group>.solver`, ...).

  Raises:
    ValueError: unknown solver, non-positive tolerances, bad step counts, or an adaptive
      solve requested from a solver without an error estimate (euler).
  """
  utils.check_choice(f"{group}.solver", solver, ODE_SOLVERS)
  for name, tol in (("rtol", rtol), ("atol", atol)):
    if not (isinstance(tol, numbers.Real) and tol > 0):
      raise ValueError(f"{group}.{name}={tol!r} must be a number > 0.")
  if n_steps is not None and not (utils.is_int(n_steps) and n_steps >= 1):
    raise ValueError(f"{group}.n_steps={n_steps!r} must be None (adaptive) or an integer >= 1.")
  if n_steps is None and solver == "euler":
    raise ValueError(f"{group}.solver='euler' has no error estimate: set {group}.n_steps "
                     "(fixed steps) or use an adaptive solver (tsit5, dopri5, heun).")
  utils.check_int(f"{group}.max_steps", max_steps, 1)


def tolerances(rtol, atol, default_rtol, default_atol) -> list[Array]:
  """[rtol, atol] as float32 arrays (traced under jit), None meaning the default.

  Raises:
    ValueError: a concrete override <= 0.
  """
  out = []
  for name, tol, default in (("rtol", rtol, default_rtol), ("atol", atol, default_atol)):
    tol = default if tol is None else tol
    if isinstance(tol, numbers.Real) and not tol > 0:
      raise ValueError(f"{name}={tol!r} must be > 0.")
    out.append(jnp.asarray(tol, jnp.float32))
  return out


def solve_ode(vector_field: Callable, y0, t0: Array, t1: Array, *, solver: str = "tsit5",
              rtol: float | Array = 1e-5, atol: float | Array = 1e-5, n_steps: int | None = None,
              max_steps: int = 4096, save_ts: Array | None = None):
  """Integrates dy/dt = vector_field(t, y) from t0 to t1 (either direction) with diffrax.

  Adaptive (n_steps=None): PID step-size control on the RMS norm, over the whole state, of the
  error estimate scaled by atol + rtol |y|, first trial step (t1 - t0) / 100. Fixed: n_steps
  uniform steps. Every evaluation of `vector_field` is counted, rejected steps included:

      nfe = FSAL + (stages - FSAL) num_steps,      num_steps = accepted + rejected steps,

  tsit5 / dopri5: 7 stages, first-same-as-last (FSAL); heun: 2; euler: 1. For adaptive FSAL
  solvers the first stage is evaluated here and handed to diffrax as `solver_state`, so the
  count does not depend on when the first step is accepted; diffrax marks a passed solver state
  nondifferentiable: the adaptive path is for evaluation, not reverse-mode gradients.

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


def pf_ode_drift(sde: sde_lib.SDE, score_fn: ScoreFn) -> Callable[[Array, Array], Array]:
  """v(t, x) = f(x, t) - g(t)^2 s(x, t) / 2 for a scalar t and x [B, ...] (Song et al. Eq. 13)."""
  rsde = sde.reverse(score_fn, probability_flow=True)
  return lambda t, x: rsde.sde(x, jnp.full(x.shape[:1], t, x.dtype))[0]


def _tolerance_options(rtol: float, atol: float, t_start: float, t_end: float) -> Callable[..., dict]:
  """options(rtol=None, atol=None) -> the traced keyword arguments of an ODE solve."""

  def options(rtol=None, atol=None) -> dict:
    tol = tolerances(rtol, atol, *defaults)
    return dict(rtol=tol[0], atol=tol[1], t_start=jnp.float32(t_start), t_end=jnp.float32(t_end))

  defaults = (rtol, atol)
  return options


def get_ode_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, solver: str = "tsit5",
                    rtol: float = 1e-5, atol: float = 1e-5, n_steps: int | None = None,
                    denoise: bool = False, eps: float = 1e-3, max_steps: int = 4096) -> Sampler:
  """Probability-flow ODE sampler: integrates dx/dt = f(x, t) - g(t)^2 s(x, t) / 2 (Song et al.
  2021, Eq. 13) from T to eps with `solve_ode`, entirely on device; with `denoise`, a final
  Tweedie step at eps (1 NFE). x_T is drawn from the prior (row i from fold_in(key, i), as the
  PC sampler) or given. nfe counts every score evaluation, rejected steps included.

  Compiled once per sampler; rtol, atol, the time span and the score's bound arrays are traced.

  Args:
    sde: the forward SDE.
    shape: [B, ...] of the batch.
    solver: "tsit5" (default), "dopri5", "heun" (adaptive or fixed) or "euler" (fixed only).
    rtol, atol: default tolerances of the adaptive step control, shared by the whole batch.
    n_steps: None for adaptive steps, or a number of uniform steps.
    denoise: finish with Tweedie's formula E[x_0 | x_eps].
    eps: end time (> 0: the ODE is stiff at t = 0).
    max_steps: step budget of the adaptive solve.

  Returns:
    A `Sampler`: sampler(key, score_fn, x_T=None, rtol=None, atol=None) -> (x, nfe), the
    decoder of `get_ode_encoder` given x_T (key may then be None); sampler.trajectory(key,
    score_fn, n_trajectory, x_T=None, rtol=None, atol=None) -> (x, nfe, traj), traj the
    states at the PC sampler's thinned grid (n_trajectory in [1, N]).

  Raises:
    ValueError: bad shape, eps, solver name, tolerance or step count.
  """
  shape = check_common(sde, shape, eps)
  check_ode_args(solver, rtol, atol, n_steps, max_steps)
  utils.check_bool("sampling.denoise", denoise)
  max_steps = int(max_steps)

  def run(key, score_fn, x_T, n_trajectory, rtol, atol, t_start, t_end):
    x_T, _ = start(key, sde, shape, x_T)
    save_ts = None
    if n_trajectory:
      # The PC sampler's thinned grid t_k = T + k (eps - T) / N, k = min(j stride, N), j = 1..K.
      k = jnp.minimum(jnp.arange(1, n_trajectory + 1) * trajectory_stride(sde.N, n_trajectory), sde.N)
      save_ts = t_start + (t_end - t_start) * k / sde.N
    x, nfe = solve_ode(pf_ode_drift(sde, score_fn), x_T, t_start, t_end, solver=solver, rtol=rtol,
                       atol=atol, n_steps=n_steps, max_steps=max_steps, save_ts=save_ts)
    traj, x = (x, x[-1]) if n_trajectory else (None, x)
    if denoise:
      x = tweedie_denoise(sde, score_fn, x, jnp.full(shape[:1], t_end, x.dtype))
      nfe = nfe + 1
    return x, nfe, finish_trajectory(traj, x)

  return Sampler("ode", shape, run, max_trajectory=sde.N, needs_key=False,
                 options=_tolerance_options(rtol, atol, sde.T, eps))


def get_ode_encoder(sde: sde_lib.SDE, *, solver: str = "tsit5", rtol: float = 1e-5,
                    atol: float = 1e-5, n_steps: int | None = None, eps: float = 1e-3,
                    max_steps: int = 4096) -> Callable:
  """Encoder x -> z of the probability-flow ODE: integrates dx/dt = f - g^2 s / 2 from eps to T.

  The inverse of `get_ode_sampler(..., denoise=False)` called with x_T (the decoder), up to the
  solver tolerances. Compiled once per encoder (rtol, atol and the score's arrays traced).

  Returns:
    encoder(score_fn, x, rtol=None, atol=None) -> (z [B, ...], nfe).

  Raises:
    ValueError: bad eps, solver name, tolerance or step count.
  """
  utils.check_real("sampling.eps", eps, low=0.0, high=sde.T, low_open=True, high_open=True)
  check_ode_args(solver, rtol, atol, n_steps, max_steps)
  options = _tolerance_options(rtol, atol, eps, sde.T)

  @jax.jit
  def encode(score_fn, x, rtol, atol, t_start, t_end):
    return solve_ode(pf_ode_drift(sde, score_fn), x, t_start, t_end, solver=solver, rtol=rtol,
                     atol=atol, n_steps=n_steps, max_steps=int(max_steps))

  def encoder(score_fn, x, rtol=None, atol=None):
    return encode(as_pytree_fn(score_fn), x, **options(rtol=rtol, atol=atol))

  return encoder
