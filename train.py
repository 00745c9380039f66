"""The one training loop, for every model that trains (score networks and classifiers alike).

Batches are drawn on device inside the jitted step from fold_in(data_key, step), and the step's
noise from fold_in(train_key, step) (`losses.get_train_step_fn`), so a resumed run is
bit-identical to an uninterrupted one. Steps run `log_freq` at a time in one `lax.scan`
(`device_loop`), or one jitted step per dispatch where XLA:CPU runs the network slowly inside a
loop (convolutions, see docs/architecture.md). Checkpoints every `checkpoint_freq` steps (the
latest two kept) and every `snapshot_freq`-th for good; SIGTERM / SIGINT save and raise
`Preempted`; a non-finite loss raises `TrainingDiverged` with nothing non-finite saved.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh

import losses
import sharding
import workdir as wd

BatchFn = Callable[[Any, jax.Array, int], Any]  # batch_fn(data, key, n) -> batch


class TrainingDiverged(RuntimeError):
  """Raised when the loss or the parameters become non-finite; nothing non-finite is saved."""


class Preempted(RuntimeError):
  """Raised after SIGTERM / SIGINT once a checkpoint of the current step is written.

  Attributes:
    signum: the signal that stopped training; `run.py` exits with 128 + signum (143 for
      SIGTERM, 130 for Ctrl-C) so a scheduler sees an unfinished run.
  """

  def __init__(self, message: str, signum: int = signal.SIGTERM):
    super().__init__(message)
    self.signum = int(signum)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The consumer of the config's `training` group: how long and how often, and the EMA of the
  parameters (`losses.get_train_step_fn`'s ema_rate, ema_warmup)."""

  n_iters: int
  batch_size: int
  log_freq: int
  checkpoint_freq: int
  snapshot_freq: int
  device_loop: bool = True
  ema_rate: float = 0.0
  ema_warmup: bool = False


@dataclasses.dataclass(frozen=True)
class Job:
  """What trains: a pure train_step(state, batch, key) -> (state, metrics), its batches, its keys.

  Attributes:
    train_step: from `losses.get_train_step_fn`.
    batch_fn: batch_fn(data, key, n) -> a batch of n examples, traced inside the step.
    data: a pytree of device arrays passed to batch_fn (an image dataset), or None.
    data_key, train_key: the streams of batches and of the step's noise.
    kind: the metrics record kind ("train", "classifier_train").
    lr_field: the config field named when training diverges.
  """

  train_step: Callable
  batch_fn: BatchFn
  data: Any
  data_key: jax.Array
  train_key: jax.Array
  kind: str = "train"
  lr_field: str = "optim.lr"


def _multi_step_fn(job: Job, batch_size: int, n_steps: int, mesh: Mesh) -> Callable:
  """jit of n_steps train steps in one lax.scan (n_steps = 0: one step, no scan); the batch is
  sharded on "data", the state replicated and donated. The dataset comes in as an argument, so
  its images are not baked into the executable as constants."""
  batch_sharding, rep = sharding.data_sharded(mesh), sharding.replicated(mesh)

  def one_step(state, data_key, train_key, data):
    batch = job.batch_fn(data, jax.random.fold_in(data_key, state.step), batch_size)
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return job.train_step(state, batch, train_key)

  def multi_step(state, data_key, train_key, data):
    return jax.lax.scan(lambda s, _: one_step(s, data_key, train_key, data), state, None, length=n_steps)

  return jax.jit(multi_step if n_steps else one_step, in_shardings=(rep,) * 4, out_shardings=(rep, rep),
                 donate_argnums=0)


def compile_steps(job: Job, sched: Schedule, n_steps: int, mesh: Mesh, state) -> Callable:
  """A compiled fn(state) -> (state, metrics stacked [n_steps]): one scan with `device_loop`,
  else one jitted step dispatched n_steps times (the same batches, keys and updates)."""
  args = (job.data_key, job.train_key, job.data)
  if sched.device_loop:
    fn = _multi_step_fn(job, sched.batch_size, n_steps, mesh).lower(state, *args).compile()
    return lambda state: fn(state, *args)
  step = _multi_step_fn(job, sched.batch_size, 0, mesh).lower(state, *args).compile()

  def host_loop(state):
    metrics = []
    for _ in range(n_steps):
      # Waiting for each step keeps one sharded executable in flight: several queued at once
      # can starve XLA:CPU's in-process all-reduce of threads on (fake) multi-device CPUs.
      state, m = jax.block_until_ready(step(state, *args))
      metrics.append(m)
    return state, jax.tree.map(lambda *m: jnp.stack(m), *metrics)

  return host_loop


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


