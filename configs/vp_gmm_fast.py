"""VP SDE on the default mixture, sampled with a fitted bespoke solver in 9 network evaluations.

    python run.py --config=configs/vp_gmm_fast.py

Same training as vp_gmm; the sampling group of ve_gmm_fast (the Gaussian start from the training data's
mean and covariance, then a 9-NFE bespoke solver: the 10-NFE solver fitted the same way to this SDE, its
first evaluation left out). Measured (benchmarks/RESULTS.md, "Samplers: exact KL vs NFE"): with this
config's own trained network 1.3e-3 nats (the 10-NFE solver 2.2e-3, the network's own 2.1e-3 at 500 NFE);
with exact scores as at 10 NFE: 0.4e-3 on the default mixture and 0.6-13e-3 on the others.
"""

from configs import vp_gmm
from configs.ve_gmm_bespoke import bespoke_sampling

# The fitted solver (VPSDE beta 0.1..20; benchmarks/sampler_kl.jsonl, fit "bespoke set + network, free
# start") without its first evaluation: the first evaluation's log-SNR, the next eight, the ratios and the
# weights row by row.
START_LOG_SNR = -2.847659
TIMESTEPS = [-1.321826, -0.6094818, -0.08142233, 0.4802995, 0.999517, 1.422327, 1.978942, 2.89082]
RATIOS = [0.2165191, 0.4862404, 0.5808385, 0.5646537, 0.6044167, 0.6655071, 0.5802068, 0.406892, 0.5049918]
WEIGHTS = [0.750072, -0.4539529, 0.917178, 0.1245004, -0.5656349, 0.8020566, -0.02811705, 0.2900099,
           -0.8319584, 0.9979087, 0.03869707, -0.06906948, 0.5043609, -0.9207578, 0.9295775, 0.02227136,
           0.0005168937, -0.1309374, 0.4463205, -0.7074789, 0.7305441, -0.0131687, 0.0005808694, -0.01323927,
           -0.06113217, 0.1633192, -0.4864666, 0.7805177, -0.01641222, 0.01440694, -0.001418812, -0.001507143,
           -0.00490366, 0.1219917, -0.3862012, 0.8576668, -0.01523455, 0.0182904, 0.001808649, 0.0006067584,
           -0.004863791, -0.004206847, -0.002536929, 0.005312898, 0.5077998]


def get_config():
  config = vp_gmm.get_config()
  config.sampling = bespoke_sampling(START_LOG_SNR, TIMESTEPS, RATIOS + WEIGHTS, start_moments="data")
  config.eval.n_trajectory = 0  # the bespoke solver returns no trajectory (plots skip that panel)
  return config
