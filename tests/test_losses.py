"""DSM loss, train step and score-network parameterisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import losses
import models
import sde_lib
from configs import cond_gmm
import math
from scipy import stats

ALL_SDES = [sde_lib.VESDE(), sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.OUSDE(), sde_lib.LambdaVESDE()]


@pytest.mark.parametrize("sde", ALL_SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("likelihood_weighting", [False, True])
@pytest.mark.parametrize("reduce_mean", [False, True])
def test_dsm_loss_is_zero_for_a_point_mass_with_its_analytic_score(sde, likelihood_weighting, reduce_mean):
  c = jnp.array([0.3, -1.2, 2.0])

  def exact_score(params, x, t):  # score of p_t = N(alpha c, sigma^2 I)
    alpha, sigma = sde.marginal_coeffs(t)
    return -(x - alpha[:, None] * c) / sigma[:, None] ** 2

  # eps large enough that sigma(eps) is not so small that float32 round-off of x - alpha c dominates.
  loss_fn = losses.get_sde_loss_fn(sde, exact_score, reduce_mean=reduce_mean,
                                   likelihood_weighting=likelihood_weighting, eps=1e-2)
  batch = jnp.tile(c, (256, 1))
  loss = float(loss_fn(jax.random.key(0), None, batch))
  # sigma^2-weighted: each term is (sigma s + z)^2 = 0 up to float32 round-off (~1e-6 relative).
  assert abs(loss) < 1e-4 * (1 if not likelihood_weighting else float(sde.diffusion(jnp.array([sde.T]))[0] ** 2))


def test_dsm_loss_excess_equals_score_error():
  """With the oracle plus a constant c, the sigma^2-weighted loss rises by E[sigma^2] c^2 d
  (the cross term has mean zero); checked by Monte Carlo with a stated tolerance."""
  sde = sde_lib.VPSDE()
  target = datasets.GaussianMixture()
  oracle = target.score_fn(sde)
  c = 0.5
  loss0 = losses.get_sde_loss_fn(sde, lambda p, x, t: oracle(x, t), eps=1e-3)
  loss1 = losses.get_sde_loss_fn(sde, lambda p, x, t: oracle(x, t) + c, eps=1e-3)
  batch = target.sample(jax.random.key(0), 200_000)
  diff = float(loss1(jax.random.key(1), None, batch) - loss0(jax.random.key(1), None, batch))
  ts = np.linspace(1e-3, 1.0, 20001)
  expected = float(np.mean(np.asarray(sde.marginal_coeffs(jnp.asarray(ts))[1]) ** 2)) * c**2 * 2
  # MC: the cross term 2 c sigma (sigma s + z) has std ~ 2 c sqrt(2) / sqrt(n) ~ 3e-3.
  assert abs(diff - expected) < 0.02 * expected + 0.01


def test_train_step_compiles_once_and_reduces_loss():
  sde = sde_lib.VPSDE()
  target = datasets.GaussianMixture()
  model = models.get_model("mlp", hidden=32, depth=2)
  score_fn = models.get_score_fn(sde, model)
  traces = []

  def loss_fn(key, params, batch):
    traces.append(1)  # runs at trace time only
    return losses.get_sde_loss_fn(sde, score_fn)(key, params, batch)

  opt = losses.get_optimizer(lr=3e-3, warmup_steps=10, total_steps=300)
  step_fn = jax.jit(losses.get_train_step_fn(loss_fn, opt, ema_rate=0.99), donate_argnums=0)
  state = losses.init_train_state(models.init_params(jax.random.key(0), model, (1, 2)), opt)
  key = jax.random.key(1)
  batches = jax.jit(lambda k: target.sample(k, 300 * 256).reshape(300, 256, 2))(jax.random.key(2))
  first = []
  for i in range(300):
    state, metrics = step_fn(state, batches[i], key)
    first.append(metrics["loss"])
  first = [float(v) for v in first]
  assert len(traces) == 1 and step_fn._cache_size() == 1
  assert int(state.step) == 300
  # Noise-prediction loss at init is about d = 2 (output zero); training must cut it clearly.
  assert np.mean(first[:10]) > 1.8 and np.mean(first[-50:]) < 1.4


def test_train_step_key_is_folded_with_the_step():
  """Same state and key give the same step; the key folds in state.step, so resuming reproduces."""
  sde = sde_lib.VESDE()
  model = models.get_model("mlp", hidden=16, depth=1)
  opt = losses.get_optimizer(total_steps=10)
  step_fn = jax.jit(losses.get_train_step_fn(losses.get_sde_loss_fn(sde, models.get_score_fn(sde, model)), opt))
  state = losses.init_train_state(models.init_params(jax.random.key(0), model, (1, 2)), opt)
  batch = datasets.GaussianMixture().sample(jax.random.key(1), 64)
  a, _ = step_fn(state, batch, jax.random.key(5))
  b, _ = step_fn(state, batch, jax.random.key(5))
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_ema_follows_formula():
  params = {"w": jnp.ones(3)}
  opt = losses.get_optimizer(lr=1e-1, warmup_steps=1, schedule="constant", grad_clip=0.0)
  step_fn = losses.get_train_step_fn(lambda k, p, b: jnp.sum(p["w"] * b), opt, ema_rate=0.9, ema_warmup=False)
  state = losses.init_train_state(params, opt)
  new, _ = step_fn(state, jnp.ones(3), jax.random.key(0))
  np.testing.assert_allclose(new.ema_params["w"], 0.9 * 1.0 + 0.1 * new.params["w"], rtol=1e-6)


@pytest.mark.parametrize("param", ["eps", "score"])
def test_score_parameterisation(param):
  sde = sde_lib.VPSDE()

  class Const:  # a stand-in network returning ones
    def apply(self, variables, x, c, train=False):
      return jnp.ones_like(x)

  score_fn = models.get_score_fn(sde, Const(), parameterization=param)
  t = jnp.array([0.1, 0.5])
  s = score_fn(None, jnp.zeros((2, 3)), t)
  sigma = sde.marginal_coeffs(t)[1]
  sign = -1.0 if param == "eps" else 1.0
  np.testing.assert_allclose(s, sign / sigma[:, None] * jnp.ones((2, 3)), rtol=1e-6)


def test_mlp_output_depends_on_time_and_is_zero_at_init():
  model = models.get_model("mlp", hidden=32, depth=2)
  params = models.init_params(jax.random.key(0), model, (1, 2))
  x = jnp.ones((2, 2))
  np.testing.assert_array_equal(model.apply({"params": params}, x, jnp.array([0.1, 0.9])), 0.0)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
  out = model.apply({"params": params}, x, jnp.array([0.1, 0.9]))
  assert not np.allclose(out[0], out[1])


@pytest.mark.parametrize("fn,kwargs,match", [
    (models.get_model, dict(name="nope"), "valid names"),
    (models.get_model, dict(name="mlp", width=3), "model.width"),
    (lambda **k: models.get_score_fn(sde_lib.VPSDE(), None, **k), dict(parameterization="x0"), "parameterization"),
    (lambda **k: models.get_score_fn(sde_lib.VPSDE(), None, **k), dict(conditioning="sigma"), "conditioning"),
    (lambda **k: losses.get_sde_loss_fn(sde_lib.VPSDE(), None, **k), dict(eps=0.0), "loss.eps"),
    (losses.get_optimizer, dict(schedule="exp"), "optim.schedule"),
    (losses.get_optimizer, dict(lr=-1.0), "optim.lr"),
    (lambda **k: losses.get_train_step_fn(None, None, **k), dict(ema_rate=1.0), "ema_rate")])
def test_bad_arguments_raise(fn, kwargs, match):
  with pytest.raises(ValueError, match=match):
    fn(**kwargs)


# --- conditional generation ---

COND = datasets.get_dataset(**cond_gmm.get_config().data)  # 3 components, labels = components


def test_conditional_loss_uses_labels_and_label_dropout():
  """DSM with the exact scores (8,192 pairs): the exact class score gives a lower loss than the
  marginal score (labels carry information); label_dropout = 1 replaces every label by the null
  label, the marginal score, and equals the unconditional loss exactly (same keys)."""
  sde = sde_lib.VPSDE()
  cond = COND.conditional_score_fn(sde)
  cond_model = lambda params, x, t, y=None: cond(x, t, y)
  x, y = COND.sample_with_labels(jax.random.key(0), 8192)
  key = jax.random.key(1)
  get = lambda p: losses.get_sde_loss_fn(sde, cond_model, num_classes=3, label_dropout=p)
  with_labels = get(0.0)(key, None, {"x": x, "y": y})
  all_dropped = get(1.0)(key, None, {"x": x, "y": y})
  unconditional = losses.get_sde_loss_fn(sde, lambda params, x, t: cond(x, t))(key, None, x)
  np.testing.assert_allclose(all_dropped, unconditional, rtol=1e-6)
  assert with_labels < unconditional - 0.01
  dropped = losses.drop_labels(jax.random.key(2), y, 3, 0.2)
  frac = float(jnp.mean(dropped == 3))
  assert abs(frac - 0.2) < 5 * np.sqrt(0.2 * 0.8 / 8192)  # 5 binomial standard errors
  with pytest.raises(ValueError, match="label_dropout"):
    losses.get_sde_loss_fn(sde, cond_model, label_dropout=0.1)


def test_classifier_loss_is_minimised_by_the_exact_posterior():
  """Cross-entropy on perturbed data (4,096 pairs, same keys): the exact log p_t(c | x_t) beats
  every perturbation of it (random logit offsets of size 0.5), and the uniform classifier's loss is log K."""
  sde = sde_lib.VESDE(sigma_max=20.0)
  post = COND.class_log_posterior_fn(sde)
  x, y = COND.sample_with_labels(jax.random.key(0), 4096)
  loss = lambda fn: losses.get_classifier_loss_fn(sde, fn)(jax.random.key(1), None, (x, y))
  exact = loss(lambda p, x, t: post(x, t))
  for i in range(3):
    offset = 0.5 * jax.random.normal(jax.random.key(10 + i), (1, 3))
    skew = lambda p, x, t, o=offset: jax.nn.log_softmax(post(x, t) + o * (1.0 + t[:, None]), axis=-1)
    assert loss(skew) > exact
  np.testing.assert_allclose(loss(lambda p, x, t: jnp.zeros((x.shape[0], 3))), np.log(3.0), rtol=1e-6)
  clf = models.get_classifier(num_classes=3, hidden=8, depth=1)
  fn = models.get_classifier_fn(sde, clf)
  params = models.init_params(jax.random.key(0), clf, (1, 2))
  np.testing.assert_allclose(jnp.exp(fn(params, x[:4], jnp.full((4,), 0.5))), 1.0 / 3, rtol=1e-6)  # zero-init head


