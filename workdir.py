"""The run directory: lock, config.json and the resume check, orbax checkpoints, metrics
(metrics.jsonl + TensorBoard), summaries, saved arrays and progress logging.

Layout: config.json, checkpoints/, metrics.jsonl, tb/, samples/*.npz, plots/*.png,
eval/summary.json (see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import losses
from sharding import is_primary


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

  def write(self, step: int, kind: str, scalars: dict, info: dict | None = None) -> None:
    """One record: step, kind, wall_time (Unix seconds), the `info` fields (JSON only) and the
    scalars (JSON and TensorBoard)."""
    if not self._active:
      return
    record = {"step": int(step), "kind": kind, "wall_time": round(time.time(), 3), **(info or {}),
              **{k: float(v) for k, v in scalars.items()}}
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


def state_dict(state: losses.TrainState) -> dict:
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
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_dict(init_state))
  errors = []
  for step in steps:
    try:
      restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
      state = losses.TrainState(**restored)
      if not all_finite(state.params):
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


def all_finite(tree) -> bool:
  return bool(all(jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)))


def write_config(config_json: str, workdir: str) -> None:
  """Writes config.json atomically (never half-written); process 0 only."""
  if not is_primary():
    return
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(config_json)
  os.replace(path + ".tmp", path)


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
  return out


def check_resume_compatible(config: dict, workdir: str, run_defining: tuple[str, ...]) -> None:
  """Compares a config (as a dict) with the workdir's config.json when checkpoints exist, on the
  fields (or groups) `run_defining`.

  Raises:
    ValueError: listing every run-defining field that differs, and how to start fresh.
  """
  path = os.path.join(workdir, "config.json")
  ckpt = os.path.join(workdir, "checkpoints")
  if not (os.path.exists(path) and os.path.isdir(ckpt) and os.listdir(ckpt)):
    return
  with open(path) as f:
    old = _flatten(json.load(f))
  new = _flatten(config)
  diffs = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
           for k in sorted(set(old) | set(new)) if k.startswith(run_defining) and old.get(k) != new.get(k)]
  if diffs:
    raise ValueError(f"--workdir={workdir!r} holds checkpoints of a different run; differing fields: "
                     + "; ".join(diffs) + ". To start fresh, pass a new --workdir or delete "
                     f"{ckpt} (keep config.json only if you want to compare).")


def check_workdir(workdir: str) -> None:
  """Raises ValueError when `workdir` exists but is not a directory (before anything is written)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir!r} is an existing file; pass a directory (new, or a previous run's).")


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


class Progress:
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


def truncate_metrics(workdir: str, after_step: int, kind: str = "train") -> None:
  """Drops `kind` records past `after_step` (written before a crash, redone after resuming)."""
  if not is_primary():
    return
  rows = read_metrics(workdir)
  keep = [r for r in rows if not (r["kind"].startswith(kind) and r["step"] > after_step)]
  if len(keep) != len(rows):
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in keep)


def write_eval(workdir: str, step: int, summary: dict, arrays: dict, scalars: dict) -> None:
  """eval/summary.json, samples/eval_<step>.npz and an "eval" record of `scalars` in the metrics."""
  if not is_primary():
    return
  for sub in ("eval", "samples", "plots"):
    os.makedirs(os.path.join(workdir, sub), exist_ok=True)
  np.savez(os.path.join(workdir, "samples", f"eval_{step}.npz"), **arrays)
  path = os.path.join(workdir, "eval", "summary.json")
  with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(path + ".tmp", path)
  writer = MetricWriter(workdir)
  writer.write(step, "eval", scalars, {"checkpoint_step": int(step)})
  writer.close()


_PHASES: list = []  # the open phases, innermost last


@contextlib.contextmanager
def phase(name: str, *, every_s: float = 15.0):
  """Logs "name ..." on entry, "name: done in X s" on exit and, for a phase that is one compiled
  call with no finer progress, "name: X s so far" every `every_s` seconds in between (only the
  innermost open phase does; process 0 only)."""
  if not is_primary():
    yield
    return
  t0, stop, token = time.time(), threading.Event(), object()
  logging.info("%s ...", name)
  _PHASES.append(token)

  def heartbeat():
    while not stop.wait(every_s):
      if _PHASES and _PHASES[-1] is token:
        logging.info("%s: %.0f s so far", name, time.time() - t0)

  beat = threading.Thread(target=heartbeat, daemon=True)
  beat.start()
  finished = False
  try:
    yield
    finished = True
  finally:  # the heartbeat stops before the end line, so no "so far" line can follow it
    stop.set()
    beat.join()
    logging.info("%s: done in %.1f s" if finished else "%s: stopped after %.1f s", name, time.time() - t0)
    _PHASES.remove(token)
