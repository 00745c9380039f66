"""Held-out-seed check of the 10-NFE fast-sampler settings chosen on seeds 0-2 (benchmarks/samplers.py).

    python benchmarks/samplers_heldout.py

Oracle score, 10,000 samples, seeds 3-8, the same reference sets and floor as benchmarks/samplers.py.
Prints one JSON line per cell (the `samplers` row format).
"""

import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samplers as B  # noqa: E402


def main():
  args = types.SimpleNamespace(n=10_000, n_refs=2, seeds=[3, 4, 5, 6, 7, 8])
  bench = B.Bench(args)
  for config in ("ve_gmm", "vp_gmm"):
    bench.cell("heldout", config, "oracle", "dpm_solver_2m+denoise", 10, schedule="log_snr", sigma_end=0.1)
    bench.cell("heldout", config, "oracle", "dpm_solver_2m", 10, schedule="quadratic")


if __name__ == "__main__":
  main()
