"""Reliability: preemption, SIGKILL, corrupted checkpoints, NaN guard, locks, bad inputs."""

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import losses
import run_lib
from conftest import ROOT, get_config, tiny

CACHE = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"score_sde_jax_test_cache_{os.getuid()}")
TRAIN_ARGS = ["--config.training.n_iters=400", "--config.training.log_freq=10",
              "--config.training.checkpoint_freq=20", "--config.training.snapshot_freq=200",
              "--config.training.batch_size=64", "--config.model.hidden=16"]


def _cmd(workdir, *extra):
  return [sys.executable, os.path.join(ROOT, "run.py"), "--config=" + os.path.join(ROOT, "configs/vp_gmm.py"),
          f"--workdir={workdir}", "--mode=train", f"--jax_cache_dir={CACHE}", *TRAIN_ARGS, *extra]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _params(workdir):
  config = get_config("vp_gmm")
  for arg in TRAIN_ARGS:
    key, value = arg[len("--config."):].split("=")
    group, field = key.split(".")
    config[group][field] = int(value)
  return run_lib.load_state(run_lib.build(config), workdir)


def _assert_same_state(a, b):
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree.leaves((a.params, a.ema_params)), jax.tree.leaves((b.params, b.ema_params))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _wait_for_training(workdir, proc, timeout=120):
  """Blocks until the child has logged a train step (so it is inside the loop)."""
  t0 = time.time()
  while time.time() - t0 < timeout and proc.poll() is None:
    if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
      return
    time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full") / "run")
  done = subprocess.run(_cmd(workdir), env=_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return _params(workdir)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, uninterrupted):
  workdir = str(tmp_path / "run")
  rng = np.random.default_rng(0)
  for _ in range(2):
    proc = subprocess.Popen(_cmd(workdir), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_training(workdir, proc)
    time.sleep(float(rng.uniform(0.0, 1.5)))  # a random moment inside training (or saving)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  done = subprocess.run(_cmd(workdir), env=_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  _assert_same_state(_params(workdir), uninterrupted)
  steps = [r["step"] for r in run_lib.read_metrics(workdir, "train")]
  assert steps == sorted(set(steps)) and steps[-1] == 400  # no duplicated records after resumes


@pytest.mark.slow
def test_sigterm_saves_exits_cleanly_and_resumes(tmp_path, uninterrupted):
  workdir = str(tmp_path / "run")
  proc = subprocess.Popen(_cmd(workdir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for_training(workdir, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]  # unfinished: schedulers requeue it
  line = [l for l in err.splitlines() if "preempted at step" in l]
  assert line and line[-1].endswith("rerun the same command to resume"), err[-2000:]
  step = int(line[-1].split("preempted at step ")[1].split(";")[0])
  assert 0 < step < 400 and os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))
  done = subprocess.run(_cmd(workdir), env=_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0 and "Resuming from step" in done.stderr
  _assert_same_state(_params(workdir), uninterrupted)


@pytest.mark.slow
def test_corrupted_newest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  config = tiny(get_config("ve_gmm"), n_iters=30)
  run_lib.train(config, workdir)
  newest = os.path.join(workdir, "checkpoints", "30")
  for path in glob.glob(os.path.join(newest, "**", "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"\x00garbage")
  exp = run_lib.build(config)
  state = run_lib.load_state(exp, workdir)
  assert int(state.step) == 20
  assert any("unreadable" in r.getMessage() for r in caplog.records)
  # Training resumes from 20 and redoes the lost steps.
  assert int(run_lib.train(config, workdir).step) == 30


@pytest.mark.slow
def test_all_checkpoints_unreadable_is_an_error_not_a_fresh_start(tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny(get_config("ve_gmm"), n_iters=10)
  run_lib.train(config, workdir)
  for d in glob.glob(os.path.join(workdir, "checkpoints", "*", "")):
    shutil.rmtree(d)
    os.makedirs(d)
  with pytest.raises(ValueError, match="no readable checkpoint"):
    run_lib.train(config, workdir)


@pytest.mark.slow
def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  config = tiny(get_config("ve_gmm"), n_iters=20)
  run_lib.train(config, workdir)
  good = run_lib.load_state(run_lib.build(config), workdir)
  real = losses.get_train_step_fn

  def poisoned(*args, **kwargs):  # the loss turns NaN from step 25 on
    step_fn = real(*args, **kwargs)

    def wrapped(state, batch, key):
      new, metrics = step_fn(state, batch, key)
      bad = state.step >= 25
      poison = lambda x: jax.numpy.where(bad, jax.numpy.nan, x)
      return new.replace(params=jax.tree.map(poison, new.params)), {**metrics, "loss": poison(metrics["loss"])}

    return wrapped

  monkeypatch.setattr(losses, "get_train_step_fn", poisoned)
  config.training.n_iters = 40
  with pytest.raises(run_lib.TrainingDiverged, match=r"step 26.*checkpoints/20"):
    run_lib.train(config, workdir)
  monkeypatch.setattr(losses, "get_train_step_fn", real)
  assert sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "[0-9]*"))) == [10, 20]
  _assert_same_state(run_lib.load_state(run_lib.build(config), workdir), good)


@pytest.mark.slow
def test_resume_with_changed_run_defining_fields_lists_them(tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny(get_config("ve_gmm"), n_iters=10)
  run_lib.train(config, workdir)
  config.model.hidden = 32
  config.sde.sigma_max = 60.0
  with pytest.raises(ValueError, match=r"model.hidden: 64 -> 32.*sde.sigma_max: 100.0 -> 60.0.*new --workdir"):
    run_lib.train(config, workdir)
  config.model.hidden, config.sde.sigma_max = 64, 100.0
  config.training.n_iters = 20  # extending a run is allowed
  assert int(run_lib.train(config, workdir).step) == 20


@pytest.mark.slow
def test_second_process_cannot_take_the_workdir(tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  holder = subprocess.Popen([sys.executable, "-c", (
      "import fcntl, sys, time; f = open(sys.argv[1] + '/.lock', 'a+'); "
      "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"), workdir],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ValueError, match="in use by another process"):
      run_lib.train(tiny(get_config("ve_gmm"), n_iters=10), workdir)
  finally:
    holder.kill()
    holder.wait()
  # The kernel drops the lock of a dead process: no stale lock.
  assert int(run_lib.train(tiny(get_config("ve_gmm"), n_iters=10), workdir).step) == 10


BAD_VALUES = [
    ("seed", -1),
    ("sde.name", "xx"), ("sde.sigma_min", 0.0), ("sde.sigma_max", 0.001), ("sde.N", 1), ("sde.bogus", 1),
    ("data.name", "xx"), ("data.weights", [0.5, -0.5]), ("data.means", [0.0, 1.0]),
    ("data.covs", [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]]),
    ("model.name", "xx"), ("model.hidden", 0), ("model.depth", -1), ("model.embed_dim", 7),
    ("model.fourier_scale", 0.0), ("model.parameterization", "x0"), ("model.conditioning", "sigma"),
    ("loss.eps", 0.0), ("loss.eps", 1.5),
    ("optim.lr", 0.0), ("optim.warmup_steps", -5), ("optim.schedule", "exp"), ("optim.beta1", 1.0),
    ("optim.beta2", -0.1), ("optim.grad_clip", -1.0), ("optim.final_lr_ratio", 2.0), ("optim.weight_decay", -1.0),
    ("optim.eps", 0.0),
    ("training.batch_size", 6), ("training.batch_size", 0), ("training.n_iters", 0), ("training.log_freq", 0),
    ("training.snapshot_freq", 15), ("training.checkpoint_freq", 7), ("training.ema_rate", 1.0),
    ("sampling.method", "xx"), ("sampling.predictor", "xx"), ("sampling.corrector", "xx"), ("sampling.snr", 0.0),
    ("sampling.n_steps", -1), ("sampling.eps", 0.0),
    ("eval.n_samples", 0), ("eval.n_floor_pairs", 0), ("eval.n_trajectory", -1),
]


@pytest.mark.parametrize("field,value", BAD_VALUES, ids=[f"{f}={v}" for f, v in BAD_VALUES])
def test_bad_config_value_names_the_field(tmp_path, field, value):
  assert len(BAD_VALUES) >= 30
  config = get_config("ve_gmm")
  group, _, key = field.rpartition(".")
  (config[group] if group else config)[key] = value
  with pytest.raises(ValueError, match=key):
    run_lib.run(config, str(tmp_path / "w"), "all")
  assert not os.path.exists(tmp_path / "w")  # nothing written, nothing compiled


@pytest.mark.slow
@pytest.mark.parametrize("args,expected", [
    (["--config=configs/missing.py"], "missing.py"),
    (["--config=configs/ve_gmm.py", "--config.sde.name=nope"], "sde.name='nope' is unknown"),
    (["--config=configs/ve_gmm.py", "--config.training.nope=3"], "nope"),
    (["--config=configs/ve_gmm.py", "--mode=eval", "--workdir=/nonexistent/dir"], "holds no checkpoint"),
])
def test_run_py_bad_input_exits_with_one_line(args, expected):
  done = subprocess.run([sys.executable, "run.py", f"--jax_cache_dir={CACHE}", *args], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert expected in done.stderr, done.stderr[-2000:]
  assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_over_loopback_match_single_process(tmp_path):
  """Two CPU processes (2 fake devices each) joined by jax.distributed.initialize train 20 steps
  and agree with one process on 4 devices (same global mesh size; tolerance float32 round-off)."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  args = ["--config.training.n_iters=20", "--config.training.log_freq=10", "--config.training.checkpoint_freq=10",
          "--config.training.snapshot_freq=10", "--config.training.batch_size=64", "--config.model.hidden=16"]
  base = [sys.executable, os.path.join(ROOT, "run.py"), "--config=" + os.path.join(ROOT, "configs/vp_gmm.py"),
          "--mode=train", f"--jax_cache_dir={CACHE}", *args]
  env2 = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  multi = str(tmp_path / "multi")
  procs = [subprocess.Popen(base + [f"--workdir={multi}", "--multihost", f"--coordinator_address=127.0.0.1:{port}",
                                    "--num_processes=2", f"--process_id={i}"],
                            env=env2, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
  single = str(tmp_path / "single")
  env4 = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  done = subprocess.run(base + [f"--workdir={single}"], env=env4, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  config = get_config("vp_gmm")
  for arg in args:
    key, value = arg[len("--config."):].split("=")
    config[key.split(".")[0]][key.split(".")[1]] = int(value)
  exp = run_lib.build(config)
  a, b = run_lib.load_state(exp, multi), run_lib.load_state(exp, single)
  assert int(a.step) == int(b.step) == 20
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  # Only process 0 wrote logs.
  assert len(run_lib.read_metrics(multi, "train")) == 2
