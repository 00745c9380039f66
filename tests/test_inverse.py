"""Linear inverse problems: operators (sampling/operators.py), the exact mixture posterior
(datasets/posterior.py) and the methods on them (replacement, guidance, DPS, DDRM, SMC)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import metrics
import sampling
import sde_lib
from sampling import operators as O
from sampling.ddrm import get_ddrm_sampler
from sampling.dps import get_dps_sampler
from sampling.inverse import get_replacement_sampler, linear_guidance
from sampling.smc import get_smc_sampler

MIX = datasets.GaussianMixture()
IMG = (4, 4, 3)


def _operators():
  rng = np.random.default_rng(0)
  return [O.Mask(jnp.asarray(rng.integers(0, 2, IMG), jnp.float32), IMG), O.ChannelMix.grey(IMG),
          O.ChannelMix(rng.normal(size=(2, 3)), IMG), O.AvgPool(2, IMG),
          O.SeparableBlur(O.gaussian_kernel(1.0), IMG), O.Dense(rng.normal(size=(5, 48)), IMG)]


@pytest.mark.parametrize("op", _operators(), ids=repr)
def test_operator_transpose_svd_and_pseudo_inverse(op):
  """<A x, y> = <x, A^T y>; A = U diag(s) V^T with V orthogonal and U^T invertible on y;
  A A^+ y = y; the dense matrix equals A; all to float32 round-off (1e-5 relative)."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2,) + IMG), jnp.float32)
  y = op.A(x)
  v = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  scale = float(jnp.sum(jnp.abs(y * v)) + 1.0)
  assert abs(float(jnp.sum(y * v) - jnp.sum(x * op.AT(v)))) < 1e-5 * scale
  np.testing.assert_allclose(op.U(op.s * op.Vt(x)), y, atol=1e-5)
  np.testing.assert_allclose(op.V(op.Vt(x)), x, atol=1e-5)
  np.testing.assert_allclose(op.U(op.Ut(v)), v, atol=1e-5)
  np.testing.assert_allclose(op.A(op.pinv(y)), y, atol=1e-4)
  np.testing.assert_allclose(np.asarray(y).reshape(2, -1), np.asarray(x).reshape(2, -1) @ op.matrix().T, atol=1e-5)


def test_operator_and_method_arguments_are_checked():
  sde = sde_lib.VPSDE(beta_max=10.0, N=10)  # beta_max / N <= 1: the PC chain is defined
  with pytest.raises(ValueError, match="mask.shape"):
    O.Mask(jnp.ones(3), (2,))
  with pytest.raises(ValueError, match="factor=3"):
    O.AvgPool(3, IMG)
  with pytest.raises(ValueError, match="W.shape"):
    O.ChannelMix(np.ones((4, 3)), IMG)
  with pytest.raises(ValueError, match="matrix.shape"):
    O.Dense(np.ones((3, 2)), (2,))
  with pytest.raises(ValueError, match="kernel="):
    O.SeparableBlur([0.5, 0.5], IMG)
  fn_op = O.FunctionOperator(lambda x: x[:, :1], lambda y: jnp.pad(y, ((0, 0), (0, 1))), (2,), (1,))
  with pytest.raises(ValueError, match="has no SVD"):
    get_ddrm_sampler(sde, (4, 2), fn_op)
  with pytest.raises(ValueError, match="sigma_y=0"):
    get_smc_sampler(sde, (4, 2), fn_op, sigma_y=0.0)
  with pytest.raises(ValueError, match="shape=\\(4, 3\\)"):
    get_dps_sampler(sde, (4, 3), fn_op)
  with pytest.raises(ValueError, match="y.shape"):
    get_dps_sampler(sde, (4, 2), fn_op)(jax.random.key(0), MIX.score_fn(sde), jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="sigma_y=-0.1"):
    datasets.linear_gaussian_posterior(MIX, np.eye(2), np.zeros(2), -0.1)


