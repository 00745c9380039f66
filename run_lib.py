"""Train, evaluate and sample from a config: the only module that reads a ConfigDict.

Workdir layout: config.json, checkpoints/ (orbax), metrics.jsonl, tb/, samples/*.npz,
plots/*.png, eval/summary.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import signal
import sys
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import classifier
import datasets
import ddpm  # registers the "ddpm" SDE and the "ddpm_ancestral" sampler
import evaluation
import likelihood
import losses
import models
import sampling
import sde_lib

MODES = ("train", "train_classifier", "eval", "sample", "all")


# --- building objects from a config ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything built from a config, before anything is compiled."""

  config: ml_collections.ConfigDict
  sde: sde_lib.SDE
  target: Any
  model: Any
  model_score_fn: Callable
  optimizer: Any
  train_step: Callable
  shape: tuple[int, ...]  # one example's shape


def _kwargs(group: ml_collections.ConfigDict, drop: tuple[str, ...] = ()) -> dict:
  return {k: v for k, v in group.to_dict().items() if k not in drop}


def _positive_int(group: str, cfg, field: str) -> int:
  value = cfg[field]
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{group}.{field}={value!r} must be a positive integer.")
  return value


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the fields the library does not check itself, before anything is compiled.

  Raises:
    ValueError: naming the field, its value and what is allowed.
  """
  if not isinstance(config.seed, int) or isinstance(config.seed, bool) or config.seed < 0:
    raise ValueError(f"seed={config.seed!r} must be an integer >= 0.")
  tr = config.training
  for f in ("batch_size", "n_iters", "log_freq", "checkpoint_freq", "snapshot_freq"):
    _positive_int("training", tr, f)
  if not isinstance(tr.get("device_loop", True), bool):
    raise ValueError(f"training.device_loop={tr.device_loop!r} must be True or False.")
  for f in ("checkpoint_freq", "snapshot_freq"):
    if tr[f] % tr.log_freq:
      raise ValueError(f"training.{f}={tr[f]} must be a multiple of training.log_freq={tr.log_freq}.")
  n_dev = jax.device_count()
  if tr.batch_size % n_dev:
    raise ValueError(f"training.batch_size={tr.batch_size} must be divisible by the device count {n_dev}.")
  if "vlb" in config:
    _positive_int("vlb", config.vlb, "n_points")
  if datasets.is_image_dataset_name(config.data.get("name")):
    _validate_image_eval(config.eval)
    return
  ev = config.eval
  for f in ("n_samples", "n_floor_pairs", "n_trajectory_samples", "score_error_samples", "sw_projections"):
    _positive_int("eval", ev, f)
  if not isinstance(ev.nll_samples, int) or ev.nll_samples < 0:
    raise ValueError(f"eval.nll_samples={ev.nll_samples!r} must be an integer >= 0 (0 skips the NLL).")
  if not isinstance(ev.n_trajectory, int) or ev.n_trajectory < 0:
    raise ValueError(f"eval.n_trajectory={ev.n_trajectory!r} must be an integer >= 0.")


IMAGE_EVAL_FIELDS = ("n_samples", "n_grid", "nll_samples", "nll_batch_size", "frechet", "plots", "classifier",
                     "n_class_samples")


def _validate_image_eval(ev: ml_collections.ConfigDict) -> None:
  """The eval group of image configs (see configs/default_digits.py)."""
  unknown = sorted(set(ev.keys()) - set(IMAGE_EVAL_FIELDS))
  if unknown:
    raise ValueError(f"eval.{unknown[0]} is not a field of the image eval; allowed fields: {list(IMAGE_EVAL_FIELDS)}.")
  for f in ("n_samples", "n_grid", "nll_batch_size"):
    _positive_int("eval", ev, f)
  if not isinstance(ev.nll_samples, int) or ev.nll_samples < 0:
    raise ValueError(f"eval.nll_samples={ev.nll_samples!r} must be an integer >= 0 (0 skips bits/dim).")
  if ev.n_grid > ev.n_samples:
    raise ValueError(f"eval.n_grid={ev.n_grid} must be <= eval.n_samples={ev.n_samples}.")


def example_shape(target) -> tuple[int, ...]:
  """One example's shape: (H, W, C) for image datasets, (dim,) for toy targets."""
  return tuple(target.shape) if datasets.is_image_dataset(target) else (target.dim,)


def _dropout(model) -> float:
  return float(getattr(model, "dropout", 0.0))


def build(config: ml_collections.ConfigDict) -> Experiment:
  """Builds SDE, target, model, loss, optimizer and train step from `config`."""
  validate(config)
  sde = sde_lib.get_sde(**config.sde)
  target = datasets.get_dataset(**config.data)
  shape = example_shape(target)
  if datasets.is_image_dataset(target):
    _check_image_eval(config, target)
  loss_name = config.loss.get("name", "sde")
  if loss_name == "ddpm":  # discrete DDPM (ddpm.py): an eps-network conditioned on c = step / T
    schedule = ddpm.schedule_of(sde)
    model = models.get_model(**config.model)
    if _dropout(model):
      raise ValueError(f"model.dropout={model.dropout} is not supported with loss.name='ddpm'; set it to 0.")
    model_score_fn = ddpm.get_model_score_fn(model, schedule)
    loss_fn = ddpm.get_ddpm_loss_fn(schedule, ddpm.get_eps_fn(model, schedule), **_kwargs(config.loss, drop=("name",)))
  elif loss_name == "sde":
    score_keys = ("parameterization", "conditioning", "input_scaling")
    model = models.get_model(**_kwargs(config.model, drop=score_keys))
    score_kwargs = {k: config.model[k] for k in score_keys}
    model_score_fn = models.get_score_fn(sde, model, **score_kwargs)
    # Training calls the network with train=True and, with dropout, a per-step dropout key.
    train_score_fn = models.get_score_fn(sde, model, train=True, **score_kwargs)
    loss_fn = losses.get_sde_loss_fn(sde, train_score_fn, model_key=_dropout(model) > 0,
                                     num_classes=num_classes(config),
                                     **_kwargs(config.loss, drop=("name",)))
  else:
    raise ValueError(f"loss.name={loss_name!r} is unknown; valid: ['ddpm', 'sde'].")
  if "vlb" in config:  # build (not run) the bound so bad vlb fields fail here
    ddpm.get_vlb_fn(ddpm.schedule_of(sde), **_kwargs(config.vlb, drop=("n_points",)))
  optimizer = losses.get_optimizer(total_steps=config.training.n_iters, **config.optim)
  train_step = losses.get_train_step_fn(loss_fn, optimizer, ema_rate=config.training.ema_rate,
                                        ema_warmup=config.training.ema_warmup)
  if hasattr(model, "validate_input"):
    model.validate_input(shape)
  # Build (not run) the sampler and likelihood once so their bad fields fail here.
  sampler_cfg = sampler_kwargs(config)
  sampling.get_sampler(sde, (1,) + shape, **sampler_cfg)
  n_traj = config.eval.get("n_trajectory", 0)  # image evals plot no trajectories
  if config.eval.plots and n_traj:  # write_plots asks the sampler for trajectories
    try:
      sampling.get_sampler(sde, (1,) + shape, **sampler_cfg, n_trajectory=n_traj)
    except ValueError as e:
      raise ValueError(f"eval.n_trajectory={n_traj!r} (with eval.plots) needs a sampler "
                       f"that returns trajectories ({e}); set eval.n_trajectory = 0.") from None
  _likelihood_fn(sde, config)
  validate_conditional(config, target)
  return Experiment(config, sde, target, model, model_score_fn, optimizer, train_step, shape)


