"""Evaluation plots as PNG files: class distribution, per-class accuracy vs training count, confusion matrix and
training curves from JSON-lines logs.

Figures are drawn on matplotlib's Agg canvas directly (`Figure` + `FigureCanvasAgg`), never through `pyplot`: no
global backend switch, no window, no `show()`, so they run headless and leave the caller's matplotlib state alone.
Every function takes data and an output path, creates the parent folder, writes the PNG and returns the path.
"""
from __future__ import annotations

from ltjax._extras import require_train_extra

require_train_extra(__name__)

import json
import math
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from ltjax import stats

PathLike = str | pathlib.Path

# Above this many classes a confusion matrix gets no per-cell numbers (they would overlap) and no per-class ticks.
ANNOTATE_MAX_CLASSES = 30
TICK_LABEL_MAX_CLASSES = 50
SHOT_COLORS = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}
# Default panels of `plot_training_curves`: title -> keys of the (flattened) log records. The record layout they
# expect is `{"epoch", "train_loss", "test_loss", "train": scalar_metrics(...), "test": ..., "gap": accuracy_gap}`.
DEFAULT_CURVE_PANELS: dict[str, tuple[str, ...]] = {
    "Loss": ("train_loss", "test_loss"),
    "Accuracy": (
        "train.top1_accuracy",
        "test.top1_accuracy",
        "test.many_shot_accuracy",
        "test.medium_shot_accuracy",
        "test.few_shot_accuracy",
    ),
    "Train - test accuracy": ("gap.overall", "gap.many", "gap.medium", "gap.few"),
}


def save_figure(figure: Figure, path: PathLike) -> pathlib.Path:
    """Writes a Matplotlib figure as a PNG (no display needed), creating the folder."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(out, format="png", dpi=120)
    return out


def _shot_groups(train_class_counts: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(group name, `[C]` mask) for many, medium and few, from training counts."""
    masks = stats.shot_masks(train_class_counts)
    return [(group, np.asarray(mask)) for group, mask in zip(("many", "medium", "few"), masks)]


