"""Subspace diffusion (sampling/subspace.py, datasets/subspace.py): orthonormal bases and their
round trips, the planar target's exact scores, the orthogonal Fisher divergence against its closed
form, the subspace DPM-Solver against the full one on the same latents (exact in the subspace when
the orthogonal component is independent), and, slow, the exact KL and energy distance of the
subspace samplers with exact scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import metrics
import sampling
import sde_lib
from sampling import subspace as S

VE = sde_lib.VESDE(sigma_min=0.01, sigma_max=100.0, N=200)
PLANAR = datasets.get_dataset("planar_gmm")  # orthogonal component N(0, 0.05^2), independent of y
CORRELATED = datasets.get_dataset("planar_gmm", perp_means=(0.4, -0.4, 0.0))


def _orthonormal_error(sub):
  U = np.asarray(sub.basis, np.float64)
  return np.max(np.abs(U.T @ U - np.eye(sub.dim)))


def test_avgpool_basis_is_orthonormal_pools_and_round_trips():
  sub = S.avgpool_subspace(8, 8, 1)
  assert (sub.full_dim, sub.dim) == (64, 16) and _orthonormal_error(sub) < 1e-6
  x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
  pooled = x.reshape(3, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(3, 16)
  np.testing.assert_allclose(sub.project(x), 2.0 * pooled, atol=1e-5)  # U^T x = 2 x avgpool(x)
  y = sub.project(x)
  np.testing.assert_allclose(sub.project(sub.lift(y)), y, atol=1e-5)  # U^T U = I
  up = np.repeat(np.repeat(pooled.reshape(3, 4, 4), 2, 1), 2, 2)[..., None]
  np.testing.assert_allclose(sub.lift(y), up, atol=1e-5)  # U U^T x = the block means
  np.testing.assert_allclose(sub.project(sub.complement(x)), 0.0, atol=1e-5)
  np.testing.assert_allclose(sub.lift(y) + sub.complement(x), x, atol=1e-5)


def test_zero_com_basis_is_orthonormal_and_centred():
  sub = S.zero_com_subspace(4, 3)
  assert (sub.full_dim, sub.dim) == (12, 9) and _orthonormal_error(sub) < 1e-6
  rng = np.random.default_rng(1)
  y = rng.normal(size=(5, 9)).astype(np.float32)
  x = np.asarray(sub.lift(y)).reshape(5, 4, 3)
  np.testing.assert_allclose(x.sum(axis=1), 0.0, atol=1e-5)  # zero centre of mass
  np.testing.assert_allclose(sub.project(sub.lift(y)), y, atol=1e-5)
  z = rng.normal(size=(5, 12)).astype(np.float32)
  com = z.reshape(5, 4, 3).mean(axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(sub.complement(z)).reshape(5, 4, 3), np.broadcast_to(com, (5, 4, 3)),
                             atol=1e-5)  # the complement is the translation


def test_bad_bases_and_fields_raise():
  with pytest.raises(ValueError, match="orthonormal"):
    S.matrix_subspace([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  with pytest.raises(ValueError, match="divisible"):
    S.avgpool_subspace(7, 8)
  with pytest.raises(ValueError, match="data.basis"):
    datasets.get_dataset("planar_gmm", basis=[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  with pytest.raises(ValueError, match="data.perp_std"):
    datasets.get_dataset("planar_gmm", perp_std=(0.1, -0.1, 0.1))
  sub = S.matrix_subspace(PLANAR.basis)
  with pytest.raises(ValueError, match="sampling.t_switch"):
    sampling.get_sampler(VE, (4, 3), method="subspace_pc", subspace=sub, t_switch=1.5)
  with pytest.raises(ValueError, match="sampling.perp_mean"):
    sampling.get_sampler(VE, (4, 3), method="subspace_dpm_solver", subspace=sub, t_switch=0.5, perp_mean=[0.0, 1.0])
  with pytest.raises(ValueError, match="sampling.subspace"):
    sampling.get_sampler(VE, (4, 2), method="subspace_pc", subspace=sub, t_switch=0.5)
  with pytest.raises(ValueError, match="sampling.subspace.name"):
    sampling.get_sampler(VE, (4, 3), method="subspace_pc", subspace={"name": "pca"}, t_switch=0.5)


def test_planar_target_scores_split_exactly():
  """Independent orthogonal part: grad log p_t(U y + n w) = U s_sub(y) - n w / (alpha^2 s^2 + sigma^2)."""
  U, n = np.asarray(PLANAR.basis), PLANAR.normal
  rng = np.random.default_rng(3)
  y, w = rng.normal(size=(64, 2)) * 2, rng.normal(size=(64, 1)) * 0.5
  x, t = (y @ U.T + w * n).astype(np.float32), np.full((64,), 0.3, np.float32)
  score = S.subspace_score_fn(PLANAR.score_fn(VE), PLANAR.subspace_score_fn(VE), 2)  # dispatches on the shape

  @jax.jit
  def scores(score, x, y, t):
    alpha, sigma = VE.marginal_coeffs(t)
    expect = PLANAR.subspace_score_fn(VE)(y, t) @ U.T - w * n / (alpha[:, None]**2 * 0.05**2 + sigma[:, None]**2)
    return PLANAR.score_fn(VE)(x, t), expect, score(x, t), score(y, t), PLANAR.subspace_score_fn(VE)(y, t)

  full, expect, joint_x, joint_y, plane = scores(score, x, y.astype(np.float32), t)
  np.testing.assert_allclose(full, expect, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(joint_x, full, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(joint_y, plane, rtol=1e-6, atol=1e-6)


def test_orthogonal_fisher_divergence_closed_form():
  """Zero for the independent Gaussian orthogonal part with its true variance; with v_perp = 0
  assumed instead of s^2 = 0.05^2, D = (v_t - v*_t)^2 / (v_t v*_t), v*_t = alpha^2 s^2 + sigma^2,
  v_t = sigma^2 (Monte Carlo tolerance: 5 standard errors)."""
  sub, ts, oracle = S.matrix_subspace(PLANAR.basis), [0.1, 0.2, 0.5], PLANAR.score_fn(VE)
  exact = S.orthogonal_fisher_divergence(jax.random.key(5), sub, VE, oracle, PLANAR.sample, ts, perp_var=0.05**2,
                                         n=4096)
  np.testing.assert_allclose(exact["divergence"], 0.0, atol=1e-6)
  wrong = S.orthogonal_fisher_divergence(jax.random.key(5), sub, VE, oracle, PLANAR.sample, ts, perp_var=0.0,
                                         n=4096, threshold=1.0)
  _, sigma = VE.marginal_coeffs(jnp.asarray(ts))
  v, v_true = np.asarray(sigma, np.float64)**2, np.asarray(sigma, np.float64)**2 + 0.05**2
  closed = (v - v_true) ** 2 / (v * v_true)
  assert np.all(np.abs(np.asarray(wrong["divergence"]) - closed) < 5 * np.asarray(wrong["se"]) + 1e-6), (wrong, closed)
  assert closed[0] > 1.0 > closed[1] and wrong["t_switch"] == 0.2  # the earliest time below 1 up to T


def test_switch_time_scans_down_from_t_max():
  assert S.switch_time([0.1, 0.2, 0.3, 0.4], [0.5, 0.001, 0.2, 0.001], 0.01) == 0.4
  assert S.switch_time([0.1, 0.2, 0.3, 0.4], [0.5, 0.001, 0.002, 0.001], 0.01) == 0.2
  assert S.switch_time([0.1, 0.2], [0.5, 0.5], 0.01) is None


def test_subspace_dpm_solver_matches_full_solver_in_the_subspace():
  """Order 1 (DDIM): with the orthogonal part independent of y, U^T s(x) = s_sub(U^T x), so the
  subspace component of the subspace sampler equals the full sampler's on the same latents."""
  sub, n = S.matrix_subspace(PLANAR.basis), 64
  x_T = VE.prior_sampling(jax.random.key(6), (n, 3))
  kw = dict(order=1, n_steps=10, schedule="log_snr")
  full = sampling.get_sampler(VE, (n, 3), method="dpm_solver", **kw)
  subs = sampling.get_sampler(VE, (n, 3), method="subspace_dpm_solver", subspace=sub, t_switch=0.3,
                              perp_var=0.05**2, **kw)
  score = S.subspace_score_fn(PLANAR.score_fn(VE), PLANAR.subspace_score_fn(VE), 2)
  x_full, _ = full(None, PLANAR.score_fn(VE), x_T=x_T)
  x_sub, nfe = subs(None, score, x_T=x_T)
  assert int(nfe) == 10 and sum(subs.nfe_split.values()) == 10 and subs.nfe_split["subspace"] >= 1
  np.testing.assert_allclose(sub.project(x_sub), sub.project(x_full), atol=2e-4)


