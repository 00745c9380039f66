"""VP SDE on the default mixture, sampled with the probability-flow ODE (adaptive Tsit5).

    python run.py --config=configs/vp_gmm_ode.py
"""

from configs import vp_gmm, ve_gmm_ode


def get_config():
  config = vp_gmm.get_config()
  config.sampling = ve_gmm_ode.get_config().sampling
  return config
