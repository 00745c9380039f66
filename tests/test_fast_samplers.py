"""Fast samplers (DDIM, EDM Heun, DPM-Solver++): time schedules, convergence orders against the
exact probability-flow map of a Gaussian target, exact NFE counts, DDIM's eta = 1 limit, errors."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import evaluation
import sampling
import sde_lib

# A 1-D Gaussian target N(M, S^2): diffused, p_t = N(alpha_t M, alpha_t^2 S^2 + sigma_t^2), so the
# score is exact and the probability-flow map from T to eps is affine (see `_exact_flow`).
M, S = 0.5, 0.7
SDES = {"ve": sde_lib.VESDE(), "vp": sde_lib.VPSDE(), "subvp": sde_lib.SubVPSDE(),
        "ou": sde_lib.OUSDE(), "lambda_ve": sde_lib.LambdaVESDE()}


def _coeffs(sde, t):
  alpha, sigma = sde.marginal_coeffs(jnp.array([t], jnp.float32))
  return float(alpha[0]), float(sigma[0])


def _gaussian_score(sde):
  def score_fn(x, t):
    alpha, sigma = (c[:, None] for c in sde.marginal_coeffs(t))
    return -(x - alpha * M) / (alpha**2 * S**2 + sigma**2)

  return score_fn


def _exact_flow(sde, x_T, eps):
  """x_eps = alpha_eps M + sqrt(alpha_eps^2 S^2 + sigma_eps^2) (x_T - alpha_T M) / sqrt(alpha_T^2 S^2 + sigma_T^2)."""
  (a_T, s_T), (a_e, s_e) = _coeffs(sde, sde.T), _coeffs(sde, eps)
  return a_e * M + np.sqrt(a_e**2 * S**2 + s_e**2) * (x_T - a_T * M) / np.sqrt(a_T**2 * S**2 + s_T**2)


def _flow_error(sde, method, n_steps, **kwargs):
  """Max error over 5 fixed latents x_T in [-2, 2] prior std of a deterministic sampler vs the exact map."""
  x_T = np.linspace(-2.0, 2.0, 5, dtype=np.float32)[:, None] * sde.prior_std
  sampler = sampling.get_sampler(sde, (5, 1), method=method, n_steps=n_steps, **kwargs)
  x, _ = jax.jit(lambda k, x_T: sampler(k, _gaussian_score(sde), x_T=x_T))(jax.random.key(0), x_T)
  return float(np.max(np.abs(np.asarray(x, np.float64) - _exact_flow(sde, x_T, 1e-3))))


# (method, kwargs, n_steps, window for err(n) / err(2 n)): first order for DDIM (the exponential
# Euler step in lambda), second for EDM Heun (in sigma_edm) and DPM-Solver++(2M), third for 3M.
# n_steps are in the asymptotic regime (measured ratios: 1.97, 4.1-4.2, 3.9, 8.1-8.6 on VE/VP/sub-VP/OU).
ORDER_CASES = [
    ("ddim", dict(schedule="log_snr"), 40, (1.6, 2.6)),
    ("edm_heun", dict(schedule="edm"), 20, (3.0, 5.5)),
    ("dpm_solver_2m", dict(schedule="log_snr"), 40, (3.0, 5.5)),
    ("dpm_solver_3m", dict(schedule="edm", lower_order_final=False), 40, (6.0, 12.0)),
]


@pytest.mark.parametrize("method,kwargs,n_steps,window", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_convergence_order_vp(method, kwargs, n_steps, window):
  sde = SDES["vp"]
  coarse, fine = (_flow_error(sde, method, n, **kwargs) for n in (n_steps, 2 * n_steps))
  assert window[0] <= coarse / fine <= window[1], (coarse, fine, coarse / fine)


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["ve", "subvp", "ou", "lambda_ve"])
@pytest.mark.parametrize("method,kwargs,n_steps,window", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_convergence_order_other_sdes(sde_name, method, kwargs, n_steps, window):
  sde = SDES[sde_name]
  coarse, fine = (_flow_error(sde, method, n, **kwargs) for n in (n_steps, 2 * n_steps))
  assert window[0] <= coarse / fine <= window[1], (coarse, fine, coarse / fine)


@pytest.mark.parametrize("sde_name", ["ve", "vp", "ou", pytest.param("subvp", marks=pytest.mark.slow),
                                      pytest.param("lambda_ve", marks=pytest.mark.slow)])
def test_schedules_are_monotone_and_exact(sde_name):
  sde, eps, n = SDES[sde_name], 1e-3, 12
  ts = jax.jit(lambda: {s: sampling.get_time_schedule(sde, n, schedule=s, eps=eps)
                        for s in sampling.SCHEDULES})()
  for name, t in ts.items():
    t = np.asarray(t)
    assert t.shape == (n + 1,) and t[0] == np.float32(sde.T) and t[-1] == np.float32(eps), name
    assert np.all(np.diff(t) < 0), (name, t)
  u = np.linspace(0.0, 1.0, n + 1)
  np.testing.assert_allclose(ts["uniform_t"], sde.T + u * (eps - sde.T), rtol=1e-6)
  np.testing.assert_allclose(ts["quadratic"], eps + (sde.T - eps) * (1 - u) ** 2, rtol=1e-6)
  # Uniform in lambda; uniform in sigma_edm^(1/rho) (Karras et al. Eq. 5): the bisection inverse
  # is exact to float32 round-off of lambda(t).
  lam = np.asarray(sde.log_snr(ts["log_snr"]), np.float64)
  np.testing.assert_allclose(np.diff(lam), (lam[-1] - lam[0]) / n, atol=2e-4 * abs(lam[-1] - lam[0]))
  root = np.asarray(sampling.sigma_edm(sde, ts["edm"]), np.float64) ** (1 / 7)
  np.testing.assert_allclose(np.diff(root), (root[-1] - root[0]) / n, atol=2e-4 * abs(root[-1] - root[0]))


def test_log_snr_inverse_matches_closed_form_ve():
  """VE: sigma^2 = sigma_min^2 (r^{2t} - 1), lambda = -log sigma  =>  t = log1p(e^{-2 lambda} / sigma_min^2) / (2 log r)."""
  sde = SDES["ve"]
  lam = jnp.linspace(-3.9, 6.5, 9)
  t_closed = np.log1p(np.exp(-2.0 * np.asarray(lam, np.float64)) / sde.sigma_min**2) / (
      2 * np.log(sde.sigma_max / sde.sigma_min))
  np.testing.assert_allclose(np.asarray(jax.jit(sampling.t_of_log_snr, static_argnums=0)(sde, lam)),
                             t_closed, rtol=1e-5)


def _tweedie_of_exact_flow(sde, x_T, eps):
  """E[x0 | x_eps] at the exact x_eps: M + S^2 alpha_eps (x_eps - alpha_eps M) / (alpha_eps^2 S^2 + sigma_eps^2)."""
  a_e, s_e = _coeffs(sde, eps)
  return M + S**2 * a_e * (_exact_flow(sde, x_T, eps) - a_e * M) / (a_e**2 * S**2 + s_e**2)


# denoise=True: n_steps - 1 solver steps to sigma_edm = 0.1, then the step to sigma = 0 (Tweedie).
# The last step is exact given x_eps and affine in it, so the solver's order carries over
# (measured ratios on VP: ddim 1.98, edm_heun 4.19, dpm_solver_2m 3.52).
DENOISE_ORDER_CASES = [
    ("ddim", dict(schedule="log_snr"), 41, (1.6, 2.6)),
    ("edm_heun", dict(schedule="edm"), 21, (3.0, 5.5)),
    ("dpm_solver_2m", dict(schedule="log_snr"), 41, (3.0, 5.5)),
]


@pytest.mark.parametrize("method,kwargs,n_steps,window", DENOISE_ORDER_CASES,
                         ids=[c[0] for c in DENOISE_ORDER_CASES])
def test_denoise_to_zero_keeps_the_convergence_order(method, kwargs, n_steps, window):
  sde = SDES["vp"]
  eps = sampling.end_time(sde, sigma_end=0.1)
  a_e, s_e = _coeffs(sde, eps)
  assert abs(s_e / a_e - 0.1) < 1e-4  # end_time inverts sigma_edm
  x_T = np.linspace(-2.0, 2.0, 5, dtype=np.float32)[:, None] * sde.prior_std
  errors = []
  for n in (n_steps, 2 * n_steps - 1):  # n - 1 solver steps: 40 -> 80
    sampler = sampling.get_sampler(sde, (5, 1), method=method, n_steps=n, denoise=True,
                                   sigma_end=0.1, **kwargs)
    x, _ = jax.jit(lambda k, x_T: sampler(k, _gaussian_score(sde), x_T=x_T))(jax.random.key(0), x_T)
    errors.append(float(np.max(np.abs(np.asarray(x, np.float64) - _tweedie_of_exact_flow(sde, x_T, eps)))))
  assert window[0] <= errors[0] / errors[1] <= window[1], (errors, errors[0] / errors[1])


def test_end_time_matches_closed_form_ve():
  """VE: sigma_edm = sigma_t, so t(sigma_end) = log1p(sigma_end^2 / sigma_min^2) / (2 log r)."""
  sde = SDES["ve"]
  for sigma_end in (0.02, 0.1, 1.0):
    t = np.log1p(sigma_end**2 / sde.sigma_min**2) / (2 * np.log(sde.sigma_max / sde.sigma_min))
    np.testing.assert_allclose(sampling.end_time(sde, sigma_end=sigma_end), t, rtol=1e-5)
  assert sampling.end_time(sde, eps=0.02) == 0.02


NFE_CASES = [  # DDIM's count is checked in test_stochastic_samples_count_nfe_and_do_not_depend_on_batch_size
    ("edm_heun", dict(n_steps=4, S_churn=10.0, S_tmin=0.05, S_tmax=20.0), 7),
    ("edm_heun", dict(n_steps=4, S_churn=10.0, denoise=True, sigma_end=0.1), 7),
    ("dpm_solver_2m", dict(n_steps=5), 5),
    ("dpm_solver_2m", dict(n_steps=5, denoise=True, sigma_end=0.1), 5),
    ("dpm_solver", dict(n_steps=6, order=3, lower_order_final=False), 6),
    ("ddim", dict(n_steps=2, denoise=True), 2),
]


@pytest.mark.parametrize("method,kwargs,expected", NFE_CASES)
def test_nfe_equals_independent_count(method, kwargs, expected):
  sde = SDES["ve"]
  calls = []

  def counted_score(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return _gaussian_score(sde)(x, t)

  sampler = sampling.get_sampler(sde, (3, 1), method=method, **kwargs)
  x, nfe = jax.jit(lambda k: sampler(k, counted_score))(jax.random.key(0))
  jax.block_until_ready(x)
  jax.effects_barrier()
  assert nfe == expected == len(calls)
  assert np.all(np.isfinite(np.asarray(x)))


def test_ddim_eta_one_is_the_ancestral_step():
  """One DDIM step T -> s with eta = 1 draws from the posterior q(x_s | x_T, x0_hat), as ancestral sampling."""
  sde, s, n = SDES["vp"], 0.4, 20000
  x_T = jnp.full((n, 1), 1.3)
  score_fn = _gaussian_score(sde)
  ddim = sampling.get_sampler(sde, (n, 1), method="ddim", n_steps=1, eta=1.0, eps=s)

  @jax.jit
  def both(key_ddim, key_anc):
    x_ddim, _ = ddim(key_ddim, score_fn, x_T=x_T)
    keys = sampling.per_sample_keys(key_anc, n)
    t_vec, s_vec = jnp.full((n,), sde.T), jnp.full((n,), s)
    x_anc, _ = sampling.ancestral_sampling(keys, sde.reverse(score_fn), x_T, t_vec, s_vec)
    return x_ddim[:, 0], x_anc[:, 0]

  x_ddim, x_anc = (np.asarray(v, np.float64) for v in both(jax.random.key(0), jax.random.key(1)))
  # Both are Gaussian given x_T; tolerances 5 standard errors of the difference.
  std = x_anc.std()
  assert abs(x_ddim.mean() - x_anc.mean()) < 5 * std * np.sqrt(2 / n)
  assert abs(x_ddim.std() - std) < 5 * std * np.sqrt(1 / n)


@pytest.mark.parametrize("method,kwargs,expected", [
    ("ddim", dict(n_steps=5, eta=0.5), 5),
    pytest.param("edm_heun", dict(n_steps=5, S_churn=5.0), 9, marks=pytest.mark.slow)])
def test_stochastic_samples_count_nfe_and_do_not_depend_on_batch_size(method, kwargs, expected):
  sde = SDES["vp"]
  calls = []

  def counted_score(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return _gaussian_score(sde)(x, t)

  def run(n):
    sampler = sampling.get_sampler(sde, (n, 1), method=method, **kwargs)
    x, nfe = jax.jit(lambda k: sampler(k, counted_score))(jax.random.key(3))
    jax.block_until_ready(x)
    jax.effects_barrier()
    return np.asarray(x), int(nfe)

  (small, nfe_small), (large, nfe_large) = run(3), run(7)
  assert nfe_small == nfe_large == expected and len(calls) == 2 * expected
  # The same per-sample keys: equal up to float32 round-off of differently batched kernels.
  np.testing.assert_allclose(small, large[:3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method,kwargs,match", [
    ("ddim", dict(schedule="nope"), "sampling.schedule"),
    ("ddim", dict(n_steps=0), "sampling.n_steps"),
    ("ddim", dict(n_steps=2.5), "sampling.n_steps"),
    ("ddim", dict(eta=1.5), "sampling.eta"),
    ("ddim", dict(eps=0.0), "sampling.eps"),
    ("edm_heun", dict(S_churn=-1.0), "sampling.S_churn"),
    ("edm_heun", dict(S_noise=-0.1), "sampling.S_noise"),
    ("edm_heun", dict(S_tmin=2.0, S_tmax=1.0), "sampling.S_tmax"),
    ("dpm_solver", dict(order=4), "sampling.order"),
    ("dpm_solver_2m", dict(order=3), "sampling.order"),
    ("dpm_solver_3m", dict(bogus=1), "bogus"),
    ("dpm_solver_2m", dict(n_steps=1, denoise=True), "sampling.n_steps"),
    ("ddim", dict(denoise=1), "sampling.denoise"),
    ("edm_heun", dict(sigma_end=0.0), "sampling.sigma_end"),
    ("dpm_solver_2m", dict(sigma_end=1e3), "sampling.sigma_end")])
def test_bad_fast_sampler_arguments_raise(method, kwargs, match):
  with pytest.raises(ValueError, match=match):
    sampling.get_sampler(SDES["vp"], (4, 2), method=method, **kwargs)


def test_fast_configs_build_and_trajectory_plots_need_a_pc_sampler():
  """configs/*_gmm_fast.py build; with trajectory plots on, a fast sampler fails at build time."""
  import run_lib
  from configs import ve_gmm_fast, vp_gmm_fast

  for module in (ve_gmm_fast, vp_gmm_fast):
    assert run_lib.build(module.get_config()).config.sampling.denoise
  config = ve_gmm_fast.get_config()
  config.eval.n_trajectory = 50
  with pytest.raises(ValueError, match="eval.n_trajectory=50"):
    run_lib.build(config)


def test_bad_schedule_arguments_raise():
  with pytest.raises(ValueError, match="sampling.rho"):
    sampling.get_time_schedule(SDES["vp"], 10, schedule="edm", rho=0.0)
  with pytest.raises(ValueError, match="sampling.schedule"):
    sampling.get_time_schedule(SDES["vp"], 10, schedule="cosine")


def _energy_ratio(config_name, n_seeds=3, n_refs=2, **sampler_kwargs):
  """The benchmark's protocol (benchmarks/samplers.py): mean over seeds 0..n_seeds-1 of the energy
  distance of 10,000 oracle samples (mean over n_refs reference sets) / the 10-pair floor."""
  import run_lib

  exp = run_lib.build(importlib.import_module(f"configs.{config_name}").get_config())
  n = 10_000
  sampler = sampling.get_sampler(exp.sde, (n,) + exp.shape, **sampler_kwargs)
  fn = jax.jit(lambda k: sampler(k, exp.target.score_fn(exp.sde)))
  sample_fn = jax.jit(exp.target.sample, static_argnums=1)
  refs = [sample_fn(k, n) for k in jax.random.split(jax.random.key(12), n_refs)]
  eds = [np.mean([float(evaluation.energy_distance(fn(jax.random.key(s))[0], r)) for r in refs])
         for s in range(n_seeds)]
  floor = evaluation.metric_floor(jax.random.key(13), sample_fn, n,
                                  lambda k, a, b: evaluation.energy_distance(a, b), n_pairs=10)["mean"]
  return float(np.mean(eds)) / floor


# The must-show configuration (configs/*_gmm_fast.py): DPM-Solver++(2M) on the uniform log-SNR grid
# down to sigma_edm = 0.1, then the step to sigma = 0, 10 NFE in all. Measured (seeds 0, 1, 2):
# ve_gmm 1.62 [1.21, 0.90, 2.75], vp_gmm 1.44 [1.04, 0.84, 2.44] x floor (without the denoising
# step, ending at eps = 1e-3: 4.73 and 3.20). Deterministic given the seeds; the bound is the
# must-show's 2x, a margin of 0.38x / 0.56x.
FAST = dict(method="dpm_solver_2m", n_steps=10, schedule="log_snr", denoise=True, sigma_end=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["vp_gmm", "ve_gmm"])
def test_must_show_oracle_within_2x_floor_at_10_nfe(config_name):
  """Must-show: a sampler with 10 NFE and the oracle score is within 2x the energy floor."""
  ratio = _energy_ratio(config_name, **FAST)
  assert ratio <= 2.0, ratio
