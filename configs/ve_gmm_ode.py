"""VE SDE on the default mixture, sampled with the probability-flow ODE (adaptive Tsit5).

    python run.py --config=configs/ve_gmm_ode.py

Same training as ve_gmm; sampling integrates dx/dt = f - g^2 s / 2 from T to eps with
diffrax at rtol = atol = 1e-5 (about 100 network evaluations instead of 2,001).
"""

import ml_collections

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.sampling = ml_collections.ConfigDict(dict(
      method="ode", solver="tsit5", rtol=1e-5, atol=1e-5,
      n_steps=ml_collections.config_dict.placeholder(int), denoise=False, eps=1e-3, max_steps=4096))
  return config
