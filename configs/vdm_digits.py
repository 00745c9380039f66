"""Variational diffusion on the 8x8 sklearn digits: a learned log-SNR schedule trained with the
U-Net on the continuous-time bound of the discrete data (17 grey levels, no dequantisation).

    python run.py --config=configs/vdm_digits.py

The training images are the levels' cell centres in [-1, 1]; the decoder p(x | z_0) is VDM's
discretised one (a softmax over the 17 levels per pixel), so the bound is on -log P(x) of the
integer images, in bits/dim (eval `elbo`). The U-Net is conditioned on -log SNR / 2 and sees
Fourier features of its input; otherwise as vp_digits. The ODE bits/dim (`bits_per_dim`) is
reported beside it, but it scores dequantised points, off the levels this model was trained on,
and is poor for it (3.38).
"""

import ml_collections

from configs.default_digits import get_default_configs


def get_config():
  config = get_default_configs()
  config.data.dequantize = False
  # sigma(0) / alpha(0) = e^{gamma_min / 2} = 0.007, a ninth of a level's half-width (1 / 17); gamma_max
  # as VDM's. Both endpoints are then learned.
  config.sde = ml_collections.ConfigDict(dict(name="learned_logsnr", gamma_min=-10.0, gamma_max=5.0, hidden=256,
                                              N=1000))
  config.model.embedding = "fourier"
  config.model.fourier_scale = 1.0
  # Fourier features sin, cos(pi f x) of the input with periods of one and half a level (2 / 17):
  # the bound falls from 1.864 to 1.827 bits/dim and the Frechet distance from 3.58 to 2.85
  # (benchmarks/RESULTS.md, "Digits runs").
  config.model.input_fourier = (17.0, 34.0)
  config.loss = ml_collections.ConfigDict(dict(name="vdm", t0=0.0, decoder="discretized", levels=17,
                                               data_range=(-1.0, 1.0)))
  config.eval.evaluators = ["image_samples", "elbo", "bits_per_dim", "frechet", "image_plots"]
  config.eval.elbo = ml_collections.ConfigDict(dict(n_points=297, n_t=16, t0=0.0, decoder="discretized",
                                                    levels=17, data_range=(-1.0, 1.0)))
  return config
