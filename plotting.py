"""PNG figures for a run's `plots/` folder: samples, trajectories, score fields, losses, images.

Every function writes one PNG to `path` (creating its folder) and accepts numpy or jax arrays.
Figures are `matplotlib.figure.Figure` objects rendered by Agg, so importing this module leaves
pyplot's backend alone (a notebook keeps its inline plots). Data is [n, d]: d = 1 is drawn as
histograms and curves, d = 2 as scatter plots over the true density; for d > 2 the first two
coordinates are drawn and the titles say so (no density is drawn then, since the marginal of
the first two coordinates is not available from `target.log_prob`).

`target` is any object with `dim` and `log_prob(x [n, d]) -> [n]` (a `datasets.Target`); its
log density may be -inf outside the support (the Box1D target), which is drawn as zero.
Pass `target=None` to draw no density at all.
"""

from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.cm
import matplotlib.colors
import matplotlib.pyplot as plt  # colour maps and image files; figures are Figure objects, drawn by Agg
import matplotlib.ticker
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

if TYPE_CHECKING:
  import datasets

PathLike = str | os.PathLike
ScoreFn = Callable  # score_fn(x [n, d], t [n]) -> [n, d]

_DPI = 110
_GRID_MIN_PX = 512  # image grids are enlarged (nearest neighbour) to at least this many pixels
_HDR_MASSES = (0.5, 0.9, 0.99)  # density contours around the highest-density regions of this mass


# --- helpers -------------------------------------------------------------------------------
def _make_folder(path: PathLike) -> None:
  folder = os.path.dirname(os.fspath(path))
  if folder:
    os.makedirs(folder, exist_ok=True)


def _save(fig, path: PathLike) -> None:
  """Writes `fig` to `path` as a PNG and closes it."""
  _make_folder(path)
  fig.savefig(path, dpi=_DPI)  # the figures use constrained layout
  plt.close(fig)


def _points(x, name: str) -> np.ndarray:
  """x as a float64 numpy array [n, d], or a ValueError quoting its shape."""
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
    raise ValueError(f"{name}.shape={x.shape} is invalid: must be [n, d] with n >= 1, d >= 1.")
  return x


def _dims_note(d: int) -> str:
  """Title suffix saying which coordinates are drawn."""
  return f" (first 2 of d={d} coords)" if d > 2 else ""


def _data_range(xs: Sequence[np.ndarray], q: float = 0.005, pad: float = 1.0) -> np.ndarray:
  """[min(d, 2), 2] plotting range per coordinate: the widest 0.5%-99.5% quantile range
  over all sets, padded by `pad` on each side. Non-finite points (a diverged sampler) are
  ignored; with none finite the range is [-pad, pad]."""
  k = min(xs[0].shape[1], 2)
  xs = [x[np.all(np.isfinite(x[:, :k]), axis=1), :k] for x in xs]
  xs = [x for x in xs if len(x)] or [np.zeros((1, k))]
  lo = np.min([np.quantile(x, q, axis=0) for x in xs], axis=0) - pad
  hi = np.max([np.quantile(x, 1 - q, axis=0) for x in xs], axis=0) + pad
  return np.stack([lo, hi], axis=1)


@functools.lru_cache(maxsize=8)
def _jitted_log_prob(target) -> Callable:
  # One compilation (kept across figures of the same run) is much cheaper than running the
  # ops of log_prob eagerly, each of which XLA compiles on first use.
  return jax.jit(target.log_prob)


def _density(target, x: np.ndarray, log_prob: Callable | None = None) -> np.ndarray:
  """exp(log_prob(x)) as numpy [n] (default: the target's jitted log_prob); -inf and NaN log
  densities become 0."""
  log_prob = log_prob or _jitted_log_prob(target)
  logp = np.asarray(log_prob(jnp.asarray(x, jnp.float32)), np.float64)
  return np.exp(np.where(np.isnan(logp), -np.inf, logp))  # exp(-inf) = 0, silently


