"""Analog bits on the 64-category toy: total variation of thresholded samples against the floor.

    python benchmarks/analog_bits.py                                   # the exact score, ~1 min
    python run.py --config=configs/bits_vp.py --workdir=/tmp/bits      # a trained model, then
    python benchmarks/analog_bits.py --workdir=/tmp/bits               # its saved samples

Ratio = TV(decoded samples, pi) / the mean TV of --floor-sets sets of as many exact draws. With
the exact score: the PC sampler (reverse diffusion, no corrector, VPSDE beta 0.1..20) at several
N, over --seeds sample sets. With --workdir: every sample set in the latest samples/eval_*.npz
("model", "oracle", "reference"). Prints one JSON line per row.
"""

import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import datasets  # noqa: E402
import sampling  # noqa: E402
import sde_lib  # noqa: E402


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


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--n", type=int, default=10_000)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--floor-sets", type=int, default=50)
  p.add_argument("--workdir", default=None)
  args = p.parse_args()
  target = datasets.get_dataset("bits")
  if args.workdir:
    saved(target, args.workdir, args.floor_sets)
  else:
    exact(target, args.n, args.seeds, args.floor_sets)


if __name__ == "__main__":
  main()
