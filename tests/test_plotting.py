"""Tests for plotting.py: every figure is written, is a real picture, and survives -inf densities."""

import math
import warnings

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

import datasets
import plotting
import sde_lib

K, B = 30, 200  # trajectory times and paths
TS = (1.0, 0.05)  # score-field times


def _check_png(path, min_bytes: int = 5000) -> np.ndarray:
  """Asserts `path` is a non-trivial PNG that is not one flat colour; returns its pixels."""
  assert path.exists(), path
  assert path.stat().st_size > min_bytes, (path, path.stat().st_size)
  img = matplotlib.image.imread(path)
  pixels = img.reshape(-1, img.shape[-1]) if img.ndim == 3 else img.reshape(-1, 1)
  assert np.ptp(pixels, axis=0).max() > 0.5, "the image is (nearly) one flat colour"
  colours = (np.round(pixels * 255).astype(np.int64) << (8 * np.arange(pixels.shape[1]))).sum(axis=1)
  assert len(np.unique(colours)) > 10
  return img


def _gmm_3d():
  return datasets.GaussianMixture(means=((0.0, 1.0, 0.0), (2.0, -1.0, 1.0)),
                                  covs=(np.eye(3).tolist(), (2.0 * np.eye(3)).tolist()))


@pytest.fixture(scope="module", params=["box1d", "gmm2d"])
def case(request):
  """(target, data [n, d], trajectory [K, B, d], ts [K]) for d = 1 and 2."""
  return _case({"box1d": datasets.Box1D, "gmm2d": datasets.GaussianMixture}[request.param]())


def _sample(target, key, n: int) -> np.ndarray:
  # Jitted: the eager ops of a sampler each compile on first use, which costs seconds on CPU.
  return np.asarray(jax.jit(target.sample, static_argnums=1)(key, n))


def _case(target):
  data = _sample(target, jax.random.PRNGKey(0), 2000)
  noise = np.random.default_rng(0).normal(size=(B, target.dim))
  # A fake reverse process: straight lines from prior noise (t = 1) to data (t = 1e-3).
  ts = np.linspace(1.0, 1e-3, K)
  w = (1.0 - ts)[:, None, None]
  trajectory = (1.0 - w) * noise[None] + w * data[None, :B]
  return target, data, trajectory, ts


def test_plot_samples(case, tmp_path):
  target, data, trajectory, _ = case
  path = tmp_path / "plots" / "samples.png"  # the folder is created
  plotting.plot_samples(path, target, {"model": jnp.asarray(trajectory[-1]), "data": data}, max_points=1000,
                        title="test")
  _check_png(path)


def test_plot_trajectories(case, tmp_path):
  target, _, trajectory, ts = case
  scale = np.sqrt(ts**2 + (1.0 - ts) ** 2)[:, None] * np.ones(target.dim)  # any positive [K, d]
  plotting.plot_trajectories(tmp_path / "traj.png", target, jnp.asarray(trajectory), ts, scale=scale, t_start=1.0)
  _check_png(tmp_path / "traj.png")


def test_plot_score_field(case, tmp_path):
  target = case[0]
  sde = sde_lib.VPSDE()
  model = lambda x, t: -x  # an untrained "model": the score of N(0, I) at every t
  plotting.plot_score_field(tmp_path / "score.png", target, model, target.score_fn(sde), TS, grid_size=12,
                            log_prob_fn=target.log_prob_fn(sde))
  _check_png(tmp_path / "score.png")


def test_hdr_levels_enclose_the_stated_mass():
  # A standard normal on a fine grid: the 50% / 90% / 99% regions are discs of radius sqrt(-2 log(1 - m)).
  g = np.linspace(-6, 6, 601)
  gx, gy = np.meshgrid(g, g)
  p = np.exp(-0.5 * (gx**2 + gy**2)) / (2 * np.pi)
  levels = plotting._hdr_levels(p)
  assert list(levels.values()) == ["99%", "90%", "50%"] and list(levels) == sorted(levels)
  for level, label in levels.items():
    radius = np.sqrt(-2 * np.log(1 - float(label[:-1]) / 100))
    np.testing.assert_allclose(level, np.exp(-0.5 * radius**2) / (2 * np.pi), rtol=0.02)


