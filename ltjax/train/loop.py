"""`train_and_evaluate(config, workdir)`: the whole run, top to bottom.

Data -> class statistics -> model, optimizer, objective -> train state (restored if the workdir has a checkpoint)
-> epochs of data-parallel train steps, with DynaSmooth's epoch end, SWRM's similarity model at its phase switch,
checkpoints and a JSON-lines log -> the final test report, its many/medium/few table and plots.
"""
from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from ltjax import dynasmooth, losses, metrics, plots, schedules
from ltjax.data.pipeline import TrainPipeline, eval_batches
from ltjax.models import create_model
from ltjax.stats import ClassStats
from ltjax.train import objective as objectives
from ltjax.train.checkpoint import Checkpointer
from ltjax.train.data import TrainingData, load_training_data
from ltjax.train.optim import make_optimizer
from ltjax.train.state import create_train_state
from ltjax.train.step import AXIS, check_batch_divides, data_parallel, make_eval_step, make_train_step


def _class_stats(config: ml_collections.ConfigDict, data: TrainingData) -> ClassStats:
    group_ends = config.loss.get("group_ends")
    return ClassStats.from_counts(
        data.class_counts,
        num_groups=config.loss.get("num_groups", 1),
        group_ends=tuple(group_ends) if group_ends else None,
    )


def _evaluate(
    eval_step, state, source, config, devices, *, keep_features: bool = False
) -> tuple[metrics.EvalStats, np.ndarray | None]:
    """Sums the eval statistics over a split; with `keep_features`, also fetches every example's features (SWRM's
    prototypes), which otherwise never leave the device."""
    total, features = None, []
    for batch in eval_batches(
        source, global_batch_size=config.eval_batch_size, num_devices=len(devices), num_workers=2
    ):
        flat = [x.reshape(-1, *x.shape[2:]) for x in (batch.images, batch.labels, batch.mask)]
        stats, batch_features = eval_step(state, *flat)
        total = stats if total is None else total.merge(stats)
        if keep_features:
            features.append(np.asarray(batch_features)[flat[2]])
    return jax.device_get(total), np.concatenate(features) if keep_features else None


