"""`train_and_evaluate(config, workdir)`: the whole run, top to bottom.

Resolve the config -> hold the workdir -> load the data -> build the program (`ltjax.train.build`) -> record what
produced the run -> restore the newest good checkpoint -> epochs of data-parallel train steps, each epoch ending with
the method's epoch hook, a log line and a checkpoint -> the final test report, its many/medium/few table and plots.

Nothing here knows which method runs: phase switches happen inside the compiled step, phase-entry hooks (a
similarity model built from class prototypes) come from the objective. A loss or gradient that stops being finite
stops the run before anything computed from it is saved (`NonFiniteError`).
"""
from __future__ import annotations

import functools
import json
import pathlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from ltjax import datasets, methods, metrics, plots
from ltjax.configs import schema
from ltjax.data.pipeline import TrainPipeline, eval_batches
from ltjax.data.prefetch import device_prefetch
from ltjax.data.source import ImageSource
from ltjax.train.build import DataSpec, Trainer, build, format_plan
from ltjax.train.checkpoint import Checkpointer
from ltjax.train.state import TrainState
from ltjax.train.workdir import Workdir

# Panels of `curves.png`: keys of the JSON-lines log, nested keys dotted. The gap panel gets a zero line.
GAP_PANEL = "Train - validation accuracy"
CURVE_PANELS = {
    "Loss": ("train_loss",),
    "Accuracy": ("train.top1_accuracy", "validation.top1_accuracy", "validation.many_shot_accuracy",
                 "validation.medium_shot_accuracy", "validation.few_shot_accuracy"),
    GAP_PANEL: ("gap.overall", "gap.many", "gap.medium", "gap.few"),
}


class NonFiniteError(RuntimeError):
    """The loss or a gradient stopped being finite: the run diverged."""


def _devices(config: ml_collections.ConfigDict) -> list:
    return jax.local_devices()[: config.num_devices or None]


def evaluate(trainer: Trainer, state: TrainState, source: ImageSource, *, keep_features: bool = False
             ) -> tuple[metrics.EvalStats, np.ndarray | None]:
    """Sums the eval statistics over a split; with `keep_features`, also fetches every example's features (for class
    prototypes), which otherwise never leave the device."""
    total, features = None, []
    batches = eval_batches(source, global_batch_size=trainer.config.eval_batch_size, num_workers=2)
    for batch in device_prefetch(batches, trainer.batch_sharding):
        stats, batch_features = trainer.eval_step(state, batch.images, batch.labels, batch.mask)
        total = stats if total is None else total.merge(stats)
        if keep_features:
            features.append(np.asarray(batch_features)[np.asarray(batch.mask)])
    return jax.device_get(total), np.concatenate(features) if keep_features else None


def class_mean_features(trainer: Trainer, state: TrainState, source: ImageSource) -> np.ndarray:
    """`[C, D]` each class's mean penultimate feature over `source` (eval mode): the class prototypes."""
    _, features = evaluate(trainer, state, source, keep_features=True)
    return np.stack([features[source.labels == c].mean(axis=0) for c in range(source.num_classes)])


def _check_finite(totals: metrics.TrainTotals, steps_per_epoch: int, checkpointer: Checkpointer) -> None:
    bad = int(totals.first_nonfinite_step)
    if bad < 0:
        return
    epoch, step = divmod(bad, steps_per_epoch)
    last = checkpointer.latest_step()
    kept = (f"the last good checkpoint, step {last}, is in {checkpointer.directory}" if last is not None
            else "no checkpoint had been written yet")
    raise NonFiniteError(
        f"training diverged: the loss or a gradient was not finite at global step {bad} (epoch {epoch}, step {step} "
        f"of the epoch). Nothing computed from it was saved and no report was written; {kept}. The run is "
        "deterministic, so resuming repeats the divergence: lower optimizer.learning_rate, or check the method's keys "
        "and the data, in a new workdir."
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, max_steps: int | None = None,
    say: Callable[[str], None] = print,
) -> dict | None:
    """Trains and evaluates as `config` says, recording the run in `workdir` and resuming from it.

    Args:
      config: an experiment config (resolved here; see `ltjax/configs/digits.py`).
      workdir: the run's folder (see `ltjax.train.workdir`).
      max_steps: stop (with a checkpoint) once the global step reaches this, e.g. to fit a time slot; running
        again resumes. None trains to the end.
      say: where the plan and the notes about damaged checkpoints go.

    Returns:
      The final test report (also written to `report.json`), or None when stopped by `max_steps`.

    Raises:
      ConfigError: a config that cannot run, or one that differs from the run the workdir holds.
      WorkdirBusyError: another run holds the workdir.
      CheckpointError: the workdir has checkpoints but none is good.
      NonFiniteError: the run diverged.
    """
    config = schema.resolve(config)
    folder = Workdir(workdir)
    with folder.lock():
        devices = _devices(config)
        data = datasets.get(config.dataset.name).load(config.dataset).prepared(
            dataset=config.dataset.name, cache_dir=config.data_cache_dir or None)
        pipeline = TrainPipeline(data.train, global_batch_size=config.batch_size, seed=config.seed,
                                 sampler=datasets.make_sampler(config.dataset, config.num_epochs))
        spec = DataSpec(data.class_counts, data.image_shape, data.normalization, pipeline.steps_per_epoch(),
                        data.crop_padding)
        trainer = build(config, spec, devices=devices)
        folder.check_config(config)
        folder.record_manifests(data.manifests)
        folder.record_session(trainer.plan, devices)
        say(format_plan(trainer.plan))

        checkpointer = Checkpointer(folder.checkpoints, max_to_keep=config.keep_checkpoints)
        record = {"fingerprint": schema.fingerprint(config), "config": json.loads(schema.to_json(config))}
        fresh = trainer.init_state()
        state = checkpointer.restore(fresh, record["fingerprint"], say=say) or fresh
        try:
            state = _train(trainer, state, data, pipeline, checkpointer, record, folder, max_steps)
        finally:
            checkpointer.close()
        if state is None:
            return None
        return _final_report(trainer, state, data, folder.path)


