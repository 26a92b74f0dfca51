"""Where a run starts from, other than its initialisation: a first stage's trained model, or pretrained weights.

Second stages start from a first stage's trained model: its backbone, BatchNorm statistics and (unless `fresh`)
its classifier, read from the workdir the method's `init_from` key names. That run must have finished (its report
written) and is read at its last checkpoint; a run that was stopped early or diverged is an error, unless
`init_step` names the step to start from on purpose. Whichever step, every value loaded must be finite.

A run whose `model.pretrained` names a torchvision checkpoint starts from its weights (`start_from_pretrained`).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from ltjax.keys import ConfigError
from ltjax.models.pretrained import load_torchvision_weights
from ltjax.train.build import Trainer, model_name
from ltjax.train.evaluate import TrainedRun, load_run
from ltjax.train.state import TrainState


def _source(init_from: str) -> tuple[pathlib.Path, int | None]:
    """`(workdir, member)` of an `init_from` value: a run's workdir, or `<workdir>/members/<k>` of an ensemble."""
    path = pathlib.Path(init_from)
    if path.parent.name == "members" and path.name.isdigit():
        return path.parent.parent, int(path.name)
    return path, None


def _split_keys(config) -> dict:
    """The dataset keys that decide the images (the sampler and drop_remainder only order and batch them)."""
    return {key: value for key, value in config.dataset.to_dict().items() if key not in ("sampler", "drop_remainder")}


def _check_compatible(first: TrainedRun, config, init_from: str) -> None:
    for what, mine, theirs in [
        ("dataset", _split_keys(config), _split_keys(first.config)),
        ("model", (model_name(config), config.model.dtype), (model_name(first.config), first.config.model.dtype)),
    ]:
        if mine != theirs:
            raise ConfigError(f"loss.init_from={init_from} trained another {what} ({theirs}) than this stage's "
                              f"({mine}); a second stage continues its first stage's model on its data")


def _check_finished(first: TrainedRun, init_from: str) -> None:
    if (first.folder / "report.json").is_file():
        return
    diverged = first.folder / "diverged.json"
    why = (f"it diverged at step {json.loads(diverged.read_text())['global_step']}" if diverged.is_file() else
           f"its newest checkpoint is step {first.step}: it was stopped (max_steps, a signal) or diverged before "
           "the end")
    raise ConfigError(
        f"loss.init_from={init_from} has not finished ({why}), so a second stage from it would start from a model "
        f"that is not the first stage's result: finish it (run its command again), or start from one of its "
        f"checkpoints on purpose with --config.loss.init_step=<step> (its newest: {first.step})")


def _check_finite(first: TrainedRun, init_from: str) -> None:
    bad = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_leaves_with_path(
        {"params": first.state.params["model"], "batch_stats": first.state.batch_stats})
        if not np.all(np.isfinite(leaf))]
    if bad:
        raise ConfigError(f"loss.init_from={init_from} at step {first.step} holds values that are not finite (in "
                          f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): start from an earlier step "
                          "(--config.loss.init_step) or from another run")


def _merged(own: dict, loaded: dict, fresh: tuple[str, ...], init_from: str) -> dict:
    """`own`'s parameters, each replaced by `loaded`'s under the same path unless it lies under a `fresh` prefix.

    Raises:
      ConfigError: a kept parameter the first stage lacks (or holds in another shape), or one the first stage has
        that this model does not: its head is another kind (a linear head's bias loaded into a normed head would
        otherwise be dropped without a word).
    """
    own_flat = traverse_util.flatten_dict(own, sep="/")
    loaded_flat = traverse_util.flatten_dict(loaded, sep="/")

    def is_fresh(path: str) -> bool:
        return any(f"model/{path}" == prefix or f"model/{path}".startswith(prefix + "/") for prefix in fresh)

    mismatched = [path for path, value in own_flat.items() if not is_fresh(path) and (
        path not in loaded_flat or np.shape(loaded_flat[path]) != np.shape(value))]
    mismatched += [path for path in loaded_flat if path not in own_flat and not is_fresh(path)]
    if mismatched:
        heads = [sorted(p for p in flat if p.startswith("head/")) for flat in (loaded_flat, own_flat)]
        raise ConfigError(
            f"loss.init_from={init_from} does not hold this stage's model: "
            f"{', '.join(f'model/{path}' for path in sorted(mismatched)[:3])} differ (its head has {heads[0]}, this "
            f"stage's {heads[1]}): start from a first stage whose head has "
            f"{sorted(p for p in own_flat if p.startswith('head/') and not is_fresh(p))}")
    return traverse_util.unflatten_dict({path: own_flat[path] if is_fresh(path) else loaded_flat[path]
                                         for path in own_flat}, sep="/")


