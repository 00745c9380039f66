"""What every sampler family shares: the `Sampler` object (compiled once per shape), the score
function as a pytree, the prior draw, Tweedie's denoiser, trajectory thinning and the shape checks."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import utils
from utils import bcast, fold, per_sample_keys

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]
# run(key, score_fn, x_T, n_trajectory, **options) -> (x, nfe, trajectory or None)
RunFn = Callable[..., tuple]


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


def prior_sample(keys: Array, sde: sde_lib.SDE, shape: tuple[int, ...]) -> Array:
  """x_T [B, ...] from the prior, row i drawn from keys[i]."""
  return jax.vmap(lambda k: sde.prior_sampling(k, (1,) + tuple(shape[1:]))[0])(keys)


def tweedie_denoise(sde: sde_lib.SDE, score_fn: ScoreFn, x: Array, t: Array) -> Array:
  """E[x0 | x_t] = (x_t + sigma(t)^2 score(x_t, t)) / alpha(t) (Tweedie's formula); 1 NFE."""
  alpha, sigma = sde.marginal_coeffs(t)
  return (x + bcast(sigma**2, x) * score_fn(x, t)) / bcast(alpha, x)


def check_common(sde: sde_lib.SDE, shape, eps: float) -> tuple[int, ...]:
  """The batch shape [B, ...] as a tuple, after checking it and the end time eps in (0, T).

  Raises:
    ValueError: a bad shape or eps.
  """
  shape = utils.check_batch_shape(shape)
  utils.check_real("sampling.eps", eps, low=0.0, high=sde.T, low_open=True, high_open=True)
  return shape


def start(key: Array | None, sde: sde_lib.SDE, shape: tuple[int, ...], x_T: Array | None):
  """(x_T [B, ...], per-sample keys [B] or None without a key).

  x_T is the given latent, or the prior draw of row i from fold_in(fold_in(key, i), 0).
  """
  keys = None if key is None else per_sample_keys(key, shape[0])
  x = prior_sample(fold(keys, 0), sde, shape) if x_T is None else x_T
  return x, keys


# --- trajectories: the states after every stride-th of n_steps steps, the last one the sample ---

def trajectory_stride(n_steps: int, n_trajectory: int) -> int:
  """ceil(n_steps / n_trajectory): step k is stored at index k // stride."""
  return -(-n_steps // max(n_trajectory, 1))


def empty_trajectory(n_trajectory: int, x: Array) -> Array | None:
  return jnp.zeros((n_trajectory,) + x.shape, x.dtype) if n_trajectory else None


def record(traj: Array | None, x: Array, k: Array, stride: int) -> Array | None:
  """The trajectory with x stored after step k (None stays None)."""
  return None if traj is None else jax.lax.dynamic_update_index_in_dim(traj, x, k // stride, 0)


def finish_trajectory(traj: Array | None, x: Array) -> Array | None:
  """The trajectory with its last state set to the final sample x (after any denoising)."""
  return None if traj is None else traj.at[-1].set(x)


def _no_options() -> dict:
  return {}


class Sampler:
  """A sampler compiled once per shape: a jitted pure function with the sampler contract.

      x, nfe = sampler(key, score_fn, x_T=None, **options)
      x, nfe, traj = sampler.trajectory(key, score_fn, n_trajectory, x_T=None, **options)

  `score_fn(x, t) -> score` is passed as a pytree (`as_pytree_fn`), so a new
  `functools.partial(model_score_fn, params)` reuses the compiled program; inside an outer
  `jax.jit` the sampler is simply traced. `x_T` [B, ...] is the prior latent: deterministic
  samplers are maps of it, stochastic ones start from it instead of the prior draw. `nfe` (an
  int32 scalar) counts score evaluations per sample. `traj` [n_trajectory, B, ...] holds the
  states after every ceil(n_steps / n_trajectory)-th step, the last one the sample.

  Args:
    method: the registry name, used in messages.
    shape: [B, ...] of the batch.
    run: the pure function run(key, score_fn, x_T, n_trajectory, **options) -> (x, nfe, traj),
      traj None when n_trajectory = 0 (static).
    max_trajectory: the largest n_trajectory (the number of steps); 0 for no trajectories.
    needs_key: False for deterministic samplers, which accept key=None given x_T.
    options: options(**call_kwargs) -> dict of traced keyword arguments of `run`
      (e.g. the ODE sampler's rtol, atol); default: none accepted.

  Attributes:
    method, shape, run, max_trajectory: as given.
  """

  def __init__(self, method: str, shape: tuple[int, ...], run: RunFn, *, max_trajectory: int = 0,
               needs_key: bool = True, options: Callable[..., dict] | None = None):
    self.method, self.shape, self.run = method, tuple(shape), run
    self.max_trajectory, self.needs_key = int(max_trajectory), needs_key
    self._options = _no_options if options is None else options
    self._compiled = jax.jit(run, static_argnames=("n_trajectory",))

  def __call__(self, key: Array | None, score_fn: ScoreFn, x_T: Array | None = None, **options):
    """(x [B, ...], nfe); see the class docstring."""
    x, nfe, _ = self._call(key, score_fn, x_T, 0, options)
    return x, nfe

  def trajectory(self, key: Array | None, score_fn: ScoreFn, n_trajectory: int,
                 x_T: Array | None = None, **options):
    """(x [B, ...], nfe, traj [n_trajectory, B, ...]).

    Raises:
      ValueError: a method without trajectories, or n_trajectory outside [1, max_trajectory].
    """
    if not self.max_trajectory:
      raise ValueError(f"sampling.method={self.method!r} returns no trajectory; "
                       "use 'pc', 'ode' or 'ddpm_ancestral'.")
    if not (utils.is_int(n_trajectory) and 1 <= n_trajectory <= self.max_trajectory):
      raise ValueError(f"n_trajectory={n_trajectory!r} must be an integer in "
                       f"[1, {self.max_trajectory}] (the number of steps).")
    return self._call(key, score_fn, x_T, int(n_trajectory), options)

  def _call(self, key, score_fn, x_T, n_trajectory: int, options: dict):
    if x_T is not None:
      x_T = jnp.asarray(x_T)
      if tuple(x_T.shape) != self.shape:
        raise ValueError(f"x_T.shape={tuple(x_T.shape)} must equal the sampler's shape={self.shape}.")
    if key is None and (self.needs_key or x_T is None):
      raise ValueError(f"sampling.method={self.method!r} needs a key (key=None only with x_T "
                       "for a deterministic sampler).")
    return self._compiled(key, as_pytree_fn(score_fn), x_T, n_trajectory=n_trajectory,
                          **self._options(**options))

  def __repr__(self) -> str:
    return f"Sampler(method={self.method!r}, shape={self.shape})"
