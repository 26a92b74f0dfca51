"""Verified checkpoints of the whole train state with orbax, and resume that never silently uses damaged data.

A checkpoint holds the train state (params, optimizer state, BatchNorm statistics, method state, epoch totals, step)
and a JSON record of the run: the resolved config, its fingerprint, and the SHA-256 digest of every array of the
state. Orbax writes each step into a temporary directory and renames it when complete, so an interrupted save leaves
no step behind. Restoring recomputes the digest: a step whose files cannot be read or whose arrays differ from what
was saved (flipped bytes that still decode) is damaged. It is moved aside to `<step>.damaged` (kept for inspection,
out of orbax's way), the user is told, and the previous step is tried; with no good step left the run stops.
Orbax's own logging is kept off the terminal: the message names the step and the fault.

Across processes, every process saves and restores (orbax writes the host copy from process 0 and synchronises
them); a step that any process finds damaged is damaged for all, and process 0 moves it aside.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import pathlib
import shutil
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from ltjax import disk, multihost
from ltjax.errors import UserError
from ltjax.train.state import TrainState

_ORBAX_LOGGERS = ("absl", "orbax", "jax._src.distributed", "tensorstore")
# What a step's files take beyond its arrays (metadata, the run record, file-system blocks).
_FILES_OVERHEAD_BYTES = 256 * 1024


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be restored into this run."""


