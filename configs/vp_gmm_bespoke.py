"""VP SDE on the default mixture, sampled with a bespoke solver in 4 network evaluations.

    python run.py --config=configs/vp_gmm_bespoke.py

Same training as vp_gmm; the sampling group of ve_gmm_bespoke with the solver fitted to this SDE.
Measured (benchmarks/RESULTS.md, "Samplers: exact KL vs NFE"): exact-score KL 0.32e-3 nats; with
vp_gmm's trained network 1.85e-3 (its own KL at 500 NFE: 2.1e-3).
"""

from configs import ve_gmm_bespoke, vp_gmm

# The fitted solver (VPSDE beta 0.1..20; benchmarks/sampler_kl.jsonl, fit "bespoke 2d default, free start").
START_LOG_SNR = -1.793828
TIMESTEPS = [-0.4770765, 0.4782076, 1.780099]
COEFFICIENTS = [0.2962172, 0.3833783, 0.2345819, 0.4017504] + \
    [0.956529, -0.2193001, 0.9932594, 0.0009946979, -0.6040461, 1.235578, 0.08701219, -0.03968223, 0.06498515, 0.4894627]


def get_config():
  config = vp_gmm.get_config()
  config.sampling = ve_gmm_bespoke.bespoke_sampling(START_LOG_SNR, TIMESTEPS, COEFFICIENTS)
  config.eval.n_trajectory = 0  # the bespoke solver returns no trajectory (plots skip that panel)
  return config
