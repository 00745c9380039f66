"""Figures of a run: samples over the true density, trajectories, score fields, loss; image grids."""

from __future__ import annotations

import os

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


def marginal_std(sde, target, ts: np.ndarray) -> np.ndarray:
  """[K, d]: the standard deviation of each coordinate under p_t, sqrt(alpha(t)^2 var_0 + sigma(t)^2)."""
  alpha, sigma = (np.asarray(c, np.float64)[:, None] for c in sde.marginal_coeffs(jnp.asarray(ts, jnp.float32)))
  return np.sqrt(alpha**2 * np.diag(np.atleast_2d(target.cov()))[None] + sigma**2)


def plots(ctx: Context, *, n_trajectory: int, n_trajectory_samples: int) -> tuple[dict, dict]:
  """plots/samples.png (model, oracle and reference samples of earlier evaluators against the true
  density and its marginals), trajectories.png (n_trajectory states of n_trajectory_samples paths,
  each coordinate divided by its standard deviation under p_t; 0 skips it), score_field.png (the
  exact score and the model's relative error at t = 0.01, 0.1, 0.3, 0.6 T) and loss.png."""
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
    N, T = ctx.sde.N, ctx.sde.T
    ts = np.linspace(T, eps, N + 1)[np.minimum(np.arange(1, n_trajectory + 1) * -(-N // n_trajectory), N)]
    plotting.plot_trajectories(os.path.join(ctx.plots_dir, "trajectories.png"), ctx.target, traj, ts,
                               scale=marginal_std(ctx.sde, ctx.target, ts), t_start=T)
  T = ctx.sde.T
  plotting.plot_score_field(os.path.join(ctx.plots_dir, "score_field.png"), ctx.target, ctx.score_fn(),
                            ctx.target.score_fn(ctx.sde), [0.01 * T, 0.1 * T, 0.3 * T, 0.6 * T],
                            log_prob_fn=ctx.target.log_prob_fn(ctx.sde))
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
