"""VE SDE on the default mixture, sampled with DPM-Solver++(2M) in 10 network evaluations.

    python run.py --config=configs/ve_gmm_fast.py

Same training as ve_gmm; sampling takes 9 DPM-Solver++(2M) steps on the uniform log-SNR grid from
T down to sigma_t / alpha_t = sigma_end = 0.1, then the step to sigma = 0 (x = x0_hat, Tweedie):
10 NFE instead of the PC sampler's 1,001.
Measured figures: benchmarks/RESULTS.md ("Samplers").
"""

import ml_collections

from configs.default_toy import get_default_configs


def fast_sampling() -> ml_collections.ConfigDict:
  """The sampling group shared with vp_gmm_fast (sampling.get_dpm_solver_sampler)."""
  return ml_collections.ConfigDict(dict(
      method="dpm_solver_2m", n_steps=10, schedule="log_snr", lower_order_final=True,
      denoise=True, sigma_end=0.1))


def get_config():
  config = get_default_configs()
  config.sampling = fast_sampling()
  config.eval.n_trajectory = 0  # the fast samplers return no trajectory (plots skip that panel)
  return config
