"""Sub-VP SDE (beta from 0.1 to 20) on the default 2-D Gaussian mixture.

    python run.py --config=configs/subvp_gmm.py
"""

import ml_collections

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.sde = ml_collections.ConfigDict(dict(name="subvpsde", beta_min=0.1, beta_max=20.0, N=500))
  return config
