"""Figures of the inverse-problem and SDEdit evaluations: labelled rows of images, and the
realism / faithfulness trade-off of SDEdit."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

import plotting


def plot_rows(path: str, rows: Mapping[str, np.ndarray], data_range: tuple[float, float]) -> None:
  """One labelled row per entry of rows (label -> images [n, H, W(, C)], the same n for all), through
  `plotting.plot_image_grid`.

  Raises:
    ValueError: rows empty or of different lengths.
  """
  lengths = {len(v) for v in rows.values()}
  if len(lengths) != 1:
    raise ValueError(f"rows must all hold the same number of images; got {sorted(lengths)}.")
  n = lengths.pop()
  images = np.concatenate([np.asarray(v, np.float64) for v in rows.values()])
  plotting.plot_image_grid(path, images, nrow=n, data_range=data_range, row_labels=list(rows))


def plot_tradeoff(path: str, curves: Mapping[str, Sequence[dict]]) -> None:
  """Frechet distance (realism, lower is better) against the RMSE to the guide (faithfulness,
  lower is better), one line per curve label, its points labelled by t0 (dict keys "t0",
  "rmse_guide", "frechet")."""
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.6))
  for label, pts in curves.items():
    xs, ys = [p["rmse_guide"] for p in pts], [p["frechet"] for p in pts]
    ax.plot(xs, ys, "o-" if label.endswith("sde") else "s--", label=label)
    for p in pts:
      ax.annotate(f"{p['t0']:g}", (p["rmse_guide"], p["frechet"]), fontsize=7, xytext=(3, 3),
                  textcoords="offset points")
  ax.set_xlabel("RMSE to the guide (faithfulness; lower = more faithful)")
  ax.set_ylabel("Frechet distance to the test digits (realism)")
  ax.set_yscale("log")
  ax.set_title("SDEdit over t0 (point labels: t0)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
