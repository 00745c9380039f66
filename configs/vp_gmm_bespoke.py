"""VP SDE on the default mixture, sampled with a bespoke solver in 4 network evaluations.

    python run.py --config=configs/vp_gmm_bespoke.py

Same training as vp_gmm; the sampling group of ve_gmm_bespoke (the Gaussian start from the training data's
moments, then 4 NFE) with the solver fitted to this SDE. Measured (benchmarks/RESULTS.md, "Samplers: exact
KL vs NFE"): exact-score KL 0.22e-3 nats (with the rescaled latent for a start: 0.32e-3); with vp_gmm's
trained network 1.43e-3 (1.85e-3; its own KL at 500 NFE: 2.1e-3).
"""

from configs import ve_gmm_bespoke, vp_gmm

# The fitted solver (VPSDE beta 0.1..20; benchmarks/sampler_kl.jsonl, fit "bespoke 2d default, gaussian start").
START_LOG_SNR = -1.648026
TIMESTEPS = [-0.4640474, 0.575326, 2.166308]
COEFFICIENTS = [0.3406684, 0.3519864, 0.1609662, 0.4081981] + \
    [0.5903882, -0.3042494, 1.083339, 0.0285091, -0.7157851, 1.405451, 0.117429, -0.03820255, 0.06401221, 0.452396]


def get_config():
  return ve_gmm_bespoke.with_bespoke_sampling(vp_gmm.get_config(), START_LOG_SNR, TIMESTEPS, COEFFICIENTS)