def _grid_2d(rng: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(gx, gy, points [n * n, 2]) of an n x n grid over the range rng [2, 2]."""
  gx, gy = np.meshgrid(np.linspace(*rng[0], n), np.linspace(*rng[1], n))
  return gx, gy, np.stack([gx.ravel(), gy.ravel()], axis=1)


def _hdr_levels(p: np.ndarray, masses: Sequence[float] = _HDR_MASSES) -> dict:
  """{density level: label}: the level whose superlevel set {p > level} holds `mass` of the
  grid's total (the highest-density region of that mass), for each mass; increasing levels."""
  flat = np.sort(p.ravel())[::-1]
  cum = np.cumsum(flat) / max(flat.sum(), 1e-300)
  levels = {}
  for m in sorted(masses, reverse=True):
    level = float(flat[min(np.searchsorted(cum, m), flat.size - 1)])
    if level > 0 and all(level > l for l in levels):
      levels[level] = f"{m:.0%}"
  return levels


def _draw_hdr(ax, gx, gy, p: np.ndarray, colour: str = "k", label: bool = True) -> None:
  """Contours of the density p on the grid around its 50%, 90% and 99% highest-density regions."""
  levels = _hdr_levels(p)
  if len(levels) < 1 or not np.isfinite(p).all():
    return
  cs = ax.contour(gx, gy, p, levels=sorted(levels), colors=colour, linewidths=(0.7, 0.9, 1.2)[-len(levels):])
  if label:
    ax.clabel(cs, fmt=levels, fontsize=7, inline_spacing=2)


def _label_2d(ax, rng: np.ndarray) -> None:
  ax.set_xlim(*rng[0])
  ax.set_ylim(*rng[1])
  ax.set_xlabel("$x_1$")
  ax.set_ylabel("$x_2$")


# --- figures -------------------------------------------------------------------------------
def _exact_marginals(target, rng: np.ndarray, n: int = 400) -> list[tuple[np.ndarray, np.ndarray]]:
  """[(x_i grid, exact density of x_i)] for i = 1, 2 of a 2-D target, by summing its density on a
  grid three times as wide as rng (the mass left outside is negligible for the plotted range)."""
  width = rng[:, 1] - rng[:, 0]
  wide = np.stack([rng[:, 0] - width, rng[:, 1] + width], axis=1)
  gx, gy, pts = _grid_2d(wide, n)
  p = _density(target, pts).reshape(gx.shape)
  dx, dy = gx[0, 1] - gx[0, 0], gy[1, 0] - gy[0, 0]
  return [(gx[0], p.sum(axis=0) * dy), (gy[:, 0], p.sum(axis=1) * dx)]


def _samples_2d(fig, sets: dict, target, rng: np.ndarray, max_points: int) -> None:
  """Top row: a scatter per set over the target's labelled HDR contours; bottom row: the 1-D
  marginal histograms of x_1 and x_2, every set against the exact marginal."""
  top, bottom = fig.subfigures(2, 1, height_ratios=(1.15, 1.0))
  axes = top.subplots(1, len(sets), sharex=True, sharey=True, squeeze=False)[0]
  exact = target is not None and target.dim == 2
  if exact:
    gx, gy, pts = _grid_2d(rng, 150)
    p = _density(target, pts).reshape(gx.shape)
  colours = dict(zip(sets, plt.get_cmap("tab10").colors))
  for ax, (name, x) in zip(axes, sets.items()):
    shown = x[:max_points]
    ax.scatter(shown[:, 0], shown[:, 1], s=2, color=colours[name], alpha=0.35, linewidths=0)
    if exact:
      _draw_hdr(ax, gx, gy, p)
    _label_2d(ax, rng)
    ax.set_title(f"{name}: first {len(shown):,} of {len(x):,}", fontsize=10)
  for i, ax in enumerate(bottom.subplots(1, 2)):
    bins = np.linspace(*rng[i], 61)
    for name, x in sets.items():
      ax.hist(x[:, i], bins=bins, density=True, histtype="step", lw=1.2, color=colours[name],
              label=f"{name} (n={len(x):,})")
    if exact:
      grid, marginal = _exact_marginals(target, rng)[i]
      keep = (grid >= rng[i, 0]) & (grid <= rng[i, 1])
      ax.plot(grid[keep], marginal[keep], color="k", lw=1.0, ls="--", label="exact")
    ax.set(xlim=tuple(rng[i]), xlabel=f"$x_{i + 1}$", ylabel="density", title=f"marginal of $x_{i + 1}$")
    ax.legend(fontsize=7, loc="upper right")


def plot_samples(path: PathLike, target: datasets.Target | None, samples: Mapping[str, np.ndarray], *,
                 max_points: int = 2000, title: str = "") -> None:
  """Sample sets against the truth.

  d >= 2: a panel per set with its first `max_points` points (first two coordinates) and, for
  d = 2, the target's contours around its 50% / 90% / 99% highest-density regions (labelled); a
  second row with the 1-D marginal histograms of x_1 and x_2 of every set against the exact
  marginals (d = 2). Ranges cover every set's 0.5%-99.5% quantiles padded by 1.
  d = 1: a density histogram (100 bins) per set with the true density curve.

  Args:
    path: the PNG to write.
    target: the true distribution (or None for no density).
    samples: name -> samples [n, d], e.g. {"model": x, "oracle": y, "reference": z}; same d for all.
    max_points: most points scattered per panel (d >= 2).
    title: figure title.

  Raises:
    ValueError: no sample sets, a set not shaped [n, d], or sets of different d.
  """
  if not samples:
    raise ValueError("samples={} is invalid: give at least one sample set.")
  sets = {name: _points(x, f"samples[{name!r}]") for name, x in samples.items()}
  dims = {name: x.shape[1] for name, x in sets.items()}
  if len(set(dims.values())) != 1:
    raise ValueError(f"samples have different dimensions {dims}: all must share d.")
  d = next(iter(dims.values()))
  rng = _data_range(list(sets.values()))
  if d >= 2:
    fig = Figure(figsize=(max(4.0 * len(sets), 8.5), 7.6), layout="constrained")
    _samples_2d(fig, sets, target, rng, max_points)
    fig.suptitle((title or "samples") + _dims_note(d) + (
        "; black: exact density, contours around its 50/90/99% highest-density regions" if d == 2 else ""))
    return _save(fig, path)
  fig = Figure(figsize=(4.2 * len(sets), 3.9), layout="constrained")
  axes = fig.subplots(1, len(sets), squeeze=False, sharex=True, sharey=True)[0]
  for ax, (name, x) in zip(axes, sets.items()):
    ax.hist(x[:, 0], bins=100, range=tuple(rng[0]), density=True, histtype="stepfilled", color="tab:blue",
            alpha=0.6, label="samples")
    if target is not None and target.dim == 1:
      grid = np.linspace(*rng[0], 1000)[:, None]
      ax.plot(grid[:, 0], _density(target, grid), color="k", lw=1.5, label="true density")
    ax.set(xlim=tuple(rng[0]), xlabel="x", ylabel="density", title=f"{name} (n={len(x):,})")
    ax.legend(loc="upper right", fontsize=8)
  fig.suptitle(title or "samples")
  _save(fig, path)


def _time_axis(ax, ts: np.ndarray, t_start: float) -> None:
  """t decreasing left to right, from the start t = T (the prior draw) to the end near 0."""
  ax.set_xlim(t_start, min(ts.min(), 0.0))
  ticks = np.linspace(t_start, 0.0, 5)
  ax.set_xticks(ticks, [f"T={t_start:g}\n(start)"] + [f"{t:.3g}" for t in ticks[1:-1]] + ["0\n(data)"])
  ax.set_xlabel("t  (the reverse process runs left to right)")


def _marginal_heatmap(ax, y: np.ndarray, ts: np.ndarray, t_start: float, lim: np.ndarray):
  """A Gaussian kernel density (half Scott's bandwidth) of each state's B values y[k] on a grid in
  `lim`, drawn against t as an image; returns the mesh."""
  grid = np.linspace(*lim, 160)
  dens = np.zeros((grid.size, len(ts)))
  for k, v in enumerate(y):
    v = v[np.isfinite(v)]
    if v.size >= 2:
      h = 0.5 * 1.06 * max(float(np.std(v)), 1e-6) * v.size ** -0.2
      dens[:, k] = np.exp(-0.5 * ((grid[:, None] - v[None]) / h) ** 2).sum(1) / (v.size * h * math.sqrt(2 * math.pi))
  mid = (ts[1:] + ts[:-1]) / 2
  t_end = max(ts[-1] - (ts[-2] - ts[-1]) / 2, 0.0) if len(ts) > 1 else 0.0
  t_edges = np.concatenate([[t_start], mid, [t_end]])
  y_edges = np.concatenate([grid - (grid[1] - grid[0]) / 2, [grid[-1] + (grid[1] - grid[0]) / 2]])
  return ax.pcolormesh(t_edges, y_edges, dens, cmap="magma", vmin=0.0, vmax=max(np.quantile(dens, 0.995), 1e-12),
                       shading="flat", rasterized=True)


def _paths_in_data_plane(fig, ax, traj: np.ndarray, ts: np.ndarray, target, max_paths: int, t_start: float):
  """The last part of the first paths in the data range, coloured by t, over the target's HDR
  contours, with every path's end point."""
  rng = _data_range([traj[-1]])
  if target is not None and target.dim == 2:
    gx, gy, pts = _grid_2d(rng, 120)
    _draw_hdr(ax, gx, gy, _density(target, pts).reshape(gx.shape), colour="0.4")
  ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=4, color="0.55", linewidths=0, label=f"all {traj.shape[1]} ends")
  norm = matplotlib.colors.Normalize(0.0, t_start / 2)
  inside = np.all((traj[..., :2] >= rng[:, 0]) & (traj[..., :2] <= rng[:, 1]), axis=-1)  # [K, B]
  late = int(np.argmax(ts <= t_start / 2))  # the second half of the process, where it reaches the data
  for j in range(min(max_paths, traj.shape[1])):
    first = max(late, len(ts) - int(np.argmin(inside[::-1, j])) if not inside[:, j].all() else 0)  # last entry
    seg = np.stack([traj[first:-1, j, :2], traj[first + 1:, j, :2]], axis=1)
    ax.add_collection(LineCollection(seg, array=ts[first + 1:], cmap="viridis", norm=norm, lw=1.3))
  ends = traj[-1, :max_paths]
  ax.scatter(ends[:, 0], ends[:, 1], s=25, marker="x", color="tab:red", zorder=3, label=f"end, t={ts[-1]:.3g}")
  ax.legend(loc="upper right", fontsize=7)
  _label_2d(ax, rng)
  ax.set_title(f"{min(max_paths, traj.shape[1])} paths for t <= T/2, from their last entry into this range",
               fontsize=10)
  fig.colorbar(matplotlib.cm.ScalarMappable(norm, "viridis"), ax=ax, label="t", shrink=0.9)