# --- discrete DDPM / SMLD ---

def _gaussian_eps(s, var):
  """Exact eps*(x, t) = E[eps | x_t] = sigma x / (a^2 var + sigma^2) for data N(0, var I)."""

  def eps_fn(params, x, t):
    a2 = jnp.asarray(s.alpha_bar, jnp.float32)[t][:, None]
    return jnp.sqrt(1 - a2) * x / (a2 * var + 1 - a2)

  return eps_fn


def _train(loss_fn, exact_loss_fn, params, n_steps, *, lr):
  """(loss at init, after n_steps, with the exact eps / score): the same key and 8192 examples for all three."""
  target = datasets.GaussianMixture()
  opt = losses.get_optimizer(lr=lr, warmup_steps=20, total_steps=n_steps)
  step = losses.get_train_step_fn(loss_fn, opt)

  @jax.jit
  def train(state):
    body = lambda st, i: step(st, target.sample(jax.random.fold_in(jax.random.key(1), i), 256), jax.random.key(2))
    return jax.lax.scan(body, state, jnp.arange(n_steps))[0]

  state = train(losses.init_train_state(params, opt))
  batch = target.sample(jax.random.key(3), 8192)
  evaluate = jax.jit(lambda f, p: f(jax.random.key(4), p, batch), static_argnums=0)
  return (float(evaluate(loss_fn, params)), float(evaluate(loss_fn, state.params)),
          float(evaluate(exact_loss_fn, None)))


