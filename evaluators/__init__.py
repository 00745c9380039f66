"""Evaluations, chosen by name in `config.eval.evaluators`.

Each evaluator is a function `fn(ctx, **fields) -> (summary, arrays)`: `ctx` (a `Context`) holds
what the run built (SDE, target, model score, parameters, keys, mesh, sampler settings), the
fields are the evaluator's own settings from `config.eval` (a field no evaluator takes is an
error; one taken only by evaluators left out of the list is ignored, with a log line, so that
`--config.eval.evaluators=samples,plots` works on a config whose eval group also sets NLL
fields), `summary` a dict merged into eval/summary.json and `arrays` what goes into
samples/eval_<step>.npz. Evaluators run in the listed order and may read what earlier ones
returned (`ctx.summary`, `ctx.arrays`).
"""

from __future__ import annotations

import functools
import inspect
import time

from absl import logging

from evaluators.base import Context
from evaluators import bits, bound, conditional, images, inverse, plots, sdedit, toy
import workdir as wd
from utils import Registry, check_int

# Integer fields and their least values (0 turns a part off: no NLL, no trajectory plot).
MIN_VALUES = {"n_samples": 1, "n_floor_pairs": 1, "sw_projections": 1, "score_error_samples": 1,
              "nll_samples": 0, "nll_batch_size": 1, "n_trajectory": 0, "n_trajectory_samples": 1,
              "n_class_samples": 1, "n_grid": 1, "kl_samples": 2}
# Fields of the Context itself (every evaluator sees them): oracle = also evaluate the exact scores.
CONTEXT_FIELDS = ("oracle",)
EVALUATORS = Registry("eval", "evaluators")
for _module in (toy, bound, conditional, images, plots, inverse, sdedit, bits):
  for _name, _fn in _module.EVALUATORS.items():
    EVALUATORS.register(_name, _fn)


def _params(name: str) -> list:
  return list(inspect.signature(EVALUATORS.get(name)).parameters.values())[1:]


def fields_of(name: str) -> set[str]:
  """The config.eval fields evaluator `name` takes."""
  return {p.name for p in _params(name)}


def check(names, fields: dict) -> list[str]:
  """Checks the list of evaluators and their fields; returns the fields that only evaluators left out
  of the list take (ignored: a config's eval group sets the fields of all its evaluators, and a
  command-line override can shorten the list but cannot delete a field).

  Raises:
    ValueError: an unknown evaluator, a field no evaluator takes, or a chosen evaluator's missing field.
  """
  if isinstance(names, str) or not all(isinstance(n, str) for n in names):
    raise ValueError(f"eval.evaluators={names!r} must be a list of names; valid names: {EVALUATORS.names()}.")
  for name in names:
    EVALUATORS.get(name)
  taken = set(CONTEXT_FIELDS).union(*(fields_of(n) for n in names))
  known = set(CONTEXT_FIELDS).union(*(fields_of(n) for n in EVALUATORS.names()))
  for field in sorted(fields):
    if field not in known:
      raise ValueError(f"eval.{field} is not a field of any evaluator; the fields of the evaluators {list(names)}: "
                       f"{sorted(taken)}.")
  ignored = sorted(set(fields) - taken)
  if ignored:
    logging.info("eval fields %s ignored: no evaluator in eval.evaluators=%s takes them.", ignored, list(names))
  for name in names:
    for field in (p.name for p in _params(name) if p.default is p.empty):
      if field not in fields:
        raise ValueError(f"eval.evaluators contains {name!r}, which needs the field eval.{field}.")
  for field, low in MIN_VALUES.items():
    if field in fields:
      check_int(f"eval.{field}", fields[field], low)
  return ignored


def check_sampler(ev, sampler, target) -> None:
  """What the chosen evaluators need of the configured sampler (built on one example).

  Raises:
    ValueError: trajectory plots with a sampler that returns fewer states than eval.n_trajectory, or
      `sampler_kl` with a stochastic sampler or a target without a density.
  """
  n_traj = ev.get("n_trajectory", 0) if "plots" in ev.evaluators else 0
  if n_traj > sampler.max_trajectory:
    raise ValueError(f"eval.n_trajectory={n_traj!r} needs a sampler that returns up to that many trajectory "
                     f"states (sampling.method={sampler.method!r}: {sampler.max_trajectory}); "
                     "set eval.n_trajectory = 0.")
  toy.check_sampler_kl(ev.evaluators, sampler, target)


def run(ctx: Context, names, fields: dict) -> tuple[dict, dict]:
  """Runs the evaluators in order; returns (summary, arrays), with each one's wall time in
  summary["timings"]["<name>_s"]."""
  timings = {}
  for i, name in enumerate(names):
    fn = EVALUATORS.get(name)
    kwargs = {k: v for k, v in fields.items() if k in fields_of(name)}
    t0 = time.time()
    with wd.phase(f"eval {i + 1}/{len(names)} '{name}' (checkpoint step {ctx.step})"):
      summary, arrays = fn(ctx, **kwargs)
    timings[f"{name}_s"] = time.time() - t0
    ctx.summary.update(summary)
    ctx.arrays.update(arrays)
  ctx.summary["timings"] = timings
  return ctx.summary, ctx.arrays


def headline(summary: dict) -> dict:
  """The summary's headline numbers for metrics.jsonl / TensorBoard."""
  flat = {"nfe": summary.get("nfe", 0)}
  picks = {"energy_distance": ("model", "energy_distance"), "energy_ratio": ("energy_ratio",),
           "energy_floor": ("floor", "energy_distance"), "score_weighted_mse": ("score_error", "weighted_mse"),
           "score_relative": ("score_error", "relative"),
           "vlb_bits_per_dim": ("vlb", "bits_per_dim"), "nll_model": ("likelihood", "nll_model"),
           "nll_oracle": ("likelihood", "nll_oracle"), "nll_true": ("likelihood", "nll_true"),
           "bits_per_dim": ("bits_per_dim", "bpd"), "bits_per_dim_stderr": ("bits_per_dim", "bpd_stderr"),
           "frechet_fd": ("frechet", "fd"), "frechet_fd_floor": ("frechet", "fd_floor"),
           "sampler_kl": ("sampler_kl", "model", "kl"), "sampler_kl_oracle": ("sampler_kl", "oracle", "kl")}
  for name, path in picks.items():
    value = functools.reduce(lambda d, k: d.get(k) if isinstance(d, dict) else None, path, summary)
    if isinstance(value, (int, float)):
      flat[name] = value
  for label, row in summary.get("per_class", {}).items():
    if isinstance(row, dict) and "floor" in row:
      flat.update({f"class_{label}/{n}_energy_ratio": v["energy_ratio"] for n, v in row.items() if n != "floor"})
  return flat


__all__ = ["Context", "EVALUATORS", "check", "fields_of", "headline", "run"]
