"""Image evaluation: Frechet distance closed forms, dequantised bits/dim known answers, the
digits classifier, and the PNG grid."""

import functools
import math

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.linalg
from scipy.stats import norm
from sklearn.datasets import load_digits

from evaluators import features
import metrics
import likelihood
import plotting
import sde_lib
from conftest import gaussian_score_at

# --- Frechet distance -------------------------------------------------------------------

def _random_spd(rng, f):
  a = rng.normal(size=(f, f))
  return a @ a.T / f + 0.1 * np.eye(f)


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (0.3, 2.0, -1.2, 0.5), (5.0, 0.1, 5.0, 3.0)])
def test_frechet_distance_1d_closed_form(m1, s1, m2, s2):
  fd = metrics.frechet_distance_gaussians([m1], [[s1**2]], [m2], [[s2**2]])
  assert fd == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12, abs=1e-12)


def test_frechet_distance_diagonal_and_general_closed_forms():
  rng = np.random.default_rng(0)
  # Commuting (diagonal) covariances: FD = |m1 - m2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
  a, b, m1, m2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6), rng.normal(size=6), rng.normal(size=6)
  fd = metrics.frechet_distance_gaussians(m1, np.diag(a), m2, np.diag(b))
  assert fd == pytest.approx(np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-10)
  # General covariances: against scipy's (Schur-based, non-symmetric) sqrtm of S1 S2.
  m1, m2, s1, s2 = rng.normal(size=7), rng.normal(size=7), _random_spd(rng, 7), _random_spd(rng, 7)
  ref = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
  fd = metrics.frechet_distance_gaussians(m1, s1, m2, s2)
  assert fd == pytest.approx(ref, rel=1e-9)
  assert fd == pytest.approx(metrics.frechet_distance_gaussians(m2, s2, m1, s1), rel=1e-9)  # symmetric
  # A singular (rank-2) covariance against itself: exactly 0 up to round-off, never negative.
  low = rng.normal(size=(7, 2))
  assert 0.0 <= metrics.frechet_distance_gaussians(np.zeros(7), low @ low.T, np.zeros(7), low @ low.T) < 1e-10


def test_frechet_distance_of_samples():
  rng = np.random.default_rng(1)
  m1, m2, s1, s2 = np.zeros(3), np.array([1.0, 0.0, -0.5]), _random_spd(rng, 3), _random_spd(rng, 3)
  xa = rng.multivariate_normal(m1, s1, 200_000)
  xb = rng.multivariate_normal(m2, s2, 150_000)
  fd = metrics.frechet_distance(xa, xb)
  # Exactly the Gaussian fit (unbiased covariance) of each set ...
  fit = metrics.frechet_distance_gaussians(xa.mean(0), np.cov(xa.T), xb.mean(0), np.cov(xb.T))
  assert fd == pytest.approx(fit, rel=1e-12)
  # ... which converges to the population value (Monte Carlo error ~ 1e-2 at these sizes).
  assert fd == pytest.approx(metrics.frechet_distance_gaussians(m1, s1, m2, s2), abs=0.03)