def test_ddpm_loss_with_exact_eps_matches_closed_form():
  """With the exact eps of N(0, v I) data the residual per dim is N(0, r_t), r_t = a^2 v / (a^2 v + sigma^2);
  the loss is the mean over t of E rho(N(0, r_t)) (l2: r, l1: sqrt(2 r / pi), huber: in closed form)."""
  s, var, n = sde_lib.linear_schedule(1000), 2.25, 400_000
  batch = math.sqrt(var) * jax.random.normal(jax.random.key(0), (n, 2))
  types = ("l2", "l1", "huber")
  fns = [losses.get_ddpm_loss_fn(s, _gaussian_eps(s, var), loss_type=lt, reduce_mean=rm)
         for lt in types for rm in (True, False)]
  values = jax.jit(lambda k, b: [f(k, None, b) for f in fns])(jax.random.key(1), batch)
  ab = s.alpha_bar[1:]
  r = ab * var / (ab * var + 1 - ab)
  c = 1 / np.sqrt(r)
  huber = (0.5 * r * (2 * stats.norm.cdf(c) - 1 - 2 * c * stats.norm.pdf(c))
           + 2 * np.sqrt(r) * stats.norm.pdf(c) - (1 - stats.norm.cdf(c)))
  for k, (loss_type, per_t) in enumerate(zip(types, (r, np.sqrt(2 * r / np.pi), huber))):
    loss, loss_sum = float(values[2 * k]), float(values[2 * k + 1])
    # Per-example loss (mean of 2 dims): variance <= Var(e^2) / 2 + Var_t(r) <= 1 + 1/4, SE <= sqrt(1.25 / n); 5 SE.
    assert abs(loss - per_t.mean()) < 5 * math.sqrt(1.25 / n), (loss_type, loss, per_t.mean())
    # Summing over dimensions instead of averaging multiplies the same draws by d = 2 (float32 round-off).
    np.testing.assert_allclose(loss_sum, 2 * loss, rtol=1e-5)