def _diverged(job: Job, ckpt_dir: str, at: int, last_saved: int) -> TrainingDiverged:
  last = os.path.join(ckpt_dir, str(last_saved)) if last_saved else "none"
  return TrainingDiverged(
      f"non-finite loss or gradients at step {at}; nothing was saved after step {last_saved} "
      f"(last good checkpoint: {last}). Lower {job.lr_field} or raise the warmup, then rerun to resume from it.")


def train(job: Job, sched: Schedule, state: losses.TrainState, *, ckpt_root: str, metrics_dir: str,
          mesh: Mesh, stop_after: int | None = None) -> losses.TrainState:
  """Trains (or resumes from ckpt_root/checkpoints) to sched.n_iters; see the module docstring.

  Args:
    job: what trains.
    sched: the loop's lengths and frequencies.
    state: the initial train state, replicated on `mesh` (restored onto if checkpoints exist).
    ckpt_root: the folder holding checkpoints/.
    metrics_dir: the workdir whose metrics.jsonl and tb/ receive the records.
    mesh: the device mesh.
    stop_after: stop early, with a checkpoint, once this step is reached (returns normally).

  Raises:
    TrainingDiverged: non-finite loss or parameters (the last good checkpoint is kept).
    Preempted: after a signal, once the checkpoint is written.
  """
  mngr = wd.checkpoint_manager(ckpt_root, sched.snapshot_freq)
  state = wd.restore_state(mngr, state)
  start = int(state.step)
  if start >= sched.n_iters:
    logging.info("Training already finished at step %d (n_iters=%d).", start, sched.n_iters)
    return state
  if start:
    logging.info("Resuming from step %d.", start)
  wd.truncate_metrics(metrics_dir, start, job.kind)
  writer = wd.MetricWriter(metrics_dir)
  try:
    with _SignalFlag() as signals:
      state, t_compile = _loop(job, sched, state, mngr, writer, mesh, signals, stop_after)
    writer.write(int(state.step), f"{job.kind}_summary", {"compile_s": t_compile or 0.0})
  finally:
    writer.close()
  if signals.signum is not None:
    raise Preempted(f"preempted at step {int(state.step)}; rerun the same command to resume",
                    signals.signum)
  return state


def _loop(job, sched, state, mngr, writer, mesh, signals, stop_after):
  progress, fns, t_compile = wd.Progress(sched.n_iters, int(state.step)), {}, None
  last_saved = int(state.step)
  while int(state.step) < sched.n_iters:
    step = int(state.step)
    n = min(sched.log_freq - step % sched.log_freq, sched.n_iters - step)
    if n not in fns:
      t0 = time.time()
      fns[n] = compile_steps(job, sched, n, mesh, state)
      t_compile = time.time() - t0 if t_compile is None else t_compile
    state, metrics = fns[n](state)
    bad = _first_nonfinite(metrics)
    if bad is not None or not wd.all_finite(state.params):
      raise _diverged(job, str(mngr.directory), step + 1 + (bad or n - 1), last_saved)
    step += n
    loss = float(np.mean(np.asarray(metrics["loss"])))
    rate = progress.update(step, loss)
    writer.write(step, job.kind, {"loss": loss, "grad_norm": float(np.mean(np.asarray(metrics["grad_norm"]))),
                                  "steps_per_s": rate})
    stop = (stop_after is not None and step >= stop_after) or signals.signum is not None
    if step % sched.checkpoint_freq == 0 or step % sched.snapshot_freq == 0 or step == sched.n_iters or stop:
      mngr.save(step, args=ocp.args.StandardSave(wd.state_dict(state)))
      mngr.wait_until_finished()
      last_saved = step
    if stop:
      break
  return state, t_compile


def fit(job: Job, n_steps: int, batch_size: int, state, mesh: Mesh | None = None):
  """n_steps steps of `job` from `state` as one compiled program, with no workdir: small models
  trained inside an evaluation (the digits feature network). Default mesh: the first device.

  Returns:
    The final state.
  """
  mesh = mesh or Mesh(np.asarray(jax.devices()[:1]), ("data",))
  sched = Schedule(n_steps, batch_size, n_steps, n_steps, n_steps)
  return compile_steps(job, sched, n_steps, mesh, state)(state)[0]