def test_bad_frechet_inputs_raise():
  with pytest.raises(ValueError, match="feats_b.shape"):
    metrics.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match=r"feats_a.shape=\(1, 3\)"):
    metrics.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="feats_a .non-finite entries.=1"):
    metrics.frechet_distance(np.array([[np.nan], [0.0], [1.0]]), np.zeros((5, 1)))
  with pytest.raises(ValueError, match="cov_b.shape"):
    metrics.frechet_distance_gaussians(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# --- dequantised bits/dim ---------------------------------------------------------------

RANGES = [(0.0, 1.0), (-1.0, 1.0), (0.0, 16.0)]


def _uniform_nll_fn(seen, lo, hi):
  """An nll_fn whose density is exactly uniform on [lo, hi]^D; records the points it is given."""

  def nll_fn(key, score_fn, y):
    seen.append(np.asarray(y))
    dim = math.prod(y.shape[1:])
    return jnp.full(y.shape[:1], dim * math.log(hi - lo), jnp.float32), y, 1

  return nll_fn


@pytest.mark.parametrize("lo,hi", RANGES)
def test_uniform_lattice_data_is_exactly_log2_levels_bits(lo, hi):
  # Every level equally likely and independent: P(k) = L^-D, -log2 P(k) / D = log2 L, and the
  # uniform density on [lo, hi]^D is constant on cells, so the bound is exact for any range.
  levels, seen = 17, []
  k = np.random.default_rng(0).integers(0, levels, (70, 4, 4, 1))
  out = likelihood.dequantized_bits_per_dim(jax.random.PRNGKey(0), _uniform_nll_fn(seen, lo, hi), None, k,
                                            n_bins=levels, data_range=(lo, hi), batch_size=32)
  assert out["bpd"] == pytest.approx(math.log2(levels), abs=1e-6)
  assert out["offset_bits"] == pytest.approx(math.log2(levels / (hi - lo)), rel=1e-12)
  assert (out["n"], out["dim"], out["nfe"]) == (70, 16, 3)  # 3 batches of 32, the last padded
  # Each point lies in its own level's cell: level = floor(L (y - lo) / (hi - lo)).
  y = np.concatenate(seen)[:70]
  np.testing.assert_array_equal(np.floor(levels * (y - lo) / (hi - lo)).astype(int), k)


def test_dequantize_is_per_example_and_uniform_in_the_cell():
  key, k = jax.random.PRNGKey(3), np.zeros((4000, 2), np.int32) + np.array([0, 255])
  y = np.asarray(likelihood.dequantize(key, k, n_bins=256, data_range="[-1,1]"))
  np.testing.assert_array_equal(np.asarray(likelihood.dequantize(key, k[:7], n_bins=256, data_range="[-1,1]")), y[:7])
  w = 2.0 / 256  # cell width; cell 0 is [-1, -1 + w), cell 255 is [1 - w, 1)
  u = (y - np.array([-1.0, 1.0 - w])) / w
  assert u.min() >= 0 and u.max() < 1
  np.testing.assert_allclose(u.mean(0), 0.5, atol=4 * math.sqrt(1 / 12 / 4000))  # U[0,1): mean 1/2


def _gaussian_nll(y, mean, std):
  return np.sum(0.5 * np.log(2 * np.pi * std**2) + (y - mean) ** 2 / (2 * std**2), axis=1)


def test_gaussian_bound_matches_its_closed_form_and_the_exact_discrete_nll():
  # A Gaussian N(m, s^2) per pixel on [-1, 1]. For level k (cell centre c, width w),
  #   E_u[-log N(y)] = log(2 pi s^2) / 2 + ((c - m)^2 + w^2 / 12) / (2 s^2),
  # and the exact discrete model P(k) = Phi((c + w/2 - m)/s) - Phi((c - w/2 - m)/s) lies below
  # the bound by the Jensen gap ~ w^2 / (24 s^2) nats.
  levels, lo, hi, m, s, dim = 17, -1.0, 1.0, 0.1, 0.4, 3
  w = (hi - lo) / levels
  cells = lo + w * np.arange(levels)
  p = norm.cdf((cells + w - m) / s) - norm.cdf((cells - m) / s)
  k = np.random.default_rng(0).choice(levels, size=(20_000, dim), p=p / p.sum())
  nll_fn = lambda key, score_fn, y: (_gaussian_nll(np.asarray(y, np.float64), m, s), y, 0)
  out = likelihood.dequantized_bits_per_dim(jax.random.PRNGKey(1), nll_fn, None, k, n_bins=levels,
                                            data_range=(lo, hi), batch_size=20_000)
  c = cells[k] + w / 2
  bound_nats = np.sum(0.5 * np.log(2 * np.pi * s**2) + ((c - m) ** 2 + w**2 / 12) / (2 * s**2), axis=1)
  bound_bits = bound_nats.mean() / dim / math.log(2) + math.log2(levels / (hi - lo))
  assert out["bpd"] == pytest.approx(bound_bits, abs=4 * out["bpd_stderr"])  # stderr ~ 0.007
  exact_bits = -np.log2(p[k]).sum(1).mean() / dim
  gap = bound_bits - exact_bits
  assert 0 < gap < 1.5 * w**2 / (24 * s**2) / math.log(2)  # ~0.005 bits; an L off by one moves 0.09


VPSDE = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)