def test_smld_loss_with_exact_score_matches_closed_form():
  """For data N(0, v I_d) and the exact score -x~ / (v + sigma^2): 1/2 E||sigma s + z||^2 = d v / (2 (v + sigma^2))."""
  var, d, n = 2.25, 2, 400_000
  sigmas = sde_lib.geometric_sigmas(0.01, 10.0, 10)
  batch = math.sqrt(var) * jax.random.normal(jax.random.key(0), (n, d))
  score = lambda params, x, sigma: -x / (var + sigma[:, None] ** 2)
  loss = float(jax.jit(losses.get_smld_loss_fn(sigmas, score))(jax.random.key(1), None, batch))
  expected = np.mean(d * var / (2 * (var + sigmas**2)))
  # Per-example: 1/2 sum of 2 squares of N(0, <= 1) (variance <= 1) plus the spread over levels (<= 1/4): 5 SE.
  assert abs(loss - expected) < 5 * math.sqrt(1.25 / n), (loss, expected)


@pytest.mark.slow
def test_short_training_reduces_the_loss():
  """200 steps of the MLP with L_simple through losses.get_train_step_fn close >= 80% of the gap between
  the loss at init (the zero output layer gives eps_theta = 0, loss E z^2 = 1 per dim) and the minimum,
  the loss of the exact eps on the same draws (paired, so the comparison has little Monte Carlo noise)."""
  target, s = datasets.GaussianMixture(), sde_lib.linear_schedule(1000)
  model = models.get_model("mlp", hidden=64, depth=1, embed_dim=16, fourier_scale=1.0)
  exact = models.exact_eps_fn(target, s)
  before, after, best = _train(losses.get_ddpm_loss_fn(s, models.get_eps_fn(model, s)),
                               losses.get_ddpm_loss_fn(s, lambda p, x, t: exact(x, t)),
                               models.init_params(jax.random.key(0), model, (1, 2)), 200, lr=1e-2)
  assert before > 0.9 and after - best < 0.2 * (before - best), (before, after, best)  # measured 0.99, 0.33, 0.33


@pytest.mark.slow
def test_short_smld_training_reduces_the_loss():
  """The same for SMLD (get_smld_score_fn + get_smld_loss_fn, 10 geometric levels): at init s_theta = 0
  and the loss is E||z||^2 / 2 = d / 2 = 1; the exact score of the mixture perturbed by sigma gives the minimum."""
  target, sigmas = datasets.GaussianMixture(), sde_lib.geometric_sigmas(0.01, 5.0, 10)
  model = models.get_model("mlp", hidden=64, depth=1, embed_dim=16, fourier_scale=0.3)
  before, after, best = _train(losses.get_smld_loss_fn(sigmas, models.get_smld_score_fn(model)),
                               losses.get_smld_loss_fn(sigmas, lambda p, x, sigma: target.score_t(x, 1.0, sigma)),
                               models.init_params(jax.random.key(0), model, (1, 2)), 300, lr=1e-2)
  assert before > 0.9 and after - best < 0.2 * (before - best), (before, after, best)  # measured 0.99, 0.75, 0.75


