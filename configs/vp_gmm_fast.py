"""VP SDE on the default mixture, sampled with a fitted bespoke solver in 10 network evaluations.

    python run.py --config=configs/vp_gmm_fast.py

Same training as vp_gmm; the sampling group of ve_gmm_fast (a 10-NFE bespoke solver with a free
start) fitted the same way to this SDE. Measured (benchmarks/RESULTS.md, "Samplers: exact KL vs NFE"):
with this config's own trained network 2.2e-3 nats (the earlier UniPC-3 setting 3.6e-3 +- 1.0e-3, the
network's own 2.1e-3 at 500 NFE); with exact scores 0.5e-3 on the default mixture and 0.5-6.9e-3 on
mixtures it was not fitted on (UniPC-3: 0.3-8.3e-3).
"""

from configs import vp_gmm
from configs.ve_gmm_bespoke import bespoke_sampling

# The fitted solver (VPSDE beta 0.1..20; benchmarks/sampler_kl.jsonl, fit "bespoke set + network,
# free start"): the first evaluation's log-SNR, the next nine, the ratios and the weights row by row.
START_LOG_SNR = -4.919166
TIMESTEPS = [-2.847659, -1.321826, -0.6094818, -0.08142233, 0.4802995, 0.999517, 1.422327, 1.978942, 2.89082]
RATIOS = [0.1253354, 0.2165191, 0.4862404, 0.5808385, 0.5646537, 0.6044167, 0.6655071, 0.5802068, 0.406892,
          0.5049918]
WEIGHTS = [0.8640513, -0.385811, 1.135883, 0.1559641, -0.609917, 0.917178, -0.04381737, 0.1683178, -0.5656349,
           0.8020566, -0.001059575, -0.02705747, 0.2900099, -0.8319584, 0.9979087, 0.02394865, 0.01474842,
           -0.06906948, 0.5043609, -0.9207578, 0.9295775, 0.01457141, 0.007699949, 0.0005168937, -0.1309374,
           0.4463205, -0.7074789, 0.7305441, -0.007907518, -0.005261181, 0.0005808694, -0.01323927,
           -0.06113217, 0.1633192, -0.4864666, 0.7805177, -0.01483122, -0.001581005, 0.01440694, -0.001418812,
           -0.001507143, -0.00490366, 0.1219917, -0.3862012, 0.8576668, -0.0155626, 0.0003280504, 0.0182904,
           0.001808649, 0.0006067584, -0.004863791, -0.004206847, -0.002536929, 0.005312898, 0.5077998]


def get_config():
  config = vp_gmm.get_config()
  config.sampling = bespoke_sampling(START_LOG_SNR, TIMESTEPS, RATIOS + WEIGHTS)
  config.eval.n_trajectory = 0  # the bespoke solver returns no trajectory (plots skip that panel)
  return config