# --- workdir, logging, checkpoints ----------------------------------------------------

def is_primary() -> bool:
  """Only process 0 writes logs, plots and summaries; every process writes checkpoints."""
  return jax.process_index() == 0


class MetricWriter:
  """Appends JSON lines to metrics.jsonl and scalars to TensorBoard (tb/); no-op off process 0."""

  def __init__(self, workdir: str):
    self._path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    self._active = is_primary()
    if not self._active:
      return
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))
    except ImportError:  # pragma: no cover - tensorboardX is in requirements.txt
      logging.warning("tensorboardX not installed; skipping TensorBoard events.")

  def write(self, step: int, kind: str, scalars: dict) -> None:
    if not self._active:
      return
    record = {"step": int(step), "kind": kind, **{k: float(v) for k, v in scalars.items()}}
    with open(self._path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str, kind: str | None = None) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if kind is None or r.get("kind") == kind]


def checkpoint_manager(workdir: str, snapshot_freq: int) -> ocp.CheckpointManager:
  """Keeps the latest two checkpoints plus every multiple of `snapshot_freq`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=2, keep_period=snapshot_freq, create=True,
                                         enable_async_checkpointing=False, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


def _state_dict(state: losses.TrainState) -> dict:
  return {"step": state.step, "params": state.params, "ema_params": state.ema_params,
          "opt_state": state.opt_state}


def restore_state(mngr: ocp.CheckpointManager, init_state: losses.TrainState) -> losses.TrainState:
  """The newest readable checkpoint restored onto `init_state`'s structure and shardings.

  An unreadable newest checkpoint (partly written, corrupted) is skipped with a warning and
  the previous one is used. Returns init_state only when there is no checkpoint at all.

  Raises:
    ValueError: checkpoints exist but none can be read.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_dict(init_state))
  errors = []
  for step in steps:
    try:
      restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
      state = losses.TrainState(**restored)
      if not _all_finite(state.params):
        raise ValueError("non-finite parameters")
    except Exception as e:  # orbax raises many types for a damaged checkpoint
      errors.append(f"step {step}: {type(e).__name__}: {str(e)[:200]}")
      logging.warning("Checkpoint at step %d is unreadable (%s); falling back to an older one.", step, errors[-1])
      continue
    if errors:
      logging.warning("Resuming from checkpoint at step %d.", step)
    return state
  if steps:
    raise ValueError(f"no readable checkpoint in {mngr.directory}: " + "; ".join(errors))
  return init_state


def _all_finite(tree) -> bool:
  return bool(all(jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)))


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if not is_primary():
    return
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(path + ".tmp", path)  # never a half-written config.json


# Fields that define what a checkpoint holds or how it was trained: changing them on resume
# would silently mix two experiments. Others (n_iters, logging, sampling, eval) may change.
RUN_DEFINING = ("seed", "sde", "data", "model", "loss", "optim", "training.batch_size",
                "training.ema_rate", "training.ema_warmup")


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
  return out


