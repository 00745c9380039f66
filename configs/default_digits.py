"""Shared defaults for the 8x8 sklearn digits (1,500 train / 297 test images, 17 grey levels).

Groups are named by their consumer: `sde` -> sde_lib.get_sde, `data` -> datasets.get_dataset
("digits": scaled to [-1, 1] with uniform dequantisation), `model` -> models.get_model ("unet")
(models.get_score_model), `loss` -> losses.get_loss_fn, `optim` -> losses.get_optimizer,
`training` -> the train loop, `sampling` -> sampling.get_sampler (DPM-Solver++ 2M, 50 steps,
for the eval samples), `likelihood` -> likelihood.get_likelihood_fn (bits/dim on the test
split), `eval` -> the evaluators it names (evaluators/images.py), whose `classifier` field
goes to evaluators.features.train_digits_classifier (the feature network of the Frechet distance).
Sized for a 2-core CPU: train and eval finish in under 20 minutes.
"""

import ml_collections


def get_default_configs() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.sde = ml_collections.ConfigDict(dict(name="vpsde", beta_min=0.1, beta_max=20.0, N=1000))
  config.data = ml_collections.ConfigDict(dict(name="digits", data_range="[-1,1]", dequantize=True,
                                               random_flip=False))

  # A small DDPM++ U-Net: 8x8 (16 ch) -> 4x4 (32 ch, with self-attention), one block per level.
  config.model = ml_collections.ConfigDict(dict(
      name="unet", ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
      resblock_skip_rescale=True, embedding="sinusoidal", fourier_scale=16.0, num_groups=8,
      num_classes=0, parameterization="eps", conditioning="auto", input_scaling=True))
  config.loss = ml_collections.ConfigDict(dict(reduce_mean=False, likelihood_weighting=False, eps=1e-5))
  config.optim = ml_collections.ConfigDict(dict(
      lr=2e-3, warmup_steps=200, schedule="cosine", final_lr_ratio=0.05, grad_clip=1.0,
      beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0))

  # device_loop=False: one jitted step per dispatch, for XLA:CPU (docs/architecture.md).
  # On accelerators set it to True.
  config.training = ml_collections.ConfigDict(dict(
      batch_size=128, n_iters=4000, log_freq=100, checkpoint_freq=1000, snapshot_freq=2000,
      ema_rate=0.999, ema_warmup=True, device_loop=False))

  config.sampling = ml_collections.ConfigDict(dict(
      method="dpm_solver", order=2, n_steps=50, schedule="log_snr", eps=1e-3, lower_order_final=True))

  # Bits/dim by the probability-flow ODE with a Rademacher trace estimate (1 JVP per evaluation).
  config.likelihood = ml_collections.ConfigDict(dict(
      hutchinson_type="rademacher", rtol=1e-4, atol=1e-4, solver="tsit5", eps=1e-5,
      n_steps=ml_collections.config_dict.placeholder(int), max_steps=4096))

  # n_samples = 1,500 (the train split's size), so the model-vs-test and train-vs-test (floor)
  # Frechet distances are computed from sets of the same sizes and share the same bias.
  config.eval = ml_collections.ConfigDict(dict(
      evaluators=["image_samples", "bits_per_dim", "frechet", "image_plots"],
      n_samples=1500, n_grid=100, nll_samples=297, nll_batch_size=297,
      classifier=ml_collections.ConfigDict(dict(n_steps=600, batch_size=128, learning_rate=2e-3,
                                                feature_dim=64))))
  return config
