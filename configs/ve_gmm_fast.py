"""VE SDE on the default mixture, sampled with UniPC-3 on a fitted log-SNR grid in 10 network evaluations.

    python run.py --config=configs/ve_gmm_fast.py

Same training as ve_gmm; sampling takes 9 UniPC steps (UniP-3 + UniC, B(h) = e^h - 1, lower orders
in the last two steps) from T down to sigma_t / alpha_t = sigma_end = 0.05, then the step to
sigma = 0 as the Euler step in sigma^2, x = (x / alpha + x0_hat) / 2 (`denoise_step="half"`,
`sampling.schedules.denoise_to_zero`): 10 NFE instead of the PC sampler's 1,001. The grid was fitted
to this SDE by minimising the mean log exact sampler KL over four mixtures at once (2-D and 3-D,
broad and narrow modes) with their exact scores and over the default mixture with a trained network
of another seed (`sampling.grid_opt.optimise_grid`, `benchmarks/sampler_kl.py`, grid "fitted set +
network"): a grid fitted to exact scores alone steps too far at high noise for a learned score.
Measured exact-score KL per mixture, fitted on and held out: benchmarks/RESULTS.md ("Samplers:
exact KL vs NFE"); mixtures with modes of standard deviation 0.1-0.2 stay above 0.003 nats at 10 NFE.
"""

import ml_collections

from configs.default_toy import get_default_configs

# The interior log-SNRs of the fitted 9-step grid (VESDE sigma 0.01..100; benchmarks/sampler_kl.jsonl,
# grid "fitted set + network").
TIMESTEPS = [-2.9221, -1.2484, -0.5465, 0.0743, 0.5994, 1.1541, 1.5926, 2.2178]


def fast_sampling(timesteps) -> ml_collections.ConfigDict:
  """The sampling group shared with vp_gmm_fast (sampling.get_unipc_sampler), on a given grid."""
  return ml_collections.ConfigDict(dict(
      method="unipc", order=3, variant="bh2", n_steps=10, schedule="custom", timesteps=list(timesteps),
      lower_order_final=True, denoise=True, denoise_step="half", sigma_end=0.05))


def get_config():
  config = get_default_configs()
  config.sampling = fast_sampling(TIMESTEPS)
  config.eval.n_trajectory = 0  # the fast samplers return no trajectory (plots skip that panel)
  return config
