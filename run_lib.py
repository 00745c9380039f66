"""Builds an experiment from a config once, then trains, evaluates and samples: the only module
that reads a ConfigDict. Each config group feeds one consumer (docs/architecture.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

import datasets
import evaluators
import likelihood
import losses
import models
import sampling
import sde_lib
import sharding
import train as train_lib
import workdir as wd
from evaluators.images import check_digits
from sharding import make_mesh
from train import Preempted, TrainingDiverged  # noqa: F401  (run.py and tests catch them here)
from utils import check_fields, check_int, check_real, root_keys
from workdir import read_metrics  # noqa: F401  (re-exported)

MODES = ("train", "train_classifier", "eval", "sample", "all")
# Fields that define what a checkpoint holds or how it was trained: changing them on resume would
# silently mix two experiments. Others (n_iters, logging, sampling, eval) may change.
RUN_DEFINING = ("seed", "sde", "data", "model", "loss", "optim", "training.batch_size",
                "training.ema_rate", "training.ema_warmup")


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything built from a config, before anything is compiled."""

  config: ml_collections.ConfigDict
  sde: sde_lib.SDE
  target: Any
  score_model: models.ScoreModel
  optimizer: Any
  train_step: Callable
  shape: tuple[int, ...]  # one example's shape
  likelihood_fn: Callable
  schedule: train_lib.Schedule
  classifier: losses.ClassifierSetup | None = None  # the guidance classifier
  sampler_fields: dict = dataclasses.field(default_factory=dict)  # `sampler_fields(config.sampling, target)`

  @property
  def model_score_fn(self) -> Callable:
    return self.score_model.score_fn


