"""A run's folder: one run at a time, what produced it, and a log with one line per epoch.

Its layout::

    <workdir>/
        config.json            # the resolved config; resuming with a different one is an error showing the change
        plan.json              # method, phases with their epochs, learning-rate milestones, batch, devices
        provenance.json        # per session: command line, library versions, devices, start time, ltjax's git state
        manifests/<split>.json # the train/validation/test split manifests, each with its SHA-256
        pretrained.json        # with model.pretrained: the checkpoint's path, SHA-256 and what was loaded
        log.jsonl              # one JSON line per finished epoch
        checkpoints/           # orbax steps (see ltjax.train.checkpoint)
        report.json, *.png     # the final test report and plots
        .lock                  # held (flock) while a run uses the folder
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib import metadata

import ml_collections

from ltjax.configs import schema
from ltjax.data.splits import ManifestError, SplitManifest
from ltjax.errors import UserError
from ltjax.keys import ConfigError

_PACKAGES = ("ltjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tensorflow-datasets",
             "ml_collections", "scikit-learn")


class WorkdirBusyError(UserError, RuntimeError):
    """Another run holds the workdir."""


def default_name(config: ml_collections.ConfigDict) -> str:
    """`<method>-<dataset>-if<IF>-seed<seed>-<config hash>` (no `-if` for a dataset fixed by its split files): runs
    that compute different things never share it."""
    factor = config.dataset.get("imbalance_factor")  # a split-file dataset's is its files'
    imbalance = "" if factor is None else f"-if{factor:g}"
    return f"{config.loss.name}-{config.dataset.name}{imbalance}-seed{config.seed}-{schema.fingerprint(config)[:8]}"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _ltjax_source() -> dict[str, str]:
    """The git commit of the ltjax checkout running, and whether it had uncommitted changes (if it is one)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "ltjax"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git": "not a git checkout"}
    return {"git_commit": commit, "git_uncommitted_changes": bool(dirty)}


