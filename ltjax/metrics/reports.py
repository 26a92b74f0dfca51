"""Long-tail metrics on the host, in NumPy, from the counts `ltjax.metrics.counting` gathers on device.

Everything that divides, groups or sorts runs here: top-1 and per-class accuracy, many/medium/few-shot accuracy,
macro-F1, G-mean, expected calibration error, the tail-to-head confusion table of SWRM, the training accuracy of an
epoch and FFDS's train-minus-validation accuracy gap. `report` gathers them into a JSON-serialisable dict.

Conventions:
  * A class with no test example has no accuracy (recall): NaN in arrays, `None` in `report`, and it is left out
    of every mean over classes (mean class accuracy, shot accuracy, G-mean).
  * Many/medium/few-shot accuracy is the mean of the per-class accuracies of the group's classes, the groups taken
    from the *training* counts (`ltjax.stats.shot_masks`: > 100, 20..100, < 20 images). This is the convention of
    the long-tail literature (OLTR, Liu et al. 2019; Decoupling, Kang et al. 2020); on their balanced test sets
    it equals the pooled accuracy of the group's test examples, and on an unbalanced test set it does not.
  * Macro-F1 uses F1_c = 2 TP / (2 TP + FP + FN), which is 0 (not NaN) when a class is never predicted or never
    present, and averages over the classes that occur in the labels or the predictions; a class with neither is
    left out (scikit-learn's default label set).
  * G-mean is the exact geometric mean of the per-class recalls, no epsilon: one zero recall makes it 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ltjax import stats
from ltjax.metrics.counting import CalibrationBins, EvalStats

SHOT_GROUPS = ("many", "medium", "few")
# The scalar entries of a report: what a per-epoch log line needs.
SCALAR_KEYS = (
    "top1_accuracy",
    "mean_class_accuracy",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
    "macro_f1",
    "g_mean",
    "ece",
)


def _as_confusion(confusion: ArrayLike) -> np.ndarray:
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion must be a square [C, C] matrix, got shape {matrix.shape}")
    return matrix.astype(np.int64)


def _as_train_counts(train_class_counts: ArrayLike, num_classes: int) -> np.ndarray:
    counts = np.asarray(train_class_counts)
    if counts.shape != (num_classes,):
        raise ValueError(
            f"train_class_counts must have shape [{num_classes}] (one count per class), got {counts.shape}"
        )
    return counts


def _mean_of_defined(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _fraction(count: int, total: int) -> float | None:
    return count / total if total else None


def top1_accuracy(confusion: ArrayLike) -> float:
    """Fraction of all counted examples predicted correctly (NaN when there are none)."""
    matrix = _as_confusion(confusion)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else math.nan


def per_class_accuracy(confusion: ArrayLike) -> np.ndarray:
    """Per-class accuracy (recall) `[C]`: correct / test examples of the class; NaN for a class with no example."""
    matrix = _as_confusion(confusion)
    support = matrix.sum(axis=1)
    return np.divide(np.diag(matrix), support, out=np.full(matrix.shape[0], np.nan), where=support > 0)


def shot_accuracy(per_class_accuracies: ArrayLike, train_class_counts: ArrayLike) -> dict[str, float]:
    """Many/medium/few-shot accuracy: the mean per-class accuracy of each group (groups from training counts).

    Args:
      per_class_accuracies: `[C]` per-class accuracies, NaN for classes without test examples (left out).
      train_class_counts: `[C]` training images per class; the split is `ltjax.stats.shot_masks`.

    Returns:
      `{"many": ..., "medium": ..., "few": ...}`, NaN for a group with no class that has test examples.
    """
    accuracies = np.asarray(per_class_accuracies, dtype=np.float64)
    counts = _as_train_counts(train_class_counts, accuracies.shape[0])
    masks = stats.shot_masks(counts)
    return {group: _mean_of_defined(accuracies[np.asarray(mask)]) for group, mask in zip(SHOT_GROUPS, masks)}


def macro_f1(confusion: ArrayLike) -> float:
    """Macro-averaged F1 over the classes present in the labels or the predictions.

    F1_c = 2 TP / (2 TP + FP + FN): 0 for a class that has examples but is never predicted, or is predicted but has
    no example; a class with neither is left out. NaN only for an empty matrix.
    """
    matrix = _as_confusion(confusion)
    true_positives = np.diag(matrix)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # = 2 TP + FP + FN
    present = denominator > 0
    if not present.any():
        return math.nan
    return float(np.mean(2 * true_positives[present] / denominator[present]))


def g_mean(confusion: ArrayLike) -> float:
    """Geometric mean of the per-class recalls of the classes with test examples.

    Exact, with no epsilon: a class with zero recall makes the G-mean 0. NaN for an empty matrix.
    """
    recalls = per_class_accuracy(confusion)
    recalls = recalls[~np.isnan(recalls)]
    if not recalls.size:
        return math.nan
    if np.any(recalls == 0):
        return 0.0
    return float(np.exp(np.mean(np.log(recalls))))


def expected_calibration_error(bins: CalibrationBins) -> float:
    """ECE = `sum_b (n_b / N) |accuracy_b - confidence_b|` = `sum_b |correct_b - confidence_sum_b| / N`.

    Empty bins contribute nothing. NaN when no example was counted.
    """
    counts = np.asarray(bins.counts, np.float64)
    total = counts.sum()
    if not total:
        return math.nan
    gaps = np.abs(np.asarray(bins.correct_counts, np.float64) - np.asarray(bins.confidence_sums, np.float64))
    return float(gaps.sum() / total)


def tail_confused_as_head(
    confusion: ArrayLike,
    train_class_counts: ArrayLike,
    *,
    tail_classes: Sequence[int] | None = None,
    head_classes: Sequence[int] | None = None,
    top_k: int = 3,
) -> list[dict[str, Any]]:
    """The head classes each tail class's test examples are most often predicted as (SWRM's table).

    Args:
      confusion: `[C, C]` counts, rows = true class.
      train_class_counts: `[C]` training images per class.
      tail_classes: the tail classes, in the order of the rows; default the few-shot classes (< 20 images), which
        some benchmarks lack (CIFAR-10-LT at imbalance 100 has none): pass them explicitly there.
      head_classes: the candidate head classes; default the many-shot classes (> 100 images). A tail class is never
        its own head.
      top_k: how many head classes to list per tail class.

    Returns:
      One JSON-ready dict per tail class: `class`, `train_count`, `test_count`, `accuracy`, `as_head_fraction` (share
      of its test examples predicted as any head class) and `top_heads`, up to `top_k` dicts of `class`, `count`,
      `fraction` (of the tail class's test examples), most frequent first, ties by class index, zero counts omitted.
      Fractions are None for a tail class without test examples.
    """
    matrix = _as_confusion(confusion)
    counts = _as_train_counts(train_class_counts, matrix.shape[0])
    many, _, few = (np.asarray(mask) for mask in stats.shot_masks(counts))
    tails = np.flatnonzero(few) if tail_classes is None else np.asarray(tail_classes, dtype=np.int64)
    heads = np.flatnonzero(many) if head_classes is None else np.unique(np.asarray(head_classes, dtype=np.int64))
    rows = []
    for tail in tails.tolist():
        candidates = heads[heads != tail]
        head_counts = matrix[tail, candidates]
        support = int(matrix[tail].sum())
        # Candidates are in ascending class order, so a stable sort on -count breaks ties by class index.
        order = np.argsort(-head_counts, kind="stable")[:top_k]
        rows.append({
            "class": tail,
            "train_count": int(counts[tail]),
            "test_count": support,
            "accuracy": _fraction(int(matrix[tail, tail]), support),
            "as_head_fraction": _fraction(int(head_counts.sum()), support),
            "top_heads": [
                {
                    "class": int(candidates[i]),
                    "count": int(head_counts[i]),
                    "fraction": _fraction(int(head_counts[i]), support),
                }
                for i in order
                if head_counts[i] > 0
            ],
        })
    return rows


def report(
    stats_or_confusion: EvalStats | ArrayLike,
    train_class_counts: ArrayLike,
    *,
    tail_classes: Sequence[int] | None = None,
    head_classes: Sequence[int] | None = None,
    top_k: int = 3,
    include_confusion: bool = True,
) -> dict[str, Any]:
    """All evaluation metrics as a plain, JSON-serialisable dict (undefined values are None, never NaN).

    Args:
      stats_or_confusion: an `EvalStats` (ECE included) or a bare `[C, C]` confusion matrix (ECE is None).
      train_class_counts: `[C]` training images per class, for the many/medium/few split and the tail table.
      tail_classes, head_classes, top_k: passed to `tail_confused_as_head`.
      include_confusion: whether to embed the confusion matrix (C^2 integers) as a list of rows.

    Returns:
      A dict with `num_examples`, `num_classes`, the `SCALAR_KEYS` (`top1_accuracy`, `mean_class_accuracy`,
      `{many,medium,few}_shot_accuracy`, `macro_f1`, `g_mean`, `ece`), `shot_num_classes` (classes per group),
      `per_class_accuracy` (list), `tail_confused_as_head` (list) and, if asked, `confusion` (list of rows).
    """
    if isinstance(stats_or_confusion, EvalStats):
        matrix = _as_confusion(stats_or_confusion.confusion)
        ece = expected_calibration_error(stats_or_confusion.calibration)
    else:
        matrix = _as_confusion(stats_or_confusion)
        ece = math.nan
    counts = _as_train_counts(train_class_counts, matrix.shape[0])
    accuracies = per_class_accuracy(matrix)
    shots = shot_accuracy(accuracies, counts)
    result: dict[str, Any] = {
        "num_examples": int(matrix.sum()),
        "num_classes": int(matrix.shape[0]),
        "top1_accuracy": _json_float(top1_accuracy(matrix)),
        "mean_class_accuracy": _json_float(_mean_of_defined(accuracies)),
        **{f"{group}_shot_accuracy": _json_float(shots[group]) for group in SHOT_GROUPS},
        "macro_f1": _json_float(macro_f1(matrix)),
        "g_mean": _json_float(g_mean(matrix)),
        "ece": _json_float(ece),
        "shot_num_classes": {
            group: int(np.sum(mask)) for group, mask in zip(SHOT_GROUPS, stats.shot_masks(counts))
        },
        "per_class_accuracy": [_json_float(a) for a in accuracies],
        "tail_confused_as_head": tail_confused_as_head(
            matrix, counts, tail_classes=tail_classes, head_classes=head_classes, top_k=top_k
        ),
    }
    if include_confusion:
        result["confusion"] = matrix.tolist()
    return result


def scalar_metrics(full_report: dict[str, Any]) -> dict[str, float | None]:
    """The scalar entries of a `report` (`SCALAR_KEYS`), for a per-epoch JSON log line."""
    return {key: full_report[key] for key in SCALAR_KEYS}


def train_accuracy(class_correct: ArrayLike, class_count: ArrayLike, train_class_counts: ArrayLike) -> dict[str, Any]:
    """An epoch's running training accuracy (augmented images, train-mode BatchNorm) from `TrainTotals` counts.

    Returns:
      `top1_accuracy`, `mean_class_accuracy` and `{many,medium,few}_shot_accuracy`, the keys of `report` that
      `accuracy_gap` compares; None where undefined.
    """
    correct, count = np.asarray(class_correct), np.asarray(class_count)
    seen = count > 0
    accuracies = np.where(seen, correct / np.where(seen, count, 1), np.nan)
    shots = shot_accuracy(accuracies, train_class_counts)
    return {
        "top1_accuracy": _json_float(correct.sum() / count.sum() if count.sum() else math.nan),
        "mean_class_accuracy": _json_float(_mean_of_defined(accuracies)),
        **{f"{group}_shot_accuracy": _json_float(shots[group]) for group in SHOT_GROUPS},
    }


def accuracy_gap(train_report: dict[str, Any], test_report: dict[str, Any]) -> dict[str, float | None]:
    """Train accuracy minus test accuracy (FFDS, Fig. 3), overall and per shot group, for one epoch.

    Both reports must use the same training counts. The train report may come from the train step's own confusion
    counts (augmented batches, weights changing during the epoch) or from a separate pass over the training set;
    say which when plotting.

    Args:
      train_report: `report` of the training set.
      test_report: `report` of the test set.

    Returns:
      `overall` (top-1), `mean_class` (mean per-class accuracy: the training set is imbalanced, so its top-1 is
      dominated by head classes), `many`, `medium`, `few`; None where either side is undefined.
    """
    keys = {
        "overall": "top1_accuracy",
        "mean_class": "mean_class_accuracy",
        **{group: f"{group}_shot_accuracy" for group in SHOT_GROUPS},
    }
    gaps: dict[str, float | None] = {}
    for name, key in keys.items():
        train, test = train_report[key], test_report[key]
        gaps[name] = None if train is None or test is None else train - test
    return gaps


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_shot_table(full_report: dict[str, Any]) -> str:
    """The many/medium/few table of a `report` as text (accuracies in percent, '-' when undefined).

    The `All` row is top-1 accuracy over every test example, as the long-tail papers report it.
    """
    lines = [f"{'Group':<8}{'Classes':>8}{'Accuracy':>10}"]
    for group in SHOT_GROUPS:
        lines.append(
            f"{group.capitalize():<8}{full_report['shot_num_classes'][group]:>8}"
            f"{_percent(full_report[f'{group}_shot_accuracy']):>10}"
        )
    lines.append(f"{'All':<8}{full_report['num_classes']:>8}{_percent(full_report['top1_accuracy']):>10}")
    return "\n".join(lines)


def format_tail_table(full_report: dict[str, Any], class_names: Sequence[str] | None = None) -> str:
    """The tail-to-head confusion table of a `report` as text: one line per tail class.

    Args:
      full_report: a `report`.
      class_names: optional names indexed by class; class indices otherwise.

    Returns:
      The table, e.g. `truck  12  100  41.0  38.0  automobile 30.0% (30), ship 5.0% (5)`.
    """
    def name(index: int) -> str:
        return class_names[index] if class_names is not None else str(index)

    rows = full_report["tail_confused_as_head"]
    width = max([len("Tail class")] + [len(name(row["class"])) for row in rows])
    lines = [f"{'Tail class':<{width}}{'Train':>7}{'Test':>6}{'Acc%':>7}{'Head%':>7}  Most confused head classes"]
    for row in rows:
        heads = ", ".join(
            f"{name(head['class'])} {_percent(head['fraction'])}% ({head['count']})" for head in row["top_heads"]
        )
        lines.append(
            f"{name(row['class']):<{width}}{row['train_count']:>7}{row['test_count']:>6}"
            f"{_percent(row['accuracy']):>7}{_percent(row['as_head_fraction']):>7}  {heads or '-'}"
        )
    return "\n".join(lines)
