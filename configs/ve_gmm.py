"""VE SDE on the default 2-D Gaussian mixture: the default run.

    python run.py --config=configs/ve_gmm.py

Trains the MLP score network for 5,000 steps, samples 10,000 points with the PC sampler
(reverse diffusion + annealed Langevin), and compares them and the oracle-score samples
with the truth; `eval/summary.json` reports the energy distance against its floor (measured
figures: README.md, "The default run").
"""

from configs.default_toy import get_default_configs


def get_config():
  return get_default_configs()
