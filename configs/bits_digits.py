"""Analog bits (Chen, Zhang & Hinton 2023) on the 8x8 digits: each pixel's 17 grey levels as 5 bits
in {-1, +1} (images 8x8x5), the vp_digits U-Net and SDE, decoded by thresholding at 0.

    python run.py --config=configs/bits_digits.py

Trains 3,000 steps of batch 128, samples 1,000 images with stochastic DDIM (eta = 1, 100 steps on the
log-SNR grid), decodes them (codes above 16 clipped) and reports the digits-classifier Frechet distance to the test split with
its floor (`bits_frechet`), comparable with the continuous digits models' FD in
benchmarks/RESULTS.md ("Digits runs", "Analog bits on the digits"); plots/samples_grid.png.
`--config.data.code=gray` encodes the levels in the reflected Gray code instead of binary.
The sampler is stochastic on purpose: the probability-flow ODE of the learned score (DPM-Solver++,
or tsit5 to tolerance, which agree) ends off the {-1, +1} vertices (mean |x| 2.2, 9% of the pixels
on invalid codes 17-31), while the reverse SDE's noise corrects the score's errors and lands on
them (mean |x| 1.1, 0.1% invalid; benchmarks/RESULTS.md, "Analog bits on the digits").
"""

import ml_collections

from configs.default_digits import get_default_configs


def get_config():
  config = get_default_configs()
  config.data = ml_collections.ConfigDict(dict(name="digits_bits", n_bits=5, code="binary", data_range="[-1,1]",
                                               dequantize=False, random_flip=False))
  config.training.n_iters = 3000
  config.sampling = ml_collections.ConfigDict(dict(method="ddim", n_steps=100, eta=1.0, schedule="log_snr",
                                                   eps=1e-3))
  config.eval = ml_collections.ConfigDict(dict(
      evaluators=["image_samples", "bits_frechet"], n_samples=1000, n_grid=100,
      classifier=ml_collections.ConfigDict(dict(n_steps=600, batch_size=128, learning_rate=2e-3,
                                                feature_dim=64))))
  return config
