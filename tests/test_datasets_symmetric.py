"""Tests for datasets/symmetric.py: the groups as orthogonal matrices, the targets' invariance (and
its absence under the groups they lack), closed-form scores against autodiff of log_prob, the
E(2)-invariant density against quadrature over the rotation angle, and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
from datasets import symmetric

RING = symmetric.RingMixture()
PARTICLES = symmetric.PermutedParticles()
PARTICLES_COM = symmetric.PermutedParticles(com_free=True)
E2 = symmetric.E2Particles()


def _points(target, n=32, seed=0):
  """Test points: samples of the target diffused to a moderate noise level (off the modes too)."""
  key_x, key_z = jax.random.split(jax.random.key(seed))
  return target.sample(key_x, n) + 0.3 * jax.random.normal(key_z, (n, target.dim))


def _e2_group(n=4, seed=0):
  """Permutations, random rotations and reflections of 4 particles, on the zero-CoM coordinates."""
  rng = np.random.default_rng(seed)
  perms = symmetric.particle_permutations(n, 2)[rng.choice(24, 4, replace=False)]
  planar = [symmetric.particle_transform(n, symmetric.rotation_2d(th) @ np.diag([1.0, s]))
            for th, s in zip(rng.uniform(0, 2 * np.pi, 4), (1.0, -1.0, 1.0, -1.0))]
  return symmetric.restrict_to_com(np.concatenate([perms, np.stack(planar)]), n, 2)


def test_groups_are_orthogonal_and_com_basis_is_helmert():
  h = symmetric.com_basis(5)
  np.testing.assert_allclose(h @ h.T, np.eye(4), atol=1e-12)
  np.testing.assert_allclose(h @ np.ones(5), 0.0, atol=1e-12)
  for g in (symmetric.cyclic_group(6, reflections=True), symmetric.particle_permutations(4, 2),
            symmetric.restrict_to_com(symmetric.particle_permutations(4, 2), 4, 2), _e2_group()):
    np.testing.assert_allclose(np.einsum("gji,gjk->gik", g, g), np.broadcast_to(np.eye(g.shape[1]), g.shape),
                               atol=1e-12)
  assert symmetric.cyclic_group(5).shape == (5, 2, 2) and symmetric.particle_permutations(4, 2).shape == (24, 8, 8)
  # C_k closes: the product of rotations j and l is rotation j + l mod k.
  c5 = symmetric.cyclic_group(5)
  np.testing.assert_allclose(c5[2] @ c5[4], c5[1], atol=1e-12)


def _checks(target, group, x):
  """At (alpha, sigma) = (1, 0) and (0.7, 0.6): log p_t(x) [2, B], the closed-form score [2, B, D], autodiff
  of log p_t [2, B, D], log p_t(g x) [2, G, B] and the score at g x mapped back, g^T s(g x) [2, G, B, D];
  one compiled program per target."""

  def at(alpha, sigma):
    logp = lambda y: target.log_prob_t(y, alpha, sigma)
    score = lambda y: target.score_t(y, alpha, sigma)
    auto = jax.grad(lambda y: jnp.sum(logp(y)))(x)
    g_logp = jax.vmap(lambda g: logp(x @ g.T))(group)
    g_score = jax.vmap(lambda g: score(x @ g.T) @ g)(group)
    return logp(x), score(x), auto, g_logp, g_score

  out = [jax.jit(at)(jnp.float32(a), jnp.float32(s)) for a, s in ((1.0, 0.0), (0.7, 0.6))]
  return [np.stack([np.asarray(o[i]) for o in out]) for i in range(5)]


@pytest.mark.parametrize("target,group", [
    (RING, RING.group), pytest.param(PARTICLES, PARTICLES.group, marks=pytest.mark.slow),
    pytest.param(PARTICLES_COM, PARTICLES_COM.group, marks=pytest.mark.slow),
    pytest.param(E2, _e2_group(), marks=pytest.mark.slow)], ids=["ring", "particles", "particles_com", "e2"])
def test_invariance_equivariance_and_exact_score(target, group):
  """log p_t(g x) = log p_t(x), s(g x) = g s(x), and the closed-form score = autodiff of log p_t. Tolerances
  are float32 round-off relative to the largest value (E2: 1e-4, its log density adds terms of order
  |u| |v| / s^2 ~ 100 that cancel)."""
  logp, score, auto, g_logp, g_score = _checks(target, jnp.asarray(group, jnp.float32), _points(target))
  rel = 1e-4 if target is E2 else 1e-5
  scale = np.abs(score).max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(score / scale, auto / scale, atol=rel)
  np.testing.assert_allclose(g_logp, np.broadcast_to(logp[:, None], g_logp.shape), atol=rel * np.abs(logp).max())
  np.testing.assert_allclose(g_score / scale[:, None], np.broadcast_to((score / scale)[:, None], g_score.shape),
                             atol=rel)


@pytest.mark.slow
def test_symmetry_is_not_larger_than_stated():
  """The ring is not reflection-symmetric and the permuted particles not rotation-symmetric (the
  invariance test above could otherwise pass for a target that is invariant under everything)."""
  x = _points(RING, 64)
  flip = jnp.diag(jnp.array([1.0, -1.0]))
  assert float(jnp.max(jnp.abs(RING.log_prob(x @ flip) - RING.log_prob(x)))) > 0.5
  quarter = jnp.asarray(symmetric.restrict_to_com(symmetric.particle_transform(4, symmetric.rotation_2d(np.pi / 2))[None],
                                                  4, 2)[0], jnp.float32)
  x = _points(PARTICLES_COM, 64)
  assert float(jnp.max(jnp.abs(PARTICLES_COM.log_prob(x @ quarter.T) - PARTICLES_COM.log_prob(x)))) > 1.0


def _e2_log_prob_quadrature(u, alpha, sigma, n_theta=720):
  """float64 log p_t(u): the mixture of Gaussians N(alpha R_theta v, (alpha^2 s^2 + sigma^2) I) over the
  orbit v and n_theta equispaced angles (the trapezoid rule, spectrally accurate for a periodic integrand)."""
  conf = np.asarray(symmetric.DEFAULT_CONFIGURATION)
  orbit = np.einsum("gij,jd->gid", symmetric.permutation_matrices(4), conf)
  orbit = np.concatenate([orbit, orbit * np.array([1.0, -1.0])])
  v = np.einsum("ai,gid->gad", symmetric.com_basis(4), orbit).reshape(len(orbit), -1)
  var = alpha**2 * E2.std**2 + sigma**2
  rots = [symmetric.particle_transform(3, symmetric.rotation_2d(th)) for th in np.arange(n_theta) * 2 * np.pi / n_theta]
  means = alpha * np.einsum("rij,gj->rgi", np.stack(rots), v).reshape(-1, v.shape[1])
  sq = np.sum((u[:, None, :] - means[None]) ** 2, axis=-1)
  log_n = -sq / (2 * var) - 0.5 * u.shape[1] * np.log(2 * np.pi * var)
  m = log_n.max(axis=1, keepdims=True)
  return (m + np.log(np.mean(np.exp(log_n - m), axis=1, keepdims=True)))[:, 0]


@pytest.mark.slow
def test_e2_density_and_score_match_quadrature():
  u = np.asarray(_points(E2, 8), np.float64)
  for alpha, sigma in ((1.0, 0.0), (0.7, 0.6)):
    np.testing.assert_allclose(E2.log_prob_t(jnp.asarray(u, jnp.float32), alpha, sigma),
                               _e2_log_prob_quadrature(u, alpha, sigma), atol=2e-4)
    h = 1e-4  # central differences of the float64 quadrature: O(h^2) error
    fd = np.stack([(_e2_log_prob_quadrature(u + h * e, alpha, sigma) - _e2_log_prob_quadrature(u - h * e, alpha, sigma))
                   / (2 * h) for e in np.eye(E2.dim)], axis=1)
    np.testing.assert_allclose(E2.score_t(jnp.asarray(u, jnp.float32), alpha, sigma), fd, atol=2e-3 * np.abs(fd).max())


@pytest.mark.slow
def test_e2_score_is_smooth_at_the_origin():
  """log I_0(sqrt q) has slope 1/4 at q = 0: the score at u = 0 is finite (0 by symmetry)."""
  s = E2.score_t(jnp.zeros((2, E2.dim)), 1.0, 0.3)
  assert np.all(np.isfinite(s)) and float(jnp.max(jnp.abs(s))) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("target", [PARTICLES_COM, E2], ids=["particles_com", "e2"])
def test_sample_moments(target):
  """Mean and covariance of 20,000 samples against mean() and cov() (E2's cov is the rotation average)."""
  x = np.asarray(target.sample(jax.random.key(3), 20_000), np.float64)
  np.testing.assert_allclose(x.mean(0), target.mean(), atol=0.04)
  np.testing.assert_allclose(np.cov(x.T), target.cov(), atol=0.05)


def test_com_free_is_the_projection_of_the_full_mixture():
  """PermutedParticles(com_free=True) samples are H X of PermutedParticles samples in distribution: the
  same mixture means V^T P m, and for a point set X its coordinates have the density of the full
  mixture's zero-CoM marginal (checked on one component: covariance V^T (I kron C) V)."""
  v = symmetric.com_lift(4, 2)
  np.testing.assert_allclose(np.asarray(PARTICLES_COM.mixture.means), np.asarray(PARTICLES.mixture.means) @ v, atol=1e-12)
  np.testing.assert_allclose(np.asarray(PARTICLES_COM.mixture.covs)[0],
                             v.T @ np.asarray(PARTICLES.mixture.covs)[0] @ v, atol=1e-12)
  assert PARTICLES_COM.dim == 6 and PARTICLES.dim == 8 and E2.dim == 6


def test_registered_and_bad_fields_raise():
  assert isinstance(datasets.get_dataset("sym_ring", k=6), symmetric.RingMixture)
  assert datasets.get_dataset("sym_particles", com_free=True).dim == 6
  with pytest.raises(ValueError, match="data.k=1"):
    symmetric.RingMixture(k=1)
  with pytest.raises(ValueError, match="particle_cov"):
    symmetric.PermutedParticles(particle_cov=[[1.0, 2.0], [2.0, 1.0]])
  with pytest.raises(ValueError, match="configuration must be \\[n, 2\\]"):
    symmetric.E2Particles(configuration=[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
  with pytest.raises(ValueError, match="data.std"):
    symmetric.E2Particles(std=0.0)
  with pytest.raises(ValueError, match="com_free"):
    symmetric.PermutedParticles(com_free="yes")
