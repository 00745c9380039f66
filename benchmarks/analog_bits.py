"""Analog bits on the 64-category toy: total variation of thresholded samples against the floor.

    python benchmarks/analog_bits.py                                   # the exact score, ~1 min
    python run.py --config=configs/bits_vp.py --workdir=/tmp/bits      # a trained model, then
    python benchmarks/analog_bits.py --workdir=/tmp/bits               # its saved samples
    python benchmarks/analog_bits.py --self-cond --steps 4000          # self-conditioning, ~4 min

Ratio = TV(decoded samples, pi) / the mean TV of --floor-sets sets of as many exact draws. With
the exact score: the PC sampler (reverse diffusion, no corrector, VPSDE beta 0.1..20) at several
N, over --seeds sample sets. With --workdir: every sample set in the latest samples/eval_*.npz
("model", "oracle", "reference"). With --self-cond: the toy MLP (hidden 128, depth 3, as
bits_vp) wrapped by `models.self_cond.SelfConditioned` is trained --steps Adam steps (batch 512,
lr 2e-3) with p_self_cond = 0.5 (Chen et al. 2023) and with p_self_cond = 0 (the same network
that always sees x0_prev = 0), and each is sampled by `sampling.self_cond` ancestral steps with
and without feeding the previous estimate. Prints one JSON line per row.
"""

import argparse
import glob
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import datasets  # noqa: E402
import losses  # noqa: E402
import models  # noqa: E402
import sampling  # noqa: E402
import sde_lib  # noqa: E402
from losses.self_cond import get_self_cond_loss_fn  # noqa: E402
from models.self_cond import SelfConditioned, get_denoiser  # noqa: E402
from sampling.self_cond import get_self_cond_sampler  # noqa: E402


def exact(target, n, seeds, floor_sets):
  floor = target.total_variation_floor(jax.random.key(1), n, floor_sets)
  for N in (20, 50, 200, 500):
    sde = sde_lib.VPSDE(N=N)
    sampler = sampling.get_sampler(sde, (n, target.dim), corrector="none")
    tv = [target.total_variation(sampler(jax.random.key(s), target.score_fn(sde))[0]) for s in range(seeds)]
    print(json.dumps(dict(source="exact score", N=N, n=n, tv=tv, tv_mean=float(np.mean(tv)), floor=floor,
                          ratio=float(np.mean(tv)) / floor)), flush=True)


def saved(target, workdir, floor_sets):
  path = sorted(glob.glob(os.path.join(workdir, "samples", "eval_*.npz")),
                key=lambda p: int(p.rsplit("_", 1)[1][:-4]))[-1]
  arrays = np.load(path)
  for name in arrays:
    x = arrays[name]
    floor = target.total_variation_floor(jax.random.key(1), len(x), floor_sets)
    tv = target.total_variation(x)
    print(json.dumps(dict(source=f"{os.path.basename(path)}: {name}", n=len(x), tv=tv, floor=floor,
                          ratio=tv / floor)), flush=True)


def self_cond(target, n, steps, seeds, floor_sets):
  sde = sde_lib.VPSDE(N=1000)
  floor = target.total_variation_floor(jax.random.key(1), n, floor_sets)
  net = SelfConditioned(models.get_model("mlp", hidden=128, depth=3))
  x0_fn = get_denoiser(sde, net)
  opt = losses.get_optimizer(lr=2e-3, warmup_steps=100, total_steps=steps)
  for p_sc in (0.5, 0.0):
    t0 = time.time()
    params = models.init_params(jax.random.key(0), net, (1, target.dim))
    state = losses.init_train_state(params, opt)
    step = jax.jit(losses.get_train_step_fn(get_self_cond_loss_fn(sde, x0_fn, p_self_cond=p_sc), opt))
    key_data, key_train = jax.random.split(jax.random.key(1))
    for i in range(steps):
      state, metrics = step(state, target.sample(jax.random.fold_in(key_data, i), 512), key_train)
    train_s = time.time() - t0
    bound = jax.tree_util.Partial(x0_fn, state.ema_params)
    for N in (20, 100):
      for feed in ((True, False) if p_sc > 0 else (False,)):
        sampler = get_self_cond_sampler(sde, (n, target.dim), n_steps=N, self_condition=feed)
        tv = [target.total_variation(sampler(jax.random.key(s), bound)[0]) for s in range(seeds)]
        print(json.dumps(dict(source="self-cond MLP", p_self_cond=p_sc, steps=steps, sampler_feeds_x0=feed, N=N,
                              n=n, tv=tv, tv_mean=float(np.mean(tv)), floor=floor, ratio=float(np.mean(tv)) / floor,
                              final_loss=float(metrics["loss"]), train_s=round(train_s, 1))), flush=True)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--n", type=int, default=10_000)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--floor-sets", type=int, default=50)
  p.add_argument("--workdir", default=None)
  p.add_argument("--self-cond", action="store_true")
  p.add_argument("--steps", type=int, default=4000)
  args = p.parse_args()
  target = datasets.get_dataset("bits")
  if args.self_cond:
    self_cond(target, args.n, args.steps, args.seeds, args.floor_sets)
  elif args.workdir:
    saved(target, args.workdir, args.floor_sets)
  else:
    exact(target, args.n, args.seeds, args.floor_sets)


if __name__ == "__main__":
  main()
