"""Tests for models/symmetry.py and models/equivariant.py: the group-averaged score and network, DeepSets
and EGNN are equivariant to float32 round-off (relative error < 1e-5) on random inputs and group
elements, while the plain networks are not; group averaging leaves an equivariant score unchanged; and
the configuration errors are ValueErrors naming the field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib
from datasets import symmetric
from models.symmetry import get_group, group_average_score_fn

TOL = 1e-5  # relative: max |f(g x) - g f(x)| / max |f(x)|


def _rel_errors(fn, group, x, c):
  """max |fn(g x) - g fn(x)| / max |fn(x)| for each g, in one compiled program; x flat [B, D]."""
  g = jnp.asarray(group, jnp.float32)

  def errs(x, c):
    out = fn(x, c)
    moved = jax.vmap(lambda gi: fn(x @ gi.T, c) - out @ gi.T)(g)
    return jnp.max(jnp.abs(moved), axis=(1, 2)) / jnp.max(jnp.abs(out))

  return np.asarray(jax.jit(errs)(x, c))


def _random_params(net, dim, seed=0):
  """Initial parameters with every leaf perturbed (the zero-initialised output layers would make the
  output 0 and every equivariance test vacuous)."""
  params = net.init(jax.random.key(seed), jnp.zeros((1, dim)), jnp.zeros((1,)))["params"]
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree_util.tree_unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def _inputs(dim, b=16, seed=2):
  key_x, key_c = jax.random.split(jax.random.key(seed))
  return jax.random.normal(key_x, (b, dim)), jax.random.normal(key_c, (b,))


def _planar(n, thetas, flips, com_free=True):
  """The same rotation (times a reflection where flip) of every particle, on zero-CoM coordinates or points."""
  g = np.stack([symmetric.particle_transform(n, symmetric.rotation_2d(th) @ np.diag([1.0, -1.0 if f else 1.0]))
                for th, f in zip(thetas, flips)])
  return symmetric.restrict_to_com(g, n, 2) if com_free else g


def test_group_average_of_any_function_is_equivariant():
  """A non-equivariant score (a random 2-layer map) averaged over D_6 and over S_4 on point sets
  [B, 4, 2]: equivariant to round-off; the raw map is far from it."""
  rng = np.random.default_rng(0)
  w1, w2 = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((8, 32), (32, 8)))
  raw = lambda x, t: (jnp.tanh(x.reshape(x.shape[0], -1) @ w1 + t[:, None]) @ w2).reshape(x.shape)
  d6 = symmetric.cyclic_group(6, reflections=True)
  s4 = symmetric.particle_permutations(4, 2)
  x, t = _inputs(8)
  avg = group_average_score_fn(raw, s4)
  assert _rel_errors(avg, s4[::5], x, t).max() < TOL
  assert _rel_errors(raw, s4[::5], x, t).max() > 0.1
  points = x.reshape(-1, 4, 2)  # point sets: the same average, shaped [B, n, d]
  np.testing.assert_allclose(avg(points, t).reshape(x.shape), avg(x, t), atol=1e-6)
  raw2 = lambda x, t: jnp.tanh(x @ w1[:2, :2] + t[:, None]) + x**2
  assert _rel_errors(group_average_score_fn(raw2, d6), d6, x[:, :2], t).max() < TOL


@pytest.mark.slow
def test_averaging_an_equivariant_score_changes_nothing():
  """The exact diffused score of the C_5 ring is already equivariant: averaging is the identity on it."""
  target, sde = symmetric.RingMixture(), sde_lib.VESDE(sigma_min=0.01, sigma_max=10.0, N=10)
  exact = target.score_fn(sde)
  x, _ = _inputs(2)
  t = jnp.full((16,), 0.05)
  s, avg = jax.jit(lambda x, t: (exact(x, t), group_average_score_fn(exact, target.group)(x, t)))(x, t)
  np.testing.assert_allclose(avg, s, atol=TOL * float(jnp.abs(s).max()))


@pytest.mark.slow
def test_symmetric_mlp_is_equivariant_and_none_is_the_mlp():
  net = models.get_model("sym_mlp", hidden=16, depth=2, symmetry="cyclic", k=5)
  params = _random_params(net, 2)
  x, c = _inputs(2)
  fn = lambda x, c: net.apply({"params": params}, x, c)
  assert _rel_errors(fn, symmetric.cyclic_group(5), x, c).max() < TOL
  plain = models.get_model("sym_mlp", hidden=16, depth=2, symmetry="none")
  mlp = models.get_model("mlp", hidden=16, depth=2)
  out_plain = plain.apply({"params": params}, x, c)
  np.testing.assert_array_equal(out_plain, mlp.apply({"params": params["mlp"]}, x, c))
  assert _rel_errors(lambda x, c: plain.apply({"params": params}, x, c), symmetric.cyclic_group(5), x, c).max() > 0.05


@pytest.mark.slow
def test_egnn_is_e2_equivariant_on_zero_com_coordinates():
  """Rotations, reflections and permutations of 4 particles (zero-CoM coordinates, 6-D)."""
  net = models.get_model("egnn", hidden=8, depth=2, n_particles=4)
  params = _random_params(net, 6)
  x, c = _inputs(6)
  rng = np.random.default_rng(1)
  perms = symmetric.restrict_to_com(symmetric.particle_permutations(4, 2)[rng.choice(24, 4, replace=False)], 4, 2)
  group = np.concatenate([perms, _planar(4, rng.uniform(0, 2 * np.pi, 4), (False, True, False, True))])
  errs = _rel_errors(lambda x, c: net.apply({"params": params}, x, c), group, x, c)
  assert errs.max() < TOL, errs


@pytest.mark.slow
def test_egnn_on_point_sets_translations_and_zero_com_output():
  """On flat point sets (com_free=False) the EGNN is invariant to translations, equivariant to
  rotations and reflections, and its output has zero centre of mass."""
  net = models.get_model("egnn", hidden=8, depth=2, n_particles=4, com_free=False)
  params = _random_params(net, 8)
  x, c = _inputs(8)
  fn = lambda x, c: net.apply({"params": params}, x, c)
  rng = np.random.default_rng(2)
  assert _rel_errors(fn, _planar(4, rng.uniform(0, 2 * np.pi, 3), (False, True, True), com_free=False), x, c).max() < TOL
  out = fn(x, c)
  shift = jnp.tile(jnp.asarray(rng.normal(size=2) * 3, jnp.float32), 4)
  np.testing.assert_allclose(fn(x + shift, c), out, atol=TOL * float(jnp.abs(out).max()))
  np.testing.assert_allclose(out.reshape(-1, 4, 2).sum(axis=1), 0.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("com_free", [False, True])
def test_deepsets_is_permutation_equivariant_only(com_free):
  """Every permutation of the 4 particles (24); a rotation is not a symmetry of the network."""
  dim = 6 if com_free else 8
  net = models.get_model("deepsets", hidden=16, depth=2, n_particles=4, com_free=com_free)
  params = _random_params(net, dim)
  x, c = _inputs(dim)
  fn = lambda x, c: net.apply({"params": params}, x, c)
  assert _rel_errors(fn, get_group("permutation", dim, n_particles=4, com_free=com_free), x, c).max() < TOL
  assert _rel_errors(fn, _planar(4, [1.0], [False], com_free=com_free), x, c).max() > 0.01


def test_bad_fields_raise_value_errors():
  with pytest.raises(ValueError, match="model.symmetry='rotation' is unknown"):
    models.get_model("sym_mlp", symmetry="rotation")
  with pytest.raises(ValueError, match="acts on 8-dimensional x"):
    models.get_model("sym_mlp", symmetry="permutation", n_particles=4).validate_input((6,))
  with pytest.raises(ValueError, match="acts on 2-dimensional x"):
    get_group("cyclic", 3, k=5)
  with pytest.raises(ValueError, match="need 6 zero-CoM coordinates"):
    models.get_model("egnn", n_particles=4).validate_input((8,))
  with pytest.raises(ValueError, match="model.n_particles=1"):
    models.get_model("deepsets", n_particles=1)
  with pytest.raises(ValueError, match="model.k=0"):
    models.get_model("sym_mlp", symmetry="cyclic", k=0)