def plot_class_distribution(
    train_class_counts: ArrayLike,
    path: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    log_scale: bool = False,
) -> pathlib.Path:
    """Bar chart of the training images per class, sorted from most to least frequent, coloured by shot group.

    Args:
      train_class_counts: `[C]` training images per class.
      path: output PNG.
      class_names: optional names indexed by class; shown as ticks up to 50 classes.
      log_scale: a logarithmic count axis (useful at large imbalance factors).

    Returns:
      The path written.
    """
    counts = np.asarray(train_class_counts)
    order = np.argsort(-counts, kind="stable")
    sorted_counts = counts[order]
    figure = Figure(figsize=(8, 4))
    ax = figure.add_subplot()
    positions = np.arange(counts.size)
    for group, mask in _shot_groups(sorted_counts):
        if mask.any():
            ax.bar(positions[mask], sorted_counts[mask], width=0.9, color=SHOT_COLORS[group],
                   label=f"{group} ({int(mask.sum())})")
    for threshold in (stats.MANY_SHOT_ABOVE, stats.FEW_SHOT_BELOW):
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
    if log_scale:
        ax.set_yscale("log")
    if class_names is not None and counts.size <= TICK_LABEL_MAX_CLASSES:
        ax.set_xticks(positions, [class_names[i] for i in order], rotation=90, fontsize=7)
    ax.set_xlabel("class (sorted by training count)")
    ax.set_ylabel("training images")
    ax.set_title(f"{counts.size} classes, imbalance factor {counts.max() / max(counts.min(), 1):.0f}")
    ax.legend(title="shot group")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_accuracy_vs_count(
    per_class_accuracy: ArrayLike | Sequence[float | None],
    train_class_counts: ArrayLike,
    path: PathLike,
) -> pathlib.Path:
    """Scatter of each class's test accuracy against its training count (log x), coloured by shot group.

    Args:
      per_class_accuracy: `[C]` accuracies in [0, 1]; NaN or None (a report's list) for classes without test
        examples, which are not drawn.
      train_class_counts: `[C]` training images per class.
      path: output PNG.

    Returns:
      The path written.
    """
    accuracies = np.asarray(per_class_accuracy, dtype=np.float64)
    counts = np.asarray(train_class_counts)
    figure = Figure(figsize=(6, 4))
    ax = figure.add_subplot()
    for group, mask in _shot_groups(counts):
        drawn = mask & ~np.isnan(accuracies)
        if drawn.any():
            ax.scatter(counts[drawn], 100 * accuracies[drawn], s=14, color=SHOT_COLORS[group], label=group)
    for threshold in (stats.MANY_SHOT_ABOVE, stats.FEW_SHOT_BELOW):
        ax.axvline(threshold, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_ylim(-2, 102)
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(title="shot group")
    figure.tight_layout()
    return save_figure(figure, path)


def confusion_figure(
    confusion: ArrayLike,
    *,
    class_names: Sequence[str] | None = None,
    class_order: Sequence[int] | None = None,
) -> Figure:
    """The row-normalised confusion matrix (each row sums to 1: recall on the diagonal) as a Figure.

    Classes without test examples are drawn in the colour map's 'bad' grey. Cells carry their value up to 30
    classes; beyond that only the colours, and beyond 50 classes matplotlib's own integer ticks.

    Args:
      confusion: `[C, C]` counts, rows = true class, columns = predicted class.
      class_names: optional names indexed by class.
      class_order: optional order of the classes on both axes (e.g. by descending training count).

    Returns:
      The figure (for saving, or inspecting in tests).
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    num_classes = matrix.shape[0]
    order = np.arange(num_classes) if class_order is None else np.asarray(class_order)
    matrix = matrix[np.ix_(order, order)]
    support = matrix.sum(axis=1, keepdims=True)
    normalised = np.ma.masked_invalid(
        np.divide(matrix, support, out=np.full_like(matrix, np.nan), where=support > 0)
    )
    size = min(4 + 0.3 * num_classes, 12)
    figure = Figure(figsize=(size + 1, size))
    ax = figure.add_subplot()
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="lightgray")
    image = ax.imshow(normalised, cmap=cmap, vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if num_classes <= ANNOTATE_MAX_CLASSES:
        for (row, col), value in np.ndenumerate(normalised.filled(np.nan)):
            if value > 0:
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value > 0.5 else "black")
    if num_classes <= TICK_LABEL_MAX_CLASSES:
        labels = [class_names[i] if class_names is not None else str(i) for i in order]
        ax.set_xticks(np.arange(num_classes), labels, rotation=90, fontsize=7)
        ax.set_yticks(np.arange(num_classes), labels, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    figure.tight_layout()
    return figure


def plot_confusion_matrix(
    confusion: ArrayLike,
    path: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    class_order: Sequence[int] | None = None,
) -> pathlib.Path:
    """Writes `confusion_figure(confusion, ...)` as a PNG and returns the path (see `confusion_figure`)."""
    return save_figure(confusion_figure(confusion, class_names=class_names, class_order=class_order), path)


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: `{"gap": {"few": x}}` -> `{"gap.few": x}`."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_json_lines(path: PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines log (blank lines skipped)."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _as_number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def plot_training_curves(
    log: PathLike | Iterable[Mapping[str, Any]],
    path: PathLike,
    *,
    panels: Mapping[str, Sequence[str]] = DEFAULT_CURVE_PANELS,
    x_key: str = "epoch",
    zero_line_panels: Sequence[str] = ("Train - test accuracy",),
) -> pathlib.Path:
    """Per-epoch curves from a JSON-lines log: one panel per entry of `panels`, one line per key found.

    Nested records are addressed with dotted keys (`"gap.few"`). A value missing from a record, or None, leaves a
    hole in its line (e.g. test metrics logged every few epochs); a key found in no record is not drawn, nor is a
    panel none of whose keys is found.

    Args:
      log: path of the JSON-lines file, or its records.
      path: output PNG.
      panels: panel title -> keys to draw; `DEFAULT_CURVE_PANELS` by default.
      x_key: the x-axis key; a record without it takes its 1-based line number.
      zero_line_panels: titles of the panels that get a line at y = 0 (the train-test gap).

    Returns:
      The path written.

    Raises:
      ValueError: when no key of any panel occurs in the log.
    """
    records = [_flatten(r) for r in (read_json_lines(log) if isinstance(log, (str, pathlib.Path)) else log)]
    x = np.array([_as_number(r.get(x_key, i + 1)) for i, r in enumerate(records)])
    drawn = {
        title: [key for key in keys if any(key in r for r in records)] for title, keys in panels.items()
    }
    drawn = {title: keys for title, keys in drawn.items() if keys}
    if not drawn:
        available = sorted({key for r in records for key in r})
        raise ValueError(f"none of the panel keys occurs in the log; its keys are {available}")
    figure = Figure(figsize=(5 * len(drawn), 3.8))
    for index, (title, keys) in enumerate(drawn.items()):
        ax = figure.add_subplot(1, len(drawn), index + 1)
        for key in keys:
            y = np.array([_as_number(r.get(key)) for r in records])
            ax.plot(x, y, marker="o" if len(records) < 30 else None, markersize=3, label=key)
        if title in zero_line_panels:
            ax.axhline(0.0, color="gray", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel(x_key)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path)
