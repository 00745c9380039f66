"""sub-VP SDE (beta 0.1 to 20) on the 8x8 sklearn digits; otherwise as vp_digits.

    python run.py --config=configs/subvp_digits.py
"""

import ml_collections

from configs.default_digits import get_default_configs


def get_config():
  config = get_default_configs()
  config.sde = ml_collections.ConfigDict(dict(name="subvpsde", beta_min=0.1, beta_max=20.0, N=1000))
  return config
