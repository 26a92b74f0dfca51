"""Evaluating a trained workdir: restore its run read-only, compute a split's outputs, apply a post-hoc correction,
write the report and plots. What `ltjax-eval` does.

Nothing here writes to the run's checkpoints or logs: damaged checkpoints are reported and skipped, not moved, and
results go to `<run folder>/eval/<name>/`. A member of an ensemble is evaluated with the program of its own config,
its parameters sliced out of the ensemble's checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax import datasets, methods, metrics, multihost, plots, posthoc
from ltjax.configs import schema
from ltjax.data.pipeline import TrainPipeline, eval_batches
from ltjax.data.prefetch import device_prefetch
from ltjax.data.source import ImageSource
from ltjax.keys import ConfigError
from ltjax.models import ModelOutput
from ltjax.train.build import DataSpec, Trainer, build, build_ensemble
from ltjax.train.checkpoint import Checkpointer, CheckpointError
from ltjax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A trained run restored for evaluation.

    Attributes:
      folder: the run's (or the member's) folder, where its reports live.
      config: its resolved config.
      trainer: the program of that config (single run).
      state: the restored train state (for a member: its parameters and BatchNorm statistics).
      data: the run's splits, prepared.
      step: the checkpoint step restored.
    """

    folder: pathlib.Path
    config: ml_collections.ConfigDict
    trainer: Trainer
    state: TrainState
    data: datasets.TrainingData
    step: int


def _resolved(record: dict) -> ml_collections.ConfigDict:
    return schema.resolve(ml_collections.ConfigDict(record))


def load_data(config: ml_collections.ConfigDict) -> tuple[datasets.TrainingData, DataSpec]:
    """A config's splits, checked and prepared, and the `DataSpec` its program is built from."""
    data = datasets.get(config.dataset.name).load(config.dataset).prepared(
        dataset=config.dataset.name, cache_dir=config.data_cache_dir or None)
    pipeline = TrainPipeline(data.train, global_batch_size=config.batch_size, seed=config.seed,
                             drop_remainder=config.dataset.drop_remainder,
                             sampler=datasets.make_sampler(config.dataset, config.num_epochs))
    return data, DataSpec.of(data, pipeline.steps_per_epoch())


def load_run(workdir: str | pathlib.Path, *, member: int | None = None, step: int | None = None,
             say: Callable[[str], None] = print) -> TrainedRun:
    """Restores a workdir's run (or one member of its ensemble) from its newest good checkpoint, or from `step`.

    Raises:
      ConfigError: not a workdir, or an ensemble without `member` (or a member it does not have).
      CheckpointError: no good checkpoint.
    """
    workdir = pathlib.Path(workdir)
    if not (workdir / "config.json").is_file():
        raise ConfigError(f"{workdir} is not a run's workdir (it has no config.json)")
    record = json.loads((workdir / "config.json").read_text())
    configs = [_resolved(item) for item in record["members"]] if "members" in record else [_resolved(record)]
    ensemble = "members" in record
    if ensemble and (member is None or not 0 <= member < len(configs)):
        raise ConfigError(f"{workdir} holds an ensemble of {len(configs)} members: choose one with --member K "
                          f"(0 to {len(configs) - 1})")
    if not ensemble and member is not None:
        raise ConfigError(f"{workdir} holds a single run, not an ensemble: drop --member")
    config = configs[member or 0]
    data, spec = load_data(config)
    trainer = build(config, spec)
    stored = build_ensemble(configs, spec) if ensemble else trainer
    fingerprint = schema.ensemble_fingerprint(configs) if ensemble else schema.fingerprint(config)
    checkpointer = Checkpointer(workdir / "checkpoints")
    try:
        restored = checkpointer.restore(stored.init_state(), fingerprint, say=say, step=step, read_only=True)
    finally:
        checkpointer.close()
    if restored is None:
        raise CheckpointError(f"{workdir} has no checkpoint to evaluate; train it first")
    if ensemble:
        own = jax.tree.map(lambda leaf: leaf[member], restored)
        fresh = trainer.init_state()
        restored = fresh.replace(step=own.step, params={**fresh.params, "model": own.params["model"]},
                                 batch_stats=own.batch_stats)
    folder = workdir / "members" / str(member) if ensemble else workdir
    return TrainedRun(folder, config, trainer, restored, data, int(np.ravel(jax.device_get(restored.step))[0]))


