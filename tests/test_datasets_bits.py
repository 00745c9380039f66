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
