"""End to end: every config builds, a few-step run writes the workdir, reruns resume."""

import glob
import json
import logging
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import evaluators
import run_lib
from conftest import ROOT, get_config, tiny, tiny_image, with_npz
import sampling
import sharding
import losses
import models
import sde_lib
from configs import cond_gmm
import likelihood

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "default")))


IMAGE_CONFIGS = [n for n in CONFIGS if datasets.is_image_dataset_name(get_config(n).data.name)]
TOY_CONFIGS = [n for n in CONFIGS if n not in IMAGE_CONFIGS]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_builds(name, tmp_path):
  exp = run_lib.build(with_npz(get_config(name), tmp_path))
  assert exp.sde.N >= 2


def test_few_step_run_writes_workdir_and_resumes(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  config = tiny(get_config("ve_gmm"), plots=True)
  out = run_lib.run(config, workdir, "all")
  for rel in ("config.json", "metrics.jsonl", "eval/summary.json", "plots/samples.png",
              "plots/trajectories.png", "plots/score_field.png", "plots/loss.png"):
    assert os.path.exists(os.path.join(workdir, rel)), rel
  assert glob.glob(os.path.join(workdir, "tb", "events.*"))
  assert glob.glob(os.path.join(workdir, "samples", "eval_20.npz"))
  summary = json.load(open(os.path.join(workdir, "eval", "summary.json")))
  assert summary["step"] == 20 and summary["nfe"] == 2 * 20 + 1
  assert summary["floor"]["energy_distance"] > 0 and np.isfinite(summary["model"]["energy_distance"])
  assert out["eval"]["energy_ratio"] == summary["energy_ratio"]
  (row,) = run_lib.read_metrics(workdir, "eval")  # when, and which checkpoint, it evaluated
  assert row["checkpoint_step"] == 20 and abs(row["wall_time"] - time.time()) < 600
  with caplog.at_level(logging.INFO):
    sampled = run_lib.run(config, workdir, "sample")["sample"]
  saved = np.load(sampled["path"])
  assert saved["model"].shape == (400, 2) and np.all(np.isfinite(saved["model"])) and int(saved["nfe"]) == 41
  assert any(re.fullmatch(r"sampling 400 points at checkpoint step 20: done in \d+\.\d s", r.getMessage())
             for r in caplog.records)
  # Rerunning a finished run does not train again; raising n_iters resumes from step 20.
  run_lib.train(config, workdir)
  steps = [r["step"] for r in run_lib.read_metrics(workdir, "train")]
  assert steps == [10, 20]
  config.training.n_iters = 40
  run_lib.train(config, workdir)
  steps = [r["step"] for r in run_lib.read_metrics(workdir, "train")]
  assert steps == [10, 20, 30, 40]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path):
  config = tiny(get_config("vp_gmm"), n_iters=30)
  full = run_lib.train(config, str(tmp_path / "full"))
  stopped = run_lib.train(config, str(tmp_path / "split"), stop_after=10)
  assert int(stopped.step) == 10
  resumed = run_lib.train(config, str(tmp_path / "split"))
  # Same keys folded with the step and same data per step: bit-identical on CPU.
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("field,value,match", [
    ("sde.name", "xx", "sde.name"),
    ("sde.sigma_max", 0.001, "sde.sigma_max"),
    ("model.name", "xx", "model.name"),
    ("model.parameterization", "x0", "model.parameterization"),
    ("sampling.predictor", "xx", "sampling.predictor"),
    ("sampling.corrector", "xx", "sampling.corrector"),
    ("training.batch_size", 6, "training.batch_size"),
    ("training.n_iters", 0, "training.n_iters"),
    ("training.snapshot_freq", 15, "training.snapshot_freq"),
    ("loss.eps", 2.0, "loss.eps"),
    ("optim.schedule", "xx", "optim.schedule"),
    ("data.name", "xx", "data.name"),
    ("eval.n_samples", 0, "eval.n_samples")])