def test_exact_marginals_of_a_gaussian_mixture():
  target = datasets.GaussianMixture()
  rng = np.array([[-3.0, 6.0], [-4.0, 4.0]])
  for i, (grid, density) in enumerate(plotting._exact_marginals(target, rng)):
    m, v = target.mean()[i], target.cov()[i, i]  # the marginal's mean and variance by quadrature
    dx = grid[1] - grid[0]
    np.testing.assert_allclose(density.sum() * dx, 1.0, atol=1e-3)
    np.testing.assert_allclose((grid * density).sum() * dx, m, atol=1e-3)
    np.testing.assert_allclose(((grid - m) ** 2 * density).sum() * dx, v, rtol=1e-3)


def test_d3_draws_first_two_coordinates(tmp_path):
  target, data, trajectory, ts = _case(_gmm_3d())
  plotting.plot_samples(tmp_path / "samples.png", target, {"data": data})
  plotting.plot_trajectories(tmp_path / "traj.png", target, trajectory, ts)
  exact = target.score_fn(sde_lib.VPSDE())
  plotting.plot_score_field(tmp_path / "score.png", target, exact, exact, [0.1])
  for name in ("samples", "traj", "score"):
    _check_png(tmp_path / f"{name}.png")


def test_plot_loss(tmp_path):
  steps = np.arange(0, 2000, 10)
  losses = 1.0 / (1.0 + steps / 200) * np.exp(0.3 * np.random.default_rng(0).normal(size=steps.shape))
  plotting.plot_loss(tmp_path / "loss.png", steps, jnp.asarray(losses))
  _check_png(tmp_path / "loss.png")
  plotting.plot_loss(tmp_path / "loss_neg.png", steps, losses - 0.5)  # not all positive: linear scale
  _check_png(tmp_path / "loss_neg.png")


def test_window_mean_is_a_trailing_mean_in_steps():
  steps = np.array([250.0, 500.0, 750.0, 1000.0, 1250.0])
  values = np.array([4.0, 2.0, np.nan, 1.0, 3.0])  # a NaN interval is left out
  np.testing.assert_allclose(plotting._window_mean(steps, values, 500.0), [4.0, 3.0, 2.0, 1.0, 2.0])
  np.testing.assert_allclose(plotting._window_mean(steps, values, 250.0)[[0, 1, 3]], [4.0, 2.0, 1.0])
  assert np.isnan(plotting._window_mean(steps, values, 250.0)[2])


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_image_grid(channels, tmp_path):
  n, h, w, pad = 10, 28, 20, 2
  images = np.random.default_rng(1).uniform(-0.2, 1.2, (n, h, w, channels))  # out of range: clipped
  plotting.plot_image_grid(tmp_path / "grid.png", images, nrow=4, padding=pad, scale=1)
  img = _check_png(tmp_path / "grid.png", min_bytes=2000)
  # 10 images, 4 per row -> 3 rows; pixel-exact tiling with `pad` pixels around each image.
  assert img.shape[:2] == (3 * (h + pad) + pad, 4 * (w + pad) + pad)


def test_image_grid_is_enlarged_by_pixel_repetition(tmp_path):
  # 100 8x8 digits with 2-pixel gaps: 102 x 102 pixels as written; enlarged 6x (the smallest
  # integer reaching 512 pixels), each source pixel a constant 6 x 6 block.
  images = np.random.default_rng(2).uniform(0.0, 1.0, (100, 8, 8))
  plotting.plot_image_grid(tmp_path / "g.png", images)
  small = tmp_path / "s.png"
  plotting.plot_image_grid(small, images, scale=1)
  big, one = matplotlib.image.imread(tmp_path / "g.png")[..., 0], matplotlib.image.imread(small)[..., 0]
  assert one.shape == (102, 102) and big.shape == (612, 612)
  np.testing.assert_array_equal(big, np.repeat(np.repeat(one, 6, axis=0), 6, axis=1))


