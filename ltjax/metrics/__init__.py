"""Evaluation metrics for long-tailed recognition: sufficient statistics counted on device (`counting`), reports
computed from them on the host (`reports`). Both are re-exported here: `from ltjax import metrics`."""
from ltjax._extras import require_train_extra

require_train_extra(__name__)

from ltjax.metrics.counting import (
    NUM_CALIBRATION_BINS,
    CalibrationBins,
    EvalStats,
    TrainTotals,
    calibration_bins,
    confusion_counts,
)
from ltjax.metrics.reports import (
    SCALAR_KEYS,
    SHOT_GROUPS,
    accuracy_gap,
    expected_calibration_error,
    format_shot_table,
    format_tail_table,
    g_mean,
    macro_f1,
    per_class_accuracy,
    report,
    scalar_metrics,
    shot_accuracy,
    tail_confused_as_head,
    top1_accuracy,
    train_accuracy,
)

__all__ = [
    "NUM_CALIBRATION_BINS",
    "SCALAR_KEYS",
    "SHOT_GROUPS",
    "CalibrationBins",
    "EvalStats",
    "TrainTotals",
    "accuracy_gap",
    "calibration_bins",
    "confusion_counts",
    "expected_calibration_error",
    "format_shot_table",
    "format_tail_table",
    "g_mean",
    "macro_f1",
    "per_class_accuracy",
    "report",
    "scalar_metrics",
    "shot_accuracy",
    "tail_confused_as_head",
    "top1_accuracy",
    "train_accuracy",
]