def _group(config, name: str) -> dict:
  return config[name].to_dict() if name in config else {}


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the run's own fields (seed, training, eval, guidance), before anything is compiled.

  Raises:
    ValueError: naming the field, its value and what is allowed.
  """
  check_int("seed", config.seed, 0)
  tr = config.training
  check_fields("training", train_lib.Schedule, tr)
  for f in ("batch_size", "n_iters", "log_freq", "checkpoint_freq", "snapshot_freq"):
    check_int(f"training.{f}", tr[f], 1)
  if not isinstance(tr.get("device_loop", True), bool):
    raise ValueError(f"training.device_loop={tr.device_loop!r} must be True or False.")
  for f in ("checkpoint_freq", "snapshot_freq"):
    if tr[f] % tr.log_freq:
      raise ValueError(f"training.{f}={tr[f]} must be a multiple of training.log_freq={tr.log_freq}.")
  if tr.batch_size % jax.device_count():
    raise ValueError(f"training.batch_size={tr.batch_size} must be divisible by the device count "
                     f"{jax.device_count()}.")
  ev = _group(config, "eval")
  evaluators.check(ev.pop("evaluators", []), ev)
  for f, value in {"w": 0.0, "classifier_scale": 0.0, **_group(config, "guidance")}.items():
    if f not in ("w", "classifier_scale"):
      raise ValueError(f"guidance.{f} is not a field of guidance; allowed fields: ['classifier_scale', 'w'].")
    check_real(f"guidance.{f}", value, low=0.0)


def _validate_data(config, target, num_classes: int) -> None:
  """Fields that depend on the dataset."""
  ev = config.eval
  check_digits(target, ev.evaluators)
  if datasets.is_image_dataset(target):
    if ev.get("nll_samples", 0) > len(target.test_x):
      raise ValueError(f"eval.nll_samples={ev.nll_samples} exceeds the test split ({len(target.test_x)} images).")
    if "n_grid" in ev and "n_samples" in ev and ev.n_grid > ev.n_samples:
      raise ValueError(f"eval.n_grid={ev.n_grid} must be <= eval.n_samples={ev.n_samples}.")
  labelled = hasattr(target, "sample_with_labels") and getattr(target, "has_labels", True)
  if num_classes and not labelled:
    raise ValueError(f"model.num_classes={num_classes} needs a dataset with labels; data.name="
                     f"{config.data.name!r} has none (set model.num_classes=0).")
  if num_classes and num_classes != target.num_classes:
    raise ValueError(f"model.num_classes={num_classes} must equal the dataset's number of classes {target.num_classes}.")
  g = _group(config, "guidance")
  if g.get("w", 0.0) and not num_classes:
    raise ValueError(f"guidance.w={g['w']!r} needs a class-conditional model (model.num_classes > 0).")
  if g.get("classifier_scale", 0.0) and "classifier" not in config:
    raise ValueError(f"guidance.classifier_scale={g['classifier_scale']!r} needs a `classifier` config group.")
  if "classifier" in config and not labelled:
    raise ValueError(f"the classifier needs a dataset with labels; data.name={config.data.name!r} has none.")


def build(config: ml_collections.ConfigDict) -> "Experiment":
  """Builds SDE, data, model, loss, optimizer, train step, likelihood and (checked) sampler and
  evaluators from `config`; every bad field raises ValueError here, before anything is compiled."""
  validate(config)
  sde = sde_lib.get_sde(**config.sde)
  target = datasets.get_dataset(**config.data)
  shape = tuple(target.shape) if datasets.is_image_dataset(target) else (target.dim,)
  score_model = models.get_score_model(sde, **config.model)
  if hasattr(score_model.network, "validate_input"):
    score_model.network.validate_input(shape)
  check_int("model.num_classes", num_classes := int(config.model.get("num_classes", 0)), 0)
  _validate_data(config, target, num_classes)
  loss_fn = losses.get_loss_fn(sde, score_model, num_classes=num_classes, **config.loss)
  optimizer = losses.get_optimizer(total_steps=config.training.n_iters, **config.optim)
  sched = train_lib.Schedule(**config.training)
  train_step = losses.get_train_step_fn(loss_fn, optimizer, ema_rate=sched.ema_rate, ema_warmup=sched.ema_warmup)
  sampler = sampling.get_sampler(sde, (1,) + shape, **(fields := sampler_fields(config.sampling, target)))
  evaluators.check_sampler(config.eval, sampler, target)
  likelihood_fn = likelihood.get_likelihood_fn(sde, **config.likelihood)
  classifier = None
  if "classifier" in config:
    check_fields("classifier", losses.get_classifier_setup, config.classifier)
    classifier = losses.get_classifier_setup(sde, target.num_classes, **config.classifier)
    if classifier.batch_size % jax.device_count():
      raise ValueError(f"classifier.batch_size={classifier.batch_size} must be divisible by the device count "
                       f"{jax.device_count()}.")
  return Experiment(config, sde, target, score_model, optimizer, train_step, shape, likelihood_fn, sched,
                    classifier, fields)


def sampler_fields(sampling_group, target) -> dict:
  """get_sampler's fields of a sampling group: start_moments="data" becomes the target's `datasets.moments`."""
  fields = sampling_group.to_dict()
  data = {"start_moments": datasets.moments(target)} if fields.get("start_moments") == "data" else {}
  return {**fields, **data}


def _experiment(config_or_exp) -> Experiment:
  return config_or_exp if isinstance(config_or_exp, Experiment) else build(config_or_exp)


def init_state(exp: Experiment, key: jax.Array) -> losses.TrainState:
  return losses.init_train_state(models.init_params(key, exp.score_model.network, (1,) + exp.shape), exp.optimizer)


def train_job(exp: Experiment, mesh) -> tuple[train_lib.Job, train_lib.Schedule, losses.TrainState]:
  """(job, schedule, initial replicated state) of the score model's training."""
  keys = root_keys(exp.config.seed)
  # an image dataset goes into the step as a pytree of device arrays, replicated
  data = jax.device_put(exp.target, sharding.replicated(mesh)) if datasets.is_image_dataset(exp.target) else None
  batch_fn = datasets.get_batch_fn(exp.target, labelled=bool(exp.config.model.get("num_classes", 0)))
  job = train_lib.Job(exp.train_step, batch_fn, data, keys["data"], keys["train"])
  return job, exp.schedule, jax.device_put(init_state(exp, keys["init"]), sharding.replicated(mesh))


