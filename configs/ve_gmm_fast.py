"""VE SDE on the default mixture, sampled with UniPC on a fitted log-SNR grid in 10 network evaluations.

    python run.py --config=configs/ve_gmm_fast.py

Same training as ve_gmm; sampling takes 9 UniPC steps (UniP-2 + UniC, B(h) = e^h - 1) on a log-SNR
grid fitted to this SDE by minimising the exact sampler KL on the default mixture
(`sampling.grid_opt.optimise_grid`, benchmarks/sampler_kl.py) from T down to
sigma_t / alpha_t = sigma_end = 0.1, then the step to sigma = 0 (x = x0_hat, Tweedie):
10 NFE instead of the PC sampler's 1,001.
Measured figures: benchmarks/RESULTS.md ("Samplers: exact KL vs NFE").
"""

import ml_collections

from configs.default_toy import get_default_configs

# The interior log-SNRs of the fitted 9-step grid (VESDE sigma 0.01..100; benchmarks/sampler_kl.jsonl).
TIMESTEPS = [-3.1505, -1.7167, -1.0670, -0.4093, 0.2254, 0.7377, 1.1723, 1.7503]


def fast_sampling(timesteps) -> ml_collections.ConfigDict:
  """The sampling group shared with vp_gmm_fast (sampling.get_unipc_sampler), on a given grid."""
  return ml_collections.ConfigDict(dict(
      method="unipc", order=2, variant="bh2", n_steps=10, schedule="custom", timesteps=list(timesteps),
      lower_order_final=True, denoise=True, sigma_end=0.1))


def get_config():
  config = get_default_configs()
  config.sampling = fast_sampling(TIMESTEPS)
  config.eval.n_trajectory = 0  # the fast samplers return no trajectory (plots skip that panel)
  return config