@pytest.mark.slow
def test_subspace_sampler_exact_kl_matches_full_sampler():
  """Exact KL (metrics.sampler_kl, the sampler a bijection of the 3-D latent) at 20 NFE, exact
  scores, 256 latents: within 3 standard errors (+ 0.01 nats) of the full DPM-Solver++ 2M on the
  independent target (t_s = 0.3) and on the correlated one (orthogonal mean +-0.4 per component) at
  t_s = 0.7, where the orthogonal Fisher divergence is below 1e-3 (benchmarks/subspace.py: switching
  at 0.2 instead costs about 7.6 nats)."""
  sub, n = S.matrix_subspace(PLANAR.basis), 256
  full = sampling.get_sampler(VE, (n, 3), method="dpm_solver_2m", n_steps=20, schedule="log_snr")
  for target, t_s in ((PLANAR, 0.3), (CORRELATED, 0.7)):
    m, v = S.orthogonal_moments(sub, target.mean(), target.cov())
    subs = sampling.get_sampler(VE, (n, 3), method="subspace_dpm_solver", subspace=sub, t_switch=t_s,
                                perp_mean=m, perp_var=v, n_steps=20, schedule="log_snr")
    score = S.subspace_score_fn(target.score_fn(VE), target.subspace_score_fn(VE), 2)
    kl_sub = metrics.sampler_kl(jax.random.key(7), subs, score, target.log_prob, VE)
    kl_full = metrics.sampler_kl(jax.random.key(7), full, target.score_fn(VE), target.log_prob, VE)
    se = np.hypot(kl_sub["se"], kl_full["se"])
    assert abs(kl_sub["kl"] - kl_full["kl"]) < 3 * se + 0.01, (t_s, kl_sub, kl_full)


