"""VE SDE on the default 2-D Gaussian mixture: the default run.

    python run.py --config=configs/ve_gmm.py

Trains the MLP score network for 5,000 steps, samples 10,000 points with the PC sampler
(reverse diffusion + annealed Langevin), and compares them and the oracle-score samples
with the truth. On a 2-core CPU it finishes in under 2 minutes; `eval/summary.json`
reports an energy distance within 1.5x of its floor (figures in README.md).
sigma_max = 100 keeps the prior's neglect of the data mean small for the SDE and ODE samplers.
"""

from configs.default_toy import get_default_configs


def get_config():
  return get_default_configs()
