"""Bespoke non-stationary solvers (`sampling.bespoke`) and their fit (`grid_opt.optimise_bespoke`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import metrics
import sampling
import sde_lib
from sampling import bespoke, grid_opt
from sampling.schedules import end_time, get_time_schedule

SDES = {"ve": sde_lib.VESDE(sigma_min=0.01, sigma_max=100.0, N=500),
        "vp": sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=500)}
MIX = datasets.GaussianMixture(means=[[-1.0], [1.5]], covs=[[[0.3]], [[0.6]]], weights=[0.6, 0.4])


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_dpm_solver_2m_coefficients_reproduce_dpm_solver_2m(sde_name):
  """With `dpm_solver_2m_coefficients` on DPM-Solver++(2M)'s own evaluation points (custom grid, half
  last step, no lower order at the end) the bespoke solver is that sampler, to float32 round-off."""
  sde, target = SDES[sde_name], datasets.GaussianMixture()
  interior = [-2.0, -0.5, 0.7]
  dpm = sampling.get_sampler(sde, (256, 2), method="dpm_solver_2m", n_steps=5, schedule="custom",
                             timesteps=interior, denoise=True, denoise_step="half", sigma_end=0.05,
                             lower_order_final=False)
  ts = get_time_schedule(sde, 4, schedule="custom", eps=end_time(sde, sigma_end=0.05), timesteps=interior)
  lams = sde.log_snr(ts)  # lambda(T), the interior points, lambda(end): the 5 evaluations
  coefficients = bespoke.dpm_solver_2m_coefficients(lams)
  ratios, weights = bespoke.split_coefficients(coefficients, 5)
  np.testing.assert_allclose(bespoke.join_coefficients(ratios, weights), coefficients)
  assert coefficients.shape == (bespoke.n_coefficients(5),) and np.all(np.triu(np.asarray(weights), 1) == 0)
  ours = sampling.get_sampler(sde, (256, 2), method="bespoke", n_steps=5, timesteps=[float(v) for v in lams[1:]],
                              coefficients=[float(v) for v in coefficients])
  z = sde.prior_sampling(jax.random.key(0), (256, 2))
  x_dpm, nfe_dpm = dpm(None, target.score_fn(sde), z)
  x, nfe = ours(None, target.score_fn(sde), z)
  assert int(nfe) == int(nfe_dpm) == 5
  np.testing.assert_allclose(x, x_dpm, rtol=1e-4, atol=1e-4)


def test_bad_bespoke_fields_raise_before_compiling():
  sde = SDES["ve"]
  good = dict(method="bespoke", n_steps=3, timesteps=[-0.5, 0.5], coefficients=[0.1] * bespoke.n_coefficients(3))
  sampling.get_sampler(sde, (8, 1), **good)
  with pytest.raises(ValueError, match=r"sampling.coefficients=.*must be 9 finite numbers"):
    sampling.get_sampler(sde, (8, 1), **dict(good, coefficients=[0.1] * 8))
  with pytest.raises(ValueError, match="sampling.coefficients"):
    sampling.get_sampler(sde, (8, 1), **dict(good, coefficients=[0.1] * 8 + [float("nan")]))
  with pytest.raises(ValueError, match="sampling.timesteps"):
    sampling.get_sampler(sde, (8, 1), **dict(good, timesteps=[0.5, -0.5]))
  with pytest.raises(ValueError, match="sampling.start_log_snr"):  # must lie in (lambda(T), timesteps[0])
    sampling.get_sampler(sde, (8, 1), **dict(good, start_log_snr=0.0))
  sampling.get_sampler(sde, (8, 1), **dict(good, start_log_snr=-1.0))
  with pytest.raises(ValueError, match="lacks the field coefficients"):
    sampling.get_sampler(sde, (8, 1), method="bespoke", n_steps=3, timesteps=[-0.5, 0.5])
  with pytest.raises(ValueError, match="at least one"):
    grid_opt.optimise_bespoke(jax.random.key(0), sde, [], n_steps=3, init_timesteps=[-0.5, 0.5])


def test_chunked_kl_loss_equals_the_whole_batch_loss_and_gradient():
  """mean_kl_loss with chunks=4 slices the same latents: its loss (the log objective) and its
  gradient in the solver's coefficients equal the one-batch ones (float32 round-off)."""
  sde = SDES["ve"]
  lams = jnp.concatenate([sde.log_snr(jnp.full((1,), sde.T)), jnp.asarray([-0.5, 0.5])])
  coefficients = bespoke.dpm_solver_2m_coefficients(lams)

  def make_sampler(c, shape, j):
    return sampling.get_sampler(sde, shape, method="bespoke", n_steps=3, timesteps=lams[1:], coefficients=c)

  whole, chunked = (jax.value_and_grad(grid_opt.mean_kl_loss(
      jax.random.key(3), sde, [(MIX.score_fn(sde), MIX.log_prob, 1)], make_sampler, batch_size=256,
      kl_floor=1e-3, chunks=chunks))(coefficients, 0) for chunks in (1, 4))
  np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-5)
  np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-4, atol=1e-6)
  assert np.abs(np.asarray(whole[1])).max() > 1e-3  # the gradient is not trivially zero
  with pytest.raises(ValueError, match=r"chunks=3 must divide batch_size=256"):
    grid_opt.mean_kl_loss(jax.random.key(3), sde, [], make_sampler, batch_size=256, kl_floor=None, chunks=3)
  with pytest.raises(ValueError, match=r"chunks=3 must divide batch_size=256"):
    grid_opt.optimise_bespoke(jax.random.key(0), sde, [(MIX.score_fn(sde), MIX.log_prob, 1)], n_steps=3,
                              init_timesteps=[-0.5, 0.5], batch_size=256, chunks=3)


