"""Test setup (the JAX CPU backend with 4 fake devices, set before jax is imported) and what the
tests share: config helpers for few-step runs, exact Gaussian scores, and NFE / trace counters."""

import importlib
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (after the environment is set)
import jax.numpy as jnp  # noqa: E402

import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", False)
# Tests build the same small programs many times; a per-session persistent cache skips recompiling them.
_cache = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"score_sde_jax_test_cache_{os.getuid()}")
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- configs for few-step runs -------------------------------------------------------------

def get_config(name):
  return importlib.import_module(f"configs.{name}").get_config()


def with_npz(config, tmp_path):
  """An npz config pointed at a small random file of its image size (train and test splits)."""
  if config.data.name == "npz":
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 32, 32, 3)).astype(np.uint8)
    path = str(tmp_path / "images.npz")
    np.savez(path, x=x[:16], y=np.arange(16) % 10, x_test=x[16:], y_test=np.arange(8) % 10)
    config.data.path = path
    config.eval.nll_samples = 8  # the file's test split
  return config


def tiny_image(config, n_iters=4, one_level=False):
  """A few-step image config: a tiny U-Net, 4 sampler steps, small eval sets, a 2-step Euler likelihood.

  one_level: a single-resolution U-Net without attention (a third of the compile time), for tests
  whose subject is not the architecture (tests/test_models.py covers that).
  """
  config.training.update(dict(n_iters=n_iters, log_freq=2, snapshot_freq=2, checkpoint_freq=2, batch_size=16))
  config.model.update(dict(ch=8, num_groups=4))
  if one_level:
    config.model.update(dict(ch_mult=(1,), attn_resolutions=()))
  config.sampling.n_steps = 4
  config.eval.update(dict(n_samples=32, n_grid=16, nll_samples=8, nll_batch_size=8))
  config.eval.classifier.n_steps = 20
  config.likelihood.update(dict(solver="euler", n_steps=2))
  return config


def tiny(config, n_iters=20, plots=False):
  """A few-step version of a config: small sampler grid, few samples, no plots (unless `plots`)."""
  config.training.n_iters = n_iters
  config.training.log_freq = 10
  config.training.snapshot_freq = 10
  config.training.checkpoint_freq = 10
  config.training.batch_size = 64
  config.sde.N = 20
  config.eval.n_samples = 400
  config.eval.n_floor_pairs = 2
  config.eval.n_trajectory = 5
  config.eval.n_trajectory_samples = 16
  config.eval.score_error_samples = 64
  if not plots:
    config.eval.evaluators = [e for e in config.eval.evaluators if e != "plots"]
    del config.eval["n_trajectory"], config.eval["n_trajectory_samples"]
  if "nll_samples" in config.eval:
    config.eval.nll_samples = 64
  if "vlb" in config.eval:
    config.eval.vlb["n_points"] = 64
  if "classifier" in config:
    config.classifier.n_iters, config.classifier.log_freq, config.classifier.batch_size = 20, 10, 64
  if "n_class_samples" in config.eval:
    config.eval.n_class_samples = 200
  return config


# --- exact scores and counters -------------------------------------------------------------

def gaussian_score(sde, mean, var):
  """The exact score of N(mean, var I) diffused by `sde`: -(x - alpha m) / (alpha^2 var + sigma^2)."""

  def score_fn(x, t):
    return gaussian_score_at(sde, mean, var, x, t)

  return score_fn


def gaussian_score_at(sde, mean, var, x, t):
  """`gaussian_score(sde, mean, var)(x, t)` as one function (bind arrays with functools.partial)."""
  alpha, sigma = (jnp.reshape(c, (-1,) + (1,) * (x.ndim - 1)) for c in sde.marginal_coeffs(t))
  return -(x - alpha * mean) / (alpha**2 * var + sigma**2)


def counted(score_fn, calls, traces=None):
  """score_fn that appends to `calls` at run time (one per evaluation) and to `traces` when traced."""

  def score(x, t):
    if traces is not None:
      traces.append(1)
    jax.debug.callback(lambda: calls.append(1))
    return score_fn(x, t)

  return score


def run_counted(fn):
  """fn() after all its debug callbacks have run."""
  out = fn()
  jax.block_until_ready(out)
  jax.effects_barrier()
  return out


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: heavier tests; still run in CI (deselect with -m 'not slow')")