# --- likelihood weighting with importance sampling (Song et al. 2021b) ---------------------

@pytest.mark.parametrize("sde", [sde_lib.VESDE(), sde_lib.VPSDE(), sde_lib.SubVPSDE()], ids=["ve", "vp", "subvp"])
def test_importance_times_follow_g2_over_sigma2(sde):
  """t ~ q(t) ~ g^2 / sigma^2 = gamma'(t): the returned density integrates to 1, equals
  g^2 / (sigma^2 Z) (Z = gamma(T) - gamma(eps)) to the tabulation's 5e-3 (cells 0.3% wide in
  log t), and 200,000 draws land in
  20 quantile bins of the closed-form CDF as a uniform multinomial (chi-square, p > 1e-3)."""
  eps = 1e-5
  t, q = jax.jit(lambda k: losses.importance_times(sde, eps)(k, 200_000))(jax.random.key(0))
  t, q = np.asarray(t, np.float64), np.asarray(q, np.float64)
  assert t.min() >= eps and t.max() <= sde.T
  gamma = lambda s: -2.0 * np.asarray(sde.log_snr(jnp.asarray(s, jnp.float32)), np.float64)
  Z = gamma([sde.T])[0] - gamma([eps])[0]
  alpha, sigma = (np.asarray(c, np.float64) for c in sde.marginal_coeffs(jnp.asarray(t[:1000], jnp.float32)))
  g2 = np.asarray(sde.diffusion(jnp.asarray(t[:1000], jnp.float32)), np.float64) ** 2
  np.testing.assert_allclose(q[:1000], g2 / sigma**2 / Z, rtol=5e-3)
  u = (gamma(t) - gamma([eps])[0]) / Z  # the closed-form CDF: uniform if t ~ q
  counts = np.histogram(u, bins=20, range=(0, 1))[0]
  assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("sde", [sde_lib.VESDE(sigma_max=20.0), sde_lib.VPSDE()], ids=["ve", "vp"])
def test_importance_sampling_keeps_the_mean_and_cuts_the_variance(sde):
  """A wrong score (that of N(0.3, 0.5^2) on data N(0, 1)): per-example likelihood-weighted losses
  over 100,000 draws have the same mean with and without importance sampling (5 combined
  standard errors), and importance sampling has a lower variance."""
  score = lambda params, x, t: -(x - 0.3 * sde.marginal_coeffs(t)[0][:, None]) / (
      0.25 * sde.marginal_coeffs(t)[0][:, None] ** 2 + sde.marginal_coeffs(t)[1][:, None] ** 2)
  x = jax.random.normal(jax.random.key(1), (100_000, 1, 2))
  stats_ = {}
  for is_ in (False, True):
    fn = losses.get_sde_loss_fn(sde, score, likelihood_weighting=True, importance_sampling=is_)
    per = jax.jit(jax.vmap(lambda k, b: fn(k, None, b)))(jax.random.split(jax.random.key(2), len(x)), x)
    per = np.asarray(per, np.float64)
    stats_[is_] = (per.mean(), per.std() / math.sqrt(len(per)), per.var())
  (m0, se0, v0), (m1, se1, v1) = stats_[False], stats_[True]
  assert abs(m0 - m1) < 5 * math.hypot(se0, se1), stats_
  assert v1 < 0.5 * v0, stats_


def test_importance_sampling_needs_likelihood_weighting():
  with pytest.raises(ValueError, match="loss.importance_sampling"):
    losses.get_sde_loss_fn(sde_lib.VPSDE(), lambda p, x, t: x, importance_sampling=True)


# --- the variational bound as a loss (losses.vdm) ------------------------------------------

