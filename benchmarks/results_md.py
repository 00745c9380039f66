"""Replaces one `## ` section of benchmarks/RESULTS.md (or appends it): shared by the benchmarks
that write their own tables."""

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
