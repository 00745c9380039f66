"""Analog bits (Chen, Zhang & Hinton 2023) on the 8x8 digits: each pixel's 17 grey levels as 5 bits
in {-1, +1} (images 8x8x5), the vp_digits U-Net and SDE, decoded by thresholding at 0.

    python run.py --config=configs/bits_digits.py

Trains 3,000 steps of batch 128, samples 1,000 images with DPM-Solver++ 2M (50 NFE), decodes them
(codes above 16 clipped) and reports the digits-classifier Frechet distance to the test split with
its floor (`bits_frechet`), comparable with the continuous digits models' FD in
benchmarks/RESULTS.md ("Digits runs", "Analog bits on the digits"); plots/samples_grid.png.
`--config.data.code=gray` encodes the levels in the reflected Gray code instead of binary.
"""

import ml_collections

from configs.default_digits import get_default_configs


def get_config():
  config = get_default_configs()
  config.data = ml_collections.ConfigDict(dict(name="digits_bits", n_bits=5, code="binary", data_range="[-1,1]",
                                               dequantize=False, random_flip=False))
  config.training.n_iters = 3000
  config.eval = ml_collections.ConfigDict(dict(
      evaluators=["image_samples", "bits_frechet"], n_samples=1000, n_grid=100,
      classifier=ml_collections.ConfigDict(dict(n_steps=600, batch_size=128, learning_rate=2e-3,
                                                feature_dim=64))))
  return config