def test_image_grid_row_labels(tmp_path):
  images = np.random.default_rng(3).uniform(0.0, 1.0, (30, 8, 8))
  plotting.plot_image_grid(tmp_path / "c.png", images, nrow=10, row_labels=["class 0", "class 1", "class 2"])
  img = _check_png(tmp_path / "c.png", min_bytes=2000)
  scale = math.ceil(512 / 102)  # the grid is 3 x 10 images: 32 x 102 pixels before enlarging
  assert img.shape[0] == 32 * scale and img.shape[1] > 102 * scale  # a margin on the left for the labels
  label_strip = img[:, : img.shape[1] - 102 * scale, :3].mean(axis=-1)
  assert label_strip.min() < 0.5  # text was drawn
  with pytest.raises(ValueError, match="row_labels"):
    plotting.plot_image_grid(tmp_path / "d.png", images, nrow=10, row_labels=["class 0"])


def test_box1d_minus_inf_density(tmp_path):
  target = datasets.Box1D()
  x = np.array([[-3.0], [-1.5], [0.0], [1.5], [2.5]])
  logp = np.asarray(jax.jit(target.log_prob)(jnp.asarray(x)))  # jitted: eager Box1D ops compile slowly
  assert np.isneginf(logp[[0, 2, 4]]).all()  # the case under test: -inf outside the support
  # Uniform on two unit intervals: density 1/2 inside, exactly 0 outside.
  p = plotting._density(target, x)
  np.testing.assert_array_equal(p[[0, 2, 4]], 0.0)
  np.testing.assert_allclose(p[[1, 3]], 0.5, rtol=1e-6)
  samples = _sample(target, jax.random.PRNGKey(3), 2000)
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)  # no overflow / invalid-value warnings
    plotting.plot_samples(tmp_path / "box.png", target, {"data": samples})
  _check_png(tmp_path / "box.png")


def test_diverged_samples_still_plot(tmp_path):
  # A diverged sampler returns inf / NaN rows: they are left out of the axis range, not fatal.
  target, data, trajectory, ts = _case(datasets.GaussianMixture())
  bad = data.copy()
  bad[::2] = np.inf
  bad[1::4] = np.nan
  plotting.plot_samples(tmp_path / "samples.png", target, {"model": bad, "data": data})
  plotting.plot_trajectories(tmp_path / "traj.png", target, np.full_like(trajectory, np.nan), ts)
  for name in ("samples", "traj"):
    _check_png(tmp_path / f"{name}.png")


def test_bad_inputs(tmp_path):
  target = datasets.GaussianMixture()
  with pytest.raises(ValueError, match="at least one"):
    plotting.plot_samples(tmp_path / "a.png", target, {})
  with pytest.raises(ValueError, match="different dimensions"):
    plotting.plot_samples(tmp_path / "a.png", target, {"a": np.zeros((5, 2)), "b": np.zeros((5, 1))})
  with pytest.raises(ValueError, match=r"trajectory.shape=\(5, 2\)"):
    plotting.plot_trajectories(tmp_path / "a.png", target, np.zeros((5, 2)), np.zeros(5))
  with pytest.raises(ValueError, match="window=0"):
    plotting.plot_loss(tmp_path / "a.png", [0, 1], [1.0, 2.0], window=0)
  with pytest.raises(ValueError, match=r"scale.shape=\(3,\)"):
    plotting.plot_trajectories(tmp_path / "a.png", target, np.zeros((5, 4, 2)), np.zeros(5), scale=np.ones(3))
  with pytest.raises(ValueError, match=r"images.shape=\(2, 4, 4, 2\)"):
    plotting.plot_image_grid(tmp_path / "a.png", np.zeros((2, 4, 4, 2)))