def plot_trajectories(path: PathLike, target: datasets.Target | None, trajectory: np.ndarray, ts: np.ndarray, *,
                      scale: np.ndarray | None = None, t_start: float | None = None, max_paths: int = 4) -> None:
  """How the reverse process moves mass: a heat map of each coordinate's distribution against t.

  For x_1 (and x_2 when d >= 2): the kernel density of the B states at each stored time, as an
  image against t (T at the left), with the first `max_paths` paths drawn on it; divided by
  `scale` (e.g. the standard deviation of p_t, so that a VE process, whose spread shrinks from
  sigma_max to the data's, reads on one axis). d >= 2: a third panel with those paths in the
  data plane (x_1, x_2) coloured by t, over the target's contours; d = 1: the end states'
  histogram against the true density.

  Args:
    path: the PNG to write.
    trajectory: states [K, B, d] at the K times `ts`.
    ts: the times [K], decreasing from about T to about 0.
    scale: [K] or [K, d] divisor per time (and coordinate), or None for raw coordinates.
    t_start: the time the process starts (the prior draw), default ts[0].
    max_paths: paths drawn as lines.

  Raises:
    ValueError: trajectory not [K, B, d], ts not [K] or scale not [K] / [K, d].
  """
  traj, ts = np.asarray(trajectory, np.float64), np.asarray(ts, np.float64)
  if traj.ndim != 3 or min(traj.shape) < 1:
    raise ValueError(f"trajectory.shape={traj.shape} is invalid: must be [K, B, d].")
  if ts.shape != traj.shape[:1]:
    raise ValueError(f"ts.shape={ts.shape} is invalid: must be [K] = {traj.shape[:1]}.")
  d, t_start = traj.shape[-1], float(ts[0] if t_start is None else t_start)
  if scale is not None and np.shape(scale) not in ((len(ts),), (len(ts), d)):
    raise ValueError(f"scale.shape={np.shape(scale)} is invalid: must be [K] or [K, d] = {(len(ts), d)}.")
  div = np.ones((len(ts), d)) if scale is None else np.broadcast_to(
      np.reshape(np.asarray(scale, np.float64), (len(ts), -1)), (len(ts), d))
  y = traj / div[:, None, :]
  fig = Figure(figsize=(15.0 if d >= 2 else 10.0, 4.4), layout="constrained")
  axes = fig.subplots(1, 3 if d >= 2 else 2, width_ratios=(1, 1, 1.05) if d >= 2 else (2, 1))
  for i, ax in enumerate(axes[:min(d, 2)]):
    lim = _data_range([y[:, :, i].reshape(-1, 1)], q=0.002, pad=0.3)[0]
    mesh = _marginal_heatmap(ax, y[:, :, i], ts, t_start, lim)
    ax.plot(ts, y[:, :max_paths, i], color="w", lw=0.7, alpha=0.8)
    _time_axis(ax, ts, t_start)
    ax.set_ylim(*lim)
    name = f"x_{i + 1}" if d > 1 else "x"
    ax.set_ylabel(f"${name}$" if scale is None else f"${name}$ / std of $p_t({name})$")
    ax.set_title(f"density of ${name}$ over t; {min(max_paths, traj.shape[1])} paths in white", fontsize=10)
    fig.colorbar(mesh, ax=ax, label="density", shrink=0.9)
  if d >= 2:
    _paths_in_data_plane(fig, axes[2], traj, ts, target, max_paths, t_start)
  else:
    rng = _data_range([traj[-1]])
    axes[1].hist(traj[-1, :, 0], bins=50, range=tuple(rng[0]), density=True, histtype="stepfilled",
                 color="tab:blue", alpha=0.6, label="end states")
    if target is not None and target.dim == 1:
      grid = np.linspace(*rng[0], 1000)[:, None]
      axes[1].plot(grid[:, 0], _density(target, grid), color="k", lw=1.2, label="true density")
    axes[1].set(xlabel="x", ylabel="density", title=f"end states, t={ts[-1]:.3g}")
    axes[1].legend(fontsize=8)
  fig.suptitle(f"reverse-process trajectories: {traj.shape[1]} paths, {len(ts)} stored states{_dims_note(d)}")
  _save(fig, path)