class Workdir:
    """The folder of one run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)

    @property
    def checkpoints(self) -> pathlib.Path:
        return self.path / "checkpoints"

    def member(self, member: int | None) -> pathlib.Path:
        """The folder of an ensemble member's own files (config, log, report, plots); the workdir for a single run."""
        return self.path if member is None else self.path / "members" / str(member)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the workdir for this process; released when the run ends or the process dies (even by SIGKILL).

        Raises:
          WorkdirBusyError: another process holds it.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise WorkdirBusyError(
                    f"workdir {self.path} is in use by {holder}; wait for that run to finish, or give this one "
                    "another --workdir"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {_now()}")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()

    def check_config(self, record: dict, *, extend: bool = False) -> dict | None:
        """Writes `config.json` (the resolved config's JSON record, or an ensemble's `{"members": [...]}`), or checks
        that a resumed run computes the same thing as the run that started here.

        Args:
          record: the run's config record.
          extend: allow the record to differ from the workdir's in a longer `num_epochs` only (continuing a run
            into a longer schedule, whose milestones then follow the new length).

        Returns:
          The workdir's previous record when `extend` lengthened the run, else None.

        Raises:
          ConfigError: the workdir holds a run with another config (the message lists the differing keys), or
            `extend` with a shorter run or other changes.
        """
        path = self.path / "config.json"
        text = json.dumps(record, indent=1, sort_keys=True)
        previous = None
        if path.exists():
            recorded = json.loads(path.read_text())
            changes = schema.differences(recorded, record)
            lengthened = _length(record) > _length(recorded) and not schema.differences(
                _without_length(recorded), _without_length(record))
            if extend and lengthened:
                previous = recorded
            elif changes:
                hint = ("\nTo continue this run into a longer schedule, add --extend (only num_epochs may grow)."
                        if lengthened else "")
                raise ConfigError(
                    f"workdir {self.path} holds a run with another config, so resuming it would reproduce neither "
                    "run. Changed keys (workdir -> now):\n  " + "\n  ".join(changes) +
                    "\nUse the workdir's config, or another --workdir (the default name differs for every config)."
                    + hint
                )
        path.write_text(text + "\n")
        return previous

    def record_pretrained(self, provenances: Mapping[int | None, dict]) -> None:
        """Writes where each member's pretrained weights came from (`ltjax.models.pretrained.Provenance`)."""
        for member, provenance in provenances.items():
            folder = self.member(member)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "pretrained.json").write_text(json.dumps(provenance, indent=1) + "\n")

    def record_manifests(self, manifests: Mapping[str, SplitManifest]) -> None:
        """Writes each split's manifest, or checks that a resumed run reads the same images.

        Raises:
          ManifestError: a split differs from the one this workdir's run started with (the dataset copy changed).
        """
        folder = self.path / "manifests"
        folder.mkdir(exist_ok=True)
        for split, manifest in manifests.items():
            path = folder / f"{split}.json"
            if path.exists():
                recorded = SplitManifest.load(path)
                if recorded.sha256 != manifest.sha256:
                    raise ManifestError(
                        f"the {split} split differs from the one this run started with (manifest {path}: "
                        f"{recorded.sha256[:12]}, now {manifest.sha256[:12]}): the dataset copy changed; restore it "
                        "or train in a new workdir"
                    )
            else:
                manifest.to_json(path)

    def record_session(self, plan: dict, devices, *, hosts: list[str] | None = None,
                       extended_from: int | None = None) -> None:
        """Appends this session (command, versions, devices, time, and a lengthening of the run) to
        `provenance.json` and writes `plan.json`.

        Args:
          plan: the run's plan.
          devices: every device the run trains on, of every process.
          hosts: each process's host name, in process order (this host's alone by default).
          extended_from: the run length before `--extend` lengthened it.
        """
        hosts = hosts or [socket.gethostname()]
        (self.path / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
        path = self.path / "provenance.json"
        sessions = json.loads(path.read_text())["sessions"] if path.exists() else []
        sessions.append({
            **({"extended": {"from_epochs": extended_from, "to_epochs": plan["num_epochs"]}}
               if extended_from is not None else {}),
            "started": _now(),
            "command": sys.argv,
            "cwd": os.getcwd(),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "devices": {"kind": devices[0].device_kind, "platform": devices[0].platform, "count": len(devices),
                        "process_count": len(hosts),
                        "processes": [{"process": process, "host": host,
                                       "devices": [device.id for device in devices if device.process_index == process]}
                                      for process, host in enumerate(hosts)]},
            "versions": _versions(),
            "ltjax_source": _ltjax_source(),
        })
        path.write_text(json.dumps({"sessions": sessions}, indent=1) + "\n")


def _length(record: dict) -> int:
    """The run length of a config record (an ensemble's members share it)."""
    return record["members"][0]["num_epochs"] if "members" in record else record["num_epochs"]


def _without_length(record: dict) -> dict:
    if "members" in record:
        return {"members": [_without_length(member) for member in record["members"]]}
    return {key: value for key, value in record.items() if key != "num_epochs"}


class EpochLog:
    """`log.jsonl`, one line per finished epoch, and the same numbers as TensorBoard events in the same folder.

    Opening it at a resumed run's first epoch drops the lines (and purges the events) of that epoch and later ones,
    written before an interruption and then recomputed, so every epoch appears exactly once. Events are written by
    tensorboardX's `SummaryWriter`, so `tensorboard --logdir runs/` shows every run and ensemble member.
    """

    def __init__(self, path: pathlib.Path, start_epoch: int):
        from tensorboardX import SummaryWriter

        self.path = path
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["epoch"] < start_epoch]
            path.write_text("".join(line + "\n" for line in kept))
        self._events = SummaryWriter(str(path.parent), purge_step=start_epoch, flush_secs=30)

    def append(self, record: dict) -> None:
        with self.path.open("a") as log:
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())
        self.scalars(record, step=record["epoch"])

    def scalars(self, record: dict, *, step: int, prefix: str = "") -> None:
        """Writes a record's numbers as TensorBoard scalars, nested keys joined by '/'."""
        for key, value in record.items():
            if isinstance(value, dict):
                self.scalars(value, step=step, prefix=f"{prefix}{key}/")
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self._events.add_scalar(f"{prefix}{key}", value, step)
        self._events.flush()

    def __enter__(self) -> EpochLog:
        return self

    def __exit__(self, *exc) -> None:
        self._events.close()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
