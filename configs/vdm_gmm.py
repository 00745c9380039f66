"""Variational diffusion on the default 2-D Gaussian mixture: a learned log-SNR schedule
(sde_lib.LearnedLogSNRSDE, VDM App. H) trained with the network on the continuous-time bound.

    python run.py --config=configs/vdm_gmm.py

The network (the toy MLP, conditioned on -log SNR / 2) and the schedule's endpoints descend the
bound (losses.vdm, in nats per dimension); the schedule's shape descends the variance of its
estimate. Sampling, likelihood and plots use the schedule of the evaluated checkpoint.
"""

import ml_collections

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  # Endpoints: sigma(0)^2 = sigmoid(-10) = 4.5e-5 (the data's components are ~0.1 wide), and
  # alpha(1)^2 = sigmoid(-6) = 2.5e-3 of signal left at T. Both are then learned.
  config.sde = ml_collections.ConfigDict(dict(name="learned_logsnr", gamma_min=-10.0, gamma_max=6.0, hidden=256,
                                              N=500))
  config.loss = ml_collections.ConfigDict(dict(name="vdm", t0=0.0, decoder="gaussian"))
  # The bound on 1,000 fresh points (16 stratified times each) beside the ODE likelihood.
  config.eval.evaluators = ["samples", "score_error", "likelihood", "elbo", "plots"]
  config.eval.elbo = ml_collections.ConfigDict(dict(n_points=1000, n_t=16, t0=0.0))
  return config