def _train(trainer: Trainer, state: TrainState, data: datasets.TrainingData, pipeline: TrainPipeline,
           checkpointer: Checkpointer, record: dict, folder: Workdir, max_steps: int | None) -> TrainState | None:
    config, objective = trainer.config, trainer.objective
    steps_per_epoch = pipeline.steps_per_epoch()
    start_epoch, start_step = divmod(int(state.step), steps_per_epoch)
    log = folder.epoch_log(start_epoch)

    def save(state: TrainState) -> None:
        _check_finite(jax.device_get(state.totals), steps_per_epoch, checkpointer)
        checkpointer.save(state, record)

    for epoch in range(start_epoch, config.num_epochs):
        first_step = start_step if epoch == start_epoch else 0
        if first_step == 0:
            state = trainer.start_epoch(state)
            for phase in objective.phases_entered_at(epoch):
                hooks = methods.Hooks(functools.partial(class_mean_features, trainer, state, data.train), config.seed)
                state = state.replace(loss_state=phase.enter(state.loss_state, objective.hp, hooks))
        started = time.perf_counter()
        batches = device_prefetch(pipeline.batches(start_epoch=epoch, start_step=first_step, end_epoch=epoch + 1),
                                  trainer.batch_sharding)
        progress = tqdm(batches, total=steps_per_epoch - first_step, desc=f"epoch {epoch}", leave=False,
                        disable=not config.progress_bar)
        for step, batch in enumerate(progress, start=epoch * steps_per_epoch + first_step + 1):
            state = trainer.train_step(state, batch.images, batch.labels, jnp.int32(epoch))
            if max_steps is not None and step >= max_steps:
                progress.close()
                save(state)
                return None
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and step % steps_per_epoch:
                save(state)
        state = trainer.end_epoch(state)
        totals = jax.device_get(state.totals)
        _check_finite(totals, steps_per_epoch, checkpointer)
        log.append(_epoch_record(trainer, state, totals, data, epoch, time.perf_counter() - started))
        save(state)
    return state


def _epoch_record(trainer: Trainer, state: TrainState, totals: metrics.TrainTotals, data: datasets.TrainingData,
                  epoch: int, seconds: float) -> dict:
    train = metrics.train_accuracy(totals.class_correct, totals.class_count, data.class_counts)
    record = {
        "epoch": epoch,
        "train_loss": float(totals.loss_sum) / max(int(totals.steps), 1),
        "train": train,
        "seconds": seconds,
        "train_images_per_second": float(np.sum(totals.class_count)) / seconds,
    }
    if data.validation is not None:
        validation_stats, _ = evaluate(trainer, state, data.validation)
        validation = metrics.scalar_metrics(
            metrics.report(validation_stats, data.class_counts, include_confusion=False))
        record["validation"] = validation
        record["gap"] = metrics.accuracy_gap(train, validation)
    return record


def _final_report(trainer: Trainer, state: TrainState, data: datasets.TrainingData, workdir: pathlib.Path) -> dict:
    test_stats, _ = evaluate(trainer, state, data.test)
    report = {
        **metrics.report(test_stats, data.class_counts),
        "class_names": list(data.class_names),
        "train_class_counts": data.class_counts.tolist(),
    }
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    plots.plot_class_distribution(data.class_counts, workdir / "class_distribution.png")
    plots.plot_accuracy_vs_count(report["per_class_accuracy"], data.class_counts, workdir / "per_class_accuracy.png")
    plots.plot_confusion_matrix(np.asarray(report["confusion"]), workdir / "confusion.png")
    if (workdir / "log.jsonl").exists():
        plots.plot_training_curves(workdir / "log.jsonl", workdir / "curves.png", panels=CURVE_PANELS,
                                   zero_line_panels=(GAP_PANEL,))
    return report