def _score_on(fn: ScoreFn, x: np.ndarray, t: float) -> np.ndarray:
  """fn(x, t) at one time, as numpy [n, d]."""
  x = jnp.asarray(x, jnp.float32)
  return np.asarray(fn(x, jnp.full((x.shape[0],), t, jnp.float32)), np.float64)


def _plane(extent, n: int, d: int):
  """(gx, gy, x [n * n, d]): an n x n grid over extent in (x_1, x_2), other coordinates 0."""
  gx, gy, pts = _grid_2d(np.reshape(np.asarray(extent, np.float64), (2, 2)), n)
  x = np.zeros((pts.shape[0], d))
  x[:, :2] = pts
  return gx, gy, x


def _relative_error(model_fn, exact_fn, x: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
  """(|s - s*| / |s*|, s*) at x and t."""
  exact = _score_on(exact_fn, x, t)
  err = np.linalg.norm(_score_on(model_fn, x, t) - exact, axis=1)
  return err / np.maximum(np.linalg.norm(exact, axis=1), 1e-12), exact


def _score_field_2d(fig, model_fn, exact_fn, ts, log_prob_fn, extent, grid_size: int, d: int) -> None:
  """Row 1: the exact field's direction (arrows) and size (colour); row 2: the model's relative
  error as an image; both over the contours of p_t."""
  axes = fig.subplots(2, len(ts), squeeze=False, sharex=True, sharey=True)
  gx, gy, x = _plane(extent, 90, d)
  ax_, ay_, xa = _plane(extent, grid_size, d)
  cell = min(extent[1] - extent[0], extent[3] - extent[2]) / max(grid_size - 1, 1)
  size_norm, err_norm = matplotlib.colors.LogNorm(), matplotlib.colors.LogNorm(1e-2, 1e1)
  for col, t in enumerate(ts):
    rel, _ = _relative_error(model_fn, exact_fn, x, t)
    p = None if log_prob_fn is None else np.exp(np.asarray(jax.jit(log_prob_fn)(
        jnp.asarray(x, jnp.float32), jnp.full((x.shape[0],), t, jnp.float32)), np.float64)).reshape(gx.shape)
    s = _score_on(exact_fn, xa, t)[:, :2]
    norms = np.maximum(np.linalg.norm(s, axis=1), 1e-12)
    u = 0.8 * cell * s / norms[:, None]
    q = axes[0, col].quiver(ax_, ay_, u[:, 0].reshape(ax_.shape), u[:, 1].reshape(ax_.shape), norms,
                            angles="xy", scale_units="xy", scale=1, pivot="mid", cmap="viridis", norm=size_norm,
                            width=0.005)
    mesh = axes[1, col].pcolormesh(gx, gy, np.clip(rel, 1e-2, 1e1).reshape(gx.shape), norm=err_norm,
                                   cmap="RdYlBu_r", shading="nearest", rasterized=True)
    title = f"exact score, t = {t:.3g}"
    err_title = f"model |s - s*| / |s*|, t = {t:.3g}"
    if p is not None and np.isfinite(p).all() and p.sum() > 0:
      for ax, colour in ((axes[0, col], "0.5"), (axes[1, col], "k")):
        _draw_hdr(ax, gx, gy, p, colour=colour)
      err_title += f"\n$p_t$-weighted mean {np.sum(p.ravel() * rel) / np.sum(p):.3g}"
    axes[0, col].set_title(title, fontsize=10)
    axes[1, col].set_title(err_title, fontsize=10)
    for ax in axes[:, col]:
      ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal")
  for ax in axes[1]:
    ax.set_xlabel("$x_1$")
  for ax in axes[:, 0]:
    ax.set_ylabel("$x_2$")
  bar = fig.colorbar(q, ax=axes[0], label="|s*| (arrows: direction)", shrink=0.9, format=_PLAIN_125)
  bar.ax.yaxis.set_minor_formatter(_PLAIN_125)
  fig.colorbar(mesh, ax=axes[1], label="relative error (clipped to [0.01, 10])", shrink=0.9, extend="both",
               format=_PLAIN_125)


def _score_field_1d(fig, model_fn, exact_fn, ts, log_prob_fn, extent) -> None:
  """Row 1: model and exact score curves; row 2: the relative error, over p_t (grey)."""
  axes = fig.subplots(2, len(ts), squeeze=False, sharex=True)
  x = np.linspace(extent[0], extent[1], 400)[:, None]
  for col, t in enumerate(ts):
    rel, exact = _relative_error(model_fn, exact_fn, x, t)
    axes[0, col].plot(x[:, 0], _score_on(model_fn, x, t)[:, 0], lw=1.3, label="model")
    axes[0, col].plot(x[:, 0], exact[:, 0], lw=1.3, ls="--", color="k", label="exact")
    axes[0, col].axhline(0.0, color="0.7", lw=0.8, zorder=0)
    axes[0, col].set_title(f"t = {t:.3g}", fontsize=10)
    axes[0, col].legend(fontsize=8)
    axes[1, col].semilogy(x[:, 0], rel, color="tab:red", lw=1.2)
    axes[1, col].set(xlabel="x", ylim=(1e-3, 1e1))
    if log_prob_fn is not None:
      logp = np.asarray(log_prob_fn(jnp.asarray(x, jnp.float32), jnp.full((len(x),), t, jnp.float32)))
      twin = axes[1, col].twinx()
      twin.fill_between(x[:, 0], np.exp(logp), color="0.85", zorder=0)
      twin.set_yticks([])
      axes[1, col].set_zorder(twin.get_zorder() + 1)
      axes[1, col].patch.set_visible(False)
  axes[0, 0].set_ylabel("score d/dx log $p_t$(x)")
  axes[1, 0].set_ylabel("|s - s*| / |s*|  (grey: $p_t$)")


def plot_score_field(path: PathLike, target: datasets.Target, model_fn: ScoreFn, exact_fn: ScoreFn,
                     ts: Sequence[float], *, log_prob_fn: Callable | None = None, grid_size: int = 20,
                     extent: tuple[float, float, float, float] = (-4.0, 5.0, -5.0, 4.0)) -> None:
  """The exact score s*(x, t) and the model's relative error |s - s*| / |s*|, one column per t.

  d >= 2 (the plane x_3 = ... = 0 for d > 2): row 1, arrows of the exact field's direction on a
  grid_size x grid_size grid coloured by |s*| (log scale); row 2, the relative error on a 90 x 90
  grid as an image (log colour scale, 0.01 to 10) and, with `log_prob_fn`, its p_t-weighted mean
  over the grid. Both rows carry contours around the 50/90/99% highest-density regions of p_t.
  d = 1: the model and exact curves, and the relative error over p_t.

  Args:
    path: the PNG to write.
    target: the true distribution; only its `dim` is used.
    model_fn, exact_fn: score_fn(x [n, d], t [n]) -> [n, d], the model's and the exact score.
    ts: the times, one column each.
    log_prob_fn: log_prob_fn(x [n, d], t [n]) -> log p_t(x) [n] (`target.log_prob_fn(sde)`), for
      the contours; None draws none.
    grid_size: arrows per side (d >= 2).
    extent: (xmin, xmax, ymin, ymax) of the plane (d = 1: x in extent[:2]).

  Raises:
    ValueError: no times.
  """
  if not len(ts):
    raise ValueError(f"ts={list(ts)} is invalid: give at least one time.")
  d, ts = int(target.dim), [float(t) for t in ts]
  model_fn, exact_fn = jax.jit(model_fn), jax.jit(exact_fn)  # compiled once, t is traced
  fig = Figure(figsize=(3.7 * len(ts) + 1.2, 7.2 if d >= 2 else 5.6), layout="constrained")
  if d >= 2:
    _score_field_2d(fig, model_fn, exact_fn, ts, log_prob_fn if d == 2 else None, extent, grid_size, d)
  else:
    _score_field_1d(fig, model_fn, exact_fn, ts, log_prob_fn, extent)
  fig.suptitle("score: exact field and the model's relative error" + (
      f" in the $(x_1, x_2)$ plane, other coords 0, d={d}" if d > 2 else "") +
      ("; contours: 50/90/99% highest-density regions of $p_t$" if log_prob_fn is not None and d == 2 else ""))
  _save(fig, path)


# Tick labels as plain numbers, only at 1, 2 and 5 times a power of ten (log axes).
_PLAIN_125 = matplotlib.ticker.FuncFormatter(
    lambda v, _: f"{v:.3g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v)), 6) in (1, 2, 5) else "")


def _window_mean(steps: np.ndarray, values: np.ndarray, window: float) -> np.ndarray:
  """m_i = mean of the finite values_j with steps_i - window < steps_j <= steps_i (a trailing
  window measured in steps; NaN where it holds none)."""
  out = np.full(values.shape, np.nan)
  for i, s in enumerate(steps):
    sel = (steps > s - window) & (steps <= s) & np.isfinite(values)
    if sel.any():
      out[i] = values[sel].mean()
  return out


def _plain_log_axis(ax, values: np.ndarray) -> None:
  """A log y-axis whose ticks read as plain numbers (1.1, 1.2 within a decade; 0.01, 0.1 across)."""
  ax.set_yscale("log")
  plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
  if values.max() / values.min() < 10:  # within a decade the decade ticks miss the data
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(7))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  ax.yaxis.set_major_formatter(plain)
  ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plot_loss(path: PathLike, steps: np.ndarray, losses: np.ndarray, *, window: float | None = None) -> None:
  """Training loss against step, as logged: each point is the mean loss over the interval of
  steps since the previous point (the train loop logs the mean of its `log_freq` steps), and a
  trailing mean over `window` steps. The y-axis is logarithmic when every finite loss is positive.

  Args:
    path: the PNG to write.
    steps: training steps [n] (increasing) at which the interval means were logged.
    losses: the interval means [n].
    window: smoothing window in steps; default 1/5 of the logged points' span, at least one interval.

  Raises:
    ValueError: steps and losses not both [n] with n >= 1, or window <= 0.
  """
  steps, losses = np.ravel(np.asarray(steps, np.float64)), np.ravel(np.asarray(losses, np.float64))
  if steps.shape != losses.shape or steps.size < 1:
    raise ValueError(f"steps.shape={steps.shape} and losses.shape={losses.shape} must be equal and non-empty.")
  if window is not None and not window > 0:
    raise ValueError(f"window={window!r} is invalid: must be > 0 steps.")
  interval = float(np.median(np.diff(steps))) if steps.size > 1 else float(steps[0])
  window = float(window or interval * max(1, round(steps.size / 5)))
  smooth = _window_mean(steps, losses, window)
  fig = Figure(figsize=(6.6, 4.0), layout="constrained")
  ax = fig.subplots()
  ax.plot(steps, losses, color="tab:blue", alpha=0.45, lw=0.8, marker="o", ms=3,
          label=f"logged: mean over each {interval:g}-step interval")
  ax.plot(steps, smooth, color="tab:blue", lw=2.0, label=f"trailing mean over {window:g} steps")
  finite = losses[np.isfinite(losses)]
  if finite.size and np.all(finite > 0):
    _plain_log_axis(ax, finite)
  last = smooth[np.isfinite(smooth)][-1] if np.isfinite(smooth).any() else float("nan")
  ax.set(xlabel="training step", ylabel="loss",
         title=f"training loss: {last:.4g} (mean over the last {window:g} steps to {steps[-1]:g})")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8)
  _save(fig, path)


