"""Plots: every function writes a valid, readable PNG headless; large confusion matrices carry no cell text."""
import json

import matplotlib.image
import numpy as np
import pytest

from ltjax import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COUNTS = np.array([500, 300, 150, 80, 40, 20, 19, 10, 5])


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_class_distribution(tmp_path):
    out = plots.plot_class_distribution(COUNTS[::-1], tmp_path / "sub" / "dist.png",
                                        class_names=[f"c{i}" for i in range(9)], log_scale=True)
    assert out == tmp_path / "sub" / "dist.png"
    assert_png(out)


def test_accuracy_vs_count_skips_classes_without_test_examples(tmp_path):
    accuracies = [0.9, 0.8, None, 0.6, 0.5, 0.4, 0.3, np.nan, 0.1]
    assert_png(plots.plot_accuracy_vs_count(accuracies, COUNTS, tmp_path / "acc.png"))


def test_confusion_matrix_small_and_large(tmp_path):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 5, (9, 9)) + 20 * np.eye(9, dtype=int)
    small[4] = 0  # a class without test examples: drawn grey
    assert_png(plots.plot_confusion_matrix(small, tmp_path / "small.png", class_order=np.argsort(-COUNTS)))
    assert len(plots.confusion_figure(small).axes[0].texts) > 9
    large = rng.integers(0, 3, (100, 100)) + 10 * np.eye(100, dtype=int)
    assert_png(plots.plot_confusion_matrix(large, tmp_path / "large.png"))
    assert len(plots.confusion_figure(large).axes[0].texts) == 0


def test_training_curves_from_json_lines(tmp_path):
    log = tmp_path / "log.jsonl"
    with open(log, "w") as f:
        for epoch in range(1, 6):
            record = {
                "epoch": epoch,
                "train_loss": 2.0 / epoch,
                "train": {"top1_accuracy": 0.5 + 0.08 * epoch},
                "test": {"top1_accuracy": 0.4 + 0.05 * epoch, "few_shot_accuracy": None},
                "gap": {"overall": 0.1 + 0.03 * epoch, "many": 0.05, "medium": 0.1, "few": None},
            }
            if epoch % 2 == 0:
                record["test_loss"] = 2.5 / epoch  # evaluated every other epoch: holes in the line
            f.write(json.dumps(record) + "\n\n")
    assert_png(plots.plot_training_curves(log, tmp_path / "curves.png"))
    records = plots.read_json_lines(log)
    assert_png(plots.plot_training_curves(records, tmp_path / "loss.png", panels={"Loss": ["train_loss"]}))
    with pytest.raises(ValueError, match="train_loss"):
        plots.plot_training_curves(records, tmp_path / "none.png", panels={"x": ["missing"]})