def test_variance_gradient_scales_only_the_shape_cotangents():
  """A toy per-example loss L_i = net * s_i^2 + ds_i + g0 + g1 * x_i: the net and endpoint
  gradients are those of mean(L), the s and ds gradients those of mean(L^2)."""
  from losses.vdm import _variance_gradient
  per = lambda net, s, ds, g0, g1, x, noise: net * s**2 + ds + g0 + g1 * x + 0.0 * noise
  f = _variance_gradient(per)
  args = (jnp.float32(1.5), jnp.array([0.3, -0.7]), jnp.array([0.2, 0.9]), jnp.float32(0.4), jnp.float32(-1.1),
          jnp.array([2.0, 0.5]), jnp.zeros(2))
  got = jax.grad(lambda *a: jnp.mean(f(*a)), argnums=(0, 1, 2, 3, 4))(*args)
  plain = jax.grad(lambda *a: jnp.mean(per(*a)), argnums=(0, 3, 4))(*args)
  square = jax.grad(lambda *a: jnp.mean(per(*a) ** 2), argnums=(1, 2))(*args)
  for g, ref in zip((got[0], got[3], got[4]), plain):
    np.testing.assert_allclose(g, ref, rtol=1e-6)
  for g, ref in zip((got[1], got[2]), square):
    np.testing.assert_allclose(g, ref, rtol=1e-6)
  np.testing.assert_allclose(f(*args), per(*args))  # the value is unchanged


def test_vdm_loss_with_the_exact_score_is_the_bound_per_dimension():
  """Fixed log-SNR schedule, exact score of N(M, S^2 I_2), 200 batches of 512: the mean loss is
  the closed-form expected bound / d (docs/likelihood.md) within 4 standard errors."""
  m, s, d, g0, g1 = 0.5, 0.7, 2, -8.0, 6.0
  sde = sde_lib.LogSNRSDE(gamma_min=g0, gamma_max=g1)

  def exact(params, x, t):
    alpha, sigma = (c[:, None] for c in sde.marginal_coeffs(t))
    return -(x - alpha * m) / (alpha**2 * s**2 + sigma**2)

  fn = losses.vdm.get_vdm_loss_fn(sde, None, exact)
  keys = jax.random.split(jax.random.key(0), 200)
  batches = m + s * jax.random.normal(jax.random.key(1), (200, 512, d))
  vals = np.asarray(jax.jit(jax.vmap(lambda k, x: fn(k, None, x)))(keys, batches), np.float64)
  alpha, sigma = (float(c[0]) for c in sde.marginal_coeffs(jnp.ones((1,))))
  expected = (0.5 * d * math.log((s**2 * math.exp(-g0) + 1) / (s**2 * math.exp(-g1) + 1))
              + 0.5 * d * (sigma**2 + alpha**2 * (m**2 + s**2) - 1 - math.log(sigma**2))
              + 0.5 * d * (math.log(2 * math.pi) + g0 + 1)) / d
  assert abs(vals.mean() - expected) < 4 * vals.std() / math.sqrt(len(vals)), (vals.mean(), expected)


def test_vdm_loss_trains_network_endpoints_and_shape():
  """One gradient of the learned-schedule loss reaches every parameter, finite; errors name the field."""
  sde = sde_lib.get_sde("learned_logsnr", gamma_min=-8.0, gamma_max=5.0, hidden=16)
  model = models.get_score_model(sde, name="mlp", hidden=16, depth=1)
  params = models.init_params(jax.random.key(0), model.network, (1, 2))
  fn = losses.get_loss_fn(sde, model, name="vdm")
  x = datasets.GaussianMixture().sample(jax.random.key(1), 256)
  loss, grads = jax.jit(jax.value_and_grad(fn, argnums=1))(jax.random.key(2), params, x)
  assert np.isfinite(float(loss))
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  for path, g in leaves:
    assert np.all(np.isfinite(np.asarray(g))), path
  sched = grads["schedule"]
  assert float(jnp.abs(sched["gamma_min"])) > 0 and float(jnp.abs(sched["gamma_max"])) > 0
  assert float(jnp.linalg.norm(sched["shape"]["w2"])) > 0
  with pytest.raises(ValueError, match="loss.levels"):
    losses.get_loss_fn(sde, model, name="vdm", decoder="discretized")
  with pytest.raises(ValueError, match="model.parameterization"):
    models.get_score_model(sde, name="mlp", parameterization="score")
