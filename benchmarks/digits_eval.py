"""Reference figures for the digits evaluation, with no diffusion model: the classifier, the
Frechet-distance floor and simple baselines, and the bits/dim of simple baselines.

    python benchmarks/digits_eval.py

Prints JSON lines. The split is that of `datasets.Digits` (default_rng(0) permutation of the
1,797 sklearn digits; the first 297 are the test set, the other 1,500 train), rebuilt here
so the script depends only on scikit-learn's bundled data.

  * "classifier": test / train accuracy of `classifier.train_digits_classifier` for 5 keys,
    and its training wall time (first call includes compilation).
  * "fd_floor": FD(train subset of n, test) for n in {297, 1000, 1500}, 5 subset keys
    (n = 1500 is the whole train split, so its spread is 0).
  * "fd_baseline": FD to the test split of n = 1000 samples (integer levels) from
    - "independent_pixels": each pixel drawn independently from its train marginal;
    - "gaussian": N(mean, cov) fitted to the train levels, rounded and clipped to 0..16;
    - "uniform_noise": i.i.d. uniform levels.
  * "bpd_baseline": test-split bits/dim of
    - "uniform": every level equally likely, log2(17) exactly;
    - "independent_pixels": per-pixel categorical fitted on train (add-one smoothing), exact;
    - "gaussian_dequantized": full-covariance Gaussian fitted to dequantised train data on
      [-1, 1], through `likelihood.dequantized_bits_per_dim` (the bound a continuous model
      of the same family gets; closed-form density, no ODE).
"""

import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from evaluators import features  # noqa: E402
import metrics  # noqa: E402
import likelihood  # noqa: E402

LEVELS, N_TEST = 17, 297


def digits_split():
  bunch = load_digits()
  u = np.rint(bunch.images).astype(np.uint8)[..., None]
  perm = np.random.default_rng(0).permutation(len(u))
  test, train = perm[:N_TEST], perm[N_TEST:]
  return u[train], bunch.target[train], u[test], bunch.target[test]


def emit(**record):
  print(json.dumps(record), flush=True)


def gaussian_nll_fn(mean, cov):
  """nll_fn with the closed-form -log N(y; mean, cov) of flattened y (float64)."""
  chol = np.linalg.cholesky(cov)
  logdet = 2 * np.sum(np.log(np.diag(chol)))

  def nll_fn(key, score_fn, y):
    r = np.asarray(y, np.float64).reshape(len(y), -1) - mean
    sol = np.linalg.solve(chol, r.T)
    return 0.5 * (np.sum(sol**2, 0) + logdet + len(mean) * math.log(2 * math.pi)), y, 0

  return nll_fn


def main():
  x_tr, y_tr, x_te, y_te = digits_split()
  accs = []
  for seed in range(5):
    t0 = time.time()
    clf_s = features.train_digits_classifier(jax.random.PRNGKey(seed), x_tr, y_tr, x_te, y_te)
    accs.append(clf_s.test_accuracy)
    emit(kind="classifier", seed=seed, test_accuracy=clf_s.test_accuracy,
         train_accuracy=clf_s.train_accuracy, wall_s=round(time.time() - t0, 2))
    if seed == 0:
      clf = clf_s
  emit(kind="classifier_summary", mean_test_accuracy=float(np.mean(accs)), min=min(accs), max=max(accs))
  for n in (297, 1000, 1500):
    vals = [metrics.classifier_frechet_distance(jax.random.PRNGKey(k), x_tr[:n], x_tr, x_te,
                                                   classifier=clf)["fd_floor"] for k in range(5)]
    emit(kind="fd_floor", n=n, mean=float(np.mean(vals)), std=float(np.std(vals, ddof=1)), values=vals)
  rng = np.random.default_rng(1)
  flat = x_tr.reshape(len(x_tr), -1).astype(np.float64)
  probs = np.stack([np.bincount(flat[:, j].astype(int), minlength=LEVELS) + 1.0 for j in range(64)])
  probs /= probs.sum(1, keepdims=True)
  n = 1000
  baselines = {
      "independent_pixels": np.stack([rng.choice(LEVELS, n, p=probs[j]) for j in range(64)], 1),
      "gaussian": np.clip(np.rint(rng.multivariate_normal(flat.mean(0), np.cov(flat.T), n)), 0, LEVELS - 1),
      "uniform_noise": rng.integers(0, LEVELS, (n, 64))}
  for name, s in baselines.items():
    out = metrics.classifier_frechet_distance(jax.random.PRNGKey(0), s.reshape(n, 8, 8, 1), x_tr, x_te,
                                                 classifier=clf)
    emit(kind="fd_baseline", baseline=name, **out)
  te = x_te.reshape(N_TEST, -1).astype(int)
  emit(kind="bpd_baseline", baseline="uniform", bpd=math.log2(LEVELS))
  bits = -np.log2(probs[np.arange(64), te]).sum(1) / 64
  emit(kind="bpd_baseline", baseline="independent_pixels", bpd=float(bits.mean()),
       bpd_stderr=float(bits.std(ddof=1) / math.sqrt(N_TEST)))
  y_train = np.asarray(likelihood.dequantize(jax.random.PRNGKey(2), x_tr, n_bins=LEVELS, data_range="[-1,1]"))
  y_train = y_train.reshape(len(y_train), -1).astype(np.float64)
  nll_fn = gaussian_nll_fn(y_train.mean(0), np.cov(y_train.T))
  out = likelihood.dequantized_bits_per_dim(jax.random.PRNGKey(3), nll_fn, None, x_te, n_bins=LEVELS,
                                            data_range="[-1,1]")
  emit(kind="bpd_baseline", baseline="gaussian_dequantized", **out)


if __name__ == "__main__":
  main()
