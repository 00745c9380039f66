"""Analog bits (datasets/bits.py): codes, decoding, the exact diffused score and sampling by
thresholding, measured by total variation against the floor of exact draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import sampling
import sde_lib

BITS = datasets.get_dataset("bits")


def test_codes_round_trip_and_probabilities():
  assert BITS.dim == 6 and BITS.n_categories == 64
  np.testing.assert_allclose(BITS.probs.sum(), 1.0, rtol=1e-12)
  np.testing.assert_allclose(BITS.probs[1:] / BITS.probs[:-1], 0.95, rtol=1e-12)
  labels = jnp.arange(64)
  x = BITS.encode(labels)
  assert set(np.unique(np.asarray(x))) == {-1.0, 1.0}
  np.testing.assert_array_equal(np.asarray(BITS.decode(x)), np.arange(64))
  np.testing.assert_array_equal(np.asarray(x[5]), [-1, -1, -1, 1, -1, 1])  # 5 = 000101
  # Noise below 1 in every coordinate decodes to the same category.
  noisy = x + 0.9 * jax.random.uniform(jax.random.key(0), x.shape, minval=-1.0, maxval=1.0)
  np.testing.assert_array_equal(np.asarray(BITS.decode(noisy)), np.arange(64))
  with pytest.raises(ValueError, match="data.n_bits=0"):
    datasets.get_dataset("bits", n_bits=0)
  with pytest.raises(ValueError, match="data.decay=1.5"):
    datasets.get_dataset("bits", decay=1.5)


def test_exact_score_is_the_gradient_of_the_log_density():
  x = jax.random.normal(jax.random.key(1), (16, 6))
  grad = jax.jit(jax.grad(lambda z, a, s: jnp.sum(BITS.log_prob_t(z, a, s))))
  score = jax.jit(BITS.score_t)
  for alpha, sigma in ((1.0, 0.3), (0.5, 1.0), (0.1, 2.0)):
    np.testing.assert_allclose(score(x, alpha, sigma), grad(x, alpha, sigma), rtol=1e-4, atol=1e-4)
  # The diffused density integrates the mixture: at alpha = 1 and large sigma, log p_t = log N(x; mean, sigma^2) + O(1/sigma^2).
  lp = BITS.log_prob_t(jnp.zeros((1, 6)), 1.0, 100.0)
  np.testing.assert_allclose(lp, -3 * np.log(2 * np.pi * 100.0**2), atol=1e-3)


@pytest.mark.slow
def test_sampling_with_the_exact_score_and_thresholding_is_at_the_total_variation_floor():
  """2,000 samples (VPSDE N = 50, reverse diffusion, exact score), decoded by thresholding: the
  total variation to pi, mean over 3 seeds, is within 1.5x the mean of 20 sets of 2,000 exact
  draws; uniform categories (a wrong model) are over 5x the floor."""
  sde, n = sde_lib.VPSDE(N=50), 2000
  floor = BITS.total_variation_floor(jax.random.key(1), n)
  sampler = sampling.get_sampler(sde, (n, 6), corrector="none")
  tv = [BITS.total_variation(sampler(jax.random.key(s), BITS.score_fn(sde))[0]) for s in range(3)]
  assert np.mean(tv) < 1.5 * floor, (tv, floor)
  uniform = datasets.get_dataset("bits", decay=1.0).sample(jax.random.key(2), n)
  assert BITS.total_variation(uniform) > 5 * floor


@pytest.mark.slow
def test_digits_as_analog_bits_round_trip():
  """17 grey levels as 5 bits: every test image decodes back exactly; 16 = 10000; codes above 16 clip."""
  d = datasets.get_dataset("digits_bits")
  assert d.shape == (8, 8, 5) and d.levels == 17
  x = d.dequantized(None, d.test_x)
  assert x.shape == (len(d.test_x), 8, 8, 5) and set(np.unique(np.asarray(x))) == {-1.0, 1.0}
  np.testing.assert_array_equal(np.asarray(d.quantize(x)), d.test_x)
  np.testing.assert_array_equal(np.asarray(d.dequantized(None, np.full((1, 1, 1, 1), 16)))[0, 0, 0], [1, -1, -1, -1, -1])
  assert int(d.quantize(jnp.ones((1, 1, 1, 5)))[0, 0, 0, 0]) == 16  # code 31 clipped
  with pytest.raises(ValueError, match="data.n_bits=4"):
    datasets.get_dataset("digits_bits", n_bits=4)
  with pytest.raises(ValueError, match="dequantize"):
    datasets.get_dataset("digits_bits", dequantize=True)


def test_digits_as_gray_coded_bits_round_trip_and_neighbours_differ_in_one_bit():
  """code="gray": every test image decodes back exactly; grey levels k and k + 1 differ in exactly one
  bit (in binary 15 -> 16 flips all five); 16 = 11000; a bad code names the field."""
  d = datasets.get_dataset("digits_bits", code="gray")
  x = d.dequantized(None, d.test_x)
  np.testing.assert_array_equal(np.asarray(d.quantize(x)), d.test_x)
  levels = np.asarray(d.dequantized(None, np.arange(17).reshape(17, 1, 1, 1)))[:, 0, 0]
  assert np.all(np.sum(levels[1:] != levels[:-1], axis=1) == 1)
  np.testing.assert_array_equal(levels[16], [1, 1, -1, -1, -1])
  binary = np.asarray(datasets.get_dataset("digits_bits").dequantized(None, np.array([[[[15]]], [[[16]]]])))
  assert int(np.sum(binary[0] != binary[1])) == 5
  with pytest.raises(ValueError, match="data.code='ascii'"):
    datasets.get_dataset("digits_bits", code="ascii")


def test_self_conditioning_loss_stops_the_gradient_and_the_sampler_feeds_the_estimate():
  """With x0_hat = theta + x0_prev = eps_hat (a stand-in network), p_self_cond = 1 trains on
  eps_hat = theta + stop_gradient(theta), so d loss / d theta = E 2 (2 theta - z) = 4 at theta = 1
  (8 without the stop-gradient), and p = 0 gives E 2 (theta - z) = 2 (reduce_mean; 4,000 x 6
  normals: Monte Carlo error ~0.03). The sampler's final estimate is (n_steps + 1) theta when it
  feeds x0_prev back and theta when it does not."""
  from losses.self_cond import get_self_cond_loss_fn
  from sampling.self_cond import get_self_cond_sampler

  sde = sde_lib.VPSDE(N=10)
  x0_fn = lambda theta, x, t, prev: (theta + prev, theta + prev)
  batch = jnp.zeros((4000, 6))
  for p, want in ((1.0, 4.0), (0.0, 2.0)):
    loss_fn = get_self_cond_loss_fn(sde, x0_fn, p_self_cond=p, reduce_mean=True)
    g = jax.grad(loss_fn, argnums=1)(jax.random.key(0), jnp.float32(1.0), batch)
    assert abs(float(g) - want) < 0.15, (p, float(g))
  for feed, want in ((True, 6.0), (False, 1.0)):
    sampler = get_self_cond_sampler(sde, (3, 2), n_steps=5, self_condition=feed)
    x, nfe = sampler(jax.random.key(0), lambda x, t, prev: (jnp.ones_like(x) + prev, x))
    np.testing.assert_allclose(np.asarray(x), want)
    assert int(nfe) == 6
  with pytest.raises(ValueError, match="p_self_cond"):
    get_self_cond_loss_fn(sde, x0_fn, p_self_cond=1.5)


@pytest.mark.slow
def test_bits_digits_config_trains_samples_and_scores(tmp_path):
  """configs/bits_digits.py (Gray code) with a tiny one-level U-Net, 2 steps: the stochastic DDIM
  sampler, the decoded samples' Frechet distance with its floor and the invalid-code fraction,
  and the decoded grid are written."""
  import json
  import os

  import run_lib
  from conftest import get_config

  config = get_config("bits_digits")
  config.data.code = "gray"
  config.training.update(dict(n_iters=2, log_freq=2, snapshot_freq=2, checkpoint_freq=2, batch_size=16))
  config.model.update(dict(ch=8, num_groups=4, ch_mult=(1,), attn_resolutions=()))
  config.sampling.n_steps = 4
  config.eval.update(dict(n_samples=32, n_grid=16))
  config.eval.classifier.n_steps = 20
  workdir = str(tmp_path / "w")
  run_lib.run(config, workdir, "all")
  summary = json.load(open(os.path.join(workdir, "eval", "summary.json")))
  fd = summary["frechet"]
  assert summary["nfe"] == 4 and np.isfinite(fd["fd"]) and fd["fd_floor"] > 0
  assert 0.0 <= fd["frac_codes_above_max"] <= 1.0 and fd["n"] == 32
  assert os.path.exists(os.path.join(workdir, "plots", "samples_grid.png"))