def _information_form(target, A, y, sigma_y):
  """sum_k w_k' N(mu_k', S_k') with S_k'^{-1} = S_k^{-1} + A^T A / s^2 (Bishop 2006, Eq. 2.116-2.117)."""
  means, covs, logw = [], [], []
  for mu, S, w in zip(np.asarray(target.means), np.asarray(target.covs), np.asarray(target.weights)):
    P = np.linalg.inv(S) + A.T @ A / sigma_y**2
    cov = np.linalg.inv(P)
    means.append(cov @ (np.linalg.solve(S, mu) + A.T @ y / sigma_y**2))
    covs.append(cov)
    C = A @ S @ A.T + sigma_y**2 * np.eye(len(y))
    r = y - A @ mu
    logw.append(np.log(w) - 0.5 * (r @ np.linalg.solve(C, r) + np.linalg.slogdet(2 * np.pi * C)[1]))
  w = np.exp(np.asarray(logw) - max(logw))
  return w / w.sum(), np.asarray(means), np.asarray(covs)


def test_posterior_matches_direct_formulas_and_the_noiseless_limit():
  """sigma_y > 0: the gain form equals the information form (1e-9); sigma_y = 0 with a mask equals
  `GaussianMixture.condition` (1e-9); sigma_y = 1e-4 is within 1e-3 of sigma_y = 0 for a general
  A; a rank-deficient A (a repeated row) at sigma_y = 0 gives the one-row posterior (1e-8)."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=(4, 4, 4))
  target = datasets.GaussianMixture(rng.normal(size=(4, 4)).tolist(),
                                    (np.einsum("kij,klj->kil", a, a) / 4 + 0.2 * np.eye(4)).tolist(), [0.1, 0.2, 0.3, 0.4])
  A, y = rng.normal(size=(2, 4)), np.array([0.7, -1.2])
  post = datasets.linear_gaussian_posterior(target, A, y, 0.3)
  for got, want in zip((post.weights, post.means, post.covs), _information_form(target, A, y, 0.3)):
    np.testing.assert_allclose(got, want, atol=1e-9)
  mask = O.Mask(jnp.array([1.0, 0.0, 1.0, 0.0]), (4,))
  post = datasets.linear_gaussian_posterior(target, mask.matrix(), np.array([0.5, 0.0, -1.0, 0.0]), 0.0)
  cond = target.condition([0, 2], [0.5, -1.0])
  np.testing.assert_allclose(post.weights, np.asarray(cond.weights), atol=1e-9)
  np.testing.assert_allclose(post.means[:, [1, 3]], np.asarray(cond.means), atol=1e-9)
  np.testing.assert_allclose(post.covs[:, 1::2, 1::2], np.asarray(cond.covs), atol=1e-9)
  np.testing.assert_allclose(post.covs[:, 0::2, :], 0.0, atol=1e-9)  # the observed coordinates are fixed
  zero = datasets.linear_gaussian_posterior(target, A, y, 0.0)
  near = datasets.linear_gaussian_posterior(target, A, y, 1e-4)
  for got, want in zip((near.weights, near.means, near.covs), (zero.weights, zero.means, zero.covs)):
    np.testing.assert_allclose(got, want, atol=1e-3)
  one = datasets.linear_gaussian_posterior(target, A[:1], y[:1], 0.0)
  rep = datasets.linear_gaussian_posterior(target, np.concatenate([A[:1], A[:1]]), np.array([y[0], y[0]]), 0.0)
  for got, want in zip((rep.weights, rep.means, rep.covs), (one.weights, one.means, one.covs)):
    np.testing.assert_allclose(got, want, atol=1e-8)


def test_posterior_against_importance_sampling_and_its_own_samples():
  """Prior draws weighted by N(y; A x, 0.5^2) (200,000 draws) give the posterior mean within 5
  standard errors (from the effective sample size) and covariance within 0.05; 100,000 exact
  posterior draws give mean and covariance within 0.03 (over 3 standard errors of every entry)."""
  A, y, sigma_y = np.array([[0.6, 0.8]]), np.array([0.5]), 0.5
  post = datasets.linear_gaussian_posterior(MIX, A, y, sigma_y)
  x = np.asarray(MIX.sample(jax.random.key(0), 200_000), np.float64)
  logw = -0.5 * np.sum((x @ A.T - y) ** 2, 1) / sigma_y**2
  w = np.exp(logw - logw.max())
  w /= w.sum()
  mean = w @ x
  cov = (x - mean).T @ (w[:, None] * (x - mean))
  se = np.sqrt(np.diag(cov) * np.sum(w**2))
  np.testing.assert_array_less(np.abs(mean - post.mean()), 5 * se)
  np.testing.assert_allclose(cov, post.cov(), atol=0.05)
  s = np.asarray(post.sample(jax.random.key(1), 100_000), np.float64)
  np.testing.assert_allclose(s.mean(0), post.mean(), atol=0.03)
  np.testing.assert_allclose(np.cov(s.T), post.cov(), atol=0.03)


def test_inpainting_is_replacement_with_a_mask_and_guidance_with_a_mask():
  """get_replacement_sampler with a Mask is get_inpainting_sampler (bitwise); linear_guidance with
  a Mask and sigma_y = 0 is reconstruction_guidance (1e-5 relative)."""
  sde = sde_lib.VPSDE(beta_max=5.0, N=5)  # beta_max / N <= 1: the PC chain is defined
  oracle = MIX.score_fn(sde)
  x_known, mask = MIX.sample(jax.random.key(1), 8), jnp.array([1.0, 0.0])
  key = jax.random.key(0)
  a, _ = sampling.get_inpainting_sampler(sde, (8, 2), corrector="none")(key, oracle, x_known, mask)
  b, _ = get_replacement_sampler(sde, (8, 2), O.Mask(mask, (2,)), corrector="none")(key, oracle, x_known)
  assert np.all(np.isfinite(np.asarray(a)))  # (with N = 5 < beta_max both were NaN, and "equal")
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  x, t = MIX.sample(jax.random.key(2), 8), jnp.linspace(0.1, 0.9, 8)
  g1, g2 = jax.jit(lambda x, t: (sampling.reconstruction_guidance(sde, oracle, x_known, mask)(x, t),
                                 linear_guidance(sde, oracle, O.Mask(mask, (2,)), x_known)(x, t)))(x, t)
  np.testing.assert_allclose(g2, g1, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(g1))))


@pytest.mark.slow
def test_colorization_is_replacement_with_the_grey_operator():
  """get_replacement_sampler with ChannelMix.grey is get_colorization_sampler (bitwise), with and
  without guidance."""
  sde = sde_lib.VPSDE(beta_max=5.0, N=5)  # beta_max / N <= 1: the PC chain is defined
  flat = MIX.score_fn(sde)
  score = lambda x, t: flat(x.reshape(-1, 2), t).reshape(x.shape) * 0.5
  grey = jnp.linspace(-1.0, 1.0, 8).reshape(8, 1)
  for scale in (0.0, 1.0):
    a, _ = sampling.get_colorization_sampler(sde, (8, 1, 2), corrector="none", guidance_scale=scale)(
        jax.random.key(0), score, grey)
    b, _ = get_replacement_sampler(sde, (8, 1, 2), O.ChannelMix.grey((1, 2)), corrector="none",
                                   guidance_scale=scale)(jax.random.key(0), score, grey[..., None])
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _ratio(x, post, n, seed=100, n_refs=3):
  refs = [post.sample(jax.random.key(seed + i), n) for i in range(n_refs + 1)]
  floor = np.mean([metrics.energy_distance(refs[i], refs[i + 1]) for i in range(n_refs)])
  return float(np.mean([metrics.energy_distance(x, r) for r in refs[1:]]) / floor)


@pytest.mark.slow
def test_ddrm_keeps_noiseless_observations_and_samples_the_prior_without_any():
  """Noiseless mask (eta_b = 1): the observed coordinate is returned exactly; an all-zero mask
  (no observation) with eta = 0: DDRM is DDIM and its 1,000 samples (100 steps) are within 2x the
  floor of the prior. (With the published eta = 0.85 it is not: the fresh noise eta sigma_s per
  step does not vanish as the steps shrink; benchmarks/RESULTS.md.)"""
  sde, n = sde_lib.VPSDE(N=100), 1000
  oracle = MIX.score_fn(sde)
  y = jnp.zeros((n, 2)).at[:, 0].set(1.5)
  x, nfe = get_ddrm_sampler(sde, (n, 2), O.Mask(jnp.array([1.0, 0.0]), (2,)))(jax.random.key(0), oracle, y)
  assert int(nfe) == 20
  np.testing.assert_array_equal(np.asarray(x[:, 0]), 1.5)
  x, _ = get_ddrm_sampler(sde, (n, 2), O.Mask(jnp.zeros(2), (2,)), n_steps=100, eta=0.0)(jax.random.key(1), oracle, y)
  prior = datasets.linear_gaussian_posterior(MIX, np.zeros((1, 2)), np.zeros(1), 1.0)  # = the prior
  assert _ratio(np.asarray(x), prior, n) < 2.0


@pytest.mark.slow
def test_dps_without_guidance_samples_the_prior_and_with_it_fits_y():
  """zeta' = 0: DPS is DDPM ancestral sampling (1,000 samples within 2x the prior's floor);
  zeta' = 0.1: the mean residual |y - A x| is under 0.2x the unguided one. (At the published
  zeta' = 1 the normalised step does not shrink with the residual and overshoots in 2-D;
  benchmarks/RESULTS.md.)"""
  sde, n = sde_lib.VPSDE(N=200), 1000
  oracle, op = MIX.score_fn(sde), O.Dense([[0.6, 0.8]], (2,))
  y = jnp.full((n, 1), 1.5)
  x0, nfe = get_dps_sampler(sde, (n, 2), op, zeta=0.0)(jax.random.key(0), oracle, y)
  x1, _ = get_dps_sampler(sde, (n, 2), op, zeta=0.1)(jax.random.key(0), oracle, y)
  assert int(nfe) == 201
  prior = datasets.linear_gaussian_posterior(MIX, np.zeros((1, 2)), np.zeros(1), 1.0)
  assert _ratio(np.asarray(x0), prior, n) < 2.0
  res = lambda x: float(jnp.mean(jnp.abs(op.A(x) - y)))
  assert res(x1) < 0.2 * res(x0), (res(x1), res(x0))


def test_smc_data_variance_from_the_model_is_the_data_variance():
  """At t = T, sigma^2 / alpha tr(d x0_hat / d x_T) / D = tr Cov[x0 | x_T] / D is tr Cov[x0] / D
  (1.27 for the 2-D mixture) up to alpha_T^2 ~ 4e-5; 64 particles x 16 Rademacher probes per
  chain, two chains: within 5%."""
  from sampling.smc import model_data_var

  sde = sde_lib.VPSDE()
  x = jax.random.normal(jax.random.key(0), (2, 64, 2))
  fn = jax.jit(lambda x, keys: model_data_var(sde, MIX.score_fn(sde), x, sde.T, keys))
  v = np.asarray(fn(x, jax.random.split(jax.random.key(1), 2)))
  np.testing.assert_allclose(v, np.trace(MIX.cov()) / 2, rtol=0.05)


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE()], ids=["vp", "ve"])
def test_gaussian_jacobian_guidance_equals_autodiff_for_isotropic_gaussian_data(sde):
  """For N(mu, v I) data with its exact score, d x0_hat / d x_t = alpha_t r_t^2 / sigma_t^2 I, so
  guided_terms(jacobian="gaussian") equals the autodiff gradient (and the same log-likelihood) at
  every t, for a pooling and a dense operator (float32: 1e-4 relative). On the 2-D mixture they
  differ (it is an approximation there), and a bad jacobian is a ValueError naming the field."""
  from sampling.inverse import guided_terms

  v, shape = 0.7, (4, 4, 1)
  target = datasets.GaussianMixture([[0.3] * 16], [(v * np.eye(16)).tolist()], [1.0])
  flat = target.score_fn(sde)
  score = lambda x, t: flat(x.reshape(x.shape[0], -1), t).reshape(x.shape)
  x = 2.0 * jax.random.normal(jax.random.key(0), (3,) + shape)
  t = jnp.array([0.05, 0.5, 0.95])
  for op in (O.AvgPool(2, shape), O.Dense(np.random.default_rng(0).normal(size=(3, 16)), shape)):
    y = op.A(jax.random.normal(jax.random.key(1), (3,) + shape))
    (s1, g1, l1), (s2, g2, l2) = (guided_terms(sde, score, op, y, 0.1, v, x, t, jacobian=j)
                                  for j in ("model", "gaussian"))
    np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(g1))))
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
  op, xm = O.Dense([[0.6, 0.8]], (2,)), jnp.array([[0.5, -1.0], [1.0, 1.0]])
  gm, gg = (guided_terms(sde, MIX.score_fn(sde), op, jnp.ones((2, 1)), 0.1, 1.0, xm, jnp.full((2,), 0.3), j)[1]
            for j in ("model", "gaussian"))
  assert float(jnp.max(jnp.abs(gm - gg))) > 1e-3
  with pytest.raises(ValueError, match="jacobian='exact'"):
    linear_guidance(sde, MIX.score_fn(sde), op, jnp.ones((2, 1)), jacobian="exact")
  with pytest.raises(ValueError, match="jacobian"):
    get_smc_sampler(sde, (2, 2), op, sigma_y=0.1, jacobian="exact")


@pytest.mark.slow
def test_smc_rows_do_not_depend_on_the_batch_size():
  sde = sde_lib.VPSDE(beta_max=5.0, N=5)  # beta_max / N <= 1: the PC chain is defined
  op = O.Dense([[0.6, 0.8]], (2,))
  y = jnp.linspace(-1.0, 1.0, 8)[:, None]
  run = lambda n: get_smc_sampler(sde, (n, 2), op, sigma_y=0.2, n_particles=4)(jax.random.key(3), MIX.score_fn(sde), y[:n])
  (x3, nfe), (x8, _) = run(3), run(8)
  assert int(nfe) == 4 * 7  # N + 1 steps and the data-variance estimate
  np.testing.assert_allclose(np.asarray(x3), np.asarray(x8[:3]), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_smc_bias_falls_with_the_particle_count():
  """A general A = (0.6, 0.8), sigma_y = 0.1, on the 2-D mixture (VPSDE N = 200, 1,000 samples):
  one particle (the guided sampler alone) is biased, 16 particles are within 1.5x the floor of
  the exact posterior and under half the one-particle ratio."""
  sde, n = sde_lib.VPSDE(N=200), 1000
  op, sigma_y = O.Dense([[0.6, 0.8]], (2,)), 0.1
  post = datasets.linear_gaussian_posterior(MIX, op.matrix(), np.array([0.5]), sigma_y)
  y = jnp.full((n, 1), 0.5)
  ratio = {}
  for K in (1, 16):
    x, _ = get_smc_sampler(sde, (n, 2), op, sigma_y=sigma_y, n_particles=K)(jax.random.key(0), MIX.score_fn(sde), y)
    ratio[K] = _ratio(np.asarray(x), post, n)
  assert ratio[16] < 1.5 and ratio[16] < 0.5 * ratio[1], ratio


@pytest.mark.slow
def test_guidance_is_exact_for_an_isotropic_gaussian_prior_with_image_operators():
  """For x ~ N(0, v I), x0 | x_t is N(x0_hat, r_t^2 I) exactly, so linear_guidance (data_var = v,
  covariance r_t^2 A A^T + sigma_y^2 I from the SVD) is the exact conditional score. With
  AvgPool and SeparableBlur on 4 x 4 images (sigma_y = 0.1, 2,000 samples, VPSDE N = 200), in
  the operator's spectral coordinates V^T x: every mean within 4 standard errors of the exact
  posterior's and every variance within 15%. The same A without its SVD (`FunctionOperator`:
  covariance (r_t^2 + sigma_y^2) I, wrong for pooling, where A A^T = I / 4) misses a variance by
  more than 30%."""
  v, n, shape = 0.5, 2000, (4, 4, 1)
  target = datasets.GaussianMixture([[0.0] * 16], [(v * np.eye(16)).tolist()], [1.0])
  sde = sde_lib.VPSDE(N=200)
  flat = target.score_fn(sde)
  score = lambda x, t: flat(x.reshape(x.shape[0], -1), t).reshape(x.shape)
  x_star = jnp.asarray(target.sample(jax.random.key(3), 1)).reshape((1,) + shape)
  pc = sampling.get_sampler(sde, (n,) + shape, corrector="none")
  pool = O.AvgPool(2, shape)
  no_svd = O.FunctionOperator(pool.A, pool.AT, shape, pool.out_shape)

  def errors(op, A):
    y1 = A.observe(jax.random.key(4), x_star, 0.1)
    post = datasets.linear_gaussian_posterior(target, A.matrix(), np.asarray(y1).reshape(-1), 0.1)
    y = jnp.broadcast_to(y1, (n,) + A.out_shape)
    x = pc(jax.random.key(0), linear_guidance(sde, score, op, y, sigma_y=0.1, data_var=v))[0]
    u = np.asarray(A.Vt(x)).reshape(n, -1)  # spectral coordinates V^T x = M x
    M = np.asarray(A.Vt(jnp.eye(16).reshape((16,) + shape))).reshape(16, 16).T
    var = np.diag(M @ post.cov() @ M.T)
    return np.max(np.abs(u.mean(0) - M @ post.mean()) / np.sqrt(var / n)), np.max(np.abs(u.var(0) / var - 1))

  for op in (pool, O.SeparableBlur(O.gaussian_kernel(1.0), shape)):
    mean_err, var_err = errors(op, op)
    assert mean_err < 4 and var_err < 0.15, (op, mean_err, var_err)
  assert errors(no_svd, pool)[1] > 0.3


@pytest.mark.slow
def test_inverse_digits_config_trains_then_solves_and_plots(tmp_path):
  """configs/inverse_digits.py with a tiny one-level U-Net, 2 steps: super-resolution and
  inpainting with replacement, DDRM, guidance and SMC (2 particles; DPS takes the same path), then
  SDEdit; guidance and SMC stay finite, replacement and DDRM (sigma_y = 0) reproduce the
  observation exactly, A^+ y is consistent with y, and the figures are written."""
  import json
  import os

  import run_lib
  from conftest import get_config

  config = get_config("inverse_digits")
  config.training.update(dict(n_iters=2, log_freq=2, snapshot_freq=2, checkpoint_freq=2, batch_size=16))
  config.model.update(dict(ch=8, num_groups=4, ch_mult=(1,), attn_resolutions=()))
  config.sampling.n_steps = 4
  config.eval.update(dict(n_samples=16, n_grid=16, inverse_n=8, inverse_n_steps=20, sdedit_n=8,
                          inverse_methods=["replacement", "ddrm", "guidance", "smc"], inverse_smc_particles=2,
                          sdedit_t0=[0.3, 1.0], sdedit_n_steps=3))
  config.eval.classifier.n_steps = 20
  workdir = str(tmp_path / "w")
  run_lib.run(config, workdir, "all")
  summary = json.load(open(os.path.join(workdir, "eval", "summary.json")))
  inv = summary["inverse"]
  for task in ("sr", "inpaint"):
    assert set(inv[task]) == {"observation", "truth", "replacement", "ddrm", "guidance", "smc"}
    for name in ("observation", "truth", "replacement", "ddrm"):
      assert inv[task][name]["residual_rmse"] < 1e-4, (task, name, inv[task][name])
    assert inv[task]["replacement"]["nfe"] == 21 and inv[task]["ddrm"]["nfe"] == 20
    assert inv[task]["smc"]["nfe"] == 2 * 22  # K (N + 1) and the data-variance estimate
    assert inv[task]["guidance"]["n_nonfinite"] == 0 and inv[task]["smc"]["n_nonfinite"] == 0
  sd = summary["sdedit"]
  assert [r["t0"] for r in sd["coarse"]["ode"]] == [0.3, 1.0] and sd["noisy"]["sde"][0]["nfe"] == 4
  for name in ("inverse_sr", "inverse_inpaint", "sdedit_coarse", "sdedit_noisy", "sdedit_tradeoff"):
    assert os.path.exists(os.path.join(workdir, "plots", name + ".png")), name
