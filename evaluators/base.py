"""What every evaluator receives: the `Context` of a run, built once by run_lib."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
from jax.sharding import Mesh

import sampling
import sharding


@dataclasses.dataclass
class Context:
  """Plain values an evaluator works from.

  Attributes:
    sde, target, shape: the forward SDE, the data (toy target or image dataset), one example's shape.
    model_score_fn: model_score_fn(params, x, t, y=None) -> score; `network` the Flax module;
      `params` the EMA parameters.
    step: the checkpoint's step.
    key: the root eval key; sample_key: the root key of `--mode=sample` and of trajectories.
    mesh: the device mesh.
    sampler_kwargs: the `sampling` group, for `sampling.get_sampler` (start_moments="data" resolved to numbers).
    sampler_config: the `sampling` group as the config gives it, for summaries (None: sampler_kwargs).
    likelihood_fn: from `likelihood.get_likelihood_fn`.
    guidance: {"w": classifier-free weight, "classifier_scale": classifier-guidance scale}.
    classifier: (log_prob_fn, params) of a trained noise-conditional classifier, or None.
    num_classes: K of a class-conditional score model (0: unconditional).
    oracle: whether the target's exact scores are evaluated too.
    plots_dir: where figures go (None: no figures).
    summary, arrays: what earlier evaluators returned.
    cache: values shared between evaluators (e.g. a feature network).
  """

  sde: Any
  target: Any
  shape: tuple[int, ...]
  model_score_fn: Callable
  network: Any
  params: Any
  step: int
  key: jax.Array
  sample_key: jax.Array
  mesh: Mesh
  sampler_kwargs: dict
  likelihood_fn: Callable
  guidance: dict = dataclasses.field(default_factory=dict)
  classifier: Any = None
  num_classes: int = 0
  oracle: bool = True
  plots_dir: str | None = None
  summary: dict = dataclasses.field(default_factory=dict)
  arrays: dict = dataclasses.field(default_factory=dict)
  cache: dict = dataclasses.field(default_factory=dict)
  sampler_config: dict | None = None

  def sampler_summary(self) -> dict:
    """The sampling fields a summary records: the config's, so a Gaussian start's moments are "data"."""
    return dict(self.sampler_kwargs if self.sampler_config is None else self.sampler_config)

  def score_fn(self, params=None) -> Callable:
    """The model's score with `params` (default: the EMA parameters) bound."""
    return functools.partial(self.model_score_fn, self.params if params is None else params)

  def data_sampler(self) -> Callable:
    """The jitted true-data sampler sample_fn(key, n) of a toy target, compiled once per n for the run."""
    if "data_sampler" not in self.cache:
      self.cache["data_sampler"] = jax.jit(self.target.sample, static_argnums=1)
    return self.cache["data_sampler"]

  def sampler(self, n: int, make_score: Callable, *, n_trajectory: int = 0) -> Callable:
    """fn(key, *args) -> (x [n, ...], nfe[, trajectory]): the configured sampler, sharded on the mesh."""
    n_pad = sharding.padded_size(n, self.mesh)
    built = sampling.get_sampler(self.sde, (n_pad,) + tuple(self.shape), **self.sampler_kwargs)
    return sharding.sharded_sampler(built, self.mesh, n, make_score, n_trajectory=n_trajectory)

  def model_sampler(self, n: int, *, n_trajectory: int = 0) -> Callable:
    """fn(key, params) with the model's score."""
    return self.sampler(n, lambda p: functools.partial(self.model_score_fn, p), n_trajectory=n_trajectory)

  def oracle_sampler(self, n: int) -> Callable:
    """fn(key) with the target's exact score."""
    oracle = self.target.score_fn(self.sde)
    return self.sampler(n, lambda: oracle)
