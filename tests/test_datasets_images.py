"""Image datasets: the digits split, scaling and dequantisation round trip, flips, npz loading and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets


@pytest.fixture(scope="module")
def digits():
  return datasets.get_dataset("digits")


def test_digits_split_is_fixed_and_disjoint(digits):
  from sklearn.datasets import load_digits

  assert digits.shape == (8, 8, 1) and digits.dim == 64 and digits.levels == 17
  assert digits.n_train == 1500 and digits.test_x.shape == (297, 8, 8, 1)
  assert digits.train_x.max() == 16 and digits.train_x.min() == 0
  # Train and test together are the 1,797 sklearn images, each exactly once.
  raw = np.rint(load_digits().images).astype(np.uint8).reshape(1797, -1)
  both = np.concatenate([digits.train_x, digits.test_x]).reshape(1797, -1)
  assert sorted(map(bytes, both)) == sorted(map(bytes, raw))
  again = datasets.get_dataset("digits")
  np.testing.assert_array_equal(again.test_x, digits.test_x)
  np.testing.assert_array_equal(again.test_y, digits.test_y)
  assert set(np.unique(digits.test_y)) == set(range(10))


@pytest.mark.parametrize("data_range,lo,hi", [("[-1,1]", -1.0, 1.0), ("[0,1]", 0.0, 1.0)])
def test_dequantisation_round_trip_and_cells(data_range, lo, hi):
  d = datasets.get_dataset("digits", data_range=data_range)
  x, y = jax.jit(d.sample_with_labels, static_argnums=1)(jax.random.key(0), 4096)
  x = np.asarray(x)
  assert x.shape == (4096, 8, 8, 1) and x.dtype == np.float32 and lo <= x.min() and x.max() < hi
  # Every sample is a training image (with its label) plus noise inside its grey level's cell.
  u = np.asarray(d.quantize(x))
  table = {bytes(img.astype(np.uint8)): lab for img, lab in zip(d.train_x, d.train_y)}
  assert all(table[bytes(img.astype(np.uint8))] == lab for img, lab in zip(u, np.asarray(y)))
  # x = lo + (hi - lo)(u + v) / 17: the offsets v are U[0, 1) (mean 1/2, variance 1/12).
  v = (x - lo) / (hi - lo) * 17 - u
  assert v.min() >= -1e-4 and v.max() < 1 + 1e-4
  assert abs(v.mean() - 0.5) < 0.005 and abs(v.var() - 1 / 12) < 0.002  # n = 262,144: 5 sigma ~ 0.003
  # Without dequantisation, the cell centres; quantize inverts scale exactly.
  centres = datasets.get_dataset("digits", data_range=data_range, dequantize=False)
  c = np.asarray(centres.sample(jax.random.key(0), 64))
  np.testing.assert_allclose((c - lo) / (hi - lo) * 17 - np.asarray(centres.quantize(c)), 0.5, atol=1e-5)
  k = jnp.arange(17)
  np.testing.assert_array_equal(d.quantize(d.scale(k)), k)
  np.testing.assert_array_equal(d.quantize(d.scale(k, 0.999)), k)
  np.testing.assert_allclose(d.to_unit(d.scale(k, 0.0)), k / 17, atol=1e-6)


def _write_npz(path, n=40, shape=(4, 4, 3), **extra):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n,) + shape).astype(np.uint8)
  np.savez(path, x=x, y=np.arange(n) % 10, **extra)
  return x


def test_npz_split_flips_and_labels(tmp_path):
  path = str(tmp_path / "imgs.npz")
  x = _write_npz(path)
  d = datasets.get_dataset("npz", path=path, n_test=10, random_flip=True, dequantize=False)
  assert d.shape == (4, 4, 3) and d.n_train == 30 and d.test_x.shape == (10, 4, 4, 3) and d.levels == 256
  xs, ys = d.sample_with_labels(jax.random.key(1), 2000)
  u = np.asarray(d.quantize(xs))
  # Each draw is a train image, flipped left-right or not, about half of each.
  train = {bytes(img): lab for img, lab in zip(d.train_x, d.train_y)}
  flipped = {bytes(img[:, ::-1]): lab for img, lab in zip(d.train_x, d.train_y)}
  plain = np.array([bytes(img.astype(np.uint8)) in train for img in u])
  flip = np.array([bytes(img.astype(np.uint8)) in flipped for img in u])
  assert np.all(plain | flip) and 0.45 < flip.mean() < 0.55  # binomial(2000, 1/2): 0.05 is 4.5 sigma
  labels = np.array([train.get(bytes(img.astype(np.uint8)), flipped.get(bytes(img.astype(np.uint8))))
                     for img in u])
  np.testing.assert_array_equal(labels, np.asarray(ys))
  assert sorted(map(bytes, np.concatenate([d.train_x, d.test_x]))) == sorted(map(bytes, x))
  # An explicit test split is used as it is.
  path2 = str(tmp_path / "split.npz")
  _write_npz(path2, x_test=x[:5], y_test=np.arange(5))
  d2 = datasets.get_dataset("npz", path=path2)
  assert d2.n_train == 40 and d2.test_x.shape == (5, 4, 4, 3)


def test_npz_errors(tmp_path):
  with pytest.raises(ValueError, match="data.path='nope.npz' is not a file"):
    datasets.get_dataset("npz", path="nope.npz")
  bad = tmp_path / "text.npz"
  bad.write_text("hello")
  with pytest.raises(ValueError, match="not a readable .npz"):
    datasets.get_dataset("npz", path=str(bad))
  for name, arrays, match in [
      ("float.npz", dict(x=np.zeros((4, 4, 4, 1), np.float32)), "must be uint8 \\[N, H, W, C\\]; got float32"),
      ("ndim.npz", dict(x=np.zeros((4, 4, 4), np.uint8)), "got uint8 with shape \\(4, 4, 4\\)"),
      ("nox.npz", dict(images=np.zeros((4, 4, 4, 1), np.uint8)), "has no array 'x'"),
      ("labels.npz", dict(x=np.zeros((4, 4, 4, 1), np.uint8), y=np.zeros(3, np.int64)), "'y' must be integer labels"),
      ("test.npz", dict(x=np.zeros((4, 4, 4, 1), np.uint8), x_test=np.zeros((2, 2, 2, 1), np.uint8)), "differ")]:
    p = str(tmp_path / name)
    np.savez(p, **arrays)
    with pytest.raises(ValueError, match=match):
      datasets.get_dataset("npz", path=p, n_test=1)
  p = str(tmp_path / "ok.npz")
  _write_npz(p, n=8)
  with pytest.raises(ValueError, match="data.n_test=8"):
    datasets.get_dataset("npz", path=p, n_test=8)
  with pytest.raises(ValueError, match="data.levels=17"):
    datasets.get_dataset("npz", path=p, n_test=2, levels=17)
  with pytest.raises(ValueError, match="data.data_range='\\[0,255\\]' is unknown"):
    datasets.get_dataset("digits", data_range="[0,255]")
  with pytest.raises(ValueError, match="data.path is not a field"):
    datasets.get_dataset("digits", path=p)


def test_dataset_is_a_pytree_for_jit(digits):
  leaves = jax.tree.leaves(digits)
  assert [l.shape for l in leaves] == [(1500, 8, 8, 1), (1500,)]
  moved = jax.device_put(digits, jax.devices()[1])
  fn = jax.jit(lambda key, d: d.sample(key, 8))
  np.testing.assert_array_equal(fn(jax.random.key(3), digits), fn(jax.random.key(3), moved))
  assert datasets.is_image_dataset(moved) and datasets.is_image_dataset_name("npz")
  assert not datasets.is_image_dataset_name("gmm")


def test_moments_of_an_image_dataset_come_from_its_samples(digits):
  """datasets.moments: an image dataset has no exact moments, so they are those of 10,000 training samples
  (flattened to 64 numbers): a symmetric positive semi-definite covariance, pixel means inside the data range."""
  mean, cov = (np.asarray(v) for v in datasets.moments(digits))
  x = np.asarray(digits.sample(jax.random.key(0), 10_000), np.float64).reshape(10_000, -1)
  assert mean.shape == (64,) and cov.shape == (64, 64)
  np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(cov, cov.T)
  assert np.linalg.eigvalsh(cov).min() > -1e-8 and x.min() <= mean.min() and mean.max() <= x.max()


def test_moments_of_too_many_numbers_per_example_raise(digits, monkeypatch):
  """The d x d covariance is refused above datasets.MAX_MOMENT_DIM, with the sizes in the message."""
  monkeypatch.setattr(datasets, "MAX_MOMENT_DIM", 32)
  with pytest.raises(ValueError, match="need a 64 x 64 covariance; at most 32 numbers per example"):
    datasets.moments(digits)
