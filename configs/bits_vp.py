"""Analog bits (Chen, Zhang & Hinton 2023) on a categorical toy: 64 categories with
probabilities pi_k ∝ 0.95^k, each as 6 bits in {-1, +1}; VP SDE, the toy MLP.

    python run.py --config=configs/bits_vp.py

Samples are decoded by thresholding each bit at 0 (`datasets.AnalogBits.decode`); their total
variation to pi against the floor of as many exact draws is `AnalogBits.total_variation` /
`total_variation_floor`, reported by the `bits_tv` evaluator (figures in benchmarks/RESULTS.md,
"Analog bits"). The evaluators also report the energy distance of the undecoded samples as for
every toy target.
"""

import ml_collections

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.sde = ml_collections.ConfigDict(dict(name="vpsde", beta_min=0.1, beta_max=20.0, N=500))
  config.data = ml_collections.ConfigDict(dict(name="bits", n_bits=6, decay=0.95))
  config.eval.evaluators = ["samples", "bits_tv", "score_error", "plots"]
  del config.eval["nll_samples"]  # point masses: no density at t = 0
  return config