@pytest.mark.slow
def test_bespoke_fit_lowers_the_exact_kl_far_below_its_start():
  """150 Adam steps (512 latents each) from DPM-Solver++(2M) with the half end at 3 NFE on a 1-D
  mixture: the exact KL on fresh latents falls at least 10x and below 0.01 nats (measured
  0.139 +- 0.006 -> 0.0035 +- 0.0010, the mean of the last 30 iterates), and the fitted points stay increasing."""
  sde = SDES["ve"]
  init = [-0.5, 0.5]
  lams = jnp.concatenate([sde.log_snr(jnp.full((1,), sde.T)), jnp.asarray(init)])
  out = grid_opt.optimise_bespoke(jax.random.key(0), sde, [(MIX.score_fn(sde), MIX.log_prob, 1)], n_steps=3,
                                  init_timesteps=init, batch_size=512, n_iters=150, learning_rate=0.05)

  def kl(timesteps, coefficients):
    sampler = sampling.get_sampler(sde, (4096, 1), method="bespoke", n_steps=3, timesteps=timesteps,
                                   coefficients=coefficients)
    return metrics.sampler_kl(jax.random.key(7), sampler, MIX.score_fn(sde), MIX.log_prob, sde, n_batches=2)

  start = kl(init, [float(v) for v in bespoke.dpm_solver_2m_coefficients(lams)])
  fitted = kl(out["timesteps"], out["coefficients"])
  assert np.all(np.diff(out["timesteps"]) > 0) and len(out["coefficients"]) == bespoke.n_coefficients(3)
  assert fitted["kl"] + 2 * fitted["se"] < min(0.1 * start["kl"], 0.01), (start, fitted)
  assert out["folded"] == [0.0] and fitted["folded"] == 0.0, out["folded"]


FIELDS = dict(n_steps=6, schedule="custom", timesteps=[-2.0, -0.5, 0.3, 1.5], denoise=True, denoise_step="half",
              sigma_end=0.05)


