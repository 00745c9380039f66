"""PNG figures for a run's `plots/` folder: samples, trajectories, score fields, losses, images.

Imported only by `run_lib`. Every function writes one PNG to `path` (creating its folder),
closes its figure, and accepts numpy or jax arrays. Data is [n, d]: d = 1 is drawn as
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

import matplotlib

matplotlib.use("Agg")  # no display: figures are only ever written to files

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
  import datasets

PathLike = str | os.PathLike
ScoreFn = Callable  # score_fn(x [n, d], t [n]) -> [n, d]

_DPI = 110
_GRID_MIN_PX = 512  # image grids are enlarged (nearest neighbour) to at least this many pixels
_DENSITY_CMAP = "Blues"


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


def _density(target, x: np.ndarray) -> np.ndarray:
  """exp(target.log_prob(x)) as numpy [n]; -inf and NaN log densities become 0."""
  logp = np.asarray(_jitted_log_prob(target)(jnp.asarray(x, jnp.float32)), np.float64)
  return np.exp(np.where(np.isnan(logp), -np.inf, logp))  # exp(-inf) = 0, silently


def _draw_density(ax, target, rng: np.ndarray, d: int, n: int = 150, filled: bool = True) -> None:
  """The true density on `ax`: a (filled) contour for d = 2, a curve for d = 1, nothing otherwise."""
  if target is None or target.dim != d or d > 2:
    return
  if d == 1:
    grid = np.linspace(rng[0, 0], rng[0, 1], 1000)[:, None]
    ax.plot(grid[:, 0], _density(target, grid), color="k", lw=1.5, label="true density")
    return
  gx, gy = np.meshgrid(np.linspace(*rng[0], n), np.linspace(*rng[1], n))
  p = _density(target, np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)
  if filled:
    ax.contourf(gx, gy, p, levels=15, cmap=_DENSITY_CMAP)
  else:
    ax.contour(gx, gy, p, levels=6, colors="0.6", linewidths=0.7)


def _label_2d(ax, rng: np.ndarray) -> None:
  ax.set_xlim(*rng[0])
  ax.set_ylim(*rng[1])
  ax.set_xlabel("$x_1$")
  ax.set_ylabel("$x_2$")


# --- figures -------------------------------------------------------------------------------
def plot_samples(path: PathLike, target: datasets.Target | None, samples: Mapping[str, np.ndarray], *,
                 max_points: int = 3000, title: str = "") -> None:
  """One panel per sample set, over the true density.

  d = 2: filled contour of exp(target.log_prob) on a grid covering every set's 0.5%-99.5%
  quantiles padded by 1, with the first `max_points` samples of each set scattered on top.
  d = 1: a density histogram (100 bins) of each set with the true density curve.

  Args:
    path: the PNG to write.
    target: the true distribution (or None for no density).
    samples: name -> samples [n, d], e.g. {"model": x, "oracle": y, "data": z}; same d for all.
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
  fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.9), squeeze=False,
                           sharex=True, sharey=True, layout="constrained")
  for ax, (name, x) in zip(axes[0], sets.items()):
    if d == 1:
      ax.hist(x[:, 0], bins=100, range=tuple(rng[0]), density=True, histtype="stepfilled", color="tab:blue",
              alpha=0.6, label="samples")
      _draw_density(ax, target, rng, d)
      ax.set(xlim=tuple(rng[0]), xlabel="x", ylabel="density")
      ax.legend(loc="upper right", fontsize=8)
    else:
      _draw_density(ax, target, rng, d)
      shown = x[:max_points]
      ax.scatter(shown[:, 0], shown[:, 1], s=3, c="tab:red", alpha=0.5, linewidths=0)
      _label_2d(ax, rng)
    ax.set_title(f"{name} (n={len(x)})")
  fig.suptitle((title or "samples") + _dims_note(d))
  _save(fig, path)


def _snapshot_indices(k: int, n: int = 4) -> np.ndarray:
  """About `n` evenly spaced indices into K times, first and last included."""
  return np.unique(np.round(np.linspace(0, k - 1, min(n, k))).astype(int))


def _trajectory_1d(fig, traj: np.ndarray, ts: np.ndarray, target, max_paths: int) -> None:
  """x against t (t = T on the left, decreasing to the right) and a histogram of the end states."""
  ax, ax_end = fig.subplots(1, 2, sharey=True, width_ratios=(4, 1))
  ax.plot(ts, traj[:, :max_paths, 0], lw=0.7, alpha=0.6)
  ax.set_xlim(ts.max(), ts.min())  # reverse time runs left to right
  ax.set(xlabel="t (reverse process: T \u2192 0, left to right)", ylabel="x",
         title=f"{min(max_paths, traj.shape[1])} of {traj.shape[1]} paths")
  rng = _data_range([traj[-1]])
  ax_end.hist(traj[-1, :, 0], bins=50, range=tuple(rng[0]), density=True, orientation="horizontal",
              histtype="stepfilled", color="tab:blue", alpha=0.6)
  if target is not None and target.dim == 1:
    grid = np.linspace(*rng[0], 1000)[:, None]
    ax_end.plot(_density(target, grid), grid[:, 0], color="k", lw=1.2)
  ax_end.set(xlabel="density", title=f"end states, t={ts[-1]:.3g}")


