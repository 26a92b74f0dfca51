"""Checkpoints of the whole train state with orbax, and resume that never silently starts afresh.

A checkpoint holds the train state (params, optimizer state, BatchNorm statistics, loss state, step) and a JSON
record of the run (the config's fingerprint and the data position). The data order is a pure function of
(seed, epoch, step), so the step alone fixes where the input pipeline resumes. Orbax writes each step into a
temporary directory and renames it when complete, so an interrupted save leaves no step behind; a step that is
present but unreadable, or written by a run with another config, raises `CheckpointError` naming the directory.
"""
from __future__ import annotations

import hashlib
import json
import pathlib

import jax
import ml_collections
import orbax.checkpoint as ocp

from ltjax.train.state import TrainState

# Config keys that may change between an interrupted run and its resumption without changing the result.
_RUN_ONLY_KEYS = ("workdir", "progress_bar", "checkpoint_every_steps", "keep_checkpoints")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored into this run."""


def config_fingerprint(config: ml_collections.ConfigDict) -> str:
    """SHA-256 of the config's JSON without the keys that do not affect the result."""
    record = json.loads(config.to_json_best_effort(sort_keys=True))
    for key in _RUN_ONLY_KEYS:
        record.pop(key, None)
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class Checkpointer:
    """Saves and restores `TrainState`s under `directory` (one sub-directory per step)."""

    def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: TrainState, config: ml_collections.ConfigDict) -> None:
        step = int(jax.device_get(state.step))
        record = {"fingerprint": config_fingerprint(config), "step": step, "config": config.to_json_best_effort()}
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(record))
        )
        self._manager.wait_until_finished()

    def restore(self, target: TrainState, config: ml_collections.ConfigDict) -> TrainState:
        """Restores the latest step into the structure of `target`.

        Raises:
          CheckpointError: the step cannot be read (corrupt, truncated, from another ltjax version) or was written
            by a run whose config differs in a key that changes the result.
        """
        step = self.latest_step()
        step_dir = self.directory / str(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), run=ocp.args.JsonRestore())
            )
        except Exception as error:  # orbax raises many types for unreadable data; all mean the same to the user
            raise CheckpointError(
                f"checkpoint {step_dir} cannot be restored ({type(error).__name__}: {error}). It is corrupt or was "
                f"written by an incompatible run. Delete {step_dir} to resume from the previous checkpoint, or "
                "train in a new workdir."
            ) from error
        record = restored["run"]
        if not isinstance(record, dict) or record.get("fingerprint") != config_fingerprint(config):
            raise CheckpointError(
                f"checkpoint {step_dir} was written by a run with a different config; resuming it with this config "
                "would not reproduce either run. Use the config it was written with (its JSON is in the "
                f"checkpoint's run record), or a new workdir."
            )
        return restored["state"]

    def close(self) -> None:
        self._manager.close()