def train(config, workdir: str, *, stop_after: int | None = None, mesh=None) -> losses.TrainState:
  """Trains (or resumes) the score model to config.training.n_iters (see `train.train`).

  Raises:
    ValueError: a bad config, or a workdir trained with an incompatible config.
    TrainingDiverged, Preempted: see `train.train`.
  """
  exp = _experiment(config)
  os.makedirs(workdir, exist_ok=True)
  with wd.workdir_lock(workdir):
    wd.check_resume_compatible(json.loads(exp.config.to_json_best_effort()), workdir, RUN_DEFINING)
    wd.write_config(exp.config.to_json_best_effort(indent=2, sort_keys=True), workdir)
    mesh = mesh or make_mesh()
    job, sched, state = train_job(exp, mesh)
    return train_lib.train(job, sched, state, ckpt_root=workdir, metrics_dir=workdir, mesh=mesh,
                           stop_after=stop_after)


def train_classifier(config, workdir: str) -> losses.TrainState:
  """Trains (or resumes) the noise-conditional classifier of the `classifier` group into
  workdir/classifier/ with the same loop; metrics "classifier_train".

  Raises:
    ValueError: no classifier group, or a bad classifier field.
  """
  exp = _experiment(config)
  if exp.classifier is None:
    raise ValueError("--mode=train_classifier needs a `classifier` config group (see configs/cond_gmm.py).")
  cc, mesh = exp.classifier, make_mesh()
  keys = jax.random.split(jax.random.fold_in(jax.random.key(exp.config.seed), 7), 3)  # init, data, train
  job = train_lib.Job(cc.train_step, datasets.get_batch_fn(exp.target, labelled=True), None, keys[1], keys[2],
                      kind="classifier_train", lr_field="classifier.optim.lr")
  sched = train_lib.Schedule(cc.n_iters, cc.batch_size, cc.log_freq, cc.n_iters, cc.n_iters)
  state = losses.init_train_state(models.init_params(keys[0], cc.network, (1,) + exp.shape), cc.optimizer)
  os.makedirs(os.path.join(workdir, "classifier"), exist_ok=True)
  with wd.workdir_lock(workdir):
    return train_lib.train(job, sched, jax.device_put(state, sharding.replicated(mesh)),
                           ckpt_root=os.path.join(workdir, "classifier"), metrics_dir=workdir, mesh=mesh)


def _load(mngr_root: str, snapshot_freq: int, init, what: str):
  mngr = wd.checkpoint_manager(mngr_root, snapshot_freq)
  if mngr.latest_step() is None:
    raise ValueError(f"--workdir={what!r} holds no checkpoint; run with --mode=train first.")
  return wd.restore_state(mngr, init)


def load_state(exp: Experiment, workdir: str) -> losses.TrainState:
  """The latest checkpoint in workdir (ValueError if there is none)."""
  return _load(workdir, exp.config.training.snapshot_freq, init_state(exp, root_keys(exp.config.seed)["init"]),
               workdir)


def _load_classifier(exp: Experiment, workdir: str):
  """(log_prob_fn, params) of the trained guidance classifier, or None when none was trained."""
  path = os.path.join(workdir, "classifier")
  if exp.classifier is None or not os.path.isdir(os.path.join(path, "checkpoints")):
    return None
  cc = exp.classifier
  return cc.log_prob_fn, _load(path, cc.n_iters, losses.init_train_state(
      models.init_params(jax.random.key(0), cc.network, (1,) + exp.shape), cc.optimizer), path).params


