"""VP SDE on the default mixture, sampled with UniPC on a fitted log-SNR grid in 10 network evaluations.

    python run.py --config=configs/vp_gmm_fast.py

Same training as vp_gmm; the sampling group of ve_gmm_fast (9 UniPC steps to sigma_edm = 0.1, then
the step to sigma = 0) on the grid fitted to this SDE.
Measured figures: benchmarks/RESULTS.md ("Samplers: exact KL vs NFE").
"""

from configs import ve_gmm_fast, vp_gmm

# The interior log-SNRs of the fitted 9-step grid (VPSDE beta 0.1..20; benchmarks/sampler_kl.jsonl).
TIMESTEPS = [-3.5097, -1.8990, -1.1105, -0.4664, 0.1859, 0.7307, 1.1755, 1.7426]


def get_config():
  config = vp_gmm.get_config()
  config.sampling = ve_gmm_fast.fast_sampling(TIMESTEPS)
  config.eval.n_trajectory = 0  # the fast samplers return no trajectory (plots skip that panel)
  return config
