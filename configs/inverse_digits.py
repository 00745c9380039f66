"""Inverse problems and SDEdit on the 8x8 digits: the vp_digits model (VP SDE, small U-Net),
trained once, then super-resolution 4x4 -> 8x8, inpainting of half images and SDEdit.

    python run.py --config=configs/inverse_digits.py

Trains 3,000 steps of batch 128 (vp_digits: 4,000), then: `inverse_digits` solves
super-resolution (`operators.AvgPool`, 2x2 blocks) and inpainting (`operators.Mask`, the bottom
half unknown) of the first 100 test images with replacement, reconstruction guidance (PC reverse
diffusion, 100 steps each), DPS (200 steps), DDRM (20 steps) and SMC (8 particles, 100 steps;
its weights assume sigma_y = 0.05), the observations exact (sigma_y = 0),
scoring each by the digits classifier's agreement with the source image's class and the
Frechet distance to the test split, and draws a grid per task (plots/inverse_<task>.png);
`sdedit_digits` perturbs coarse (2x2-pooled) and noisy (std 0.5) test digits to t0 and solves
the reverse SDE and ODE from there (50 steps), reporting the Frechet distance against the
distance to the guide over t0
(plots/sdedit_tradeoff.png, plots/sdedit_<guide>.png). Measured figures: benchmarks/RESULTS.md
("Digits inverse problems and SDEdit").
"""

import ml_collections

from configs.default_digits import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.n_iters = 3000
  config.eval = ml_collections.ConfigDict(dict(
      evaluators=["image_samples", "frechet", "inverse_digits", "sdedit_digits", "image_plots"],
      n_samples=1000, n_grid=100,
      classifier=ml_collections.ConfigDict(dict(n_steps=600, batch_size=128, learning_rate=2e-3,
                                                feature_dim=64)),
      inverse_n=100, inverse_methods=["replacement", "guidance", "dps", "ddrm", "smc"],
      inverse_n_steps=100, inverse_smc_particles=8,
      sdedit_n=100, sdedit_t0=[0.2, 0.4, 0.6, 0.8, 1.0], sdedit_n_steps=50))
  return config