def _trajectory_2d(fig, traj: np.ndarray, ts: np.ndarray, target, max_paths: int) -> None:
  """Paths over the true density, and snapshots of all points at about 4 times."""
  d = traj.shape[-1]
  ax, ax_snap = fig.subplots(1, 2, sharex=True, sharey=True)
  rng = _data_range([traj[0], traj[-1]])
  _draw_density(ax, target, rng, d)
  paths = traj[:, :max_paths, :2]
  ax.plot(paths[..., 0], paths[..., 1], color="0.25", lw=0.6, alpha=0.6)
  ax.scatter(paths[0, :, 0], paths[0, :, 1], s=10, c="tab:orange", label=f"start, t={ts[0]:.3g}", zorder=3)
  ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=12, c="tab:red", marker="x", linewidths=1,
             label=f"end, t={ts[-1]:.3g}", zorder=3)
  ax.legend(loc="upper right", fontsize=8)
  ax.set_title(f"{paths.shape[1]} of {traj.shape[1]} paths{_dims_note(d)}")
  _label_2d(ax, rng)
  _draw_density(ax_snap, target, rng, d, filled=False)
  idx = _snapshot_indices(len(ts))
  span = max(ts.max() - ts.min(), 1e-12)
  for i in idx:
    colour = plt.get_cmap("plasma")(0.85 * (ts[i] - ts.min()) / span)  # plasma's top end is too pale
    ax_snap.scatter(traj[i, :, 0], traj[i, :, 1], s=5, color=colour, alpha=0.6, linewidths=0,
                    label=f"t={ts[i]:.3g}")
  ax_snap.legend(loc="upper right", fontsize=8, markerscale=4)
  ax_snap.set_title(f"all {traj.shape[1]} points at {len(idx)} times")
  _label_2d(ax_snap, rng)


def plot_trajectories(path: PathLike, target: datasets.Target | None, trajectory: np.ndarray, ts: np.ndarray, *,
                      max_paths: int = 64) -> None:
  """Paths of the reverse process from t = T down to t ~ 0.

  d = 1: x against t for the first `max_paths` paths, with a side histogram of the end states.
  d = 2: the first `max_paths` paths over the true density (start and end points marked), and
  a second panel with all B points at about 4 of the K times, coloured by time.

  Args:
    path: the PNG to write.
    target: the true distribution (or None for no density).
    trajectory: states [K, B, d] at the K times `ts`.
    ts: the times [K], from T down to about 0.
    max_paths: most paths drawn as lines.

  Raises:
    ValueError: trajectory not [K, B, d] or ts not [K].
  """
  traj, ts = np.asarray(trajectory, np.float64), np.asarray(ts, np.float64)
  if traj.ndim != 3 or min(traj.shape) < 1:
    raise ValueError(f"trajectory.shape={traj.shape} is invalid: must be [K, B, d].")
  if ts.shape != traj.shape[:1]:
    raise ValueError(f"ts.shape={ts.shape} is invalid: must be [K] = {traj.shape[:1]}.")
  d = traj.shape[-1]
  fig = plt.figure(figsize=(9.5, 4.2), layout="constrained")
  (_trajectory_1d if d == 1 else _trajectory_2d)(fig, traj, ts, target, max_paths)
  fig.suptitle(f"reverse-process trajectories ({len(ts)} times, d={d})")
  _save(fig, path)


def _score_on(fn: ScoreFn, x: np.ndarray, t: float) -> np.ndarray:
  """fn(x, t) at one time, as numpy [n, d]."""
  x = jnp.asarray(x, jnp.float32)
  return np.asarray(fn(x, jnp.full((x.shape[0],), t, jnp.float32)), np.float64)


def _quiver_panel(ax, fn: ScoreFn, t: float, extent, grid_size: int, d: int) -> float:
  """Arrows of fn(., t) on the grid, scaled so the 95th-percentile length spans one cell
  (longer ones are capped at 1.5 cells); returns that 95th-percentile norm."""
  gx, gy = np.meshgrid(np.linspace(*extent[:2], grid_size), np.linspace(*extent[2:], grid_size))
  x = np.zeros((gx.size, d))  # coordinates beyond the first two stay at 0 (a slice)
  x[:, 0], x[:, 1] = gx.ravel(), gy.ravel()
  s = _score_on(fn, x, t)[:, :2]
  norms = np.linalg.norm(s, axis=1)
  ref = float(np.nanquantile(norms, 0.95)) if np.any(np.isfinite(norms)) else 1.0
  cell = min(extent[1] - extent[0], extent[3] - extent[2]) / max(grid_size - 1, 1)
  arrows = s / max(ref, 1e-12) * cell
  arrows *= np.minimum(1.0, 1.5 * cell / np.maximum(np.linalg.norm(arrows, axis=1, keepdims=True), 1e-12))
  ax.quiver(gx, gy, arrows[:, 0].reshape(gx.shape), arrows[:, 1].reshape(gx.shape), np.log1p(norms),
            angles="xy", scale_units="xy", scale=1, cmap="viridis", width=0.004)
  ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
  return ref


