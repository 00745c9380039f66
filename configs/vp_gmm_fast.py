"""VP SDE on the default mixture, sampled with DPM-Solver++(2M) in 10 network evaluations.

    python run.py --config=configs/vp_gmm_fast.py

Same training as vp_gmm; the sampling group of ve_gmm_fast (9 steps on the uniform log-SNR grid
to sigma_edm = 0.1, then the step to sigma = 0).
Measured figures: benchmarks/RESULTS.md ("Samplers").
"""

from configs import ve_gmm_fast, vp_gmm


def get_config():
  config = vp_gmm.get_config()
  config.sampling = ve_gmm_fast.fast_sampling()
  config.eval.n_trajectory = 0  # the fast samplers return no trajectory (plots skip that panel)
  return config
