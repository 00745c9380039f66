"""Shared defaults for the low-dimensional toy experiments (targets with exact scores).

Groups are named by their consumer: `sde` -> sde_lib.get_sde, `data` -> datasets.get_dataset,
`model` -> models.get_model / models.get_score_fn, `loss` -> losses.get_sde_loss_fn,
`optim` -> losses.get_optimizer, `training` -> the train loop, `sampling` -> sampling.get_sampler,
`eval` -> the eval loop. Every field is passed on by name, so a misspelt field fails at build time.
"""

import ml_collections

from datasets import DEFAULT_COVS, DEFAULT_MEANS, DEFAULT_WEIGHTS


def get_default_configs() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # sigma_max = 100: the prior N(0, sigma_max^2) ignores the data mean m = (1, 0); the
  # probability-flow ODE carries that start offset to ~|m| / sigma_max at the data (measured:
  # 0.02 at sigma_max = 50, enough to fail 1.5x the energy floor on some seeds).
  config.sde = ml_collections.ConfigDict(dict(name="vesde", sigma_min=0.01, sigma_max=100.0, N=500))
  config.data = ml_collections.ConfigDict(dict(
      name="gmm", means=[list(m) for m in DEFAULT_MEANS],
      covs=[[list(r) for r in c] for c in DEFAULT_COVS], weights=list(DEFAULT_WEIGHTS)))

  config.model = ml_collections.ConfigDict(dict(
      name="mlp", hidden=64, depth=3, embed_dim=32, fourier_scale=1.0,
      parameterization="eps", conditioning="auto", input_scaling=True))
  config.loss = ml_collections.ConfigDict(dict(reduce_mean=False, likelihood_weighting=False, eps=1e-5))
  config.optim = ml_collections.ConfigDict(dict(
      lr=3e-3, warmup_steps=200, schedule="cosine", final_lr_ratio=0.01, grad_clip=1.0,
      beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0))

  config.training = ml_collections.ConfigDict(dict(
      batch_size=512, n_iters=5000, log_freq=250, checkpoint_freq=1000, snapshot_freq=2500,
      ema_rate=0.999, ema_warmup=True))

  # PC sampler. On 2-D targets the corrector is `ald` (x-independent Langevin steps):
  # per-sample snr steps (`langevin`) are biased in low dimension (see sampling.langevin).
  config.sampling = ml_collections.ConfigDict(dict(
      method="pc", predictor="reverse_diffusion", corrector="ald", snr=0.16, n_steps=1,
      probability_flow=False, denoise=True, eps=1e-3))

  # Exact log-likelihood through the probability-flow ODE (likelihood.get_likelihood_fn).
  config.likelihood = ml_collections.ConfigDict(dict(
      hutchinson_type="exact", rtol=1e-5, atol=1e-5, method="tsit5", eps=1e-5,
      n_steps=ml_collections.config_dict.placeholder(int), max_steps=4096))

  config.eval = ml_collections.ConfigDict(dict(
      n_samples=10_000, n_floor_pairs=10, n_trajectory=50, n_trajectory_samples=256,
      score_error_samples=2048, nll_samples=1000, sw_projections=32, oracle=True, plots=True))
  return config