def plot_image_grid(path: PathLike, images: np.ndarray, *, nrow: int | None = None, padding: int = 2,
                    data_range: tuple[float, float] = (0.0, 1.0), scale: int | None = None,
                    row_labels: Sequence[str] | None = None) -> None:
  """Tiles images into one picture, enlarged by pixel repetition (nearest neighbour) so that
  small images (8x8 digits) can be read as written.

  Args:
    path: the PNG to write.
    images: [n, H, W, C] with C in {1, 3}, or [n, H, W] (grey), values in data_range.
    nrow: images per row; default ceil(sqrt(n)).
    padding: white pixels (before enlarging) between and around images.
    data_range: (lo, hi) of the values, mapped linearly to black..white; values outside are
      clipped (e.g. (-1, 1) for a model's samples, (0, 16) for raw digits).
    scale: output pixels per image pixel; default the smallest integer that makes the longer
      side of the grid at least _GRID_MIN_PX pixels (1 for grids already that large).
    row_labels: one label per row (e.g. the class), written left of the rows; without labels
      the PNG is exactly the enlarged grid.

  Raises:
    ValueError: images not [n, H, W(, 1 or 3)], nrow < 1, padding < 0, scale < 1, lo >= hi,
      or len(row_labels) not the number of rows.
  """
  images = np.asarray(images, np.float64)
  images = images[..., None] if images.ndim == 3 else images
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] < 1:
    raise ValueError(f"images.shape={images.shape} is invalid: must be [n, H, W, C] with C in {{1, 3}}.")
  lo, hi = (float(v) for v in data_range)
  if not lo < hi:
    raise ValueError(f"data_range={data_range!r} is invalid: must be (lo, hi) with lo < hi.")
  if (nrow is not None and nrow < 1) or padding < 0 or (scale is not None and scale < 1):
    raise ValueError(f"nrow={nrow!r}, padding={padding!r} and scale={scale!r} are invalid: nrow >= 1, "
                     "padding >= 0, scale >= 1.")
  images = np.clip(np.nan_to_num((images - lo) / (hi - lo)), 0.0, 1.0)  # NaN (diverged) -> black
  n, h, w, c = images.shape
  ncol = nrow or math.ceil(math.sqrt(n))
  rows = math.ceil(n / ncol)
  if row_labels is not None and len(row_labels) != rows:
    raise ValueError(f"len(row_labels)={len(row_labels)} is invalid: the grid has {rows} rows.")
  grid = np.ones((rows * (h + padding) + padding, ncol * (w + padding) + padding, c))
  for i, img in enumerate(images):
    r, k = divmod(i, ncol)
    top, left = padding + r * (h + padding), padding + k * (w + padding)
    grid[top:top + h, left:left + w] = img
  scale = scale or max(1, math.ceil(_GRID_MIN_PX / max(grid.shape[:2])))
  grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
  grid = grid[..., 0] if c == 1 else grid
  _make_folder(path)
  if row_labels is None:
    plt.imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0)
    return
  centres = [(padding + r * (h + padding) + h / 2) * scale for r in range(rows)]
  _labelled_grid(path, grid, centres, row_labels)


def _labelled_grid(path: PathLike, grid: np.ndarray, centres: Sequence[float], labels: Sequence[str]) -> None:
  """grid shown at one screen pixel per array pixel, with `labels` at the rows' `centres`."""
  margin = 70  # pixels for the labels
  height, width = grid.shape[:2]
  fig = plt.figure(figsize=((width + margin) / _DPI, height / _DPI), dpi=_DPI)
  ax = fig.add_axes((margin / (width + margin), 0.0, width / (width + margin), 1.0))
  ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
  ax.set_yticks(centres, [str(l) for l in labels])
  ax.set_xticks([])
  ax.tick_params(length=0, labelsize=10)
  for spine in ax.spines.values():
    spine.set_visible(False)
  _make_folder(path)
  fig.savefig(path, dpi=_DPI)
  plt.close(fig)
