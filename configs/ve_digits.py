"""VE SDE on the 8x8 sklearn digits; the U-Net is conditioned on Fourier features of log sigma.

    python run.py --config=configs/ve_digits.py

sigma_max = 20 is about the largest distance between two digits in [-1, 1]^64 (Song & Ermon
2020, technique 1: sigma_max comparable to the largest pairwise distance); sigma_min = 0.01 is
below a grey level's width (2 / 17). Otherwise as vp_digits.
"""

import ml_collections

from configs.default_digits import get_default_configs


def get_config():
  config = get_default_configs()
  config.sde = ml_collections.ConfigDict(dict(name="vesde", sigma_min=0.01, sigma_max=20.0, N=1000))
  config.model.embedding = "fourier"
  # Scale 1, as in the toy configs, not NCSN++'s 16 (measured in benchmarks/RESULTS.md).
  config.model.fourier_scale = 1.0
  return config
