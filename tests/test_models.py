"""The U-Net score network: shapes at several resolutions, dependence on t, labels, dropout, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib
from models.unet import sinusoidal_embedding

TINY = dict(ch=8, num_groups=4, num_res_blocks=1)
ONE_LEVEL = dict(TINY, ch_mult=(1,), attn_resolutions=())  # a smaller graph: faster to compile


def _init(model, shape, key=0):
  return jax.jit(lambda k: models.init_params(k, model, (1,) + shape))(jax.random.key(key))


def _apply(model):
  return jax.jit(model.apply, static_argnames="train")


def _perturbed_params(model, shape, key=0, p=None):
  """Initial parameters plus noise: the zero-initialised output conv would make every output 0."""
  p = _init(model, shape, key) if p is None else p
  leaves, tree = jax.tree.flatten(p)
  keys = jax.random.split(jax.random.key(key + 1), len(leaves))
  return jax.tree.unflatten(tree, [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


@pytest.mark.parametrize("shape,ch_mult,attn", [((8, 8, 1), (1, 2), (4,)), ((16, 16, 3), (1, 2), (8,)),
                                                 ((32, 32, 2), (1, 2, 2), (16, 8))])
def test_output_shape(shape, ch_mult, attn):
  """Shapes by abstract evaluation (no compilation): output = input shape, any size and channels."""
  model = models.get_model("unet", ch_mult=ch_mult, attn_resolutions=attn, **TINY)
  model.validate_input(shape)
  x = jax.ShapeDtypeStruct((3,) + shape, jnp.float32)
  c = jax.ShapeDtypeStruct((3,), jnp.float32)
  params = jax.eval_shape(lambda k: models.init_params(k, model, (1,) + shape), jax.random.key(0))
  out = jax.eval_shape(lambda p, x, c: model.apply({"params": p}, x, c), params, x, c)
  assert out.shape == (3,) + shape and out.dtype == jnp.float32
  assert params["Conv_0"]["kernel"].shape == (3, 3, shape[-1], TINY["ch"])


@pytest.mark.parametrize("embedding", ["sinusoidal", "fourier"])
def test_different_t_give_different_outputs(embedding):
  shape = (8, 8, 1)
  model = models.get_model("unet", embedding=embedding, **dict(ONE_LEVEL, attn_resolutions=(8,)))
  x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1,) + shape), (3,) + shape)
  apply = _apply(model)
  p0 = _init(model, shape, 1)
  # The output conv starts at zero: an untrained network predicts eps = 0.
  np.testing.assert_array_equal(apply({"params": p0}, x, jnp.array([0.05, 0.5, 0.95])), 0.0)
  p = _perturbed_params(model, shape, p=p0)
  out = np.asarray(apply({"params": p}, x, jnp.array([0.05, 0.5, 0.95])))
  assert np.all(np.isfinite(out)) and out.std() > 1e-3
  for i, j in ((0, 1), (1, 2), (0, 2)):  # same image, different condition
    assert np.abs(out[i] - out[j]).mean() > 1e-3 * np.abs(out).mean()
  # Each example's output depends on its own condition only (no mixing across the batch).
  out2 = np.asarray(apply({"params": p}, x, jnp.array([0.95, 0.5, 0.05])))
  np.testing.assert_allclose(out2, out[::-1], rtol=1e-4, atol=1e-5)


def test_sinusoidal_embedding_closed_form():
  c = jnp.array([0.0, 0.25])
  emb = np.asarray(sinusoidal_embedding(c, 8, scale=1000.0, max_period=10_000.0))
  freqs = 10_000.0 ** (-np.arange(4) / 3)
  want = np.concatenate([np.sin(1000 * np.outer([0.0, 0.25], freqs)), np.cos(1000 * np.outer([0.0, 0.25], freqs))], 1)
  np.testing.assert_allclose(emb, want, rtol=1e-4, atol=1e-4)


def test_labels_and_null_label():
  shape = (8, 8, 1)
  model = models.get_model("unet", num_classes=10, **ONE_LEVEL)
  p = _perturbed_params(model, shape)
  assert p["Embed_0"]["embedding"].shape == (11, 4 * ONE_LEVEL["ch"])  # row 10 is the null label
  x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1,) + shape), (2,) + shape)
  c = jnp.array([0.3, 0.3])
  apply = _apply(model)
  a = apply({"params": p}, x, c, y=jnp.array([1, 7]))
  null = apply({"params": p}, x, c)
  np.testing.assert_allclose(null, apply({"params": p}, x, c, y=jnp.array([10, 10])), rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(a[0] - a[1]).mean()) > 1e-4


def test_dropout_uses_the_key_only_when_training():
  shape = (8, 8, 1)
  sde = sde_lib.VPSDE()
  model = models.get_model("unet", dropout=0.5, **ONE_LEVEL)
  p = _perturbed_params(model, shape)
  x = jax.random.normal(jax.random.key(0), (2,) + shape)
  t = jnp.array([0.2, 0.7])
  train_fn = jax.jit(models.get_score_fn(sde, model, train=True))
  a, b = train_fn(p, x, t, key=jax.random.key(1)), train_fn(p, x, t, key=jax.random.key(2))
  assert float(jnp.abs(a - b).mean()) > 1e-4  # different masks
  np.testing.assert_array_equal(a, train_fn(p, x, t, key=jax.random.key(1)))
  eval_fn = jax.jit(models.get_score_fn(sde, model))
  np.testing.assert_array_equal(eval_fn(p, x, t), eval_fn(p, x, t, key=jax.random.key(1)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_groups=3), "model.num_groups"), (dict(ch_mult=()), "model.ch_mult"),
    (dict(dropout=1.0), "model.dropout"), (dict(embedding="learned"), "model.embedding"),
    (dict(num_res_blocks=0), "model.num_res_blocks"), (dict(num_classes=-1), "model.num_classes"),
    (dict(input_fourier=(17.0, -1.0)), "model.input_fourier")])
def test_bad_fields_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    models.get_model("unet", **{**TINY, **kwargs})


@pytest.mark.parametrize("shape,kwargs,match", [
    ((10, 10, 1), dict(ch_mult=(1, 2, 2)), "divisible by 4"),
    ((8, 8, 1), dict(attn_resolutions=(2,)), "attn_resolutions"),
    ((64,), dict(), "images")])
def test_bad_input_shape_raises(shape, kwargs, match):
  model = models.get_model("unet", **{**TINY, **kwargs})
  with pytest.raises(ValueError, match=match):
    model.validate_input(shape)


# --- conditional generation ---

def test_conditional_mlp_uses_labels_and_keeps_the_unconditional_network():
  x, c = jnp.ones((3, 2)), jnp.full((3,), 0.5)
  uncond = models.get_model("mlp", hidden=8, depth=1)
  params = models.init_params(jax.random.key(0), uncond, (1, 2))
  assert "label_embed" not in params
  with pytest.raises(ValueError, match="model.num_classes"):
    models.get_model("mlp", num_classes=-1)
  net = models.get_model("mlp", hidden=8, depth=1, num_classes=3)
  p = models.init_params(jax.random.key(0), net, (1, 2))
  assert p["label_embed"]["embedding"].shape == (4, 32)  # K + 1 rows, the last one the null label
  # A non-zero output layer, so labels show in the output.
  p = jax.tree.map(lambda a: a + 0.1, p)
  out = lambda y: net.apply({"params": p}, x, c, y=y)
  np.testing.assert_array_equal(out(None), out(jnp.full((3,), 3)))
  assert not np.allclose(out(jnp.array([0, 0, 0])), out(jnp.array([1, 1, 1])))
  score = models.get_score_fn(sde_lib.VPSDE(), net)
  np.testing.assert_array_equal(score(p, x, c), score(p, x, c, None))


# --- discrete DDPM / SMLD ---

def test_score_bridge():
  """A discretely trained eps-network as a continuous score: score(x, t) = -eps(x, c = t) / sigma(t)."""
  s = sde_lib.linear_schedule(100)
  sde = sde_lib.DiscreteVPSDE(schedule="linear", N=100)
  model = models.get_model("mlp", hidden=16, depth=1, embed_dim=8, fourier_scale=1.0)
  params = jax.jit(lambda k: jax.tree.map(  # perturbed, so that the zero-initialised output is not zero
      lambda p: p + 0.3 * jax.random.normal(k, p.shape), models.init_params(k, model, (1, 2))))(jax.random.key(0))
  x = jax.random.normal(jax.random.key(2), (6, 2))
  i = jnp.array([1, 2, 17, 50, 99, 100])
  t = jnp.array([0.004, 0.0137, 0.25, 0.5, 0.77, 1.0])
  generic = models.get_score_fn(sde, model, parameterization="eps", conditioning="t", input_scaling=False)
  eps, score, bridged, reference = jax.jit(lambda p: (
      models.get_eps_fn(model, s)(p, x, i), models.get_model_score_fn(model, s)(p, x, i / 100.0),
      models.get_model_score_fn(model, s)(p, x, t), generic(p, x, t)))(params)
  # score = -eps / sqrt(1 - alpha_bar_i) at t_i = i / T (float32 round-off).
  sigma_i = np.sqrt(s.one_minus_alpha_bar[np.asarray(i)])[:, None]
  np.testing.assert_allclose(np.asarray(score), -np.asarray(eps) / sigma_i, rtol=1e-5, atol=1e-6)
  # The same function as models.get_score_fn on DiscreteVPSDE (eps, conditioned on t, no input scaling), any t.
  np.testing.assert_allclose(np.asarray(bridged), np.asarray(reference), rtol=1e-6, atol=1e-6)


def test_input_fourier_features_are_input_channels():
  """With input_fourier=(17,) the first conv sees x, sin(17 pi x) and cos(17 pi x): 3 input
  channels per image channel; the output keeps the input's shape."""
  model = models.get_model("unet", **{**TINY, "input_fourier": (17.0,)})
  x = jnp.zeros((2, 8, 8, 1))
  # Shapes by abstract evaluation: nothing is compiled.
  params = jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros(2))["params"]
  kernel = jax.tree_util.tree_leaves_with_path(params)
  first = [v for path, v in kernel if "Conv_0" in jax.tree_util.keystr(path) and v.ndim == 4]
  assert first and first[0].shape[2] == 3  # x, sin, cos
  out = jax.eval_shape(lambda p: model.apply({"params": p}, x, jnp.zeros(2)), params)
  assert out.shape == x.shape