def test_ode_bits_per_dim_is_invariant_to_the_data_range():
  # The same discrete model expressed on [0, 1] and on [-1, 1] (y' = 2 y - 1: mean 2m - 1,
  # variance 4 s^2): the continuous NLLs differ by D log 2, the offsets by exactly that, and
  # with the same key the dequantisation noise is the same, so bits/dim agree. Both are also
  # checked against the closed-form -log N(y) of p_eps (VPSDE: p_eps ~ p_0, sigma(eps)^2 ~ 1e-6).
  nll_fn = likelihood.get_likelihood_fn(VPSDE, hutchinson_type="exact")
  k = np.random.default_rng(2).integers(3, 14, (48, 3))
  key, m, s, levels = jax.random.PRNGKey(4), 0.5, 0.15, 17
  results = {}
  for (lo, hi), mean, std in (((0.0, 1.0), m, s), ((-1.0, 1.0), 2 * m - 1, 2 * s)):
    score = functools.partial(gaussian_score_at, VPSDE, jnp.float32(mean), jnp.float32(std**2))
    out = likelihood.dequantized_bits_per_dim(key, nll_fn, score, k, n_bins=levels, data_range=(lo, hi),
                                              batch_size=32)
    exact_fn = lambda key_, score_fn, y: (_gaussian_nll(np.asarray(y, np.float64), mean, std), y, 0)
    exact = likelihood.dequantized_bits_per_dim(key, exact_fn, None, k, n_bins=levels, data_range=(lo, hi))
    # Prior mismatch of VPSDE(0.1, 20) at T: alpha(T)^2 ~ 4e-5, far below the tolerance.
    assert out["bpd"] == pytest.approx(exact["bpd"], abs=2e-3)
    assert out["nfe"] > 0
    results[(lo, hi)] = out
  a, b = results[(0.0, 1.0)], results[(-1.0, 1.0)]
  assert b["nll_nats"] - a["nll_nats"] == pytest.approx(3 * math.log(2), abs=3e-3)  # D log 2
  assert a["bpd"] == pytest.approx(b["bpd"], abs=1e-3)


@pytest.mark.parametrize("images,kwargs,match", [
    (np.full((4, 3), 17), dict(n_bins=17), "levels 0..16"),
    (np.full((4, 3), 0.5), dict(n_bins=17), "integer levels"),
    (np.zeros(4), dict(n_bins=17), r"images.shape=\(4,\)"),
    (np.zeros((4, 3)), dict(n_bins=1), "likelihood.n_bins"),
    (np.zeros((4, 3)), dict(n_bins=17, data_range=(1.0, 1.0)), "likelihood.data_range"),
    (np.zeros((4, 3)), dict(n_bins=17, batch_size=0), "batch_size")])
def test_bad_dequantized_bits_per_dim_inputs_raise(images, kwargs, match):
  with pytest.raises(ValueError, match=match):
    likelihood.dequantized_bits_per_dim(jax.random.PRNGKey(0), None, None, images, **kwargs)


def test_bits_per_dim_accepts_a_range_pair():
  nll = jnp.asarray([64 * math.log(2.0)])
  np.testing.assert_allclose(np.asarray(likelihood.bits_per_dim(nll, 64, data_range=(-1.0, 1.0), n_bins=17)),
                             math.log2(17), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(likelihood.bits_per_dim(nll, 64, data_range="[-1,1]", n_bins=17)),
                             math.log2(17), rtol=1e-6)


