"""Test setup: the JAX CPU backend with 4 fake devices, set before jax is imported."""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (after the environment is set)

jax.config.update("jax_enable_x64", False)


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: heavier tests; still run in CI (deselect with -m 'not slow')")
