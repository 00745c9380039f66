"""Discrete-time DDPM (Ho et al. 2020) on the default 2-D Gaussian mixture.

    python run.py --config=configs/ddpm_gmm.py

T = 1000 steps of the linear schedule (beta 1e-4..0.02), eps-prediction trained with L_simple
(Algorithm 1), ancestral sampling (Algorithm 2) with sigma_t^2 = beta_tilde_t, NFE = 1000. The eval
outputs are those of the other toy configs (energy distance against the floor, with the model and
with the exact eps of the chain, which the oracle score of `DiscreteVPSDE` gives), plus the
variational bound (Ho et al. Eq. 5) on 1,000 held-out points in eval/summary.json["vlb"]: nats,
bits/dim, its three terms, the same bound with the exact eps, and the true NLL.

Groups: `sde` -> sde_lib.get_sde (name "ddpm" is `ddpm.DiscreteVPSDE`: the chain, N = T steps,
continuous time t = step / T); `model` -> models.get_model (the eps-network, conditioned on
c = step / T; no score-parameterisation fields: `ddpm.get_model_score_fn` is the score);
`loss` -> ddpm.get_ddpm_loss_fn (name "ddpm"); `sampling` -> sampling.get_sampler (method
"ddpm_ancestral"); `vlb` -> ddpm.get_vlb_fn (n_points: eval points).
"""

import ml_collections

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.sde = ml_collections.ConfigDict(dict(name="ddpm", schedule="linear", N=1000))
  config.model = ml_collections.ConfigDict(dict(name="mlp", hidden=64, depth=3, embed_dim=32, fourier_scale=1.0))
  config.loss = ml_collections.ConfigDict(dict(name="ddpm", loss_type="l2", reduce_mean=True))
  config.sampling = ml_collections.ConfigDict(dict(method="ddpm_ancestral", variance="beta_tilde"))
  config.vlb = ml_collections.ConfigDict(dict(n_points=1000, variance="beta_tilde", decoder="gaussian",
                                              n_samples=1, quadrature_order=0))
  return config
