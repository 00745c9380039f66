"""VE SDE on the default mixture, sampled with a bespoke solver in 4 network evaluations.

    python run.py --config=configs/ve_gmm_bespoke.py

Same training as ve_gmm; sampling with a bespoke non-stationary solver (`sampling.bespoke`): 4 model
evaluations, the first at a fitted noise level on the rescaled prior latent (`start_log_snr`), each next
state a fitted combination of the state and of every x0_hat so far. Its points and weights were fitted to
the exact KL on this mixture with the exact score (`sampling.grid_opt.optimise_bespoke`, free_start=True;
benchmarks/sampler_kl.py, fit "bespoke 2d default, free start"). Measured (benchmarks/RESULTS.md, "Samplers:
exact KL vs NFE"): exact-score KL 0.34e-3 nats; with ve_gmm's trained network 1.7e-3, the network's own
KL at 500 NFE. It is fitted to this mixture: on mixtures of narrow modes it is far worse than
ve_gmm_fast (0.6-0.8 nats on "3d narrow" and "2d ring").
"""

import ml_collections

from configs.default_toy import get_default_configs

# The fitted solver (VESDE sigma 0.01..100; benchmarks/sampler_kl.jsonl): evaluation log-SNRs, then
# the ratios r_0..r_3 and the weights w_ij (j <= i) row by row.
START_LOG_SNR = -1.779614
TIMESTEPS = [-0.4805388, 0.4098253, 1.488358]
COEFFICIENTS = [0.2991084, 0.4109848, 0.2944907, 0.403404] + \
    [0.9503883, -0.205979, 0.9635409, -0.00532682, -0.5106018, 1.095277, 0.07560711, -0.05953876, 0.06687819, 0.5135587]


def bespoke_sampling(start_log_snr, timesteps, coefficients, start_moments=None) -> ml_collections.ConfigDict:
  """The sampling group shared with vp_gmm_bespoke and the fast configs (sampling.get_bespoke_sampler;
  start_moments="data": the Gaussian start from the training data's mean and covariance)."""
  fields = dict(method="bespoke", n_steps=len(timesteps) + 1, start_log_snr=start_log_snr,
                timesteps=list(timesteps), coefficients=list(coefficients))
  return ml_collections.ConfigDict(dict(fields, start_moments=start_moments) if start_moments else fields)


def get_config():
  config = get_default_configs()
  config.sampling = bespoke_sampling(START_LOG_SNR, TIMESTEPS, COEFFICIENTS)
  config.eval.n_trajectory = 0  # the bespoke solver returns no trajectory (plots skip that panel)
  return config
