"""notebooks/*.ipynb: stored without outputs, and every code cell runs top to bottom (plain exec of
the cells' source, in the notebook's folder; no Jupyter needed)."""

import json
import os
import re

import numpy as np
import pytest

from conftest import ROOT

QUICKSTART = os.path.join(ROOT, "notebooks", "quickstart.ipynb")


def _code_cells(path):
  with open(path) as f:
    nb = json.load(f)
  assert nb["nbformat"] == 4
  return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_quickstart_is_stored_without_outputs():
  cells = _code_cells(QUICKSTART)
  assert len(cells) >= 5
  assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells)


@pytest.mark.slow
def test_quickstart_runs_and_its_samplers_match_the_truth(monkeypatch):
  monkeypatch.chdir(os.path.dirname(QUICKSTART))
  ns = {}
  for i, cell in enumerate(_code_cells(QUICKSTART)):
    exec(compile("".join(cell["source"]), f"quickstart.ipynb, code cell {i}", "exec"), ns)
  rows = {name: (nfe, model, oracle) for name, nfe, model, oracle, _ in ns["rows"]}
  assert set(rows) == {"pc", "ode", "dpm_solver_2m"}
  assert rows["pc"][0] == 1001 and rows["dpm_solver_2m"][0] == 10 and 20 < rows["ode"][0] < 400
  # Energy distance / floor of 2,000 points: 1 is indistinguishable from the truth; a single floor
  # pair spreads by about half its mean, so 2.5 separates a working sampler from a broken one.
  for name, (_, model, oracle) in rows.items():
    assert np.isfinite(model) and model < 2.5 and oracle < 2.5, (name, model, oracle)
  assert ns["err"]["weighted_mse"] < 5e-3  # trained: the zero score scores E[sigma^2 |s*|^2] / d, up to 1
  for name in ("samples", "score_field", "trajectories"):
    assert os.path.getsize(os.path.join(ns["FIGURES"], f"{name}.png")) > 20_000


@pytest.mark.slow
def test_readme_library_snippet_prints_what_readme_says(capsys):
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  section = readme[readme.index("## The library"):]
  snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  exec(compile(snippet, "README.md, The library", "exec"), {})
  printed = capsys.readouterr().out
  said = re.search(r"it prints `(sigma\(0\.5\) = .*?)` and `(nfe .*?)`", " ".join(section.split())).groups()
  assert printed.splitlines()[0] == said[0]
  numbers = lambda text: [float(v) for v in re.findall(r"\d+(?:\.\d+)?(?:e[-+]\d+)?", text)]
  np.testing.assert_allclose(numbers(printed.splitlines()[1]), numbers(said[1]), rtol=0.05)
