"""DSM loss, train step and score-network parameterisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import losses
import models
import sde_lib

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
