"""The VE SDE dx = lam^t dW with lam = 25 on the default 2-D Gaussian mixture.

    python run.py --config=configs/lambda_ve_gmm.py

sigma(t)^2 = (lam^{2t} - 1) / (2 ln lam): no noise at t = 0, prior std about 9.8.
"""

import ml_collections

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.sde = ml_collections.ConfigDict(dict(name="lambda_vesde", lam=25.0, N=500))
  return config