@pytest.mark.parametrize("method, kwargs, sde_name", [
    pytest.param("unipc", dict(order=3), "ve", marks=pytest.mark.slow),
    pytest.param("unipc", dict(order=3), "vp", marks=pytest.mark.slow),
    pytest.param("dpm_solver_2m", {}, "vp", marks=pytest.mark.slow), ("ddim", {}, "ve")])
def test_coefficients_of_a_linear_sampler_reproduce_it(method, kwargs, sde_name):
  """`coefficients_of` reads a linear sampler's weights off one eager run on coefficient vectors: the
  bespoke solver with them is that sampler (UniPC-3 with its corrector, DPM-Solver++(2M), DDIM; half
  last step) to float32 round-off (measured <= 1.4e-5), at the sampler's own evaluation points."""
  sde, target = SDES[sde_name], datasets.GaussianMixture()
  fields = dict(method=method, **FIELDS, **kwargs)
  timesteps, coefficients = grid_opt.coefficients_of(sde, **fields)
  z = sde.prior_sampling(jax.random.key(0), (256, 2))
  ref = sampling.get_sampler(sde, (256, 2), **fields)(None, target.score_fn(sde), z)[0]
  ours = sampling.get_sampler(sde, (256, 2), method="bespoke", n_steps=6, timesteps=timesteps,
                              coefficients=coefficients)(None, target.score_fn(sde), z)[0]
  np.testing.assert_allclose(ours, ref, atol=5e-5)
  np.testing.assert_allclose(timesteps[:4], FIELDS["timesteps"], atol=1e-4)