def _start_members(state: TrainState, trainer: Trainer,
                   start: Callable[[int | None, ml_collections.ConfigDict], Callable[[TrainState], TrainState] | None]
                   ) -> TrainState:
    """`state` with each member's own state (a single run's: member None) replaced by what `start(member, config)`
    returns for it, a function of that state (None: the member starts as it is), its optimizer state made anew."""
    for member in [None] if trainer.members is None else range(trainer.members):
        replace = start(member, trainer.configs[member or 0])
        if replace is None:
            continue
        own = state if member is None else jax.tree.map(lambda leaf, m=member: leaf[m], state)
        loaded = replace(own)
        loaded = loaded.replace(opt_state=trainer.optimizer.init(loaded.params))
        state = loaded if member is None else jax.tree.map(
            lambda all_, one, m=member: all_.at[m].set(one), state, loaded)
    return state


def start_from_first_stage(state: TrainState, trainer: Trainer, *, say: Callable[[str], None]) -> TrainState:
    """The fresh `state` of a run whose methods are second stages, with each member's first-stage model loaded.

    Raises:
      ConfigError: `init_from` is not a trained run of the same data and backbone, or lacks the parameters the stage
        keeps (LWS needs a linear head).
      CheckpointError: the first stage has no good checkpoint.
    """

    def start(member: int | None, config: ml_collections.ConfigDict):
        init_from = config.loss.get("init_from", "")
        if not init_from:
            return None
        fresh = trainer.method_of(member).second_stage.fresh
        workdir, source_member = _source(init_from)
        init_step = config.loss.get("init_step", 0)
        first = load_run(workdir, member=source_member, say=say, step=init_step or None)
        if not init_step:
            _check_finished(first, init_from)
        _check_compatible(first, config, init_from)
        _check_finite(first, init_from)
        say(f"{config.loss.name}: starting from the first stage in {init_from} (step {first.step})")

        def replace(own: TrainState) -> TrainState:
            params = {**own.params, "model": _merged(jax.device_get(own.params["model"]),
                                                     jax.device_get(first.state.params["model"]), fresh, init_from)}
            return own.replace(params=params, batch_stats=jax.device_get(first.state.batch_stats))

        return replace

    return _start_members(state, trainer, start)


def start_from_pretrained(state: TrainState, trainer: Trainer, *, say: Callable[[str], None]
                          ) -> tuple[TrainState, dict[int | None, dict]]:
    """The fresh `state` with each member's backbone (and, on request, classifier) loaded from the torchvision
    checkpoint its `model.pretrained` names, and each loaded member's provenance (`ltjax.models.pretrained`).

    Raises:
      PretrainedWeightsError: a checkpoint that is not the model's torchvision layout, naming the tensor.
      FileNotFoundError: a missing file, with where torchvision publishes the weights.
    """
    records = {}

    def start(member: int | None, config: ml_collections.ConfigDict):
        if not config.model.pretrained:
            return None

        def replace(own: TrainState) -> TrainState:
            variables, provenance = load_torchvision_weights(
                config.model.pretrained, {"params": jax.device_get(own.params["model"]),
                                          "batch_stats": jax.device_get(own.batch_stats)},
                keep_classifier=config.model.keep_classifier)
            classifier = "kept" if config.model.keep_classifier else "re-initialised"
            say(f"model: {provenance.architecture} weights from {provenance.path} (sha256 "
                f"{provenance.sha256[:16]}), {len(provenance.loaded)} tensors loaded, classifier {classifier}")
            records[member] = dataclasses.asdict(provenance)
            return own.replace(params={**own.params, "model": variables["params"]},
                               batch_stats=variables["batch_stats"])

        return replace

    return _start_members(state, trainer, start), records
