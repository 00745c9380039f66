"""Subspace diffusion (Jing et al. 2022) on the planar target: a 2-D Gaussian mixture in a plane of
R^3 plus orthogonal N(0, 0.05^2) noise (`datasets.PlanarMixture`), VE SDE, sampled by the subspace PC
sampler (`sampling.subspace`): reverse diffusion + ALD in the plane's coordinates from T to
t_switch = 0.5, the orthogonal component drawn from its Gaussian marginal there, the full space below.

    python run.py --config=configs/subspace_gmm.py

Trains the default MLP on the 3-D data (5,000 steps) and samples 10,000
points with the subspace sampler (1,001 NFE: 500 in the plane, 501 in R^3): the model's
subspace score is the projection U^T s(U y + alpha_t m_perp, t) of its full score (exact for this
target, whose orthogonal part is independent of y); `eval.oracle` samples with the exact score the same
way. perp_var is the data's orthogonal variance (0.05^2). The exact-score comparison with the full-space
samplers (energy ratio, exact KL, NFE, the orthogonal Fisher divergence and t_switch) is
benchmarks/subspace.py. Measured (2-core CPU, shared): 3 min 39 s; energy ratio 2.54 with the model and
1.02 with the exact score (benchmarks/RESULTS.md, "Subspace diffusion").
"""

import ml_collections

from configs.default_toy import get_default_configs
from datasets.subspace import PLANE_BASIS


def get_config():
  config = get_default_configs()
  config.data = ml_collections.ConfigDict(dict(name="planar_gmm", perp_std=0.05))
  config.sampling = ml_collections.ConfigDict(dict(
      method="subspace_pc", subspace=dict(name="matrix", basis=[list(r) for r in PLANE_BASIS]),
      t_switch=0.5, perp_mean=0.0, perp_var=0.05**2, predictor="reverse_diffusion", corrector="ald",
      snr=0.16, n_steps=1, probability_flow=False, denoise=True, eps=1e-3))
  config.eval = ml_collections.ConfigDict(dict(
      evaluators=["samples", "score_error"], n_samples=10_000, n_floor_pairs=10,
      score_error_samples=2048, sw_projections=32, oracle=True))
  return config
