"""DDPM++ (Song et al. 2021, Table 3, "DDPM++ cont. (VP)", scaled down in depth) on CIFAR-10
from a user-supplied .npz, for accelerators.

    python run.py --config=configs/cifar10_ddpmpp.py --config.data.path=/data/cifar10.npz

The file holds x (uint8 [50000, 32, 32, 3]) and, optionally, y, x_test (uint8
[10000, 32, 32, 3]) and y_test; nothing is downloaded. Images are scaled to [-1, 1] with
uniform dequantisation and random horizontal flips. Eval: 10,000 samples with DPM-Solver++ 2M
(50 NFE), a sample grid, and bits/dim on 1,000 test images (Hutchinson). The digits Frechet
distance does not apply.
"""

import ml_collections

from configs.default_digits import get_default_configs


def get_config():
  config = get_default_configs()
  config.data = ml_collections.ConfigDict(dict(
      name="npz", path="", data_range="[-1,1]", dequantize=True, random_flip=True, levels=256, n_test=10000))
  config.model.update(dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), dropout=0.1,
                           num_groups=32))
  config.optim.update(dict(lr=2e-4, warmup_steps=5000, schedule="constant", final_lr_ratio=1.0))
  config.training.update(dict(n_iters=1_300_000, checkpoint_freq=10_000, snapshot_freq=50_000, ema_rate=0.9999,
                              device_loop=True))
  config.eval.evaluators = ["image_samples", "bits_per_dim", "image_plots"]
  config.eval.update(dict(n_samples=10_000, n_grid=64, nll_samples=1000, nll_batch_size=250))
  del config.eval["classifier"]
  return config
