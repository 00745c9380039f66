"""Shared by the benchmarks: `replace_section` replaces one `## ` section of benchmarks/RESULTS.md (or
appends it) for those that write their own tables; `machine` describes where a figure was measured."""

import os


def replace_section(path: str, section: str, text: str) -> None:
  """Puts `text` in place of the section starting with `section` (up to the next "\\n## "), or
  appends it; creates the file with a title if it is missing."""
  old = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
  start = old.find(section)
  if start < 0:
    new = old.rstrip("\n") + "\n\n" + text
  else:
    end = old.find("\n## ", start + len(section))
    new = old[:start] + text + ("\n" + old[end + 1:] if end >= 0 else "")
  with open(path, "w") as f:
    f.write(new.rstrip("\n") + "\n")


def machine() -> dict:
  """The CPU model, core count, JAX version and backend, and the 1-minute load average now."""
  import jax

  model = "unknown"
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  return {"nproc": os.cpu_count(), "cpu": model, "jax": jax.__version__, "platform": jax.devices()[0].platform,
          "load_avg_1m": os.getloadavg()[0]}