# --- the digits classifier and the Frechet distance in its feature space ------------------

@pytest.fixture(scope="module")
def digits():
  """The fixed split of `datasets.Digits`: default_rng(0) permutation, the first 297 test."""
  bunch = load_digits()
  u = np.rint(bunch.images).astype(np.uint8)[..., None]
  perm = np.random.default_rng(0).permutation(len(u))
  test, train = perm[:297], perm[297:]
  return u[train], bunch.target[train], u[test], bunch.target[test]


@pytest.fixture(scope="module")
def clf(digits):
  return features.train_digits_classifier(jax.random.PRNGKey(0), *digits, data_range=(0.0, 16.0))


def test_classifier_accuracy_and_determinism(digits, clf):
  x_tr, y_tr, x_te, y_te = digits
  assert clf.test_accuracy > 0.95 and clf.train_accuracy > 0.98
  assert clf.accuracy(x_te, y_te) == clf.test_accuracy
  again = features.train_digits_classifier(jax.random.PRNGKey(0), x_tr, y_tr, x_te, y_te)
  np.testing.assert_array_equal(np.asarray(again.features(x_te)), np.asarray(clf.features(x_te)))
  feats = np.asarray(clf.features(x_te))
  assert feats.shape == (297, clf.feature_dim) and feats.min() >= 0  # ReLU activations
  # The same network on rescaled inputs: (-1, 1) data -> identical features.
  scaled = clf.with_data_range((-1.0, 1.0)).features(x_te / 8.0 - 1.0)
  np.testing.assert_allclose(np.asarray(scaled), feats, atol=1e-5)


def test_classifier_frechet_distance_floor_and_noise(digits, clf):
  x_tr, _, x_te, _ = digits
  rng = np.random.default_rng(5)
  key = jax.random.PRNGKey(6)
  good = x_tr[rng.permutation(len(x_tr))[:300]]  # real digits: at the floor
  noise = rng.integers(0, 17, (300, 8, 8, 1))     # i.i.d. pixels: far from it
  out = metrics.classifier_frechet_distance(key, good, x_tr, x_te, classifier=clf)
  bad = metrics.classifier_frechet_distance(key, noise, x_tr, x_te, classifier=clf)
  assert out["n"] == out["n_floor"] == 300 and out["n_test"] == 297 and out["feature_dim"] == 64
  assert out["fd_floor"] == bad["fd_floor"] > 0  # the same train subset for the same key
  assert 0.5 * out["fd_floor"] < out["fd"] < 2 * out["fd_floor"]
  assert bad["fd"] > 10 * bad["fd_floor"]
  assert out["classifier_test_accuracy"] == clf.test_accuracy
  nan = np.where(np.arange(300)[:, None, None, None] < 3, np.nan, good)
  assert metrics.classifier_frechet_distance(key, nan, x_tr, x_te, classifier=clf)["n_nonfinite"] == 3 * 64


def test_bad_classifier_inputs_raise(digits):
  x_tr, y_tr, x_te, y_te = digits
  with pytest.raises(ValueError, match=r"x_train.shape=\(5, 7\)"):
    features.train_digits_classifier(jax.random.PRNGKey(0), np.zeros((5, 7)), y_tr[:5], x_te, y_te)
  with pytest.raises(ValueError, match="y_test"):
    features.train_digits_classifier(jax.random.PRNGKey(0), x_tr, y_tr, x_te, y_te[:-1])
  with pytest.raises(ValueError, match="classifier.n_steps=0"):
    features.train_digits_classifier(jax.random.PRNGKey(0), x_tr, y_tr, x_te, y_te, n_steps=0)
  with pytest.raises(ValueError, match="data_range"):
    features.train_digits_classifier(jax.random.PRNGKey(0), x_tr, y_tr, x_te, y_te, data_range=(1, 0))


