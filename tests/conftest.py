"""Test-wide set-up: 8 fake CPU devices, so data-parallel code is exercised without an accelerator.

XLA reads this flag once, when JAX first initialises its backend, so it must be set before anything imports jax.
"""
import os
import pathlib

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real data copies beside the checkout (`../shared/data`); tests that need them skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the checkout on dev and CI machines)")
    return SHARED_DATA
