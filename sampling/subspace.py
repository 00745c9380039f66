"""Subspace diffusion (Jing, Corso, Berlinghieri & Jaakkola 2022, "Subspace diffusion generative
models"): orthonormal subspace bases, the two-stage reverse samplers and the orthogonal Fisher
divergence that chooses the switching time.

For a linear SDE dx = f(t) x dt + g(t) dW acting on every coordinate alike and an orthonormal basis
U [D, k], the subspace coordinates y = U^T x obey dy = f(t) y dt + g(t) U^T dW, the same SDE in k
dimensions. Reverse sampling runs in the subspace at high noise, t from T down to t_s, with the
subspace score grad_y log p_t(y); at t_s it lifts

    x = U y + alpha_s m_perp + sqrt(alpha_s^2 v_perp + sigma_s^2) P_perp xi,   xi ~ N(0, I_D),

the orthogonal component drawn from its marginal at t_s when the data's orthogonal component is
N(m_perp, v_perp) per coordinate and independent of y (P_perp = I - U U^T); below t_s it continues
in the full space with the full score. Derivation and measurements: docs/subspace.md.

The latent of a sample is one x_T ~ N(0, prior_std^2 I_D): y_T = U^T x_T and xi = P_perp x_T /
prior_std, independent because U and P_perp split R^D orthogonally. The deterministic (ODE) sampler
is therefore a bijection of x_T, and `metrics.sampler_kl` applies to it unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import utils
from sampling.base import Sampler, as_pytree_fn, check_common, start, tweedie_denoise
from sampling.ode import check_ode_args, pf_ode_drift, solve_ode
from sampling.pc import pc_settings
from sampling.schedules import fast_settings, get_time_schedule
from utils import bcast, fold

Array = jax.Array


# --- orthonormal subspace bases ------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Subspace:
  """A linear subspace of the examples' space with an orthonormal basis U [D, k].

  y = project(x) = U^T x (x [B, *shape] flattened), lift(y) = U y reshaped, complement(x) =
  (I - U U^T) x. Constructors: `matrix_subspace`, `avgpool_subspace`, `zero_com_subspace`.

  Attributes:
    basis: U [D, k], float32, orthonormal columns.
    shape: one example's shape (prod(shape) = D).
  """

  basis: Array
  shape: tuple[int, ...]

  @property
  def dim(self) -> int:
    """k, the subspace dimension."""
    return int(self.basis.shape[1])

  @property
  def full_dim(self) -> int:
    """D, the dimension of the whole space."""
    return int(self.basis.shape[0])

  def project(self, x: Array) -> Array:
    """Subspace coordinates U^T x; [B, k]."""
    return jnp.reshape(x, (x.shape[0], -1)) @ self.basis

  def lift(self, y: Array) -> Array:
    """U y as examples; [B, *shape]."""
    return jnp.reshape(y @ self.basis.T, (y.shape[0],) + self.shape)

  def complement(self, x: Array) -> Array:
    """The orthogonal component (I - U U^T) x; [B, *shape]."""
    return x - self.lift(self.project(x))


def matrix_subspace(basis, shape: tuple[int, ...] | None = None, *, atol: float = 1e-5) -> Subspace:
  """The subspace spanned by the columns of `basis` [D, k] (examples of `shape`, default (D,)).

  Raises:
    ValueError: not a 2-D [D, k] matrix with 1 <= k < D, columns not orthonormal within atol, or
      a shape whose size is not D.
  """
  U = np.asarray(basis, np.float64)
  if U.ndim != 2 or not 1 <= U.shape[1] < U.shape[0]:
    raise ValueError(f"subspace basis of shape {U.shape} must be [D, k] with 1 <= k < D.")
  err = float(np.max(np.abs(U.T @ U - np.eye(U.shape[1]))))
  if err > atol:
    raise ValueError(f"subspace basis columns must be orthonormal: max |U^T U - I| = {err:.3g} > {atol}.")
  shape = (U.shape[0],) if shape is None else tuple(int(s) for s in shape)
  if int(np.prod(shape)) != U.shape[0]:
    raise ValueError(f"subspace shape={shape} must hold D = {U.shape[0]} numbers.")
  return Subspace(jnp.asarray(U, jnp.float32), shape)


def avgpool_subspace(height: int, width: int, channels: int = 1, *, factor: int = 2) -> Subspace:
  """The average-pooling subspace of [height, width, channels] images: images constant on every
  factor x factor block. Column (i, j, c) is the block's indicator / factor (unit norm), so
  y = U^T x = factor * (the average-pooled image), flattened in (i, j, c) order.

  Raises:
    ValueError: sizes not divisible by factor, or factor < 2.
  """
  for name, v in (("height", height), ("width", width), ("channels", channels)):
    utils.check_int(f"subspace.{name}", v, 1)
  utils.check_int("subspace.factor", factor, 2)
  if height % factor or width % factor:
    raise ValueError(f"subspace image size {height} x {width} must be divisible by factor={factor}.")
  h, w = height // factor, width // factor
  blocks = np.kron(np.eye(h), np.ones((factor, 1)))[:, :, None, None] * \
      np.kron(np.eye(w), np.ones((factor, 1)))[None, None, :, :]  # [H, h, W, w]
  U = np.einsum("aibj,cd->abcijd", blocks, np.eye(channels))  # [H, W, C, h, w, C]
  return matrix_subspace(U.reshape(height * width * channels, h * w * channels) / factor,
                         (height, width, channels))


def zero_com_subspace(n_particles: int, n_dims: int) -> Subspace:
  """The zero-centre-of-mass subspace of n particles in n_dims dimensions (x [B, n * n_dims],
  particle-major): sum_i x_i = 0. Basis: the Helmert vectors h_j (j = 1..n-1; h_j = (1, .., 1,
  -j, 0, ..) / sqrt(j (j + 1))) in each spatial dimension, (n - 1) n_dims columns.

  Raises:
    ValueError: n_particles < 2 or n_dims < 1.
  """
  utils.check_int("subspace.n_particles", n_particles, 2)
  utils.check_int("subspace.n_dims", n_dims, 1)
  H = np.zeros((n_particles, n_particles - 1))
  for j in range(1, n_particles):
    H[:j, j - 1], H[j, j - 1] = 1.0, -float(j)
    H[:, j - 1] /= np.sqrt(j * (j + 1))
  return matrix_subspace(np.kron(H, np.eye(n_dims)), (n_particles * n_dims,))


SUBSPACES = {"matrix": matrix_subspace, "avgpool": avgpool_subspace, "zero_com": zero_com_subspace}


def get_subspace(subspace, example_shape: tuple[int, ...]) -> Subspace:
  """A `Subspace`, or one built from a mapping {"name": "matrix" | "avgpool" | "zero_com", **fields}
  (a config's `sampling.subspace`); "avgpool" takes its image size from example_shape.

  Raises:
    ValueError: an unknown name or field, or a subspace of another space than example_shape.
  """
  if isinstance(subspace, Mapping):
    fields = dict(subspace)
    name = utils.check_choice("sampling.subspace.name", fields.pop("name", None), SUBSPACES)
    if name == "avgpool":
      fields = {**dict(zip(("height", "width", "channels"), example_shape)), **fields}
    utils.check_fields("sampling.subspace", SUBSPACES[name], fields)
    subspace = SUBSPACES[name](**fields)
  if not isinstance(subspace, Subspace):
    raise ValueError(f"sampling.subspace={subspace!r} must be a Subspace or a mapping with a name in "
                     f"{sorted(SUBSPACES)}.")
  if int(np.prod(example_shape)) != subspace.full_dim:
    raise ValueError(f"sampling.subspace spans D = {subspace.full_dim} numbers; the examples {tuple(example_shape)} "
                     f"hold {int(np.prod(example_shape))}.")
  return dataclasses.replace(subspace, shape=tuple(example_shape))


def orthogonal_moments(subspace: Subspace, mean, cov) -> tuple[np.ndarray, float]:
  """(m_perp, v_perp): the data's orthogonal mean P_perp E[x] [*shape] and its variance per
  orthogonal coordinate tr(P_perp Cov P_perp) / (D - k), from the data mean [D] and covariance [D, D]."""
  U = np.asarray(subspace.basis, np.float64)
  P = np.eye(U.shape[0]) - U @ U.T
  m = P @ np.asarray(mean, np.float64).reshape(-1)
  v = float(np.trace(P @ np.asarray(cov, np.float64) @ P)) / (U.shape[0] - U.shape[1])
  return m.reshape(subspace.shape), v


# --- the joint score: the full score and the subspace score in one pytree ----------------

def _joint_score(k: int, full_fn, sub_fn, x, t):
  """Dispatch on the trailing shape: [B, k] is a subspace point, anything else a full one."""
  return sub_fn(x, t) if x.shape[1:] == (k,) else full_fn(x, t)


_JOINT: dict[int, Callable] = {}  # one static function per subspace dimension k (no recompiles)


def subspace_score_fn(full_score_fn: Callable, subspace_score: Callable, dim: int) -> jax.tree_util.Partial:
  """One score_fn(x, t) for a subspace sampler: the full score on examples [B, *shape] and the
  subspace score fn(y [B, dim], t) = grad_y log p_t(y) on subspace coordinates. A pytree: a
  `functools.partial(model_score_fn, params)` inside stays traced."""
  dim = utils.check_int("subspace dim", dim, 1)
  joint = _JOINT.setdefault(dim, functools.partial(_joint_score, dim))
  return jax.tree_util.Partial(joint, as_pytree_fn(full_score_fn), as_pytree_fn(subspace_score))


def _split_scores(score_fn, subspace: Subspace, sde: sde_lib.SDE, m_perp: Array):
  """(full, subspace) scores. A plain full score gives the subspace score U^T s(U y + alpha_t m_perp, t),
  exact when the orthogonal component is independent of y (docs/subspace.md)."""
  if isinstance(score_fn, jax.tree_util.Partial) and any(score_fn.func is f for f in _JOINT.values()):
    if score_fn.func.args[0] != subspace.dim:
      raise ValueError(f"the subspace score is for dimension {score_fn.func.args[0]}; the subspace has "
                       f"{subspace.dim}.")
    return score_fn.args[0], score_fn.args[1]

  def projected(y, t):
    alpha, _ = sde.marginal_coeffs(t)
    x = subspace.lift(y)
    x = x + bcast(alpha, x) * m_perp[None]
    return subspace.project(score_fn(x, t))

  return score_fn, projected


# --- the two-stage samplers ------------------------------------------------------------------

def _settings(sde: sde_lib.SDE, shape, subspace, perp_mean, perp_var, t_switch: float, eps: float):
  """(shape, Subspace, m_perp [*shape] in the complement, v_perp) after the checks."""
  shape = check_common(sde, shape, eps)
  if hasattr(subspace, "to_dict"):  # a ConfigDict group
    subspace = subspace.to_dict()
  sub = get_subspace(subspace, shape[1:])
  utils.check_real("sampling.t_switch", t_switch, low=eps, high=sde.T, low_open=True, high_open=True)
  utils.check_real("sampling.perp_var", perp_var, low=0.0)
  m = np.asarray(perp_mean, np.float32)
  if m.ndim and m.shape != tuple(shape[1:]):
    raise ValueError(f"sampling.perp_mean of shape {m.shape} must be a number or shaped like one example "
                     f"{tuple(shape[1:])}.")
  m_perp = sub.complement(jnp.broadcast_to(jnp.asarray(m), (1,) + tuple(shape[1:])))[0]
  return shape, sub, m_perp, float(perp_var)


def lift(sde: sde_lib.SDE, subspace: Subspace, y: Array, x_T: Array, t: Array, m_perp: Array,
         v_perp: float) -> Array:
  """The reverse projection step at time t [B]: x = U y + alpha_t m_perp + sqrt(alpha_t^2 v_perp +
  sigma_t^2) P_perp x_T / prior_std, the orthogonal component drawn from its Gaussian marginal at t
  with the noise taken from the latent x_T (so the sampler stays a map of x_T)."""
  alpha, sigma = sde.marginal_coeffs(t)
  x = subspace.lift(y)
  xi = subspace.complement(x_T) / sde.prior_std
  return x + bcast(alpha, x) * m_perp[None] + bcast(jnp.sqrt(alpha**2 * v_perp + sigma**2), x) * xi


def _pc_segment(cfg, score_fn, keys: Array, x: Array, k0: int, k1: int) -> Array:
  """Steps k0..k1-1 of the PC loop (`sampling.pc.pc_solve`, same keys per step) on x."""
  sde, B = cfg.sde, x.shape[0]
  rsde = sde.reverse(score_fn, cfg.probability_flow)

  def step(x, k):
    t, t_next = jnp.full((B,), cfg.ts[k]), jnp.full((B,), cfg.ts[k + 1])
    step_keys = fold(keys, k)
    for j in range(cfg.n_corr):
      x, _ = cfg.corrector_fn(fold(step_keys, j + 1), sde, score_fn, x, t, cfg.snr)
    x, _ = cfg.predictor_fn(fold(step_keys, 0), rsde, x, t, t_next)
    return x, None

  return jax.lax.scan(step, x, jnp.arange(k0, k1))[0]


def get_subspace_pc_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, subspace, t_switch: float,
                            perp_mean=0.0, perp_var: float = 0.0, predictor: str = "reverse_diffusion",
                            corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
                            probability_flow: bool = False, denoise: bool = True,
                            eps: float = 1e-3) -> Sampler:
  """Subspace PC sampler: the PC loop of `get_pc_sampler` (same N-step grid t_j = T + j (eps - T) / N)
  run on y = U^T x with the subspace score for j < j_s, the lift (`lift`) at t_{j_s}, then the full
  space with the full score; j_s is the grid index nearest t_switch (`sampler.t_switch` the time used).

  Args:
    sde, shape: the forward SDE and the batch shape [B, ...].
    subspace: a `Subspace` or a mapping for `get_subspace`.
    t_switch: the switching time t_s in (eps, T).
    perp_mean, perp_var: the data's orthogonal mean (a number or one example) and variance per
      orthogonal coordinate (`orthogonal_moments`).
    predictor, corrector, snr, n_steps, probability_flow, denoise, eps: as `get_pc_sampler`.

  Returns:
    A `Sampler`: sampler(key, score_fn, x_T=None) -> (x, nfe). score_fn is
    `subspace_score_fn(full, sub, k)`, or a full score alone (the subspace score is then its
    projection, see `_split_scores`). Attributes t_switch and nfe_split {"subspace", "full"}.

  Raises:
    ValueError: a bad subspace, t_switch, perp_mean / perp_var, or a PC field.
  """
  shape, sub, m_perp, v_perp = _settings(sde, shape, subspace, perp_mean, perp_var, t_switch, eps)
  cfg = pc_settings(sde, shape, predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps,
                    probability_flow=probability_flow, denoise=denoise, eps=eps)
  j_s = int(min(max(round((sde.T - t_switch) / (sde.T - eps) * sde.N), 1), sde.N - 1))
  per_step = int(predictor != "none") + cfg.n_corr

  def run(key, score_fn, x_T, n_trajectory):
    del n_trajectory
    x_T, keys = start(key, sde, shape, x_T)
    full_fn, sub_fn = _split_scores(score_fn, sub, sde, m_perp)
    step_keys = fold(keys, 1)
    y = _pc_segment(cfg, sub_fn, step_keys, sub.project(x_T), 0, j_s)
    x = lift(sde, sub, y, x_T, jnp.full(shape[:1], cfg.ts[j_s]), m_perp, v_perp)
    x = _pc_segment(cfg, full_fn, step_keys, x, j_s, sde.N)
    if denoise:
      x = tweedie_denoise(sde, full_fn, x, jnp.full(shape[:1], eps))
    return x, cfg.nfe, None

  sampler = Sampler("subspace_pc", shape, run)
  sampler.t_switch = float(cfg.ts[j_s])
  sampler.nfe_split = {"subspace": j_s * per_step, "full": (sde.N - j_s) * per_step + int(denoise)}
  return sampler


def get_subspace_ode_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, subspace, t_switch: float,
                             perp_mean=0.0, perp_var: float = 0.0, solver: str = "tsit5",
                             rtol: float = 1e-5, atol: float = 1e-5, n_steps: int | None = None,
                             denoise: bool = False, eps: float = 1e-3, max_steps: int = 4096) -> Sampler:
  """Subspace probability-flow ODE sampler: dy/dt = f(t) y - g(t)^2 s_sub(y, t) / 2 from T to t_switch
  (`solve_ode`), the lift (`lift`, deterministic in x_T), then dx/dt = f(t) x - g(t)^2 s(x, t) / 2 from
  t_switch to eps; with `denoise`, a final Tweedie step. A bijection of the latent x_T [B, ...].

  Args:
    sde, shape, subspace, t_switch, perp_mean, perp_var: as `get_subspace_pc_sampler`.
    solver, rtol, atol, max_steps, denoise, eps: as `get_ode_sampler`.
    n_steps: None (adaptive), or the total number of fixed steps >= 2, split between the stages in
      proportion to their time spans (at least one each), so the grid matches the full sampler's.

  Returns:
    A deterministic `Sampler` (key=None with x_T); attributes t_switch and, with fixed steps,
    nfe_split {"subspace", "full"} (None when adaptive).

  Raises:
    ValueError: a bad subspace, t_switch, perp_mean / perp_var or ODE field.
  """
  shape, sub, m_perp, v_perp = _settings(sde, shape, subspace, perp_mean, perp_var, t_switch, eps)
  check_ode_args(solver, rtol, atol, n_steps, max_steps)
  utils.check_bool("sampling.denoise", denoise)
  n_sub = n_full = None
  if n_steps is not None:
    utils.check_int("sampling.n_steps", n_steps, 2)
    n_sub = int(min(max(round(n_steps * (sde.T - t_switch) / (sde.T - eps)), 1), n_steps - 1))
    n_full = int(n_steps) - n_sub
  ode = functools.partial(solve_ode, solver=solver, rtol=rtol, atol=atol, max_steps=int(max_steps))

  def run(key, score_fn, x_T, n_trajectory):
    del n_trajectory
    x_T, _ = start(key, sde, shape, x_T)
    full_fn, sub_fn = _split_scores(score_fn, sub, sde, m_perp)
    t_s = jnp.float32(t_switch)
    y, nfe_sub = ode(pf_ode_drift(sde, sub_fn), sub.project(x_T), jnp.float32(sde.T), t_s, n_steps=n_sub)
    x = lift(sde, sub, y, x_T, jnp.full(shape[:1], t_s), m_perp, v_perp)
    x, nfe_full = ode(pf_ode_drift(sde, full_fn), x, t_s, jnp.float32(eps), n_steps=n_full)
    if denoise:
      x = tweedie_denoise(sde, full_fn, x, jnp.full(shape[:1], eps))
    return x, nfe_sub + nfe_full + int(denoise), None

  sampler = Sampler("subspace_ode", shape, run, needs_key=False)
  sampler.t_switch = float(t_switch)
  stages = {"euler": 1, "heun": 2}.get(solver)
  sampler.nfe_split = None if n_sub is None or stages is None else {
      "subspace": stages * n_sub, "full": stages * n_full + int(denoise)}
  return sampler


def _dpm_segment(sde: sde_lib.SDE, score_fn, x: Array, ts: Array, i0: int, i1: int, order: int,
                 lower_order_final: bool) -> Array:
  """DPM-Solver++ steps i0..i1-1 (ts[i] -> ts[i + 1]) on x, as `get_dpm_solver_sampler` (orders 1, 2),
  restarting at order 1 at i0: x_t = sigma_t / sigma_s x + alpha_t w0 D, w0 = 1 - e^-h, D = m0 at
  order 1 and (1 + 1 / (2 r)) m0 - m1 / (2 r), r = h0 / h, at order 2 (Lu et al. 2022b, Alg. 2)."""
  B, lams = x.shape[0], sde.log_snr(ts)
  orders = jnp.array([min(order, i - i0 + 1, i1 - i if lower_order_final else order) for i in range(i0, i1)])

  def step(carry, i):
    x, m1, h0 = carry
    s, t = jnp.full((B,), ts[i]), jnp.full((B,), ts[i + 1])
    (_, sigma_s), (alpha_t, sigma_t) = sde.marginal_coeffs(s), sde.marginal_coeffs(t)
    m0 = tweedie_denoise(sde, score_fn, x, s)
    h = lams[i + 1] - lams[i]
    w0 = -jnp.expm1(-h)
    d = jnp.where(orders[i - i0] == 1, m0, m0 + h / (2 * h0) * (m0 - m1))
    return (bcast(sigma_t / sigma_s, x) * x + bcast(alpha_t, x) * w0 * d, m0, h), None

  return jax.lax.scan(step, (x, jnp.zeros_like(x), jnp.ones(())), jnp.arange(i0, i1))[0][0]


def get_subspace_dpm_solver_sampler(sde: sde_lib.SDE, shape: tuple[int, ...], *, subspace, t_switch: float,
                                    perp_mean=0.0, perp_var: float = 0.0, order: int = 2, n_steps: int = 20,
                                    schedule: str = "log_snr", eps: float = 1e-3, denoise: bool = False,
                                    sigma_end: float | None = None) -> Sampler:
  """Subspace DPM-Solver++ (orders 1, 2) on the probability-flow ODE: the grid of
  `get_dpm_solver_sampler` with the same fields, its steps before the grid time nearest t_switch
  (`sampler.t_switch`) taken on y = U^T x with the subspace score, the lift (`lift`, deterministic in
  x_T) there, the rest in the full space restarting at order 1; NFE = n_steps, as the full sampler.
  A bijection of the latent x_T, for `metrics.sampler_kl`.

  Args:
    sde, shape, subspace, t_switch, perp_mean, perp_var: as `get_subspace_pc_sampler`.
    order, n_steps, schedule, eps, denoise, sigma_end: as `get_dpm_solver_sampler` (order 1 or 2).

  Returns:
    A deterministic `Sampler`; attributes t_switch and nfe_split {"subspace", "full"}.

  Raises:
    ValueError: a bad subspace, t_switch, perp_mean / perp_var, order, or a solver field; fewer than
      two solver steps.
  """
  shape, eps, n_solver = fast_settings(sde, shape, n_steps, schedule, eps, denoise, sigma_end)
  shape, sub, m_perp, v_perp = _settings(sde, shape, subspace, perp_mean, perp_var, t_switch, eps)
  if order not in (1, 2) or isinstance(order, bool):
    raise ValueError(f"sampling.order={order!r} must be 1 or 2.")
  if n_solver < 2:
    raise ValueError(f"sampling.n_steps={n_steps!r} leaves {n_solver} solver steps; the subspace sampler needs >= 2.")
  ts_host = np.asarray(get_time_schedule(sde, n_solver, schedule=schedule, eps=eps), np.float64)
  j_s = int(min(max(np.argmin(np.abs(ts_host - t_switch)), 1), n_solver - 1))

  def run(key, score_fn, x_T, n_trajectory):
    del n_trajectory
    x_T, _ = start(key, sde, shape, x_T)
    full_fn, sub_fn = _split_scores(score_fn, sub, sde, m_perp)
    ts = get_time_schedule(sde, n_solver, schedule=schedule, eps=eps)
    y = _dpm_segment(sde, sub_fn, sub.project(x_T), ts, 0, j_s, order, False)
    x = lift(sde, sub, y, x_T, jnp.full(shape[:1], ts[j_s]), m_perp, v_perp)
    x = _dpm_segment(sde, full_fn, x, ts, j_s, n_solver, order, True)
    if denoise:
      x = tweedie_denoise(sde, full_fn, x, jnp.full(shape[:1], eps))
    return x, n_steps, None

  sampler = Sampler("subspace_dpm_solver", shape, run, needs_key=False)
  sampler.t_switch = float(ts_host[j_s])
  sampler.nfe_split = {"subspace": j_s, "full": n_steps - j_s}
  return sampler


# --- the orthogonal Fisher divergence and the switching time -----------------------------

def orthogonal_fisher_divergence(key: Array, subspace: Subspace, sde: sde_lib.SDE, score_fn: Callable,
                                 sample_fn: Callable, ts, *, perp_mean=0.0, perp_var: float = 0.0,
                                 n: int = 4096, threshold: float | None = None) -> dict:
  """The orthogonal Fisher divergence (Jing et al. 2022, Sec. 4) of the diffused data from the model
  that draws the orthogonal component as the isotropic Gaussian N(alpha_t m_perp, v_t), independent
  of y, v_t = alpha_t^2 v_perp + sigma_t^2, in units of that Gaussian's Fisher information 1 / v_t:

      D_perp(t) = v_t / (D - k) E_{x ~ p_t} || P_perp (grad log p_t(x) + (x - alpha_t m_perp) / v_t) ||^2,

  0 exactly when the orthogonal component is that Gaussian and independent of y; estimated by Monte
  Carlo over x_t = alpha_t x0 + sigma_t z with the exact score of a known target (or a model's).

  Args:
    key: PRNG key (time i uses fold_in(key, i)).
    subspace: the `Subspace`.
    sde: the forward SDE.
    score_fn: score_fn(x [n, *shape], t [n]) of p_t (e.g. `target.score_fn(sde)`).
    sample_fn: sample_fn(key, n) -> x0 [n, *shape] (e.g. `target.sample`), traced.
    ts: times in (0, T].
    perp_mean, perp_var: as `get_subspace_pc_sampler`.
    n: Monte Carlo points per time.
    threshold: if given, also the switching time `switch_time(ts, divergence, threshold)`.

  Returns:
    {"t", "divergence", "se" (lists, per time), "n", "t_switch" (with a threshold; None if never below)}.

  Raises:
    ValueError: n < 2, or times outside (0, T].
  """
  utils.check_int("n", n, 2)
  ts = [float(t) for t in np.asarray(ts, np.float64).reshape(-1)]
  if not ts or min(ts) <= 0 or max(ts) > sde.T:
    raise ValueError(f"ts={ts!r} must be times in (0, {sde.T}].")
  m_perp = subspace.complement(jnp.broadcast_to(jnp.asarray(perp_mean, jnp.float32), (1,) + subspace.shape))[0]
  fn, v_perp = as_pytree_fn(score_fn), jnp.float32(perp_var)
  vals = [np.asarray(_fisher_terms(jax.random.fold_in(key, i), jnp.float32(t), fn, m_perp, v_perp, subspace=subspace,
                                   sde=sde, sample_fn=sample_fn, n=int(n)), np.float64) for i, t in enumerate(ts)]
  out = {"t": ts, "divergence": [float(v.mean()) for v in vals],
         "se": [float(v.std(ddof=1) / np.sqrt(n)) for v in vals], "n": int(n)}
  if threshold is not None:
    out["t_switch"] = switch_time(ts, out["divergence"], threshold)
  return out


@functools.partial(jax.jit, static_argnames=("subspace", "sde", "sample_fn", "n"))
def _fisher_terms(key, t, score_fn, m_perp, v_perp, *, subspace, sde, sample_fn, n):
  """The n per-point terms of D_perp(t) (`orthogonal_fisher_divergence`); compiled once per target."""
  key_x, key_z = jax.random.split(key)
  x0 = sample_fn(key_x, n)
  tt = jnp.full((n,), t)
  alpha, sigma = sde.marginal_coeffs(tt)
  x = bcast(alpha, x0) * x0 + bcast(sigma, x0) * jax.random.normal(key_z, x0.shape)
  v = alpha**2 * v_perp + sigma**2
  r = subspace.complement(score_fn(x, tt) + (x - bcast(alpha, x) * m_perp[None]) / bcast(v, x))
  return v * jnp.sum(jnp.reshape(r, (n, -1)) ** 2, axis=-1) / (subspace.full_dim - subspace.dim)


def switch_time(ts, divergence, threshold: float) -> float | None:
  """The earliest time t_s of the grid from which the divergence stays below `threshold` up to T
  (scanning down from the largest t); None if it is not below at the largest t.

  Raises:
    ValueError: threshold <= 0 or lists of different lengths.
  """
  utils.check_real("threshold", threshold, low=0.0, low_open=True)
  ts, div = np.asarray(ts, np.float64), np.asarray(divergence, np.float64)
  if ts.shape != div.shape:
    raise ValueError(f"ts ({ts.shape}) and divergence ({div.shape}) must have the same length.")
  chosen = None
  for i in np.argsort(-ts):
    if not div[i] < threshold:
      break
    chosen = float(ts[i])
  return chosen