def state_digest(state) -> str:
    """SHA-256 over every array of a pytree: its path, dtype, shape and bytes, in tree order."""
    digest = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(state))
    for path, leaf in leaves:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_orbax():
    """Raises orbax's (and absl's) loggers to CRITICAL for the duration: their errors reach us as exceptions."""
    loggers = [logging.getLogger(name) for name in _ORBAX_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_sentence(error: Exception) -> str:
    """`Type: message` cut before orbax's and tensorstore's attached dumps."""
    text = (str(error).strip().splitlines() or [""])[0].split(". See full")[0]
    return f"{type(error).__name__}: {text[:200]}"


def _move_aside(step_dir: pathlib.Path) -> str:
    """Renames a damaged step to `<step>.damaged` (or `.damaged-2`, ... if taken: damaged again after a resume)."""
    aside, number = step_dir.with_name(f"{step_dir.name}.damaged"), 1
    while aside.exists():
        number += 1
        aside = step_dir.with_name(f"{step_dir.name}.damaged-{number}")
    step_dir.rename(aside)
    return str(aside)


class Checkpointer:
    """Saves and restores `TrainState`s under `directory` (one sub-directory per step)."""

    def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        self._max_to_keep = max_to_keep
        with _quiet_orbax():
            self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True)
        )

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: TrainState, record: dict) -> None:
        """Saves `state` at its step with `record` (JSON: the run's config and fingerprint) and the state's digest.

        Raises:
          CheckpointError: the disk or file system refused the write (full, read-only, ...); the unfinished step
            is removed, the earlier ones stay whole.
        """
        # orbax writes the host copy: given arrays replicated over several devices, it spends seconds on its first
        # save (and a fifth of a second on each later one) on per-device bookkeeping. Restore puts the arrays back
        # on the devices of the target, and the digest covers exactly the bytes written.
        host = jax.device_get(state)
        step = int(np.ravel(host.step)[0])  # an ensemble's members share their step
        record = {**record, "step": step, "digest": state_digest(host)}
        # Checked first: orbax's writers, stopped by a full disk, leave threads that print tracebacks as they end.
        need = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(host)) * 1.01 + _FILES_OVERHEAD_BYTES
        if shutil.disk_usage(self.directory).free < need:
            raise CheckpointError(self._unwritable(step, f"the disk is full (a checkpoint takes {need / 2**20:.1f} "
                                                         "MiB): free space there or move the workdir"))
        try:
            with _quiet_orbax():
                self._manager.save(
                    step, args=ocp.args.Composite(state=ocp.args.StandardSave(host), run=ocp.args.JsonSave(record))
                )
                self._manager.wait_until_finished()
        except Exception as error:
            refused = disk.refusal(error)
            if refused is None:
                raise
            multihost.on_primary(functools.partial(self._remove_unfinished, step))
            raise CheckpointError(self._unwritable(step, disk.REMEDIES[refused])) from None

    def _unwritable(self, step: int, why: str) -> str:
        latest = self.latest_step()
        then = f"the same command resumes from step {latest}" if latest is not None else \
            "the same command starts the run again"
        return f"cannot write checkpoint step {step} in {self.directory}: {why}. The checkpoints before it are " \
               f"whole; then {then}"

    def _remove_unfinished(self, step: int) -> None:
        """Deletes what orbax wrote of a step it could not finish (its temporary folders), to give the room back."""
        for path in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(path, ignore_errors=True)

    def _restore_step(self, step: int, abstract) -> tuple[TrainState, dict]:
        """The state and record of one step; CheckpointError saying what is wrong with it."""
        with _quiet_orbax():
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), run=ocp.args.JsonRestore())
                )
            except Exception as error:  # orbax raises many types for unreadable data; all mean the same to the user
                raise CheckpointError(f"its files cannot be read ({_first_sentence(error)})") from None
        record = restored["run"]
        if not isinstance(record, dict) or "digest" not in record:
            raise CheckpointError("its run record is missing or has no digest")
        if state_digest(restored["state"]) != record["digest"]:
            raise CheckpointError("its arrays do not match the digest recorded when it was saved")
        return restored["state"], record

    def restore(
        self, target: TrainState, fingerprint: str | tuple[str, ...], *, say: Callable[[str], None] = print,
        step: int | None = None, read_only: bool = False,
    ) -> TrainState | None:
        """The newest good checkpoint restored into the structure of `target` (as host arrays); None when there is
        none at all.

        Damaged steps are moved aside to `<step>.damaged` and reported through `say`, and the next older step is
        tried.

        Args:
          target: a state with the structure, shapes and dtypes to restore into.
          fingerprint: the run's config fingerprint, which the checkpoint must carry (or several accepted ones: a
            lengthened run resumes the checkpoints of its shorter self).
          say: where notes about damaged steps go.
          step: restore this step only (None: the newest good one).
          read_only: report damaged steps without moving them (an evaluation must not change the workdir).

        Raises:
          CheckpointError: checkpoints exist but none is good (or `step` is absent or damaged), or the checkpoint was
            written by a run with another config (`fingerprint` differs).
        """
        # Restored as host arrays, as they were saved: the steps place them on their devices. (An array committed to
        # one device could not be placed on devices of other processes.)
        abstract = jax.tree.map(lambda leaf: np.empty(np.shape(leaf), leaf.dtype), target)
        damaged = []
        steps = self.steps()
        if step is not None and step not in steps:
            raise CheckpointError(f"no checkpoint step {step} in {self.directory}; it holds steps {steps}")
        for candidate in [step] if step is not None else reversed(steps):
            step_dir = self.directory / str(candidate)
            try:
                state, record = multihost.on_every(functools.partial(self._restore_step, candidate, abstract))
            except CheckpointError as fault:
                damaged.append(candidate)
                if read_only:
                    say(f"checkpoint step {candidate} is damaged: {fault}; trying the previous one")
                    continue
                aside = multihost.on_primary(functools.partial(_move_aside, step_dir))
                with _quiet_orbax():
                    self._manager.reload()
                say(f"checkpoint step {candidate} is damaged: {fault}; moved it to {aside} and trying the previous one")
                continue
            if record.get("fingerprint") not in ((fingerprint,) if isinstance(fingerprint, str) else fingerprint):
                raise CheckpointError(
                    f"checkpoint {step_dir} was written by a run with a different config; resuming it with this "
                    "config would reproduce neither run. Use the config it was written with (its JSON is in the "
                    "checkpoint's run record), or a new workdir."
                )
            if damaged:
                say(f"resuming from checkpoint step {candidate}, the newest good one")
            return state
        if damaged:
            where = "" if read_only else " (moved aside as <step>.damaged)"
            raise CheckpointError(
                f"no good checkpoint in {self.directory}: steps {damaged} are damaged{where}. Delete the workdir's "
                "checkpoints folder to train from the start, or restore it from a copy."
            )
        return None

    def close(self) -> None:
        with _quiet_orbax():
            self._manager.close()
