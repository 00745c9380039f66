"""Discrete-time DDPM (Ho et al. 2020) on the default 2-D Gaussian mixture.

    python run.py --config=configs/ddpm_gmm.py

T = 1000 steps of the linear schedule (beta 1e-4..0.02), eps-prediction trained with L_simple
(Algorithm 1), ancestral sampling (Algorithm 2) with sigma_t^2 = beta_tilde_t, NFE = 1000. The eval
outputs are those of the other toy configs (energy distance against the floor, with the model and
with the exact eps of the chain, which the oracle score of `DiscreteVPSDE` gives), plus the
variational bound (Ho et al. Eq. 5) on 1,000 held-out points in eval/summary.json["vlb"]: nats,
bits/dim, its three terms, the same bound with the exact eps, and the true NLL.

Overrides of the toy defaults: `sde` name "ddpm" (`sde_lib.DiscreteVPSDE`: the chain, N = T steps,
continuous time t = step / T); the eps-network sees x_t unscaled, conditioned on c = step / T;
`loss` name "ddpm" (`losses.get_ddpm_loss_fn`); `sampling` method "ddpm_ancestral"; the "vlb"
evaluator with its eval.vlb fields (`likelihood.get_vlb_fn`; n_points: eval points).
"""

import ml_collections

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.sde = ml_collections.ConfigDict(dict(name="ddpm", schedule="linear", N=1000))
  config.model.input_scaling = False  # Ho et al.: the network sees x_t itself (conditioning "auto" is t)
  config.loss = ml_collections.ConfigDict(dict(name="ddpm", loss_type="l2", reduce_mean=True))
  config.sampling = ml_collections.ConfigDict(dict(method="ddpm_ancestral", variance="beta_tilde"))
  config.eval.evaluators = ["samples", "score_error", "likelihood", "vlb", "plots"]
  config.eval.vlb = dict(n_points=1000, variance="beta_tilde", decoder="gaussian", n_samples=1, quadrature_order=0)
  return config