# --- PNG grid -----------------------------------------------------------------------------

def test_image_grid_maps_the_data_range(tmp_path):
  # 3 images [n, H, W] in [-1, 1] (no channel axis): black, white, mid-grey; 2 per row.
  images = np.stack([np.full((8, 8), -1.0), np.full((8, 8), 1.0), np.zeros((8, 8))])
  plotting.plot_image_grid(tmp_path / "g.png", images, nrow=2, padding=1, data_range=(-1.0, 1.0), scale=1)
  img = plt.imread(tmp_path / "g.png")
  assert img.shape[:2] == (2 * 9 + 1, 2 * 9 + 1)
  grey = img[..., 0]
  assert grey[1:9, 1:9].max() == 0.0 and grey[1:9, 10:18].min() == 1.0
  assert abs(float(grey[10:18, 1:9].mean()) - 0.5) < 0.01  # 8-bit PNG round-off
  assert grey[10:18, 10:18].min() == 1.0  # the empty slot stays white
  with pytest.raises(ValueError, match="data_range"):
    plotting.plot_image_grid(tmp_path / "h.png", images, data_range=(1.0, -1.0))


# --- conditional generation ---

def test_per_class_plots_write_one_grid_row_per_class_for_images(tmp_path):
  """Class samples [K, n, H, W, C] give plots/class_grid.png with a row of (up to 10) per class."""
  import types
  import matplotlib.image
  from evaluators import plots

  target = types.SimpleNamespace(to_unit=lambda a: a, scale=lambda u: u, train_x=np.zeros((4, 4, 4, 1)))
  ctx = types.SimpleNamespace(plots_dir=str(tmp_path / "plots"), target=target,
                              arrays={"model": np.zeros((4, 4, 4, 1)),
                                      "per_class": np.stack([np.full((10, 4, 4, 1), k / 2.0) for k in range(3)])})
  plots.image_plots(ctx, n_grid=4)
  grid = matplotlib.image.imread(tmp_path / "plots" / "class_grid.png")
  scale = math.ceil(512 / (10 * (4 + 2) + 2))  # enlarged until the longer side reaches 512 pixels
  # 3 rows x 10 columns, 2-pixel padding, and a strip on the left labelling each row's class.
  assert grid.shape[0] == (3 * (4 + 2) + 2) * scale and grid.shape[1] > (10 * (4 + 2) + 2) * scale


# --- toy evaluators -----------------------------------------------------------------------

def _scaled_oracle(c, x, t, target=None, sde=None):
  return c * target.score_fn(sde)(x, t)


@pytest.mark.parametrize("c", [1.0, 0.7])
def test_score_error_relative_is_the_fraction_of_the_exact_scores_energy(c):
  """A model score c s*: its error (c - 1) s* is the fraction (1 - c)^2 of s*'s sigma^2-weighted energy."""
  import datasets
  import sharding
  from evaluators import Context, toy
  sde, target = sde_lib.VESDE(sigma_min=0.01, sigma_max=10.0, N=20), datasets.GaussianMixture()
  ctx = Context(sde=sde, target=target, shape=(2,), network=None, params=jnp.float32(c),
                model_score_fn=functools.partial(_scaled_oracle, target=target, sde=sde), step=0,
                key=jax.random.key(0), sample_key=jax.random.key(1), mesh=sharding.make_mesh(), sampler_kwargs={},
                likelihood_fn=None)
  out = toy.score_error(ctx, score_error_samples=128)[0]["score_error"]
  assert 0.1 < out["exact_weighted_ms"] < 1.0  # E[sigma^2 |s*|^2] / d <= E|z|^2 / d = 1
  np.testing.assert_allclose(out["relative"], (1 - c) ** 2, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(out["relative_rms"], abs(1 - c), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["weighted_mse"], (1 - c) ** 2 * out["exact_weighted_ms"], rtol=1e-5, atol=1e-9)