def test_bad_config_values_raise_before_compiling(tmp_path, field, value, match):
  config = get_config("ve_gmm")
  group, key = field.split(".")
  config[group][key] = value
  with pytest.raises(ValueError, match=match):
    run_lib.run(config, str(tmp_path / "w"), "all")
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_workdir_that_is_a_file_raises_and_keeps_it(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("keep me")
  with pytest.raises(ValueError, match=r"--workdir=.*notes.txt' is an existing file"):
    run_lib.run(tiny(get_config("ve_gmm")), str(path), "all")
  assert path.read_text() == "keep me"


def test_unknown_override_names_the_closest_field():
  import run
  config = get_config("ve_gmm")
  assert run.unknown_field(config, "training.n_iter") == (
      "unknown config field training.n_iter; did you mean training.n_iters?")
  assert run.unknown_field(config, "trainig.n_iters") == (
      "unknown config field trainig.n_iters; did you mean training.n_iters?")
  assert "the fields of training are ['batch_size'," in run.unknown_field(config, "training.zzz")
  assert run.unknown_field(config, "training.n_iters") is None


def test_console_filter_drops_only_info_noise():
  import run
  record = lambda name, level, msg, path="x.py": logging.LogRecord(name, level, path, 1, msg, None, None)
  tpu = "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so"
  assert not run._quiet_info(record("jax._src.xla_bridge", logging.INFO, tpu))
  assert run._quiet_info(record("jax._src.xla_bridge", logging.WARNING, "A Google TPU may be present"))
  assert run._quiet_info(record("jax._src.xla_bridge", logging.ERROR, tpu))
  assert not run._quiet_info(record("absl", logging.INFO, "saved", "/site-packages/orbax/checkpoint/x.py"))
  assert run._quiet_info(record("absl", logging.INFO, "step 250/5000  loss 1.2488"))


def test_phase_logs_start_heartbeat_and_end(caplog):
  import workdir
  with caplog.at_level(logging.INFO):
    with workdir.phase("eval 'samples'", every_s=0.05), workdir.phase("sampling 10 points", every_s=0.05):
      time.sleep(0.3)  # only the inner phase beats
    with pytest.raises(KeyError), workdir.phase("metrics", every_s=10.0):
      raise KeyError("x")
  msgs = [r.getMessage() for r in caplog.records]
  # While the inner phase is open (from its first heartbeat to its end line) the outer one is silent;
  # before the inner registers and after it ends the outer may beat, so a loaded machine cannot fail this.
  first = next(i for i, m in enumerate(msgs) if m.startswith("sampling 10 points:") and "so far" in m)
  end = next(i for i, m in enumerate(msgs) if m.startswith("sampling 10 points: done"))
  assert not any("'samples': " in m and "so far" in m for m in msgs[first:end])
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("sampling 10 points", "metrics"))]
  assert lines[0] == "sampling 10 points ..." and re.fullmatch(r"sampling 10 points: done in \d+\.\d s", lines[-3])
  assert any(re.fullmatch(r"sampling 10 points: \d+ s so far", m) for m in lines[1:-3])
  assert lines[-2] == "metrics ..." and lines[-1].startswith("metrics: stopped after")


def test_eval_without_checkpoint_raises(tmp_path):
  with pytest.raises(ValueError, match="no checkpoint"):
    run_lib.run(tiny(get_config("ve_gmm")), str(tmp_path / "empty"), "eval")


