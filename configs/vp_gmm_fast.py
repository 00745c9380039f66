"""VP SDE on the default mixture, sampled with a fitted bespoke solver in 10 network evaluations.

    python run.py --config=configs/vp_gmm_fast.py

Same training as vp_gmm; the sampling group of ve_gmm_fast (the Gaussian start from the training data's
mean and covariance, then a bespoke solver fitted the same way to this SDE), but with all 10 evaluations of
the fit: leaving the first one out, as ve_gmm_fast does, raised two mixtures from 2.9e-3 to 3.2-3.3e-3
nats here. Measured (benchmarks/RESULTS.md, "Samplers: exact KL vs NFE"): with this config's own trained
network 1.1e-3 nats (the network's own 2.1e-3 at 500 NFE); with exact scores 0.01e-3 on the default
mixture and 0.15-3.0e-3 on six others, but 3.6-4.9e-3 on three with modes of standard deviation 0.1-0.15.
"""

from configs import vp_gmm
from configs.ve_gmm_bespoke import with_bespoke_sampling

# The fitted solver (VPSDE beta 0.1..20; benchmarks/sampler_kl.jsonl, fit "bespoke wide set + network,
# gaussian start"): the first evaluation's log-SNR, the next nine, the ratios and the weights row by row.
START_LOG_SNR = -2.775242
TIMESTEPS = [-1.986935, -1.196131, -0.4622898, 0.06428051, 0.5922885, 1.082738, 1.485352, 1.98598, 2.928258]
RATIOS = [0.4560958, 0.4520185, 0.4782328, 0.586003, 0.5804873, 0.610414, 0.6755921, 0.6133931, 0.394607,
          0.5052838]
WEIGHTS = [0.5435869, 0.5440753, 0.002089858, -0.4250331, 0.0002194494, 0.9442587, 0.1503768, -0.001414586,
           -0.5488275, 0.8068875, -0.02180757, -0.001963533, 0.2918452, -0.8076625, 0.9533542, 0.01193679,
           0.0002931146, -0.08222096, 0.502895, -0.9151738, 0.8959782, -0.001919472, 0.005172183, -0.007837093,
           -0.1260294, 0.4527654, -0.6994153, 0.7123352, -0.01319909, 0.005067673, -0.004159261, -0.007699441,
           -0.0548248, 0.1704701, -0.4485636, 0.7120528, -0.006812896, 0.0003287316, 0.0108207, 0.0006549674,
           -0.002423413, -0.002220719, 0.1207511, -0.4731428, 0.9538029, -0.00591224, -0.001334038, 0.01477749,
           0.003024684, -0.002322623, -0.0034864, -0.006027211, -0.005592951, 0.004815334, 0.5086226]


def get_config():
  return with_bespoke_sampling(vp_gmm.get_config(), START_LOG_SNR, TIMESTEPS, RATIOS + WEIGHTS)
