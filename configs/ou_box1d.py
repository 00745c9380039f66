"""Ornstein-Uhlenbeck SDE (B = 1, R = 1) on the 1-D two-box target [-2, -1] U [1, 2].

    python run.py --config=configs/ou_box1d.py

T = 5: p_T differs from the prior N(0, (1 - e^{-10}) / 2) only through the data's
second moment scaled by e^{-2BT} = 4.5e-5, far below what 10,000 samples can resolve.
"""

import ml_collections

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.sde = ml_collections.ConfigDict(dict(name="ousde", B=1.0, R=1.0, T=5.0, N=500))
  config.data = ml_collections.ConfigDict(dict(name="box1d", intervals=[[-2.0, -1.0], [1.0, 2.0]]))
  return config