@pytest.mark.slow
def test_subspace_pc_sampler_energy_distance_at_floor():
  """Subspace PC (reverse diffusion + ALD, N = 100) and subspace probability-flow ODE (adaptive tsit5,
  given only the full score, so its subspace score is the projection U^T s(U y + alpha m_perp)) with
  exact scores on the planar target: energy distance to 1,000 true points within 3x the floor between
  two true sets (same size)."""
  sub, n, ve = S.matrix_subspace(PLANAR.basis), 1000, sde_lib.VESDE(sigma_min=0.01, sigma_max=100.0, N=100)
  m, v = S.orthogonal_moments(sub, PLANAR.mean(), PLANAR.cov())
  subs = sampling.get_sampler(ve, (n, 3), method="subspace_pc", subspace=sub, t_switch=0.4, perp_mean=m,
                              perp_var=v, corrector="ald")
  score = S.subspace_score_fn(PLANAR.score_fn(ve), PLANAR.subspace_score_fn(ve), 2)
  x, nfe = subs(jax.random.key(8), score)
  assert int(nfe) == 201 and subs.nfe_split == {"subspace": 2 * 60, "full": 2 * 40 + 1}
  ode = sampling.get_sampler(ve, (n, 3), method="subspace_ode", subspace=sub, t_switch=0.4, perp_mean=m,
                             perp_var=v, rtol=1e-4, atol=1e-4)
  x_ode, nfe_ode = ode(jax.random.key(8), PLANAR.score_fn(ve))  # a full score alone: its projection in the plane
  assert ode.nfe_split is None and int(nfe_ode) > 0
  ref, ref2 = (PLANAR.sample(jax.random.key(k), n) for k in (9, 10))
  floor = float(metrics.energy_distance(ref, ref2))
  for sample in (x, x_ode):
    assert float(metrics.energy_distance(sample, ref)) < 3 * floor + 1e-3, (metrics.energy_distance(sample, ref), floor)