def plot_score_field(path: PathLike, target: datasets.Target, score_fns: Mapping[str, ScoreFn],
                     ts: Sequence[float], *, grid_size: int = 20,
                     extent: tuple[float, float, float, float] = (-4.0, 5.0, -5.0, 4.0)) -> None:
  """Score fields s(x, t): rows are the entries of `score_fns`, columns the times `ts`.

  d = 2: arrows on a grid_size x grid_size grid over `extent`, normalised per panel (the
  95th-percentile length spans one grid cell; colour is log(1 + |s|)); the panel title gives t
  and that reference norm. For d > 2 the grid is the plane x_3 = ... = 0.
  d = 1: the curves of all entries overlaid, one panel per time, over x in extent[:2].

  Args:
    path: the PNG to write.
    target: the true distribution; only its `dim` is used.
    score_fns: name -> score_fn(x [n, d], t [n]) -> [n, d], e.g. {"model": ..., "exact": ...}.
    ts: the times, one column each.
    grid_size: arrows per side (d >= 2); curves use 400 points.
    extent: (xmin, xmax, ymin, ymax) of the grid.

  Raises:
    ValueError: no score functions or no times.
  """
  if not score_fns or not len(ts):
    raise ValueError(f"score_fns={list(score_fns)} and ts={list(ts)} must both be non-empty.")
  d, ts = int(target.dim), [float(t) for t in ts]
  score_fns = {name: jax.jit(fn) for name, fn in score_fns.items()}  # compiled once, t is traced
  rows = 1 if d == 1 else len(score_fns)
  fig, axes = plt.subplots(rows, len(ts), figsize=(3.6 * len(ts), 3.4 * rows + 0.4), squeeze=False,
                           layout="constrained")
  if d == 1:
    x = np.linspace(extent[0], extent[1], 400)[:, None]
    for ax, t in zip(axes[0], ts):
      for name, fn in score_fns.items():
        ax.plot(x[:, 0], _score_on(fn, x, t)[:, 0], lw=1.3, label=name)
      ax.set(xlabel="x", title=f"t = {t:.3g}")
      ax.axhline(0.0, color="0.7", lw=0.8, zorder=0)
      ax.legend(fontsize=8)
  else:
    for row, (name, fn) in zip(axes, score_fns.items()):
      for ax, t in zip(row, ts):
        ref = _quiver_panel(ax, fn, t, extent, grid_size, d)
        ax.set_title(f"{name}, t = {t:.3g}\n95th-percentile |s| = {ref:.3g}", fontsize=10)
        ax.label_outer()  # every panel has the same extent
  axes[0, 0].set_ylabel("score  d/dx log $p_t$(x)" if d == 1 else "$x_2$")
  note = ("" if d <= 2 else f" in the $(x_1, x_2)$ plane, other coords 0, d={d}") + (
      "" if d == 1 else "\narrow length relative to the panel's 95th-percentile |s|, colour log(1 + |s|)")
  fig.suptitle("score fields" + note)
  _save(fig, path)


def _ema(values: np.ndarray, decay: float) -> np.ndarray:
  """Exponential moving average m_i = decay m_{i-1} + (1 - decay) v_i, with m_0 = v_0."""
  out = np.empty_like(values)
  m = values[0]
  for i, v in enumerate(values):
    m = decay * m + (1.0 - decay) * v if i else v
    out[i] = m
  return out


def plot_loss(path: PathLike, steps: np.ndarray, losses: np.ndarray, *, ema: float = 0.98) -> None:
  """Training loss against step: raw values (light) and their moving average (dark).

  The y-axis is logarithmic when every finite loss is positive.

  Args:
    path: the PNG to write.
    steps: training steps [n].
    losses: loss values [n].
    ema: decay of the exponential moving average, in [0, 1).

  Raises:
    ValueError: steps and losses not both [n] with n >= 1, or ema outside [0, 1).
  """
  steps, losses = np.ravel(np.asarray(steps, np.float64)), np.ravel(np.asarray(losses, np.float64))
  if steps.shape != losses.shape or steps.size < 1:
    raise ValueError(f"steps.shape={steps.shape} and losses.shape={losses.shape} must be equal and non-empty.")
  if not 0.0 <= ema < 1.0:
    raise ValueError(f"ema={ema!r} is invalid: must be in [0, 1).")
  fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
  ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="loss")
  ax.plot(steps, _ema(losses, ema), color="tab:blue", lw=1.8, label=f"EMA (decay {ema:g})")
  finite = losses[np.isfinite(losses)]
  if finite.size and np.all(finite > 0):
    ax.set_yscale("log")
  ax.set(xlabel="training step", ylabel="loss", title=f"training loss (last EMA {_ema(losses, ema)[-1]:.4g})")
  ax.grid(alpha=0.3, which="both")
  ax.legend()
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