@pytest.mark.slow
def test_run_py_flags_and_clean_error(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  args = [sys.executable, os.path.join(ROOT, "run.py"), "--config=" + os.path.join(ROOT, "configs/ve_gmm.py"),
          f"--workdir={tmp_path / 'w'}", "--mode=train", "--config.training.n_iters=10",
          "--config.training.log_freq=5", "--config.training.snapshot_freq=5", "--config.training.checkpoint_freq=5",
          "--config.training.batch_size=32"]
  done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert os.path.exists(tmp_path / "w" / "checkpoints")


# Bad command lines: run.py prints exactly this one line on stderr and exits with status 2.
BAD_COMMAND_LINES = [
    (["--config.sde.name=nope"], "error: sde.name='nope' is unknown; valid names: ["),
    (["--config.training.n_iter=500"], "error: unknown config field training.n_iter; did you mean training.n_iters?"),
    (["--config.trainig.n_iters=5"], "error: unknown config field trainig.n_iters; did you mean training.n_iters?"),
    (["--workdir={file}"], "error: --workdir='{file}' is an existing file; pass a directory"),
    (["--config=configs/no_such.py"], "error: --config=configs/no_such.py: no such config file"),
]


@pytest.mark.slow
@pytest.mark.parametrize("extra,expected", BAD_COMMAND_LINES)
def test_run_py_bad_input_is_one_line(tmp_path, extra, expected):
  file = tmp_path / "a_file"
  file.write_text("x")
  args = [sys.executable, "run.py", "--config=configs/ve_gmm.py", f"--workdir={tmp_path / 'w'}"]
  args += [a.format(file=file) for a in extra]
  done = subprocess.run(args, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr  # exactly one line
  assert done.stderr.startswith(expected.format(file=file)), done.stderr
  assert file.read_text() == "x" and not (tmp_path / "w").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", TOY_CONFIGS)
def test_every_config_runs_through_run_lib(tmp_path, name):
  config = tiny(get_config(name))
  if "nll_samples" in config.eval:  # the NLL and oracle paths are covered by the few-step test
    config.eval.nll_samples = 0
  config.eval.oracle = False
  out = run_lib.run(config, str(tmp_path / name), "all")
  assert np.isfinite(out["eval"]["model"]["energy_distance"])
  if config.sampling.get("start_moments") == "data":  # the summary names the moments; it does not hold them
    assert out["eval"]["sampler"]["start_moments"] == "data" and out["eval"]["nfe"] == config.sampling.n_steps
  if "classifier" in config:  # conditional configs: per-class metrics of CFG and classifier guidance
    assert os.path.isdir(tmp_path / name / "classifier" / "checkpoints")
    for row in out["eval"]["per_class"].values():
      assert set(row) == {"floor", "cfg", "classifier"} and np.isfinite(row["cfg"]["energy_ratio"])


@pytest.mark.slow
def test_training_on_4_devices_equals_1_device(tmp_path):
  """20 steps with the batch sharded over 4 fake devices give the parameters of 1 device.

  Tolerance 2e-5 relative: the sharded gradient is summed in a different order (float32).
  """
  from jax.sharding import Mesh
  assert jax.device_count() == 4
  config = tiny(get_config("vp_gmm"), n_iters=20)
  one = run_lib.train(config, str(tmp_path / "one"), mesh=Mesh(np.asarray(jax.devices()[:1]), ("data",)))
  four = run_lib.train(config, str(tmp_path / "four"), mesh=run_lib.make_mesh())
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_sampling_on_4_devices_equals_1_device():
  """Per-sample keys: the same samples on 1 and 4 devices, and with a batch padded for 4 (n = 30)."""
  from jax.sharding import Mesh
  exp = run_lib.build(tiny(get_config("ve_gmm")))
  key = jax.random.key(3)
  oracle = exp.target.score_fn(exp.sde)

  def oracle_sampler(mesh):
    sampler = sampling.get_sampler(exp.sde, (sharding.padded_size(30, mesh), 2), **exp.config.sampling)
    return sharding.sharded_sampler(sampler, mesh, 30, lambda: oracle)

  oracle_one = oracle_sampler(Mesh(np.asarray(jax.devices()[:1]), ("data",)))
  oracle_four = oracle_sampler(run_lib.make_mesh())
  x1, nfe1 = oracle_one(key)
  x4, nfe4 = oracle_four(key)
  assert x4.shape == (30, 2) and int(nfe1) == int(nfe4)
  assert len(x4.sharding.device_set) == 4 or x4.shape[0] % 4  # sharded where the shape allows
  np.testing.assert_allclose(np.asarray(x1), np.asarray(x4), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_digits_few_steps_through_run_py(tmp_path):
  """vp_digits through run.py: a few U-Net steps, then samples, grid, bits/dim and Frechet distance."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  flags = dict(n_iters=4, log_freq=2, snapshot_freq=2, checkpoint_freq=2, batch_size=16)
  args = [sys.executable, os.path.join(ROOT, "run.py"), "--config=" + os.path.join(ROOT, "configs/vp_digits.py"),
          f"--workdir={tmp_path / 'w'}", "--jax_cache_dir=", "--config.model.ch=8", "--config.model.num_groups=4",
          # One level, no attention: a third of the compile time; the U-Net has its own tests.
          "--config.model.ch_mult=(1,)", "--config.model.attn_resolutions=()",
          "--config.sampling.n_steps=4", "--config.eval.n_samples=32", "--config.eval.n_grid=16",
          "--config.eval.nll_samples=8", "--config.eval.nll_batch_size=8", "--config.eval.classifier.n_steps=20",
          "--config.likelihood.solver=euler", "--config.likelihood.n_steps=2"]
  args += [f"--config.training.{k}={v}" for k, v in flags.items()]
  done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "test bits/dim" in done.stdout and "Frechet distance" in done.stdout
  w = tmp_path / "w"
  for rel in ("eval/summary.json", "plots/samples_grid.png", "plots/data_grid.png", "plots/loss.png",
              "samples/eval_4.npz", "checkpoints"):
    assert os.path.exists(w / rel), rel
  summary = json.load(open(w / "eval" / "summary.json"))
  assert summary["step"] == 4 and summary["nfe"] == 4 and summary["n_nonfinite"] == 0
  bpd = summary["bits_per_dim"]
  assert bpd["n"] == 8 and bpd["n_bins"] == 17 and np.isfinite(bpd["bpd"]) and bpd["nfe"] > 0
  fd = summary["frechet"]
  assert fd["n"] == 32 and fd["fd"] > fd["fd_floor"] > 0 and 0 <= fd["classifier_test_accuracy"] <= 1
  x = np.load(w / "samples" / "eval_4.npz")["model"]
  assert x.shape == (32, 8, 8, 1) and np.all(np.isfinite(x))
  train = [r["step"] for r in run_lib.read_metrics(str(w), "train")]
  assert train == [2, 4]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ve_digits", "subvp_digits"])
def test_digits_configs_train(tmp_path, name):
  """The other digits SDEs train (eval is the same code path as in the run.py test)."""
  config = tiny_image(get_config(name), n_iters=2, one_level=True)
  state = run_lib.train(config, str(tmp_path / name))
  rows = run_lib.read_metrics(str(tmp_path / name), "train")
  assert int(state.step) == 2 and np.isfinite(rows[-1]["loss"]) and rows[-1]["loss"] > 0
  if name == "ve_digits":  # the bound of a dequantised-data model on the integer test images
    config.eval.evaluators = ["elbo"]
    for field in ("classifier", "n_samples", "n_grid", "nll_samples", "nll_batch_size"):
      del config.eval[field]
    config.eval.elbo = dict(n_points=8, n_t=2, t0=1e-5, decoder="gaussian", dequantize=True)
    e = run_lib.evaluate(config, str(tmp_path / name))["elbo"]
    assert e["dequantized"] and e["n"] == 8 and np.isfinite(e["model"]["bits_per_dim_stderr"])
    # bits/dim = (nll / 64 + log(17 / 2)) / ln 2, the dequantisation bound's offset
    assert np.isclose(e["model"]["bits_per_dim"], (e["model"]["total"] / 64 + np.log(8.5)) / np.log(2), rtol=1e-6)


@pytest.mark.slow
def test_cond_digits_per_class_eval(tmp_path):
  """cond_digits: a class-conditional U-Net, per-class guided samples, a grid with one row per class."""
  config = tiny_image(get_config("cond_digits"), one_level=True)
  config.eval.update(dict(n_class_samples=4, nll_samples=0))  # bits/dim: test_digits_few_steps_through_run_py
  workdir = str(tmp_path / "cond")
  summary = run_lib.run(config, workdir, "all")["eval"]
  pc = summary["per_class"]
  assert sorted(pc["classes"], key=int) == [str(k) for k in range(10)] and pc["n_per_class"] == 4
  accs = [row["classifier_accuracy"] for row in pc["classes"].values()]
  assert all(0 <= a <= 1 for a in accs) and np.isclose(pc["classifier_accuracy"], np.mean(accs))
  assert pc["frechet"]["n"] == 40 and pc["frechet"]["fd"] > 0
  x = np.load(os.path.join(workdir, "samples", "eval_4.npz"))["per_class"]
  assert x.shape == (10, 4, 8, 8, 1) and np.all(np.isfinite(x))
  import matplotlib.image
  grid = matplotlib.image.imread(os.path.join(workdir, "plots", "class_grid.png"))
  single = matplotlib.image.imread(os.path.join(workdir, "plots", "samples_grid.png"))  # 16 samples, 4 x 4
  # 10 rows (classes) of 4 samples: 102 x 42 pixels enlarged 6x, plus the class labels' strip.
  assert grid.shape[0] == 102 * 6 and grid.shape[1] > 42 * 6
  assert single.shape[:2] == (42 * 13, 42 * 13)  # 4 x 4 samples enlarged 13x (to >= 512 pixels)


def test_image_config_errors(tmp_path):
  config = tiny_image(get_config("vp_digits"))
  for field, value, match in [("eval.nll_samples", 298, "exceeds the test split"),
                              ("eval.n_grid", 33, "eval.n_grid"), ("model.ch_mult", (1, 2, 2, 2, 2), "divisible by 16"),
                              ("model.num_groups", 3, "model.num_groups"), ("eval.nll_batch_size", 0, "eval.nll_batch_size")]:
    bad = tiny_image(get_config("vp_digits"))
    group, key = field.split(".")
    bad[group][key] = value
    with pytest.raises(ValueError, match=match):
      run_lib.run(bad, str(tmp_path / "w"), "all")
  config.eval.n_floor_pair = 2  # a misspelt eval field is an error, not silently ignored
  with pytest.raises(ValueError, match="eval.n_floor_pair is not a field of any evaluator"):
    run_lib.build(config)
  cifar = with_npz(get_config("cifar10_ddpmpp"), tmp_path)
  cifar.eval.evaluators = list(cifar.eval.evaluators) + ["frechet"]
  cifar.eval.classifier = dict(n_steps=20)
  with pytest.raises(ValueError, match="contains 'frechet', which needs labelled 8x8"):
    run_lib.build(cifar)
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


# --- conditional generation ---

@pytest.mark.parametrize("field,value,match", [
    ("model.num_classes", 2, "model.num_classes=2 must equal"),
    ("guidance.w", -1.0, "guidance.w"),
    ("guidance.classifier_scale", -0.5, "guidance.classifier_scale"),
    ("loss.label_dropout", 1.5, "loss.label_dropout"),
    ("classifier.n_iters", 0, "classifier.n_iters"),
    ("classifier.conditioning", "xx", "classifier.conditioning"),
    ("eval.n_class_samples", 0, "eval.n_class_samples")])
def test_bad_conditional_fields_raise_before_compiling(tmp_path, field, value, match):
  config = cond_gmm.get_config()
  group, key = field.split(".")
  config[group][key] = value
  with pytest.raises(ValueError, match=match):
    run_lib.run(config, str(tmp_path / "w"), "all")
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_train_classifier_needs_a_classifier_group(tmp_path):
  config = cond_gmm.get_config()
  del config.classifier
  config.guidance.classifier_scale = 0.0
  with pytest.raises(ValueError, match="classifier"):
    run_lib.run(config, str(tmp_path / "w"), "train_classifier")


# --- discrete DDPM / SMLD ---

def test_ddpm_config_groups_build_the_library_objects():
  """What run_lib.build does for configs/ddpm_gmm.py, group by group (every field consumed)."""
  from configs.ddpm_gmm import get_config

  config = get_config()
  sde = sde_lib.get_sde(**config.sde)
  schedule = sde_lib.schedule_of(sde)
  assert isinstance(sde, sde_lib.DiscreteVPSDE) and schedule.T == 1000
  score_model = models.get_score_model(sde, **config.model)
  assert config.loss.name == "ddpm"
  losses.get_loss_fn(sde, score_model, **config.loss)
  sampling.get_sampler(sde, (4, 2), **config.sampling)
  likelihood.get_vlb_fn(schedule, **{k: v for k, v in config.eval.vlb.items() if k != "n_points"})


@pytest.mark.slow
def test_vdm_gmm_learns_its_schedule_and_evaluates_with_it(tmp_path):
  """vdm_gmm, 40 steps: the checkpoint's schedule endpoints moved from their initial values, the
  evaluation's SDE is the checkpoint's own, and the bound of the exact score is above the true NLL."""
  config = tiny(get_config("vdm_gmm"), n_iters=40)
  config.eval.evaluators = ["samples", "likelihood", "elbo"]
  del config.eval["score_error_samples"]
  config.eval.elbo.n_points = 256
  out = run_lib.run(config, str(tmp_path / "vdm"), "all")["eval"]
  exp = run_lib.build(config)
  state = run_lib.load_state(exp, str(tmp_path / "vdm"))
  sched = state.ema_params["schedule"]
  assert float(sched["gamma_min"]) != -10.0 and float(sched["gamma_max"]) != 6.0
  bound = sde_lib.bound(exp.sde, state.ema_params)
  assert float(bound.gamma(jnp.zeros(1))[0]) == pytest.approx(float(sched["gamma_min"]), abs=1e-5)
  e = out["elbo"]
  assert e["n"] == 256 and np.isfinite(e["model"]["total"])
  gap = e["oracle"]["total"] - e["nll_true"]
  assert gap > -3 * e["oracle"]["total_stderr"], e
  assert np.isfinite(out["likelihood"]["nll_model"]) and out["energy_ratio"] > 0  # ODE with the bound SDE


@pytest.mark.slow
def test_vdm_digits_few_steps(tmp_path):
  """vdm_digits, 4 steps of a one-level U-Net: the discrete bound (bits/dim) of the test images is
  finite and its reconstruction term is a probability (>= 0 nats). (Sampling and the ODE with a
  learned schedule: the vdm_gmm test; image sampling and bits/dim: the other digits tests.)"""
  config = tiny_image(get_config("vdm_digits"), n_iters=4, one_level=True)
  config.eval.evaluators = ["elbo"]
  for field in ("classifier", "n_samples", "n_grid", "nll_samples", "nll_batch_size"):
    del config.eval[field]
  config.eval.elbo.n_points = 16
  out = run_lib.run(config, str(tmp_path / "vdm"), "all")["eval"]
  e = out["elbo"]["model"]
  assert np.isfinite(e["bits_per_dim"]) and e["reconstruction"] >= 0 and e["prior"] >= 0 and out["elbo"]["n"] == 16


def test_start_moments_data_is_the_datasets_mean_and_covariance(tmp_path):
  """sampling.start_moments="data" (the bespoke solver's Gaussian start) becomes the target's own moments in
  the built experiment and in what the evaluators sample with; any other string raises at build."""
  config = get_config("ve_gmm_fast")
  config.sampling.start_moments = "data"
  exp = run_lib.build(config)
  mean, cov = exp.sampler_fields["start_moments"]
  np.testing.assert_allclose(mean, exp.target.mean())
  np.testing.assert_allclose(cov, exp.target.cov())
  assert config.sampling.start_moments == "data"  # the config (and config.json) keep the name
  config.sampling.start_moments = "dta"
  with pytest.raises(ValueError, match=r"sampling.start_moments must be \(mean \[2\], covariance \[2, 2\]\)"):
    run_lib.run(config, str(tmp_path / "w"), "all")
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_list_fields_can_be_overridden_on_the_command_line():
  """run.py registers a parser for list fields (ml_collections parses tuples only): Python literals, one
  value, or comma-separated words; the overridden config then reaches build's checks."""
  from absl import flags
  from ml_collections import config_flags

  import run
  parser = run.ListParser()
  assert parser.parse("[0.5, 0.3]") == [0.5, 0.3] and parser.parse("0.5,0.3") == [0.5, 0.3]
  assert parser.parse("[[1.0, 0.0], [0.0, 1.0]]") == [[1.0, 0.0], [0.0, 1.0]] and parser.parse("2.5") == [2.5]
  assert parser.parse("samples, plots") == ["samples", "plots"] and parser.parse(["a"]) == ["a"]
  argv = ["prog", "--config=" + os.path.join(ROOT, "configs/ve_gmm_fast.py"), "--config.data.weights=[0.7, 0.3]",
          "--config.sampling.timesteps=" + str([-1.5 + 0.5 * i for i in range(8)])]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  assert fv.config.data.weights == [0.7, 0.3] and fv.config.sampling.timesteps[0] == -1.5
  run_lib.build(fv.config)
  fv.config.data.weights = [0.7, 0.2, 0.1]
  with pytest.raises(ValueError, match=r"data.weights=\[0.7, 0.2, 0.1\] must be 2 positive numbers"):
    run_lib.build(fv.config)
  # a shorter evaluator list: the eval fields only the left-out evaluators take are ignored
  argv = ["prog", "--config=" + os.path.join(ROOT, "configs/ve_gmm.py"), "--config.eval.evaluators=samples,plots"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  assert fv.config.eval.evaluators == ["samples", "plots"] and fv.config.eval.nll_samples > 0
  run_lib.build(fv.config)
  fields = {k: v for k, v in fv.config.eval.items() if k != "evaluators"}
  assert evaluators.check(["samples", "plots"], fields) == ["nll_samples", "score_error_samples"]
  assert evaluators.check(list(get_config("ve_gmm").eval.evaluators), fields) == []


@pytest.mark.slow
def test_sampler_kl_evaluator_gives_the_exact_kl_of_the_configured_sampler(tmp_path):
  """configs/ve_gmm_fast.py evaluates its sampler by the exact KL (`evaluators.toy.sampler_kl`): with the
  exact score on the default mixture 0.15e-3 +- 0.06e-3 nats from 65,536 latents (benchmarks/RESULTS.md,
  the drop table); here 4,096 other latents must agree within 3 standard errors + 1e-4, with no fold, and
  the barely trained network's KL is finite and far above it; both reach metrics.jsonl."""
  config = tiny(get_config("ve_gmm_fast"))
  config.eval.kl_samples = 4096
  assert "sampler_kl" in config.eval.evaluators
  run_lib.run(config, str(tmp_path / "w"), "all")
  out = json.load(open(tmp_path / "w" / "eval" / "summary.json"))["sampler_kl"]
  assert out["oracle"]["n"] == 4096 and out["oracle"]["nfe"] == 9 and out["oracle"]["folded"] == 0, out
  assert abs(out["oracle"]["kl"] - 0.15e-3) <= 3 * out["oracle"]["se"] + 1e-4, out
  assert np.isfinite(out["model"]["kl"]) and out["model"]["kl"] > 100 * out["oracle"]["kl"] + 0.01, out
  rows = [json.loads(line) for line in open(tmp_path / "w" / "metrics.jsonl")]
  evals = [r for r in rows if r.get("kind") == "eval"]
  assert evals[-1]["sampler_kl"] == out["model"]["kl"] and evals[-1]["sampler_kl_oracle"] == out["oracle"]["kl"]


def test_sampler_kl_evaluator_needs_a_deterministic_sampler_and_a_density(tmp_path):
  """Checked at build time, before anything is written: a PC sampler draws noise; a dataset of images has
  no log_prob."""
  config = get_config("ve_gmm")
  config.eval.evaluators = list(config.eval.evaluators) + ["sampler_kl"]
  config.eval.kl_samples = 1024
  with pytest.raises(ValueError, match="'sampler_kl', which needs a deterministic sampler .*'pc' draws noise"):
    run_lib.run(config, str(tmp_path / "w"), "all")
  assert not os.path.exists(tmp_path / "w")
  config = tiny_image(get_config("vp_digits"))
  config.sampling = dict(method="ddim", n_steps=4)
  config.eval.evaluators = list(config.eval.evaluators) + ["sampler_kl"]
  config.eval.kl_samples = 1024
  with pytest.raises(ValueError, match="'sampler_kl', which needs a target with a known density"):
    run_lib.build(config)


def test_run_py_final_line_gives_the_exact_sampler_kl_and_flags_a_fold():
  """run.py's last line on a toy target: the energy ratio, and with the sampler_kl evaluator the exact KL for
  each score, saying when the sampler folds the latent space (then the number is not a KL)."""
  import run

  ev = {"model": {"energy_distance": 1e-3}, "energy_ratio": 1.5, "floor": {"energy_distance": 6.7e-4}, "nfe": 9}
  assert run.summary_lines({"eval": ev}, "w") == [
      "energy distance 1.000e-03 = 1.50x floor (6.700e-04); nfe 9; summary in w/eval/summary.json"]
  ev["sampler_kl"] = {"model": {"kl": 1.3e-3, "se": 3.7e-4, "folded": 0.0},
                      "oracle": {"kl": 2.1e-4, "se": 1.2e-4, "folded": 0.125}}
  assert run.summary_lines({"eval": ev}, "w") == [
      "energy distance 1.000e-03 = 1.50x floor (6.700e-04); nfe 9; exact sampler KL, model score: 1.30e-03 +- "
      "3.7e-04 nats; exact sampler KL, oracle score: 2.10e-04 +- 1.2e-04 nats (not a KL: it folds 12.5% of the "
      "latents); summary in w/eval/summary.json"]