@pytest.mark.slow
def test_a_bespoke_fit_started_at_a_sampler_starts_there():
  """One Adam step of size 1e-7 from UniPC-3's weights leaves them in place (the fit's parameters,
  log-ratios and weight changes against DPM-Solver++(2M) on the same points, invert exactly)."""
  sde, target = SDES["ve"], datasets.GaussianMixture()
  timesteps, coefficients = grid_opt.coefficients_of(sde, method="unipc", order=3, **FIELDS)
  out = grid_opt.optimise_bespoke(jax.random.key(0), sde, [(target.score_fn(sde), target.log_prob, 2)], n_steps=6,
                                  init_timesteps=timesteps, init_coefficients=coefficients, batch_size=8,
                                  n_iters=1, learning_rate=1e-7)
  np.testing.assert_allclose(out["coefficients"], coefficients, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sde_name", ["ve", pytest.param("vp", marks=pytest.mark.slow)])
def test_with_free_start_keeps_every_state_after_the_first_evaluation(sde_name):
  """`with_free_start` moves the first evaluation to lambda(T) + shift on the prior scaled by e^-shift
  and scales r_0 by e^shift: with a model whose x0_hat is a constant (so the noise level of an
  evaluation does not matter) the free-start solver is the original one exactly, for any shift."""
  sde = SDES[sde_name]
  fields = dict(method="ddim", n_steps=4, schedule="log_snr", denoise=True, denoise_step="half", sigma_end=0.05)
  timesteps, coefficients = grid_opt.coefficients_of(sde, **fields)
  points, shifted = grid_opt.with_free_start(sde, timesteps, coefficients, shift=0.5)
  lam_T = float(sde.log_snr(jnp.full((1,), sde.T))[0])
  assert points[0] == pytest.approx(lam_T + 0.5) and points[1:] == timesteps and shifted[1:] == coefficients[1:]
  c = jnp.array([0.7, -1.2])

  def score_fn(x, t):  # x0_hat(x, t) = c for every x and t
    alpha, sigma = sde.marginal_coeffs(t)
    return (alpha[:, None] * c - x) / sigma[:, None] ** 2

  z = sde.prior_sampling(jax.random.key(0), (64, 2))
  ref = sampling.get_sampler(sde, (64, 2), method="bespoke", n_steps=4, timesteps=timesteps,
                             coefficients=coefficients)(None, score_fn, z)[0]
  free = sampling.get_sampler(sde, (64, 2), method="bespoke", n_steps=4, timesteps=points[1:], coefficients=shifted,
                              start_log_snr=points[0])(None, score_fn, z)[0]
  np.testing.assert_allclose(free, ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="shift"):
    grid_opt.with_free_start(sde, timesteps, coefficients, shift=0.0)


def test_coefficients_of_rejects_a_sampler_that_is_not_one_pass():
  with pytest.raises(ValueError, match="not a bespoke solver"):
    grid_opt.coefficients_of(SDES["ve"], "edm_heun", 3, schedule="log_snr")


def test_fit_logits_iterate_average_is_closer_to_the_optimum_of_a_noisy_objective():
  """Adam at a constant step size on (theta - 1 - xi_i / 2)^2, xi_i ~ N(0, 1) per iteration: the last
  iterate rattles around 1 (measured |theta - 1| = 0.115), the mean of the last half of the iterates
  sits near it (0.020)."""
  def loss_fn(theta, i):
    xi = jax.random.normal(jax.random.fold_in(jax.random.key(0), i))
    return jnp.sum((theta - 1.0 - 0.5 * xi) ** 2)

  last, _ = grid_opt.fit_logits(loss_fn, jnp.zeros(1), n_iters=400, learning_rate=0.1, decay=1.0)
  mean, losses = grid_opt.fit_logits(loss_fn, jnp.zeros(1), n_iters=400, learning_rate=0.1, decay=1.0, average=0.5)
  assert len(losses) == 400 and abs(float(mean[0]) - 1.0) < 0.05 < abs(float(last[0]) - 1.0)


@pytest.mark.slow
def test_a_free_first_evaluation_point_helps_at_two_nfe():
  """At 2 NFE the model's output at T says almost nothing about the data: fitting the first evaluation
  point (`free_start`, the latent rescaled to it) lowers the exact KL of the same 150-step fit on a 1-D
  mixture: free + 2 SE below 0.6x fixed (measured 0.055 +- 0.004 with the first point at T, 0.019 +- 0.002
  free)."""
  sde = SDES["ve"]

  def fit_and_kl(init, free):
    out = grid_opt.optimise_bespoke(jax.random.key(0), sde, [(MIX.score_fn(sde), MIX.log_prob, 1)], n_steps=2,
                                    init_timesteps=init, batch_size=512, n_iters=150, learning_rate=0.05,
                                    free_start=free)
    sampler = sampling.get_sampler(sde, (4096, 1), method="bespoke", n_steps=2, timesteps=out["timesteps"],
                                   coefficients=out["coefficients"], start_log_snr=out["start_log_snr"])
    return metrics.sampler_kl(jax.random.key(7), sampler, MIX.score_fn(sde), MIX.log_prob, sde, n_batches=2)

  fixed, free = fit_and_kl([0.5], False), fit_and_kl([-0.5, 1.0], True)
  assert free["kl"] + 2 * free["se"] < 0.6 * fixed["kl"], (fixed, free)


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["ve_gmm_bespoke", "vp_gmm_bespoke"])
def test_bespoke_configs_reach_their_measured_exact_kl(config_name):
  """configs/*_gmm_bespoke.py (4 NFE, the Gaussian start from the mixture's moments, numbers rounded to 7
  digits) with the exact score on the default mixture: KL <= 0.0015 nats (measured 0.23e-3 and 0.22e-3 +-
  0.08e-3 from 65,536 latents)."""
  import importlib

  import run_lib

  config = importlib.import_module(f"configs.{config_name}").get_config()
  sde = run_lib.build(config).sde
  target = datasets.GaussianMixture()
  sampler = sampling.get_sampler(sde, (4096, 2), **run_lib.sampler_fields(config.sampling, target))
  out = metrics.sampler_kl(jax.random.key(3), sampler, target.score_fn(sde), target.log_prob, sde, n_batches=2)
  assert out["nfe"] == 4 and out["kl"] + 2 * out["se"] <= 0.0015 and out["folded"] == 0, out


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_gaussian_start_with_the_exact_one_step_flow_of_gaussian_data_has_zero_kl(sde_name):
  """1-D Gaussian data N(m, c): its flow from noise level s to 0 is x = m + sqrt(k) (y - m), k = c / (c + s^2),
  which is r y + w x0_hat(y) with w = 1 / (1 + sqrt(k)), r = sqrt(k) w. With the Gaussian start at
  lambda_0 = -log s that one-NFE solver is exact, so every KL term is zero (float32 round-off); the
  rescaled-latent start (no moments) misses the mean and variance: KL > 0.1 nats."""
  sde, m, c, lam0 = SDES[sde_name], 1.5, 0.5, -1.0
  target = datasets.GaussianMixture(means=[[m]], covs=[[[c]]], weights=[1.0])
  k = c / (c + np.exp(-2 * lam0))
  w = 1.0 / (1.0 + np.sqrt(k))
  fields = dict(method="bespoke", n_steps=1, timesteps=[], coefficients=[np.sqrt(k) * w, w], start_log_snr=lam0)
  kls = [metrics.sampler_kl(jax.random.key(0), sampling.get_sampler(sde, (2048, 1), **fields, start_moments=mom),
                            target.score_fn(sde), target.log_prob, sde, n_batches=1)
         for mom in (([m], [[c]]), None)]
  assert abs(kls[0]["kl"]) < 1e-4 and kls[0]["se"] < 1e-4, kls[0]
  assert kls[1]["kl"] > 0.1, kls[1]