def sample(config, workdir: str) -> dict:
  """Draws eval.n_samples samples with the trained model; writes samples/samples_<step>.npz."""
  exp = _experiment(config)
  ctx = _context(exp, workdir, state := load_state(exp, workdir), classifier=False)
  with wd.phase(f"sampling {exp.config.eval.n_samples:,} points at checkpoint step {int(state.step)}"):
    x, nfe = jax.block_until_ready(ctx.model_sampler(exp.config.eval.n_samples)(ctx.sample_key, state.ema_params))
  path = os.path.join(workdir, "samples", f"samples_{int(state.step)}.npz")
  if sharding.is_primary():
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    np.savez(path, model=sharding.to_host(x), nfe=int(nfe))
  return {"path": path, "nfe": int(nfe)}


def _context(exp: Experiment, workdir: str, state, *, classifier: bool = True) -> evaluators.Context:
  keys, cfg, sde = root_keys(exp.config.seed), exp.config, sde_lib.bound(exp.sde, state.ema_params)
  return evaluators.Context(  # sde: with a learned schedule, the checkpoint's own
      sde=sde, target=exp.target, shape=exp.shape, model_score_fn=exp.model_score_fn, guidance=_group(cfg, "guidance"),
      network=exp.score_model.network, params=state.ema_params, step=int(state.step), key=keys["eval"],
      sample_key=keys["sample"], mesh=make_mesh(), sampler_kwargs=exp.sampler_fields,
      sampler_config=cfg.sampling.to_dict(), classifier=_load_classifier(exp, workdir) if classifier else None,
      likelihood_fn=exp.likelihood_fn if sde is exp.sde else likelihood.get_likelihood_fn(sde, **cfg.likelihood),
      num_classes=int(cfg.model.get("num_classes", 0)), oracle=bool(cfg.eval.get("oracle", False)),
      plots_dir=os.path.join(workdir, "plots"))


def evaluate(config, workdir: str) -> dict:
  """Runs the evaluators of config.eval.evaluators on the latest checkpoint; writes
  eval/summary.json, samples/eval_<step>.npz and plots/*.png; returns the summary."""
  exp = _experiment(config)
  ctx = _context(exp, workdir, state := load_state(exp, workdir))
  ev = exp.config.eval.to_dict()
  ctx.summary.update(step=int(state.step), data=exp.config.data.to_dict())
  summary, arrays = evaluators.run(ctx, ev.pop("evaluators"), ev)
  wd.write_eval(workdir, int(state.step), summary, arrays, evaluators.headline(summary))
  return summary


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = "all") -> dict:
  """Entry point for run.py: mode in train | train_classifier | eval | sample | all ("all"
  trains the score model, then the classifier when the config has one, then evaluates).

  Raises:
    ValueError: bad mode or config (before anything is compiled or written).
    TrainingDiverged, Preempted: see `train.train`.
  """
  if mode not in MODES:
    raise ValueError(f"--mode={mode!r} is unknown; valid: {list(MODES)}.")
  wd.check_workdir(workdir)
  exp = build(config)  # once: every config error surfaces before any work
  if mode in ("eval", "sample") and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ValueError(f"--workdir={workdir!r} holds no checkpoint; run with --mode=train first.")
  os.makedirs(workdir, exist_ok=True)
  out = {}
  with wd.workdir_lock(workdir):
    steps = [("train", mode in ("train", "all"), train),
             ("train_classifier", mode == "train_classifier" or (mode == "all" and exp.classifier is not None),
              train_classifier),
             ("sample", mode == "sample", sample), ("eval", mode in ("eval", "all"), evaluate)]
    for name, wanted, fn in steps:
      if wanted:
        t0, result = time.time(), fn(exp, workdir)
        out[f"{name}_s"] = time.time() - t0
        out.update({name: result} if name in ("sample", "eval") else {})
  return out
