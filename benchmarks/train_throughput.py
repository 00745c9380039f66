"""Training throughput: steps/s and compile time of a config's jitted, scanned train step.

    python benchmarks/train_throughput.py --config=configs/ve_gmm.py --devices=1,4

Prints one JSON line per device count. Each count runs in its own subprocess because the
number of (fake, on CPU) devices is fixed when jax starts. Fake CPU devices share the
same cores, so on CPU they measure sharding overhead, not speed-up.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(config_path: str, calls: int) -> dict:
  sys.path.insert(0, ROOT)
  import importlib.util

  import jax
  import run_lib
  import train

  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, config_path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  exp = run_lib.build(config)
  mesh = run_lib.make_mesh()
  job, sched, state = run_lib.train_job(exp, mesh)
  n = config.training.log_freq
  t0 = time.perf_counter()
  fn = train.compile_steps(job, sched, n, mesh, state)
  compile_s = time.perf_counter() - t0
  state, _ = jax.block_until_ready(fn(state))  # warm-up
  t0 = time.perf_counter()
  for _ in range(calls):
    state, metrics = fn(state)
  jax.block_until_ready(state)
  elapsed = time.perf_counter() - t0
  return {"benchmark": "train_throughput", "config": config_path, "devices": jax.device_count(),
          "platform": jax.devices()[0].platform, "batch_size": config.training.batch_size,
          "device_loop": config.training.get("device_loop", True),
          "steps_per_call": n, "steps": calls * n, "steps_per_s": calls * n / elapsed,
          "examples_per_s": calls * n * config.training.batch_size / elapsed,
          "compile_s": compile_s, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "cpu": platform.processor() or platform.machine(), "nproc": os.cpu_count()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/ve_gmm.py")
  parser.add_argument("--devices", default="1", help="comma-separated device counts (fake CPU devices)")
  parser.add_argument("--calls", type=int, default=8, help="timed calls of log_freq steps each")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.config, args.calls)), flush=True)
    return
  for count in [int(c) for c in args.devices.split(",")]:
    env = dict(os.environ)
    if env.get("JAX_PLATFORMS", "cpu") == "cpu":
      env["JAX_PLATFORMS"] = "cpu"
      env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", f"--config={args.config}", f"--calls={args.calls}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
      sys.exit(out.stderr[-3000:])
    print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
  main()