def _swrm_coordinates(eval_step, state, data: TrainingData, config, devices) -> jax.Array:
    """SWRM's similarity model: 1-D t-SNE of the class prototypes (mean penultimate feature of each class)."""
    _, features = _evaluate(eval_step, state, data.train, config, devices, keep_features=True)
    labels = data.train.labels
    prototypes = np.stack([features[labels == c].mean(axis=0) for c in range(data.train.num_classes)])
    return jnp.asarray(losses.tsne_coordinates(prototypes, seed=config.seed))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, max_steps: int | None = None
) -> dict | None:
    """Trains and evaluates as `config` says, checkpointing into `workdir` and resuming from it.

    Args:
      config: an experiment config (see `ltjax/configs/digits.py` for every key).
      workdir: where checkpoints, `log.jsonl`, `report.json` and the plots go.
      max_steps: stop (with a checkpoint) once the global step reaches this, e.g. to fit a time slot; running
        again resumes. None trains to the end.

    Returns:
      The final test report (also written to `report.json`), or None when stopped by `max_steps`.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    devices = jax.local_devices()[: config.get("num_devices") or None]
    check_batch_divides(config.batch_size, len(devices))

    data = load_training_data(config.dataset)
    stats = _class_stats(config, data)
    num_classes = stats.num_classes
    model = create_model(
        config.model.name, num_classes, head=config.model.get("head") or objectives.reference_head(config.loss),
        dtype=jnp.dtype(config.model.get("dtype", "float32")),
        **({"small_input": config.model.small_input} if config.model.get("small_input") else {}),
    )
    pipeline = TrainPipeline(
        data.train, global_batch_size=config.batch_size, transform=data.train_transform, seed=config.seed,
        num_devices=len(devices),
    )
    steps_per_epoch = pipeline.steps_per_epoch()
    optimizer = make_optimizer(config.optimizer, steps_per_epoch)
    objective = objectives.make_objective(config.loss, stats, config.num_epochs)
    smoothing_phase = None
    if config.loss.name == "ffds":
        def smoothing_phase(epoch):
            return schedules.dffds_active(epoch, trigger_epoch=config.loss.get("trigger_epoch", 130))

    state = create_train_state(
        model, optimizer, objectives.init_loss_params(config.loss, num_classes, config.seed),
        objectives.init_loss_state(stats), data.image_shape, config.seed,
    )
    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=config.get("keep_checkpoints", 2))
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(state, config)

    def predict(outputs):
        return objectives.predict_logits(config.loss, stats, outputs)

    train_step = data_parallel(
        make_train_step(model.clone(batch_norm_axis_name=AXIS), optimizer, objective, data.normalization,
                        num_classes, smoothing_phase, predict_logits=predict),
        config.parallel, devices, sharded_args=(False, True, True, False), sharded_outputs=(False, False),
    )
    eval_step = data_parallel(
        make_eval_step(model, data.normalization, predict),
        config.parallel, devices, sharded_args=(False, True, True, True), sharded_outputs=(False, True),
    )
    end_epoch = jax.jit(lambda s: s.replace(loss_state=s.loss_state.replace(
        dynasmooth=dynasmooth.end_epoch(s.loss_state.dynasmooth))))

    swrm_start = config.num_epochs - config.loss.get("active_epochs", 60) if config.loss.name == "swrm" else None
    start_epoch, start_step = divmod(int(state.step), steps_per_epoch)
    log_path = workdir / "log.jsonl"
    checkpoint_every = config.get("checkpoint_every_steps", 0)
    for epoch in range(start_epoch, config.num_epochs):
        first_step = start_step if epoch == start_epoch else 0
        if epoch == swrm_start and first_step == 0:
            coordinates = _swrm_coordinates(eval_step, state, data, config, devices)
            state = state.replace(loss_state=state.loss_state.replace(swrm_coordinates=coordinates))
        started = time.perf_counter()
        epoch_metrics = None  # summed on device; fetched once at the epoch's end, so steps dispatch asynchronously
        batches = pipeline.batches(start_epoch=epoch, start_step=first_step, end_epoch=epoch + 1)
        progress = tqdm(batches, total=steps_per_epoch - first_step, desc=f"epoch {epoch}", leave=False,
                        disable=not config.get("progress_bar", True))
        for step, batch in enumerate(progress, start=epoch * steps_per_epoch + first_step + 1):
            images = batch.images.reshape(-1, *batch.images.shape[2:])
            state, step_metrics = train_step(state, images, batch.labels.reshape(-1), jnp.int32(epoch))
            epoch_metrics = step_metrics if epoch_metrics is None else jax.tree.map(
                jnp.add, epoch_metrics, step_metrics
            )
            if max_steps is not None and step >= max_steps:
                checkpointer.save(state, config)
                checkpointer.close()
                return None
            if checkpoint_every and step % checkpoint_every == 0 and step % steps_per_epoch:
                checkpointer.save(state, config)
        state = end_epoch(state)
        checkpointer.save(state, config)
        epoch_metrics = jax.device_get(epoch_metrics)
        class_count = epoch_metrics["class_count"]
        seconds = time.perf_counter() - started
        record = {
            "epoch": epoch,
            "train_loss": float(epoch_metrics["loss"]) / max(steps_per_epoch - first_step, 1),
            "train": _train_accuracy(epoch_metrics["class_correct"], class_count, data.class_counts),
            "seconds": seconds,
            "train_images_per_second": float(class_count.sum()) / seconds,
        }
        if data.validation is not None:
            validation_stats, _ = _evaluate(eval_step, state, data.validation, config, devices)
            record["validation"] = metrics.scalar_metrics(
                metrics.report(validation_stats, data.class_counts, include_confusion=False)
            )
            record["gap"] = _accuracy_gap(record["train"], record["validation"])
        with log_path.open("a") as log:
            log.write(json.dumps(record) + "\n")
    checkpointer.close()
    return _final_report(eval_step, state, data, config, devices, workdir)


# Panels of `curves.png`: keys of the JSON-lines log, nested keys dotted.
CURVE_PANELS = {
    "Loss": ("train_loss",),
    "Accuracy": ("train.top1_accuracy", "validation.top1_accuracy", "validation.many_shot_accuracy",
                 "validation.medium_shot_accuracy", "validation.few_shot_accuracy"),
    "Train - validation accuracy (FFDS Fig. 3)": ("gap.overall", "gap.many", "gap.medium", "gap.few"),
}
_GROUPS = ("many", "medium", "few")


def _train_accuracy(class_correct: np.ndarray, class_count: np.ndarray, train_counts: np.ndarray) -> dict:
    """The epoch's running training accuracy (augmented images, train-mode BatchNorm), overall and per group."""
    seen = class_count > 0
    per_class = np.where(seen, class_correct / np.where(seen, class_count, 1), np.nan)
    groups = metrics.shot_accuracy(per_class, train_counts)
    record = {"top1_accuracy": float(class_correct.sum() / max(class_count.sum(), 1))}
    record.update({f"{group}_shot_accuracy": None if np.isnan(groups[group]) else float(groups[group])
                   for group in _GROUPS})
    return record


def _accuracy_gap(train: dict, evaluated: dict) -> dict:
    keys = {"overall": "top1_accuracy", **{group: f"{group}_shot_accuracy" for group in _GROUPS}}
    return {
        name: None if train[key] is None or evaluated[key] is None else train[key] - evaluated[key]
        for name, key in keys.items()
    }


def _final_report(eval_step, state, data: TrainingData, config, devices, workdir: pathlib.Path) -> dict:
    test_stats, _ = _evaluate(eval_step, state, data.test, config, devices)
    report = metrics.report(test_stats, data.class_counts)
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    plots.plot_class_distribution(data.class_counts, workdir / "class_distribution.png")
    plots.plot_accuracy_vs_count(report["per_class_accuracy"], data.class_counts, workdir / "per_class_accuracy.png")
    plots.plot_confusion_matrix(np.asarray(report["confusion"]), workdir / "confusion.png")
    if (workdir / "log.jsonl").exists():
        plots.plot_training_curves(workdir / "log.jsonl", workdir / "curves.png", panels=CURVE_PANELS)
    return report