def test_gaussian_start_state_is_the_gaussian_marginal_at_its_noise_level():
  """The first state of the 2-D Gaussian start is y_0 = m + (C + s^2 I)^(1/2) z, z the standardised prior
  latent x_T / sigma(T) (checked with r_0 = 1, w_00 = 0, so the sample is y_0), whatever the SDE."""
  m, C, lam0 = np.array([0.5, -1.0]), np.array([[1.0, 0.6], [0.6, 0.8]]), -0.5
  c, U = np.linalg.eigh(C + np.exp(-2 * lam0) * np.eye(2))
  root = U @ np.diag(np.sqrt(c)) @ U.T
  for sde in SDES.values():
    sampler = sampling.get_sampler(sde, (64, 2), method="bespoke", n_steps=1, timesteps=[], coefficients=[1.0, 0.0],
                                   start_log_snr=lam0, start_moments=(m.tolist(), C.tolist()))
    x_T = sde.prior_sampling(jax.random.key(1), (64, 2))
    z = np.asarray(x_T) / float(sde.marginal_coeffs(jnp.full((1,), sde.T))[1][0])
    y0 = np.asarray(sampler(None, lambda x, t: jnp.zeros_like(x), x_T)[0])
    np.testing.assert_allclose(y0, m + z @ root.T, rtol=1e-4, atol=1e-4)


