"""Inverse problems and SDEdit on the 8x8 digits: the vp_digits model (VP SDE, small U-Net),
trained once, then super-resolution 4x4 -> 8x8, inpainting of half images and SDEdit.

    python run.py --config=configs/inverse_digits.py

Trains 3,000 steps of batch 128 (vp_digits: 4,000), then: `inverse_digits` solves
super-resolution (`operators.AvgPool`, 2x2 blocks) and inpainting (`operators.Mask`, the left
or bottom half unknown) of test images with replacement, reconstruction guidance, DPS and DDRM,
scoring each by the digits classifier's agreement with the source image's class and the
Frechet distance to the test split, and draws a grid per task (plots/inverse_<task>.png);
`sdedit_digits` perturbs coarse and corrupted test digits to t0 and solves the reverse SDE
and ODE from there, reporting the Frechet distance against the distance to the guide over t0
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
      inverse_n=200, inverse_methods=["replacement", "guidance", "dps", "ddrm"], inverse_n_steps=250,
      sdedit_n=200, sdedit_t0=[0.2, 0.35, 0.5, 0.65, 0.8, 1.0], sdedit_n_steps=100))
  return config