def check_resume_compatible(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Compares config with the workdir's config.json when checkpoints exist.

  Raises:
    ValueError: listing every run-defining field that differs, and how to start fresh.
  """
  path = os.path.join(workdir, "config.json")
  ckpt = os.path.join(workdir, "checkpoints")
  if not (os.path.exists(path) and os.path.isdir(ckpt) and os.listdir(ckpt)):
    return
  with open(path) as f:
    old = _flatten(json.load(f))
  new = _flatten(json.loads(config.to_json_best_effort()))
  diffs = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
           for k in sorted(set(old) | set(new)) if k.startswith(RUN_DEFINING) and old.get(k) != new.get(k)]
  if diffs:
    raise ValueError(f"--workdir={workdir!r} holds checkpoints of a different run; differing fields: "
                     + "; ".join(diffs) + ". To start fresh, pass a new --workdir or delete "
                     f"{ckpt} (keep config.json only if you want to compare).")


_HELD_LOCKS: dict[str, list] = {}


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """An exclusive lock on workdir/.lock, so two processes never write one workdir.

  Uses flock, which the kernel drops when the holder dies (even by SIGKILL), so there are
  no stale locks. Re-entrant within one process.

  Raises:
    ValueError: another process holds the lock.
  """
  key = os.path.abspath(workdir)
  if not is_primary():  # one writer per run: process 0 holds the lock for all hosts
    yield
    return
  if key in _HELD_LOCKS:
    _HELD_LOCKS[key][1] += 1
    try:
      yield
    finally:
      _HELD_LOCKS[key][1] -= 1
    return
  f = open(os.path.join(workdir, ".lock"), "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise ValueError(f"--workdir={workdir!r} is in use by another process (lock {key}/.lock).") from None
  f.seek(0), f.truncate(), f.write(f"{os.getpid()}\n"), f.flush()
  _HELD_LOCKS[key] = [f, 1]
  try:
    yield
  finally:
    if _HELD_LOCKS[key][1] == 1:
      del _HELD_LOCKS[key]
      fcntl.flock(f, fcntl.LOCK_UN)
      f.close()
    else:
      _HELD_LOCKS[key][1] -= 1


class _Progress:
  """A progress bar on a terminal, plain log lines otherwise."""

  def __init__(self, total: int, start: int):
    self.total, self.start, self.t0 = total, start, time.time()
    self.tty = sys.stderr.isatty()

  def update(self, step: int, loss: float) -> float:
    done = step - self.start
    if not is_primary():
      return done / max(time.time() - self.t0, 1e-9)
    rate = done / max(time.time() - self.t0, 1e-9)
    eta = (self.total - step) / max(rate, 1e-9)
    msg = f"step {step}/{self.total}  loss {loss:.4f}  {rate:.0f} steps/s  ETA {eta:.0f}s"
    if self.tty:
      width = 30
      filled = int(width * step / self.total)
      sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {msg}")
      sys.stderr.flush()
      if step >= self.total:
        sys.stderr.write("\n")
    else:
      logging.info(msg)
    return rate


# --- training -------------------------------------------------------------------------

def make_mesh() -> Mesh:
  """A 1-D ("data",) mesh over all devices of all hosts."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def _root_keys(seed: int) -> dict:
  names = ("init", "train", "data", "sample", "eval")
  return dict(zip(names, jax.random.split(jax.random.key(seed), len(names))))


def train_data(exp: Experiment, mesh: Mesh | None = None):
  """The multi-step function's `data` argument: the image dataset (a pytree of its device
  arrays, replicated on `mesh`), or None for toy targets, whose sampler holds no data."""
  if not datasets.is_image_dataset(exp.target):
    return None
  return jax.device_put(exp.target, NamedSharding(mesh or make_mesh(), P()))


def get_multi_step_fn(exp: Experiment, n_steps: int, mesh: Mesh) -> Callable:
  """jit of `n_steps` train steps in one lax.scan (n_steps = 0: one step, no scan); batches
  drawn on device, sharded on "data".

  Called as fn(state, data_key, train_key, data), data = `train_data(exp, mesh)`. The batch
  for step s is target.sample(fold_in(data_key, s)), so a resumed run sees the same data as an
  uninterrupted one. Image datasets come in as the argument `data` rather than being closed
  over, so their images are not baked into the executable as constants. The state is donated
  and replicated.
  """
  batch_sharding = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  B = exp.config.training.batch_size

  def one_step(state, data_key, train_key, data):
    target = exp.target if data is None else data
    batch = train_batch(exp.config, target, jax.random.fold_in(data_key, state.step), B)
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return exp.train_step(state, batch, train_key)

  def multi_step(state, data_key, train_key, data):
    return jax.lax.scan(lambda s, _: one_step(s, data_key, train_key, data), state, None, length=n_steps)

  return jax.jit(multi_step if n_steps else one_step,
                 in_shardings=(replicated, replicated, replicated, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def compile_multi_step(exp: Experiment, n_steps: int, mesh: Mesh, state, data_key, train_key,
                       data) -> Callable:
  """A compiled fn(state, data_key, train_key, data) -> (state, metrics stacked [n_steps]).

  With training.device_loop (the default) the n steps are one `get_multi_step_fn` scan. Without
  it, one jitted step is dispatched n times from the host (no transfer in between): the
  same batches, keys and updates, for networks that XLA:CPU runs slowly inside
  a loop (convolutions in a while body are ~15x slower there, jax-ml/jax#12868; measured on the
  digits U-Net: 1.9 s against 0.11 s per step).
  """
  if exp.config.training.get("device_loop", True):
    return get_multi_step_fn(exp, n_steps, mesh).lower(state, data_key, train_key, data).compile()
  step = get_multi_step_fn(exp, 0, mesh).lower(state, data_key, train_key, data).compile()

  def host_loop(state, data_key, train_key, data):
    metrics = []
    for _ in range(n_steps):
      # Waiting for each step keeps one sharded executable in flight: several queued at once
      # can starve XLA:CPU's in-process all-reduce of threads on (fake) multi-device CPUs.
      state, m = jax.block_until_ready(step(state, data_key, train_key, data))
      metrics.append(m)
    return state, jax.tree.map(lambda *m: jnp.stack(m), *metrics)

  return host_loop


def init_state(exp: Experiment, key: jax.Array) -> losses.TrainState:
  params = models.init_params(key, exp.model, (1,) + exp.shape)
  return losses.init_train_state(params, exp.optimizer)


class TrainingDiverged(RuntimeError):
  """Raised when the loss or the parameters become non-finite; nothing non-finite is saved."""


class Preempted(RuntimeError):
  """Raised after SIGTERM / SIGINT once a checkpoint of the current step is written."""


class _SignalFlag:
  """Catches SIGTERM and SIGINT during training; the loop checks `.signum` between calls."""

  def __init__(self):
    self.signum, self._old = None, {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def _first_nonfinite(metrics) -> int | None:
  bad = ~(np.isfinite(np.asarray(metrics["loss"])) & np.isfinite(np.asarray(metrics["grad_norm"])))
  return int(np.argmax(bad)) if bad.any() else None


def _truncate_metrics(workdir: str, after_step: int) -> None:
  """Drops train records past `after_step` (written before a crash, redone after resuming)."""
  if not is_primary():
    return
  rows = read_metrics(workdir)
  keep = [r for r in rows if not (r["kind"].startswith("train") and r["step"] > after_step)]
  if len(keep) != len(rows):
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in keep)


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None,
          mesh: Mesh | None = None) -> losses.TrainState:
  """Trains (or resumes) to config.training.n_iters.

  Checkpoints every `checkpoint_freq` steps (the latest two are kept), keeps every
  `snapshot_freq`-th for good, and saves at the end. SIGTERM / SIGINT save the current step
  and raise `Preempted`; `stop_after` stops the same way without a signal. Rerunning
  resumes with the same data and keys, so the result equals an uninterrupted run.

  Raises:
    ValueError: a bad config, or a workdir trained with an incompatible config.
    TrainingDiverged: non-finite loss or parameters (the last good checkpoint is kept).
    Preempted: after a signal, once the checkpoint is written.
  """
  exp = build(config)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock(workdir):
    check_resume_compatible(config, workdir)
    _write_config(config, workdir)
    mesh = mesh or make_mesh()
    return _train_loop(exp, workdir, mesh, stop_after)


def _train_loop(exp: Experiment, workdir: str, mesh: Mesh, stop_after: int | None) -> losses.TrainState:
  tr, keys = exp.config.training, _root_keys(exp.config.seed)
  state = jax.device_put(init_state(exp, keys["init"]), NamedSharding(mesh, P()))
  mngr = checkpoint_manager(workdir, tr.snapshot_freq)
  state = restore_state(mngr, state)
  start = last_saved = int(state.step)
  if start >= tr.n_iters:
    logging.info("Training already finished at step %d (n_iters=%d).", start, tr.n_iters)
    return state
  if start:
    logging.info("Resuming from step %d.", start)
  _truncate_metrics(workdir, start)
  writer, progress = MetricWriter(workdir), _Progress(tr.n_iters, start)
  steps_fns: dict[int, Callable] = {}
  t_compile = None
  data = train_data(exp, mesh)
  with _SignalFlag() as signals:
    while int(state.step) < tr.n_iters:
      step = int(state.step)
      n = min(tr.log_freq - step % tr.log_freq, tr.n_iters - step)
      if n not in steps_fns:
        t0 = time.time()
        steps_fns[n] = compile_multi_step(exp, n, mesh, state, keys["data"], keys["train"], data)
        t_compile = time.time() - t0 if t_compile is None else t_compile
      state, metrics = steps_fns[n](state, keys["data"], keys["train"], data)
      bad = _first_nonfinite(metrics)
      if bad is not None or not _all_finite(state.params):
        writer.close()
        at = step + 1 + (bad or n - 1)
        raise TrainingDiverged(
            f"non-finite loss or gradients at step {at}; nothing was saved after step {last_saved} "
            f"(last good checkpoint: {os.path.join(workdir, 'checkpoints', str(last_saved)) if last_saved else 'none'}). "
            "Lower optim.lr or raise optim.warmup_steps, then rerun to resume from it.")
      step += n
      loss = float(np.mean(np.asarray(metrics["loss"])))
      rate = progress.update(step, loss)
      writer.write(step, "train", {"loss": loss, "grad_norm": float(np.mean(np.asarray(metrics["grad_norm"]))),
                                   "steps_per_s": rate})
      stop = (stop_after is not None and step >= stop_after) or signals.signum is not None
      if step % tr.checkpoint_freq == 0 or step % tr.snapshot_freq == 0 or step == tr.n_iters or stop:
        mngr.save(step, args=ocp.args.StandardSave(_state_dict(state)))
        mngr.wait_until_finished()
        last_saved = step
      if stop:
        break
  writer.write(int(state.step), "train_summary", {"compile_s": t_compile or 0.0})
  writer.close()
  if signals.signum is not None:
    raise Preempted(f"preempted at step {int(state.step)}; rerun the same command to resume")
  return state


# --- evaluation -------------------------------------------------------------------------

def load_state(exp: Experiment, workdir: str) -> losses.TrainState:
  """The latest checkpoint in workdir (ValueError if there is none)."""
  mngr = checkpoint_manager(workdir, exp.config.training.snapshot_freq)
  if mngr.latest_step() is None:
    raise ValueError(f"--workdir={workdir!r} holds no checkpoint; run with --mode=train first.")
  return restore_state(mngr, init_state(exp, _root_keys(exp.config.seed)["init"]))


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly multi-host sharded) array as one numpy array on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _sample_fns(exp: Experiment, n: int, mesh: Mesh | None = None, **extra) -> tuple[Callable, Callable]:
  """Jitted samplers with the model (params as an argument) and with the oracle score.

  The sample batch is sharded on "data" across all devices. It is padded up to a multiple of
  the device count and cut back: sample i depends only on fold_in(key, i), so the first n
  samples are the same on any number of devices.
  """
  mesh = mesh or make_mesh()
  n_dev = mesh.devices.size
  n_pad = -(-n // n_dev) * n_dev
  sampler = sampling.get_sampler(exp.sde, (n_pad,) + exp.shape, **sampler_kwargs(exp.config), **extra)
  data = NamedSharding(mesh, P("data"))

  def shard(out):  # (x, nfe) or (x, nfe, trajectory [K, B, ...])
    x = jax.lax.with_sharding_constraint(out[0], data)[:n]
    if len(out) == 2:
      return x, out[1]
    traj = jax.lax.with_sharding_constraint(out[2], NamedSharding(mesh, P(None, "data")))
    return x, out[1], traj[:, :n]

  replicated = NamedSharding(mesh, P())
  model_jit = jax.jit(lambda key, params: shard(sampler(key, functools.partial(exp.model_score_fn, params))))
  oracle_jit = jax.jit(lambda key: shard(sampler(key, exp.target.score_fn(exp.sde))))
  model_fn = lambda key, params: model_jit(*jax.device_put((key, params), replicated))
  oracle_fn = lambda key: oracle_jit(jax.device_put(key, replicated))
  return model_fn, oracle_fn


def sample(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Draws eval.n_samples samples with the trained model; writes samples/samples_<step>.npz."""
  exp = build(config)
  state = load_state(exp, workdir)
  model_fn, _ = _sample_fns(exp, config.eval.n_samples)
  x, nfe = model_fn(_root_keys(config.seed)["sample"], state.ema_params)
  x = to_host(x)
  path = os.path.join(workdir, "samples", f"samples_{int(state.step)}.npz")
  if is_primary():
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    np.savez(path, model=x, nfe=int(nfe))
  return {"path": path, "nfe": int(nfe)}


def _sample_metrics(key, x, references: list, target, n_projections: int) -> dict:
  """Metrics of samples x against the truth. Energy distance and sliced Wasserstein are
  means over the independent reference sets, as the floor is a mean over pairs of sets:
  one reference set alone leaves the V-statistic with a spread of about half its mean."""
  ed = [float(evaluation.energy_distance(x, r)) for r in references]
  sw = [float(evaluation.sliced_wasserstein(jax.random.fold_in(key, i), x, r, n_projections=n_projections))
        for i, r in enumerate(references)]
  out = {"energy_distance": float(np.mean(ed)), "energy_distance_values": ed,
         "sliced_wasserstein": float(np.mean(sw))}
  out.update({k: float(v) for k, v in evaluation.mean_cov_error(x, target.mean(), target.cov()).items()})
  return out


def _likelihood_fn(sde: sde_lib.SDE, config: ml_collections.ConfigDict) -> Callable:
  return likelihood.get_likelihood_fn(sde, **config.likelihood)


def _nll_metrics(key, exp: Experiment, params, sample_fn) -> dict:
  """Test-set NLL (nats per example) of the model and of the oracle score, by the
  probability-flow ODE, against the true -log p_0 of the same points."""
  n = exp.config.eval.nll_samples
  key_x, key_nll, key_kl = jax.random.split(key, 3)
  x = sample_fn(key_x, n)
  nll_fn = _likelihood_fn(exp.sde, exp.config)
  nll_model, _, nfe = nll_fn(key_nll, functools.partial(exp.model_score_fn, params), x)
  nll_oracle, z_oracle, _ = nll_fn(key_nll, exp.target.score_fn(exp.sde), x)
  true = -exp.target.log_prob(x)
  mismatch = likelihood.prior_mismatch(exp.sde, exp.target.log_prob_fn(exp.sde), z_oracle)
  mean = lambda v: float(jnp.mean(v))
  return {"n": n, "nfe": int(nfe), "nll_model": mean(nll_model), "nll_oracle": mean(nll_oracle),
          "nll_true": mean(true), "gap_model_true": mean(nll_model - true),
          "gap_model_oracle": mean(nll_model - nll_oracle),
          "gap_oracle_true": mean(nll_oracle - true),
          "prior_mismatch": mean(mismatch),
          "prior_kl": likelihood.prior_kl(key_kl, exp.sde, exp.target)["kl"],
          "bits_per_dim_model": mean(likelihood.bits_per_dim(nll_model, exp.target.dim, data_range=None))}


def _floors(key, exp: Experiment, n: int) -> dict:
  ev = exp.config.eval
  sample_fn = jax.jit(exp.target.sample, static_argnums=1)
  key_ed, key_sw, key_x = jax.random.split(key, 3)
  ed = evaluation.metric_floor(key_ed, sample_fn, n, lambda k, a, b: evaluation.energy_distance(a, b),
                               n_pairs=ev.n_floor_pairs)
  sw = evaluation.metric_floor(
      key_sw, sample_fn, n, functools.partial(evaluation.sliced_wasserstein, n_projections=ev.sw_projections),
      n_pairs=ev.n_floor_pairs)
  expected = evaluation.energy_distance_expected_floor(sample_fn(key_x, n), n, n)
  return {"energy_distance": float(ed["mean"]), "energy_distance_std": float(ed["std"]),
          "energy_distance_expected": float(expected), "sliced_wasserstein": float(sw["mean"])}


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Samples with the trained model and the oracle, compares both with the truth, plots.

  Image datasets go to `evaluate_images` instead (no oracle or exact density there).
  Writes eval/summary.json, samples/eval_<step>.npz and plots/*.png; returns the summary.
  """
  exp = build(config)
  if datasets.is_image_dataset(exp.target):
    return evaluate_images(exp, workdir)
  ev = config.eval
  state = load_state(exp, workdir)
  step = int(state.step)
  keys = _root_keys(config.seed)
  key_sample, key_ref, key_floor, key_metric, key_score = jax.random.split(keys["eval"], 5)
  timings = {}
  model_fn, oracle_fn = _sample_fns(exp, ev.n_samples)
  t0 = time.time()
  x_model, nfe = jax.block_until_ready(model_fn(key_sample, state.ema_params))
  x_model = to_host(x_model)
  timings["sample_model_s"] = time.time() - t0
  sample_fn = jax.jit(exp.target.sample, static_argnums=1)
  references = [sample_fn(k, ev.n_samples) for k in jax.random.split(key_ref, ev.n_floor_pairs)]
  summary = {"step": step, "n_samples": ev.n_samples, "nfe": int(nfe),
             "sampler": config.sampling.to_dict(),
             "model": _sample_metrics(key_metric, x_model, references, exp.target, ev.sw_projections)}
  arrays = {"model": np.asarray(x_model), "reference": np.asarray(references[0])}
  if ev.oracle:
    t0 = time.time()
    x_oracle, _ = jax.block_until_ready(oracle_fn(key_sample))
    x_oracle = to_host(x_oracle)
    timings["sample_oracle_s"] = time.time() - t0
    summary["oracle"] = _sample_metrics(key_metric, x_oracle, references, exp.target, ev.sw_projections)
    arrays["oracle"] = np.asarray(x_oracle)
  t0 = time.time()
  summary["floor"] = _floors(key_floor, exp, ev.n_samples)
  summary["energy_ratio"] = summary["model"]["energy_distance"] / summary["floor"]["energy_distance"]
  if ev.oracle:
    summary["oracle_energy_ratio"] = summary["oracle"]["energy_distance"] / summary["floor"]["energy_distance"]
  score_fn = functools.partial(exp.model_score_fn, state.ema_params)
  err = evaluation.score_error(key_score, score_fn, exp.target.score_fn(exp.sde), exp.sde,
                               sample_fn, n=ev.score_error_samples)
  summary["score_error"] = {"weighted_mse": err["weighted_mse"], "relative": err["relative"]}
  if "vlb" in config:
    summary["vlb"] = _vlb_metrics(jax.random.fold_in(key_score, 2), exp, state)
  timings["metrics_s"] = time.time() - t0
  if ev.nll_samples:
    t0 = time.time()
    summary["likelihood"] = _nll_metrics(jax.random.fold_in(key_score, 1), exp, state.ema_params, sample_fn)
    timings["likelihood_s"] = time.time() - t0
  if has_labels_eval(exp, workdir):
    t0 = time.time()
    summary["per_class"] = evaluate_per_class(config, exp, workdir, state)
    timings["per_class_s"] = time.time() - t0
  summary["timings"] = timings
  if is_primary():
    _write_eval_outputs(exp, workdir, state, summary, arrays)
  return summary


def _check_image_eval(config: ml_collections.ConfigDict, target) -> None:
  """Image eval fields that depend on the dataset (ValueErrors at build time)."""
  ev = config.eval
  n_test = len(target.test_x)
  if ev.nll_samples > n_test:
    raise ValueError(f"eval.nll_samples={ev.nll_samples} exceeds the test split ({n_test} images).")
  if ev.frechet and (target.shape != (8, 8, 1) or not target.has_labels):
    raise ValueError(f"eval.frechet=True needs labelled 8x8 grey images (the digits classifier's input); "
                     f"data.name={config.data.name!r} has shape {target.shape}"
                     f"{'' if target.has_labels else ' and no labels'}. Set eval.frechet=False.")
  if ev.frechet and ev.n_samples < 2:
    raise ValueError(f"eval.n_samples={ev.n_samples} must be >= 2 for the Frechet distance.")


def _feature_classifier(key, exp: Experiment):
  """The digits classifier of the Frechet distance and the per-class accuracy (eval.classifier)."""
  target = exp.target
  return classifier.train_digits_classifier(key, target.train_x, target.train_y, target.test_x,
                                            target.test_y, data_range=(0.0, target.levels - 1.0),
                                            **exp.config.eval.classifier)


def _image_metrics(key, exp: Experiment, params, x: np.ndarray, clf) -> dict:
  """Test-split bits/dim by the probability-flow ODE, and the classifier Frechet distance of
  the samples x (quantised to the data's integer levels, like the real images) with its floor."""
  ev, target, out = exp.config.eval, exp.target, {}
  key_nll, key_fd = jax.random.split(key)
  if ev.nll_samples:
    t0 = time.time()
    out["bits_per_dim"] = likelihood.dequantized_bits_per_dim(
        key_nll, _likelihood_fn(exp.sde, exp.config), functools.partial(exp.model_score_fn, params),
        target.test_x[:ev.nll_samples], n_bins=target.levels, data_range=target.data_range,
        batch_size=ev.nll_batch_size)
    out["bits_per_dim"]["wall_s"] = time.time() - t0
  if ev.frechet:
    out["frechet"] = _frechet(key_fd, target, x, clf)
  return out


def _frechet(key, target, x: np.ndarray, clf) -> dict:
  t0 = time.time()
  u = np.asarray(target.quantize(jnp.asarray(x)))
  out = evaluation.classifier_frechet_distance(key, u, target.train_x, target.test_x, classifier=clf)
  out.update(classifier_train_accuracy=clf.train_accuracy, ratio=out["fd"] / out["fd_floor"],
             wall_s=time.time() - t0)
  return out


def _image_per_class(key, exp: Experiment, params, clf) -> tuple[dict, np.ndarray]:
  """Class-conditional images: eval.n_class_samples samples of every class with classifier-free
  guidance at sampling.guidance_w. Per class, the fraction the digits classifier assigns to the
  class asked for; pooled over classes, the Frechet distance with its floor (eval.frechet).

  Returns (summary, samples [K, n, H, W, C]).
  """
  ev, target = exp.config.eval, exp.target
  n = ev.get("n_class_samples", 100)
  make_score, _ = _guided_scores(exp, None)["cfg"]
  fn = _class_sampler(exp, n, make_score)
  x = np.stack([to_host(fn(jax.random.fold_in(key, k), k, params)[0]) for k in range(target.num_classes)])
  out = {"guidance_w": float(exp.config.sampling.get("guidance_w", 0.0)), "n_per_class": n}
  if clf is not None:
    u = np.asarray(target.quantize(jnp.asarray(x.reshape((-1,) + x.shape[2:]))))
    pred = np.asarray(jnp.argmax(clf.logits(u), axis=-1)).reshape(x.shape[:2])
    out["classes"] = {str(k): {"classifier_accuracy": float(np.mean(pred[k] == k))} for k in range(len(x))}
    out["classifier_accuracy"] = float(np.mean(pred == np.arange(len(x))[:, None]))
  if ev.frechet:
    out["frechet"] = _frechet(jax.random.fold_in(key, 10_000), target, x.reshape((-1,) + x.shape[2:]), clf)
  return out, x


def evaluate_images(exp: Experiment, workdir: str) -> dict:
  """Image eval: eval.n_samples samples with the configured sampler, a PNG grid of the first
  eval.n_grid, test-split bits/dim (eval.nll_samples images) and the digits-classifier Frechet
  distance against the test split with its train-vs-test floor (eval.frechet).

  Writes samples/eval_<step>.npz (the samples in the data range), plots/samples_grid.png,
  plots/data_grid.png (real train images), plots/loss.png and eval/summary.json.
  """
  ev = exp.config.eval
  state = load_state(exp, workdir)
  step = int(state.step)
  key_sample, key_metrics = jax.random.split(_root_keys(exp.config.seed)["eval"])
  model_fn, _ = _sample_fns(exp, ev.n_samples)
  t0 = time.time()
  x, nfe = jax.block_until_ready(model_fn(key_sample, state.ema_params))
  x = to_host(x)
  summary = {"step": step, "n_samples": ev.n_samples, "nfe": int(nfe), "sampler": exp.config.sampling.to_dict(),
             "data": exp.config.data.to_dict(), "timings": {"sample_model_s": time.time() - t0}}
  summary["n_nonfinite"] = int(np.sum(~np.isfinite(x)))
  key_metrics, key_clf, key_class = jax.random.split(key_metrics, 3)
  conditional = bool(num_classes(exp.config))
  clf = _feature_classifier(key_clf, exp) if ev.frechet or (conditional and exp.target.shape == (8, 8, 1)) else None
  summary.update(_image_metrics(key_metrics, exp, state.ema_params, x, clf))
  x_class = None
  if conditional:
    t0 = time.time()
    summary["per_class"], x_class = _image_per_class(key_class, exp, state.ema_params, clf)
    summary["timings"]["per_class_s"] = time.time() - t0
  if is_primary():
    _write_image_eval_outputs(exp, workdir, summary, x, x_class)
  return summary


def _write_image_eval_outputs(exp: Experiment, workdir: str, summary: dict, x: np.ndarray,
                              x_class: np.ndarray | None = None) -> None:
  import plotting  # matplotlib only when plotting

  step, target = summary["step"], exp.target
  for sub in ("eval", "samples", "plots"):
    os.makedirs(os.path.join(workdir, sub), exist_ok=True)
  arrays = {} if x_class is None else {"per_class": x_class}  # [K, n, H, W, C]
  np.savez(os.path.join(workdir, "samples", f"eval_{step}.npz"), model=x, nfe=summary["nfe"], **arrays)
  with open(os.path.join(workdir, "eval", "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  flat = {"nfe": summary["nfe"]}
  if "bits_per_dim" in summary:
    flat.update(bits_per_dim=summary["bits_per_dim"]["bpd"], bits_per_dim_stderr=summary["bits_per_dim"]["bpd_stderr"])
  if "frechet" in summary:
    flat.update({f"frechet_{k}": summary["frechet"][k] for k in ("fd", "fd_floor", "classifier_test_accuracy")})
  writer = MetricWriter(workdir)
  writer.write(step, "eval", flat)
  writer.close()
  if not exp.config.eval.plots:
    return
  n = exp.config.eval.n_grid
  unit = lambda a: np.clip(np.nan_to_num(np.asarray(target.to_unit(jnp.asarray(a)))), 0.0, 1.0)
  plotting.plot_image_grid(os.path.join(workdir, "plots", "samples_grid.png"), unit(x[:n]))
  plotting.plot_image_grid(os.path.join(workdir, "plots", "data_grid.png"), unit(target.scale(target.train_x[:n])))
  if x_class is not None:  # one row per class
    per_row = min(10, x_class.shape[1])
    grid = x_class[:, :per_row].reshape((-1,) + x_class.shape[2:])
    plotting.plot_image_grid(os.path.join(workdir, "plots", "class_grid.png"), unit(grid), nrow=per_row)
  rows = read_metrics(workdir, "train")
  if rows:
    plotting.plot_loss(os.path.join(workdir, "plots", "loss.png"), [r["step"] for r in rows], [r["loss"] for r in rows])


def _vlb_metrics(key, exp: Experiment, state) -> dict:
  """The discrete model's variational bound (ddpm.get_vlb_fn, Ho et al. Eq. 5) on vlb.n_points fresh
  points, with the model's eps and (eval.oracle) the exact eps, against the true NLL; nats and bits/dim."""
  schedule = ddpm.schedule_of(exp.sde)
  vlb_fn = ddpm.get_vlb_fn(schedule, **_kwargs(exp.config.vlb, drop=("n_points",)))
  key_x, key_q = jax.random.split(key)
  x0 = exp.target.sample(key_x, exp.config.vlb.n_points)
  eps_fn = ddpm.get_eps_fn(exp.model, schedule)
  model = jax.jit(lambda p, x: vlb_fn(key_q, functools.partial(eps_fn, p), x))(state.ema_params, x0)
  oracle = None
  if exp.config.eval.oracle:
    oracle = jax.jit(lambda x: vlb_fn(key_q, ddpm.exact_eps_fn(exp.target, schedule), x))(x0)
  return ddpm.vlb_summary(model, oracle=oracle, true_nll=-exp.target.log_prob(x0))


def _write_eval_outputs(exp: Experiment, workdir: str, state, summary: dict, arrays: dict) -> None:
  step = summary["step"]
  for sub in ("eval", "samples", "plots"):
    os.makedirs(os.path.join(workdir, sub), exist_ok=True)
  np.savez(os.path.join(workdir, "samples", f"eval_{step}.npz"), **arrays)
  with open(os.path.join(workdir, "eval", "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  writer = MetricWriter(workdir)
  flat = {"energy_distance": summary["model"]["energy_distance"], "energy_ratio": summary["energy_ratio"],
          "energy_floor": summary["floor"]["energy_distance"], "nfe": summary["nfe"],
          "score_weighted_mse": summary["score_error"]["weighted_mse"]}
  for label, row in summary.get("per_class", {}).items():
    flat.update({f"class_{label}/{name}_energy_ratio": v["energy_ratio"] for name, v in row.items() if name != "floor"})
  if "vlb" in summary:
    flat["vlb_bits_per_dim"] = summary["vlb"]["bits_per_dim"]
  if "likelihood" in summary:
    flat.update({k: summary["likelihood"][k] for k in ("nll_model", "nll_oracle", "nll_true")})
  writer.write(step, "eval", flat)
  writer.close()
  if exp.config.eval.plots:
    write_plots(exp, workdir, state, arrays)


def write_plots(exp: Experiment, workdir: str, state, arrays: dict) -> None:
  """Samples over the true density, reverse trajectories, score fields, loss curve."""
  import plotting  # matplotlib only when plotting

  ev = exp.config.eval
  plots = os.path.join(workdir, "plots")
  plotting.plot_samples(os.path.join(plots, "samples.png"), exp.target,
                        {k: arrays[k] for k in ("model", "oracle", "reference") if k in arrays})
  if ev.n_trajectory:
    model_fn, _ = _sample_fns(exp, ev.n_trajectory_samples, n_trajectory=ev.n_trajectory)
    _, _, traj = model_fn(_root_keys(exp.config.seed)["sample"], state.ema_params)
    eps = exp.config.sampling.get("eps", 0.0)  # ancestral sampling ends at t = 0
    ts = np.linspace(exp.sde.T, eps, exp.sde.N + 1)[np.minimum(
        np.arange(1, ev.n_trajectory + 1) * -(-exp.sde.N // ev.n_trajectory), exp.sde.N)]
    plotting.plot_trajectories(os.path.join(plots, "trajectories.png"), exp.target, to_host(traj), ts)
  T = exp.sde.T
  score_fns = {"model": jax.jit(functools.partial(exp.model_score_fn, state.ema_params)),
               "exact": jax.jit(exp.target.score_fn(exp.sde))}
  plotting.plot_score_field(os.path.join(plots, "score_field.png"), exp.target, score_fns,
                            [0.01 * T, 0.1 * T, 0.3 * T, 0.6 * T])
  rows = read_metrics(workdir, "train")
  if rows:
    plotting.plot_loss(os.path.join(plots, "loss.png"), [r["step"] for r in rows], [r["loss"] for r in rows])


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = "all") -> dict:
  """Entry point for run.py: mode in train | train_classifier | eval | sample | all.

  "all" trains the score model, then the classifier (when the config has a `classifier`
  group), then evaluates.

  Raises:
    ValueError: bad mode or config (before anything is compiled or written).
    TrainingDiverged, Preempted: see `train`.
  """
  if mode not in MODES:
    raise ValueError(f"--mode={mode!r} is unknown; valid: {list(MODES)}.")
  build(config)  # every config error surfaces before any work
  if mode in ("eval", "sample") and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ValueError(f"--workdir={workdir!r} holds no checkpoint; run with --mode=train first.")
  os.makedirs(workdir, exist_ok=True)
  out = {}
  with workdir_lock(workdir):
    if mode in ("train", "all"):
      t0 = time.time()
      train(config, workdir)
      out["train_s"] = time.time() - t0
    if mode == "train_classifier" or (mode == "all" and "classifier" in config):
      t0 = time.time()
      train_classifier(config, workdir)
      out["train_classifier_s"] = time.time() - t0
    if mode == "sample":
      out["sample"] = sample(config, workdir)
    if mode in ("eval", "all"):
      t0 = time.time()
      out["eval"] = evaluate(config, workdir)
      out["eval_s"] = time.time() - t0
  return out


# --- conditional generation: labels, classifier training, per-class evaluation ---------
#
# Config fields: model.num_classes (K > 0: a class-conditional score network with a null
# label), loss.label_dropout (classifier-free training), sampling.guidance_w (the CFG weight w)
# and sampling.classifier_scale (classifier-guidance scale; 0 = off), both consumed here and
# not passed to the sampler; eval.n_class_samples; and the `classifier` group (its network,
# loss eps, optimizer and training length), trained by --mode=train_classifier into
# workdir/classifier/.

GUIDANCE_FIELDS = ("guidance_w", "classifier_scale")
CLASSIFIER_FIELDS = ("model", "conditioning", "input_scaling", "eps", "optim", "n_iters", "batch_size",
                     "log_freq")


def num_classes(config: ml_collections.ConfigDict) -> int:
  """K of a class-conditional score model (config.model.num_classes), 0 if unconditional."""
  return int(config.model.get("num_classes", 0))


def sampler_kwargs(config: ml_collections.ConfigDict) -> dict:
  """config.sampling without the guidance fields, which run_lib consumes itself."""
  return _kwargs(config.sampling, drop=GUIDANCE_FIELDS)


def validate_conditional(config: ml_collections.ConfigDict, target) -> None:
  """Checks labels, guidance and classifier fields against the target.

  Raises:
    ValueError: naming the field, its value and what is allowed.
  """
  k = num_classes(config)
  labelled = hasattr(target, "sample_with_labels") and getattr(target, "has_labels", True)
  if k and not labelled:
    raise ValueError(f"model.num_classes={k} needs a dataset with labels; data.name="
                     f"{config.data.name!r} has none (set model.num_classes=0).")
  if k and config.loss.get("name", "sde") != "sde":
    raise ValueError(f"model.num_classes={k} needs loss.name='sde' (the class-conditional DSM loss); "
                     f"got loss.name={config.loss.name!r}.")
  if k and k != target.num_classes:
    raise ValueError(f"model.num_classes={k} must equal the dataset's number of classes {target.num_classes}.")
  w = config.sampling.get("guidance_w", 0.0)
  if not (isinstance(w, (int, float)) and w >= 0):
    raise ValueError(f"sampling.guidance_w={w!r} must be a number >= 0 (0: the conditional score).")
  if w and not k:
    raise ValueError(f"sampling.guidance_w={w!r} needs a class-conditional model (model.num_classes > 0).")
  scale = config.sampling.get("classifier_scale", 0.0)
  if not (isinstance(scale, (int, float)) and scale >= 0):
    raise ValueError(f"sampling.classifier_scale={scale!r} must be a number >= 0 (0: no classifier guidance).")
  if scale and "classifier" not in config:
    raise ValueError(f"sampling.classifier_scale={scale!r} needs a `classifier` config group.")
  if "classifier" in config:
    if not labelled:
      raise ValueError(f"the classifier needs a dataset with labels; data.name={config.data.name!r} has none.")
    build_classifier(config, target)
  if "n_class_samples" in config.eval:
    _positive_int("eval", config.eval, "n_class_samples")


def build_classifier(config: ml_collections.ConfigDict, target, sde: sde_lib.SDE | None = None):
  """(model, log_prob_fn(params, x, t), optimizer, train_step) of the noise-conditional classifier.

  Raises:
    ValueError: a missing or unknown field of the classifier group, or a bad value.
  """
  cc = config.classifier
  unknown = sorted(set(cc.keys()) - set(CLASSIFIER_FIELDS))
  missing = sorted(set(CLASSIFIER_FIELDS) - set(cc.keys()))
  if unknown or missing:
    raise ValueError(f"classifier group: unknown fields {unknown}, missing fields {missing}; "
                     f"fields are {list(CLASSIFIER_FIELDS)}.")
  for f in ("n_iters", "batch_size", "log_freq"):
    _positive_int("classifier", cc, f)
  if cc.batch_size % jax.device_count():
    raise ValueError(f"classifier.batch_size={cc.batch_size} must be divisible by the device count {jax.device_count()}.")
  sde = sde or sde_lib.get_sde(**config.sde)
  model = models.get_classifier(num_classes=target.num_classes, **cc.model)
  log_prob_fn = models.get_classifier_fn(sde, model, conditioning=cc.conditioning, input_scaling=cc.input_scaling)
  loss_fn = losses.get_classifier_loss_fn(sde, log_prob_fn, eps=cc.eps)
  optimizer = losses.get_optimizer(total_steps=cc.n_iters, **cc.optim)
  train_step = losses.get_train_step_fn(loss_fn, optimizer, ema_rate=0.0, ema_warmup=False)
  return model, log_prob_fn, optimizer, train_step


def train_batch(config: ml_collections.ConfigDict, target, key: jax.Array, n: int):
  """The training batch: x [n, ...], or {"x", "y"} for a class-conditional model."""
  if num_classes(config):
    x, y = target.sample_with_labels(key, n)
    return {"x": x, "y": y.astype(jnp.int32)}
  return target.sample(key, n)


def _classifier_dir(workdir: str) -> str:
  return os.path.join(workdir, "classifier")


def train_classifier(config: ml_collections.ConfigDict, workdir: str) -> losses.TrainState:
  """Trains (or resumes) the noise-conditional classifier on the SDE's perturbed labelled data.

  Checkpoints under workdir/classifier/checkpoints; metrics "classifier_train" in metrics.jsonl.

  Raises:
    ValueError: no classifier group, or a bad classifier field.
  """
  if "classifier" not in config:
    raise ValueError("--mode=train_classifier needs a `classifier` config group (see configs/cond_gmm.py).")
  exp = build(config)
  cc = config.classifier
  model, _, optimizer, train_step = build_classifier(config, exp.target, exp.sde)
  mesh = make_mesh()
  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  keys = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 7), 3)  # init, data, train
  params = models.init_params(keys[0], model, (1,) + exp.shape)
  state = jax.device_put(losses.init_train_state(params, optimizer), replicated)
  os.makedirs(_classifier_dir(workdir), exist_ok=True)
  mngr = checkpoint_manager(_classifier_dir(workdir), cc.n_iters)
  state = restore_state(mngr, state)

  def multi_step(state, n):
    def body(state, _):
      x, y = exp.target.sample_with_labels(jax.random.fold_in(keys[1], state.step), cc.batch_size)
      batch = jax.lax.with_sharding_constraint({"x": x, "y": y.astype(jnp.int32)}, data)
      return train_step(state, batch, keys[2])
    return jax.lax.scan(body, state, None, length=n)

  step_fn = jax.jit(multi_step, static_argnums=1, donate_argnums=0)
  writer = MetricWriter(workdir)
  while int(state.step) < cc.n_iters:
    n = min(cc.log_freq, cc.n_iters - int(state.step))
    state, metrics = step_fn(state, n)
    loss = float(np.mean(np.asarray(metrics["loss"])))
    if not np.isfinite(loss):
      raise TrainingDiverged(f"classifier loss is non-finite at step {int(state.step)}; lower classifier.optim.lr.")
    writer.write(int(state.step), "classifier_train", {"loss": loss})
  if int(state.step) not in mngr.all_steps():
    mngr.save(int(state.step), args=ocp.args.StandardSave(_state_dict(state)))
    mngr.wait_until_finished()
  writer.close()
  return state


def load_classifier(config: ml_collections.ConfigDict, exp: Experiment, workdir: str):
  """(log_prob_fn, params) of the trained classifier, or None when none was trained."""
  path = _classifier_dir(workdir)
  if "classifier" not in config or not os.path.isdir(os.path.join(path, "checkpoints")):
    return None
  model, log_prob_fn, optimizer, _ = build_classifier(config, exp.target, exp.sde)
  init = losses.init_train_state(models.init_params(jax.random.key(0), model, (1,) + exp.shape), optimizer)
  mngr = checkpoint_manager(path, config.classifier.n_iters)
  if mngr.latest_step() is None:
    return None
  return log_prob_fn, restore_state(mngr, init).params


def has_labels_eval(exp: Experiment, workdir: str) -> bool:
  """Per-class evaluation runs for a class-conditional model or a trained classifier."""
  return bool(num_classes(exp.config)) or load_classifier(exp.config, exp, workdir) is not None


def _class_sampler(exp: Experiment, n: int, make_score: Callable, mesh: Mesh | None = None) -> Callable:
  """jit of fn(key, label, *args) -> (x [n, ...], nfe): every sample of class `label`, with
  score make_score(y [n_pad], *args); sharded and padded as `_sample_fns` (label traced)."""
  mesh = mesh or make_mesh()
  n_pad = -(-n // mesh.devices.size) * mesh.devices.size
  sampler = sampling.get_sampler(exp.sde, (n_pad,) + exp.shape, **sampler_kwargs(exp.config))
  data = NamedSharding(mesh, P("data"))

  def fn(key, label, *args):
    out = sampler(key, make_score(jnp.full((n_pad,), label, jnp.int32), *args))
    return jax.lax.with_sharding_constraint(out[0], data)[:n], out[1]

  jitted, replicated = jax.jit(fn), NamedSharding(mesh, P())
  return lambda key, label, *args: jitted(*jax.device_put((key, jnp.int32(label), *args), replicated))


def _guided_scores(exp: Experiment, classifier) -> dict:
  """name -> (make_score(y, *args), args) for every guidance the config and workdir allow."""
  cfg = exp.config
  w = float(cfg.sampling.get("guidance_w", 0.0))
  scale = float(cfg.sampling.get("classifier_scale", 0.0))
  out = {}
  if num_classes(cfg):
    out["cfg"] = (lambda y, p: sampling.classifier_free_guidance(functools.partial(exp.model_score_fn, p), y, w),
                  ("params",))
  if classifier is not None and scale > 0:
    log_prob_fn, _ = classifier
    out["classifier"] = (lambda y, p, c: sampling.classifier_guidance(
        functools.partial(exp.model_score_fn, p), functools.partial(log_prob_fn, c), y, scale), ("params", "classifier"))
  if cfg.eval.get("oracle", False) and hasattr(exp.target, "conditional_score_fn"):
    cond, marginal = exp.target.conditional_score_fn(exp.sde), exp.target.score_fn(exp.sde)
    posterior = exp.target.class_log_posterior_fn(exp.sde)
    out["oracle_cfg"] = (lambda y: sampling.classifier_free_guidance(cond, y, w), ())
    # scale 1 with the exact posterior is Bayes' rule: exactly the conditional score.
    exact_scale = scale if scale > 0 else 1.0
    out["oracle_classifier"] = (lambda y: sampling.classifier_guidance(marginal, posterior, y, exact_scale), ())
  return out


def class_reference(target, label: int, key: jax.Array, n: int) -> np.ndarray:
  """n true samples of class `label`: the exact component, or labelled draws filtered by label."""
  if hasattr(target, "component"):
    return np.asarray(target.component(label).sample(key, n))
  chunks, have, i = [], 0, 0
  while have < n:
    x, y = target.sample_with_labels(jax.random.fold_in(key, i), 4 * n)
    keep = np.asarray(x)[np.asarray(y) == label]
    chunks.append(keep)
    have, i = have + len(keep), i + 1
    if i > 100:
      raise ValueError(f"class {label} is too rare to draw {n} reference samples.")
  return np.concatenate(chunks)[:n]


def evaluate_per_class(config: ml_collections.ConfigDict, exp: Experiment, workdir: str, state) -> dict:
  """Per-class energy distances of guided samples against the true class distribution.

  For each class k and each guidance in `_guided_scores` (the model with classifier-free
  guidance at sampling.guidance_w, the model with the trained classifier at
  sampling.classifier_scale, and with eval.oracle the exact conditional score and the exact
  classifier), eval.n_class_samples samples vs eval.n_floor_pairs true sets of class k; the
  floor is the mean energy distance between pairs of true class-k sets. Plots per class.
  """
  ev = config.eval
  n = ev.get("n_class_samples", 2000)
  classifier = load_classifier(config, exp, workdir)
  bound = {"params": state.ema_params, "classifier": None if classifier is None else classifier[1]}
  key = jax.random.fold_in(_root_keys(config.seed)["eval"], 11)
  out, arrays = {}, {}
  for name, (make_score, arg_names) in _guided_scores(exp, classifier).items():
    fn = _class_sampler(exp, n, make_score)
    args = [bound[a] for a in arg_names]
    for label in range(exp.target.num_classes):
      x, nfe = fn(jax.random.fold_in(key, label), label, *args)
      arrays.setdefault(label, {})[name] = to_host(x)
  for label, sets in arrays.items():
    k_ref = jax.random.fold_in(key, 1000 + label)
    refs = [class_reference(exp.target, label, jax.random.fold_in(k_ref, i), n) for i in range(ev.n_floor_pairs + 1)]
    floor = float(np.mean([evaluation.energy_distance(refs[i], refs[i + 1]) for i in range(ev.n_floor_pairs)]))
    row = {"floor": floor}
    for name, x in sets.items():
      ed = float(np.mean([evaluation.energy_distance(x, r) for r in refs[1:]]))
      row[name] = {"energy_distance": ed, "energy_ratio": ed / floor}
    out[str(label)] = row
    sets["reference"] = refs[0]
  if is_primary() and ev.plots:
    _plot_per_class(exp, workdir, arrays)
  return out


def _plot_per_class(exp: Experiment, workdir: str, arrays: dict) -> None:
  """plots/samples_class_<k>.png over the class density for vectors; one grid per guidance
  with a row per class (8 samples each) for images [H, W, C]."""
  import plotting

  plots = os.path.join(workdir, "plots")
  if len(exp.shape) == 1:
    for label, sets in arrays.items():
      target = exp.target.component(label) if hasattr(exp.target, "component") else None
      plotting.plot_samples(os.path.join(plots, f"samples_class_{label}.png"), target, sets,
                            title=f"class {label}")
    return
  names = next(iter(arrays.values())).keys()
  for name in names:
    grid = np.concatenate([arrays[label][name][:8] for label in sorted(arrays)])
    plotting.plot_image_grid(os.path.join(plots, f"class_grid_{name}.png"), grid, nrow=8)