def test_bad_start_moments_raise_before_compiling():
  sde = SDES["ve"]
  good = dict(method="bespoke", n_steps=1, timesteps=[], coefficients=[0.5, 0.5], start_log_snr=-1.0)
  sampling.get_sampler(sde, (8, 2), **good, start_moments=([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]))
  for bad, match in (("data", r"sampling.start_moments must be \(mean \[2\], covariance \[2, 2\]\)"),
                     (([0.0], [[1.0]]), r"got shapes \(1,\) and \(1, 1\)"),
                     (([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
                     (([0.0, float("nan")], [[1.0, 0.0], [0.0, 1.0]]), "finite"),
                     (([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]]), "negative eigenvalue")):
    with pytest.raises(ValueError, match=match):
      sampling.get_sampler(sde, (8, 2), **good, start_moments=bad)
  with pytest.raises(ValueError, match=r"one \(mean, covariance\) per target \(1\); got 2"):
    grid_opt.optimise_bespoke(jax.random.key(0), sde, [(MIX.score_fn(sde), MIX.log_prob, 1)], n_steps=2,
                              init_timesteps=[-1.0, 0.5], free_start=True, start_moments=[([0.0], [[1.0]])] * 2)


def test_an_inserted_evaluation_leaves_the_output_unchanged():
  """with_inserted_evaluation: n + 1 NFE, the new evaluation reached by a DDIM step and weighted 0, so the
  samples are those of the n-NFE solver (float32 round-off), wherever it goes; bad places raise."""
  sde, n = SDES["vp"], 4
  points = [-2.0, -0.5, 0.7, 2.0]
  coefficients = [float(v) for v in bespoke.dpm_solver_2m_coefficients(jnp.asarray(points))]
  z = sde.prior_sampling(jax.random.key(0), (256, 1))

  def sample(points, coefficients):
    sampler = sampling.get_sampler(sde, (256, 1), method="bespoke", n_steps=len(points), timesteps=points[1:],
                                   coefficients=coefficients, start_log_snr=points[0])
    x, nfe = sampler(None, MIX.score_fn(sde), z)
    return np.asarray(x), int(nfe)

  x, _ = sample(points, coefficients)
  for after, lam in ((0, -1.0), (1, 0.1), (3, 3.0)):
    new_points, new_coefficients = grid_opt.with_inserted_evaluation(points, coefficients, after, lam)
    assert new_points[after + 1] == lam and len(new_coefficients) == bespoke.n_coefficients(n + 1)
    x_new, nfe = sample(new_points, new_coefficients)
    assert nfe == n + 1
    np.testing.assert_allclose(x_new, x, atol=2e-5)
  for after, lam in ((4, 3.0), (1, 0.8), (0, -2.0)):
    with pytest.raises(ValueError, match="after=|lam="):
      grid_opt.with_inserted_evaluation(points, coefficients, after, lam)


def test_gaussian_start_in_place_of_the_first_evaluations():
  """with_gaussian_start: the kept points and ratios, each later step's weights on the left-out evaluations
  moved to the first kept one; on Gaussian data, where the Gaussian start is the exact flow, a 12-NFE
  DPM-Solver++(2M) with its first two evaluations left out moves its samples by < 0.005 (measured 0.0014;
  the rescaled-latent start 0.076, the left-out weights dropped instead of moved 0.029)."""
  sde, n, drop = SDES["ve"], 12, 2
  points = list(np.linspace(-3.0, 3.0, n))
  coefficients = [float(v) for v in bespoke.dpm_solver_2m_coefficients(jnp.asarray(points, jnp.float32))]
  kept_points, kept = grid_opt.with_gaussian_start(points, coefficients, drop)
  ratios, weights = (np.asarray(v) for v in bespoke.split_coefficients(jnp.asarray(coefficients), n))
  new_ratios, new_weights = (np.asarray(v) for v in bespoke.split_coefficients(jnp.asarray(kept), n - drop))
  assert kept_points == points[drop:]
  np.testing.assert_allclose(new_ratios, ratios[drop:], rtol=1e-6)
  np.testing.assert_allclose(new_weights[:, 1:], weights[drop:, drop + 1:], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(new_weights[:, 0], weights[drop:, : drop + 1].sum(1), rtol=1e-5, atol=1e-7)
  target = datasets.GaussianMixture(means=[[0.7]], covs=[[[0.4]]], weights=[1.0])
  z = sde.prior_sampling(jax.random.key(1), (512, 1))
  xs = [np.asarray(sampling.get_sampler(sde, (512, 1), method="bespoke", n_steps=len(p), timesteps=p[1:],
                                        coefficients=c, start_log_snr=p[0],
                                        start_moments=([0.7], [[0.4]]))(None, target.score_fn(sde), z)[0])
        for p, c in ((points, coefficients), (kept_points, kept))]
  assert np.abs(xs[1] - xs[0]).max() < 0.005
  with pytest.raises(ValueError, match=r"drop=12 must be an integer in \[1, 11\]"):
    grid_opt.with_gaussian_start(points, coefficients, 12)
