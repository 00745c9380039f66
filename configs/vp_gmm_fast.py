"""VP SDE on the default mixture, sampled with UniPC-3 on a fitted log-SNR grid in 10 network evaluations.

    python run.py --config=configs/vp_gmm_fast.py

Same training as vp_gmm; the sampling group of ve_gmm_fast (9 UniPC-3 steps to sigma_edm = 0.05,
then the Euler step in sigma^2 to sigma = 0) on the grid fitted to this SDE.
Measured figures: benchmarks/RESULTS.md ("Samplers: exact KL vs NFE").
"""

from configs import ve_gmm_fast, vp_gmm

# The interior log-SNRs of the fitted 9-step grid (VPSDE beta 0.1..20; benchmarks/sampler_kl.jsonl,
# grid "fitted set + network").
TIMESTEPS = [-2.8689, -1.3324, -0.5963, -0.0410, 0.5540, 1.1178, 1.5601, 2.2067]


def get_config():
  config = vp_gmm.get_config()
  config.sampling = ve_gmm_fast.fast_sampling(TIMESTEPS)
  config.eval.n_trajectory = 0  # the fast samplers return no trajectory (plots skip that panel)
  return config
