"""Test setup: the JAX CPU backend with 4 fake devices, set before jax is imported."""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (after the environment is set)

jax.config.update("jax_enable_x64", False)
# Tests build the same small programs many times; a per-session persistent cache skips recompiling them.
_cache = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"score_sde_jax_test_cache_{os.getuid()}")
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: heavier tests; still run in CI (deselect with -m 'not slow')")