def split_outputs(trainer: Trainer, state: TrainState, source: ImageSource) -> posthoc.Outputs:
    """Every example's logits and features (eval mode), fetched to the host in the split's order."""
    logits, features = [], []
    batches = eval_batches(source, global_batch_size=trainer.config.eval_batch_size, num_workers=2,
                           process_index=jax.process_index(), process_count=jax.process_count())
    for batch in device_prefetch(batches, trainer.eval_sharding):
        batch_logits, batch_features = trainer.outputs_step(state, batch.images)
        mask = multihost.gather(batch.mask)
        logits.append(multihost.gather(batch_logits)[mask])
        features.append(multihost.gather(batch_features)[mask])
    return posthoc.Outputs(np.concatenate(logits), np.concatenate(features), np.asarray(source.labels))


def report_of(logits: np.ndarray, labels: np.ndarray, class_counts: np.ndarray) -> dict:
    """The long-tail report of predictions `argmax(logits)` (ECE from their softmax)."""
    stats = metrics.EvalStats.init(logits.shape[-1]).update(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
    return metrics.report(jax.device_get(stats), class_counts)


def corrected_logits(run: TrainedRun, outputs: posthoc.Outputs, correction: str, value) -> np.ndarray:
    """The split's logits after a post-hoc correction (`"none"`: the method's own prediction rule)."""
    if correction == "none":
        model_outputs = ModelOutput(jnp.asarray(outputs.logits), jnp.asarray(outputs.features))
        return np.asarray(run.trainer.objective.predict(model_outputs, run.state.loss_state))
    network = methods.get(run.config.loss.name).network
    if network is not None and correction == "tau_norm":
        raise ConfigError(f"--posthoc {correction} reads a single linear classifier; {run.config.loss.name} trains the "
                          f"{network.name} network, whose classifier is split into branches: use --posthoc la or iif, "
                          "which adjust its logits")
    head = jax.device_get(run.state.params["model"]["head"])
    return posthoc.CORRECTIONS[correction].apply(outputs, head, run.data.class_counts, value)


def select_on_validation(run: TrainedRun, correction: str) -> tuple[object, list[dict]]:
    """The correction's value that maximises balanced validation top-1 (ties: the first in the grid), and what each
    value gave. The test split is never looked at.

    Raises:
      ConfigError: the run holds no validation split.
    """
    if run.data.validation is None:
        raise ConfigError(
            "--select-on validation needs the run's held-out validation split, and this run has none (the test split "
            "is never used for selection): train with --config.dataset.validation_per_class=N"
        )
    outputs = split_outputs(run.trainer, run.state, run.data.validation)
    tried = []
    for value in posthoc.CORRECTIONS[correction].grid:
        report = report_of(corrected_logits(run, outputs, correction, value), outputs.labels, run.data.class_counts)
        tried.append({"value": value, **metrics.scalar_metrics(report)})
    best = max(tried, key=lambda row: row["top1_accuracy"])
    return best["value"], tried


def write_report(report: dict, data: datasets.TrainingData, folder: pathlib.Path) -> None:
    """`report.json` (with class names and training counts) and the report's plots in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    report = {**report, "class_names": list(data.class_names), "train_class_counts": data.class_counts.tolist()}
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    plots.plot_accuracy_vs_count(report["per_class_accuracy"], data.class_counts, folder / "per_class_accuracy.png")
    plots.plot_confusion_matrix(np.asarray(report["confusion"]), folder / "confusion.png")
