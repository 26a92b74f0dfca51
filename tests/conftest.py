"""Test-wide set-up: 8 fake CPU devices, so data-parallel code is exercised without an accelerator; XLA:CPU's faster
compiling emitters; and a persistent compilation cache, so the many runs of the same small programs (and the
command-line runs in subprocesses) compile once per machine.

XLA reads these once, when JAX first initialises its backend, so they are set before anything imports jax; the
environment carries them to pytest-xdist workers and subprocesses.
"""
import fcntl
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Callable

import pytest

# Compiling is about three quarters of this suite's time, nearly all of it small programs (eager ops, ResNet-2 steps).
# XLA:CPU's legacy fusion emitters compile those a quarter to a third faster than its default MLIR emitters, and
# give the same results within the tests' tolerances. XLA aborts on a flag its release does not know, so a process
# of its own tries the flag first; xdist workers inherit the outcome with the environment.
FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count=8"


def _xla_accepts(flag: str) -> bool:
    probe = [sys.executable, "-c", "import jax; jax.devices()"]
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    try:
        return subprocess.run(probe, env=env, capture_output=True, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _sets(flags: str, flag: str) -> bool:
    """Whether `flags` already give `flag`'s option a value (a value the user chose wins)."""
    return flag.split("=")[0] in (given.split("=")[0] for given in flags.split())


_flags = os.environ.get("XLA_FLAGS", "")
if not _sets(_flags, DEVICE_COUNT_FLAG):
    _flags += f" {DEVICE_COUNT_FLAG}"
# Workers inherit the controller's flags: they probe nothing, whatever the probe found.
if not _sets(_flags, FAST_COMPILE_FLAG) and "PYTEST_XDIST_WORKER" not in os.environ and _xla_accepts(FAST_COMPILE_FLAG):
    _flags += f" {FAST_COMPILE_FLAG}"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A cache hit returns the executable compiled from identical HLO and options: results are unchanged.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"ltjax-tests-xla-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real data copies beside the checkout (`../shared/data`); tests that need them skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the checkout on dev and CI machines)")
    return SHARED_DATA


def _shared_folder(folder: pathlib.Path, what: str) -> pathlib.Path:
    """`folder` of the real data, or a skip that names it where this copy of the data lacks it."""
    if not folder.is_dir():
        pytest.skip(f"{what} {folder} is absent")
    return folder


@pytest.fixture(scope="session")
def splits_dir(shared_data) -> pathlib.Path:
    """The official ImageNet-LT, Places-LT and iNaturalist-2018 split files in `../shared/data/splits`."""
    return _shared_folder(shared_data / "splits", "official split files folder")


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory) -> Callable[[str, Callable[[pathlib.Path], object]], pathlib.Path]:
    """`trained_once(name, train) -> workdir`: a run several tests read, trained by `train(workdir)` once per pytest
    session, by whichever xdist worker asks first (the others wait for it, then read the same folder). Tests only
    read such a run, or copy it."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # this session's folder, shared by its workers

    folder = root / "shared-runs"

    def once(name: str, train: Callable[[pathlib.Path], object]) -> pathlib.Path:
        workdir, done = folder / name, folder / f"{name}.done"
        folder.mkdir(exist_ok=True)
        with open(folder / f"{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not done.exists():
                train(workdir)
                done.touch()
        return workdir

    return once


@pytest.fixture(scope="session")
def ce_run(trained_once) -> tuple[pathlib.Path, dict]:
    """(workdir, report) of a CE run of ResNet-8 on the digits at imbalance 100 (the head digit has 120 training
    images, the tail 1), 12 epochs: what ltjax-eval evaluates and the decoupled second stages start from. Tests add
    evaluations (each under its own name) and later stages (in their own folders), never train it further."""
    from runs import DATASET_MODEL, digits_config

    from ltjax.train.loop import train_and_evaluate

    config = digits_config(("dataset.imbalance_factor", "100"), ("num_epochs", "12"), ("plots", "true"),
                           model=DATASET_MODEL)
    workdir = trained_once("ce-digits-if100", lambda path: train_and_evaluate(config, path, say=lambda _: None))
    return workdir, json.loads((workdir / "report.json").read_text())


@pytest.fixture(scope="session")
def tiny_imagenet_root(shared_data) -> pathlib.Path:
    """The real `tiny-imagenet-200` copy (official layout, IF-100 training subset, complete val folder)."""
    return _shared_folder(shared_data / "tiny-imagenet-200", "Tiny ImageNet copy")
