"""Figures of a run: samples over the true density, trajectories, score fields, loss; image grids."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

import sharding
import workdir as wd
from evaluators.base import Context


def _loss(ctx: Context) -> None:
  import plotting

  rows = wd.read_metrics(os.path.dirname(ctx.plots_dir), "train")
  if rows:
    plotting.plot_loss(os.path.join(ctx.plots_dir, "loss.png"), [r["step"] for r in rows], [r["loss"] for r in rows])


def plots(ctx: Context, *, n_trajectory: int, n_trajectory_samples: int) -> tuple[dict, dict]:
  """plots/samples.png (model, oracle and reference samples of earlier evaluators over the true
  density), trajectories.png (n_trajectory states of n_trajectory_samples paths; 0 skips it),
  score_field.png and loss.png."""
  import plotting  # matplotlib only when plotting

  if not (ctx.plots_dir and sharding.is_primary()):
    return {}, {}
  sets = {k: ctx.arrays[k] for k in ("model", "oracle", "reference") if k in ctx.arrays}
  plotting.plot_samples(os.path.join(ctx.plots_dir, "samples.png"), ctx.target, sets)
  if n_trajectory:
    with wd.phase(f"sampling {n_trajectory_samples} trajectories of {n_trajectory} states"):
      _, _, traj = ctx.model_sampler(n_trajectory_samples, n_trajectory=n_trajectory)(ctx.sample_key, ctx.params)
      traj = sharding.to_host(traj)
    eps = ctx.sampler_kwargs.get("eps", 0.0)  # ancestral sampling ends at t = 0
    N = ctx.sde.N
    ts = np.linspace(ctx.sde.T, eps, N + 1)[np.minimum(np.arange(1, n_trajectory + 1) * -(-N // n_trajectory), N)]
    plotting.plot_trajectories(os.path.join(ctx.plots_dir, "trajectories.png"), ctx.target, traj, ts)
  T = ctx.sde.T
  score_fns = {"model": jax.jit(ctx.score_fn()), "exact": jax.jit(ctx.target.score_fn(ctx.sde))}
  plotting.plot_score_field(os.path.join(ctx.plots_dir, "score_field.png"), ctx.target, score_fns,
                            [0.01 * T, 0.1 * T, 0.3 * T, 0.6 * T])
  _loss(ctx)
  return {}, {}


def image_plots(ctx: Context, *, n_grid: int) -> tuple[dict, dict]:
  """plots/samples_grid.png (the first n_grid samples), data_grid.png (real train images),
  class_grid.png (a row per class, with class_images) and loss.png."""
  import plotting

  if not (ctx.plots_dir and sharding.is_primary()):
    return {}, {}
  t = ctx.target
  unit = lambda a: np.clip(np.nan_to_num(np.asarray(t.to_unit(jnp.asarray(a)))), 0.0, 1.0)
  plotting.plot_image_grid(os.path.join(ctx.plots_dir, "samples_grid.png"), unit(ctx.arrays["model"][:n_grid]))
  plotting.plot_image_grid(os.path.join(ctx.plots_dir, "data_grid.png"), unit(t.scale(t.train_x[:n_grid])))
  if "per_class" in ctx.arrays:  # [K, n, H, W, C]
    x_class = ctx.arrays["per_class"]
    per_row = min(10, x_class.shape[1])
    grid = x_class[:, :per_row].reshape((-1,) + x_class.shape[2:])
    plotting.plot_image_grid(os.path.join(ctx.plots_dir, "class_grid.png"), unit(grid), nrow=per_row,
                             row_labels=[f"class {k}" for k in range(x_class.shape[0])])
  _loss(ctx)
  return {}, {}


EVALUATORS = {"plots": plots, "image_plots": image_plots}
