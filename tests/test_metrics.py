"""Metrics: on-device counts against NumPy, masking and psum; host metrics against hand-computed numbers."""
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from ltjax import metrics

CIFAR10_IF100 = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
# Jitted: one compile per shape is far faster on CPU than compiling each op eagerly (the counting functions are
# also called eagerly below).
update = jax.jit(metrics.EvalStats.update)


def numpy_confusion(labels, predictions, num_classes):
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def numpy_ece(logits, labels, num_bins=15):
    """ECE straight from per-example confidences (float64), bins (b/B, (b+1)/B]."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    confidences = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidences > lo) & (confidences <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidences[in_bin].mean())
    return ece


def random_batch(seed, batch, num_classes):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((batch, num_classes))).astype(np.float32)
    labels = rng.integers(0, num_classes, batch).astype(np.int32)
    return logits, labels


# ---------------------------------------------------------------- on device


def test_confusion_counts_by_hand_from_predictions_and_logits():
    labels = jnp.array([0, 0, 1, 2, 2, 2])
    predictions = jnp.array([0, 1, 1, 2, 0, 2])
    expected = [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    counts = metrics.confusion_counts(predictions, labels, 3)
    assert counts.dtype == jnp.int32 and counts.tolist() == expected
    logits = jax.nn.one_hot(predictions, 3) * 5.0 - 1.0
    assert metrics.confusion_counts(logits, labels, 3).tolist() == expected


def test_confusion_counts_match_numpy_and_jit():
    logits, labels = random_batch(0, 200, 7)
    expected = numpy_confusion(labels, logits.argmax(axis=1), 7)
    np.testing.assert_array_equal(metrics.confusion_counts(logits, labels, 7), expected)
    jitted = jax.jit(metrics.confusion_counts, static_argnums=2)
    np.testing.assert_array_equal(jitted(logits, labels, 7), expected)


def test_masked_and_padded_examples_are_not_counted():
    logits, labels = random_batch(1, 50, 5)
    unpadded = update(metrics.EvalStats.init(5), logits[:40], labels[:40])
    # The pipeline pads the last batch: padded rows carry junk (here a label of -1 for two of them) and mask 0.
    labels_padded = labels.copy()
    labels_padded[45:47] = -1
    mask = np.arange(50) < 40
    masked = update(metrics.EvalStats.init(5), logits, labels_padded, mask)
    np.testing.assert_array_equal(masked.confusion, unpadded.confusion)
    for name in ("counts", "confidence_sums", "correct_counts"):
        np.testing.assert_allclose(getattr(masked.calibration, name), getattr(unpadded.calibration, name), rtol=1e-6)
    # A float 0/1 mask works as well, and labels outside [0, C) are dropped even without a mask.
    float_mask = metrics.confusion_counts(logits, labels, 5, mask=mask.astype(np.float32))
    np.testing.assert_array_equal(float_mask, unpadded.confusion)
    labels_out = labels.copy()
    labels_out[:10] = 5
    assert int(metrics.confusion_counts(logits, labels_out, 5).sum()) == 40


def test_eval_stats_merge_is_addition_over_batches():
    logits, labels = random_batch(2, 64, 6)
    whole = update(metrics.EvalStats.init(6), logits, labels)
    halves = update(metrics.EvalStats.init(6), logits[:32], labels[:32]).merge(
        update(metrics.EvalStats.init(6), logits[32:], labels[32:])
    )
    np.testing.assert_array_equal(whole.confusion, halves.confusion)
    np.testing.assert_array_equal(whole.calibration.counts, halves.calibration.counts)
    np.testing.assert_allclose(whole.calibration.confidence_sums, halves.calibration.confidence_sums, rtol=1e-6)
    assert whole.calibration.num_bins == 15 and whole.num_classes == 6


def test_sharded_psum_equals_single_device():
    devices = np.array(jax.devices()[:8])
    assert len(devices) == 8, "conftest sets 8 fake CPU devices"
    mesh = Mesh(devices, ("batch",))
    logits, labels = random_batch(3, 64, 10)
    mask = np.arange(64) < 59  # a padded last batch

    @jax.jit
    @functools.partial(
        jax.shard_map, mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec("batch"), PartitionSpec("batch"), PartitionSpec("batch")),
        out_specs=PartitionSpec(),
    )
    def eval_step(state, batch_logits, batch_labels, batch_mask):
        return state.update(batch_logits, batch_labels, batch_mask, axis_name="batch")

    state = metrics.EvalStats.init(10)
    sharded = eval_step(eval_step(state, logits, labels, mask), logits, labels, mask)
    single = update(update(state, logits, labels, mask), logits, labels, mask)
    np.testing.assert_array_equal(sharded.confusion, single.confusion)
    np.testing.assert_array_equal(sharded.calibration.counts, single.calibration.counts)
    np.testing.assert_array_equal(sharded.calibration.correct_counts, single.calibration.correct_counts)
    np.testing.assert_allclose(sharded.calibration.confidence_sums, single.calibration.confidence_sums, rtol=1e-5)
    assert int(sharded.confusion.sum()) == 2 * 59


def test_input_errors_name_the_argument():
    labels = jnp.array([0, 1])
    with pytest.raises(ValueError, match="logits must have shape"):
        metrics.confusion_counts(jnp.zeros((2, 4)), labels, 3)
    with pytest.raises(ValueError, match="integer predictions"):
        metrics.confusion_counts(jnp.array([0, 1, 2]), labels, 3)
    with pytest.raises(ValueError, match="labels must be integer"):
        metrics.confusion_counts(jnp.array([0, 1]), jnp.array([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="mask"):
        metrics.calibration_bins(jnp.zeros((2, 3)), labels, mask=jnp.ones(3))
    with pytest.raises(ValueError, match="train_class_counts"):
        metrics.report(np.eye(3, dtype=int), [10, 20])


# ---------------------------------------------------------------- on host, by hand

# Rows = true class. Class 2 has examples but is never predicted (zero recall); class 3 has no example and is never
# predicted (an empty class).
HAND_CONFUSION = np.array([
    [6, 2, 0, 0],
    [1, 3, 0, 0],
    [2, 0, 0, 0],
    [0, 0, 0, 0],
])


def test_accuracies_by_hand():
    assert metrics.top1_accuracy(HAND_CONFUSION) == pytest.approx(9 / 14)
    np.testing.assert_allclose(metrics.per_class_accuracy(HAND_CONFUSION), [0.75, 0.75, 0.0, np.nan])
    assert math.isnan(metrics.top1_accuracy(np.zeros((3, 3), int)))


def test_macro_f1_by_hand_with_empty_and_unpredicted_classes():
    # Class 0: TP 6, FP 1 + 2, FN 2 -> 12 / 17. Class 1: TP 3, FP 2, FN 1 -> 6 / 9. Class 2: never predicted -> 0.
    # Class 3: neither present nor predicted -> left out of the mean.
    assert metrics.macro_f1(HAND_CONFUSION) == pytest.approx((12 / 17 + 6 / 9 + 0.0) / 3)
    # A class predicted but absent from the labels counts with F1 0: (0.8 + 0) / 2.
    assert metrics.macro_f1(np.array([[2, 1], [0, 0]])) == pytest.approx(0.4)
    assert math.isnan(metrics.macro_f1(np.zeros((2, 2), int)))


def test_g_mean_by_hand():
    assert metrics.g_mean(HAND_CONFUSION) == 0.0  # class 2's zero recall
    # Recalls 0.5 and 0.8 (the class without examples is left out): sqrt(0.4).
    assert metrics.g_mean(np.array([[1, 1, 0], [1, 4, 0], [0, 0, 0]])) == pytest.approx(math.sqrt(0.4))
    assert metrics.g_mean(np.array([[2, 1], [0, 0]])) == pytest.approx(2 / 3)


def test_ece_from_hand_made_bins():
    bins = metrics.CalibrationBins.init()
    # Bin 14: 4 examples, mean confidence 0.95, 3 correct -> |3 - 3.8| = 0.8. Bin 7: 6 examples, 4 correct,
    # confidences summing to 3.0 -> 1.0. ECE = (0.8 + 1.0) / 10.
    bins = bins.replace(
        counts=bins.counts.at[14].set(4).at[7].set(6),
        confidence_sums=bins.confidence_sums.at[14].set(3.8).at[7].set(3.0),
        correct_counts=bins.correct_counts.at[14].set(3).at[7].set(4),
    )
    assert metrics.expected_calibration_error(bins) == pytest.approx(0.18, rel=1e-6)
    assert math.isnan(metrics.expected_calibration_error(metrics.CalibrationBins.init()))


def test_ece_matches_numpy_from_per_example_confidences():
    logits, labels = random_batch(4, 1000, 10)
    bins = metrics.calibration_bins(logits, labels)
    assert int(bins.counts.sum()) == 1000
    assert metrics.expected_calibration_error(bins) == pytest.approx(numpy_ece(logits, labels), rel=1e-5)
    mask = np.arange(1000) < 700
    masked = metrics.calibration_bins(logits, labels, mask=mask)
    assert metrics.expected_calibration_error(masked) == pytest.approx(
        numpy_ece(logits[:700], labels[:700]), rel=1e-5
    )


def test_shot_accuracy_is_the_mean_of_per_class_accuracies():
    # Training counts: many = {0, 1, 2} (> 100), medium = {3, 4, 5} (20..100, 20 included), few = {6, 7, 8} (< 20).
    train_counts = np.array([500, 300, 150, 80, 40, 20, 19, 10, 5])
    confusion = np.zeros((9, 9), int)
    support = np.full(9, 10)
    support[6] = 100  # an unbalanced test set, so the mean of per-class accuracies differs from pooling
    correct = np.array([9, 8, 7, 6, 5, 4, 90, 0, 0])
    for c in range(9):
        confusion[c, c] = correct[c]
        confusion[c, (c + 1) % 9] = support[c] - correct[c]
    shots = metrics.shot_accuracy(metrics.per_class_accuracy(confusion), train_counts)
    assert shots["many"] == pytest.approx(0.8)
    assert shots["medium"] == pytest.approx(0.5)
    assert shots["few"] == pytest.approx(0.3)  # (0.9 + 0 + 0) / 3, where pooling would give 90 / 120


def test_report_on_cifar10_lt_is_json_and_has_an_empty_few_group():
    rng = np.random.default_rng(5)
    confusion = rng.integers(0, 20, (10, 10)) + np.diag(np.linspace(900, 100, 10).astype(int))
    logits, labels = random_batch(6, 32, 10)
    eval_stats = update(metrics.EvalStats.init(10), logits, labels)
    full = metrics.report(confusion, CIFAR10_IF100, tail_classes=[8, 9], top_k=2)
    json.dumps(full, allow_nan=False)
    json.dumps(metrics.report(eval_stats, CIFAR10_IF100), allow_nan=False)
    assert full["shot_num_classes"] == {"many": 8, "medium": 2, "few": 0}
    assert full["few_shot_accuracy"] is None and full["ece"] is None
    per_class = metrics.per_class_accuracy(confusion)
    assert full["many_shot_accuracy"] == pytest.approx(per_class[:8].mean())
    assert full["medium_shot_accuracy"] == pytest.approx(per_class[8:].mean())
    assert full["confusion"] == confusion.tolist()
    assert [row["class"] for row in full["tail_confused_as_head"]] == [8, 9]
    assert set(metrics.scalar_metrics(full)) == set(metrics.SCALAR_KEYS)
    assert "confusion" not in metrics.report(confusion, CIFAR10_IF100, include_confusion=False)
    table = metrics.format_shot_table(full).splitlines()
    assert table[0].split() == ["Group", "Classes", "Accuracy"]
    assert table[3].split() == ["Few", "0", "-"]
    assert table[4].split() == ["All", "10", f"{100 * full['top1_accuracy']:.1f}"]


def test_tail_samples_predicted_as_head_classes_by_hand():
    train_counts = np.array([500, 400, 300, 50, 10, 5])  # many {0, 1, 2}, medium {3}, few {4, 5}
    confusion = np.zeros((6, 6), int)
    confusion[4] = [3, 0, 5, 1, 1, 0]  # 10 test examples: 5 as class 2, 3 as class 0; 1 as medium class 3
    confusion[5] = [0, 2, 2, 0, 0, 6]  # a tie between heads 1 and 2: class index breaks it
    rows = metrics.tail_confused_as_head(confusion, train_counts, top_k=2)
    assert rows == [
        {"class": 4, "train_count": 10, "test_count": 10, "accuracy": 0.1, "as_head_fraction": 0.8,
         "top_heads": [{"class": 2, "count": 5, "fraction": 0.5}, {"class": 0, "count": 3, "fraction": 0.3}]},
        {"class": 5, "train_count": 5, "test_count": 10, "accuracy": 0.6, "as_head_fraction": 0.4,
         "top_heads": [{"class": 1, "count": 2, "fraction": 0.2}, {"class": 2, "count": 2, "fraction": 0.2}]},
    ]
    # Explicit sets; a tail class is never its own head, zero counts are omitted, no test example -> None.
    confusion[3] = [0, 0, 0, 4, 0, 0]
    rows = metrics.tail_confused_as_head(confusion, train_counts, tail_classes=[3, 1], head_classes=[3, 4, 0])
    assert rows[0]["top_heads"] == [] and rows[0]["as_head_fraction"] == 0.0
    assert rows[1]["test_count"] == 0 and rows[1]["accuracy"] is None and rows[1]["top_heads"] == []
    report = {"tail_confused_as_head": metrics.tail_confused_as_head(confusion, train_counts, top_k=1)}
    lines = metrics.format_tail_table(report, class_names=["a", "b", "c", "d", "tail4", "tail5"]).splitlines()
    assert lines[1].split() == ["tail4", "10", "10", "10.0", "80.0", "c", "50.0%", "(5)"]


def test_accuracy_gap_per_group():
    train = {"top1_accuracy": 0.95, "mean_class_accuracy": 0.9, "many_shot_accuracy": 0.99,
             "medium_shot_accuracy": 0.9, "few_shot_accuracy": 0.8}
    test = {"top1_accuracy": 0.7, "mean_class_accuracy": 0.7, "many_shot_accuracy": 0.85,
            "medium_shot_accuracy": 0.6, "few_shot_accuracy": None}
    gap = metrics.accuracy_gap(train, test)
    assert gap == pytest.approx({"overall": 0.25, "mean_class": 0.2, "many": 0.14, "medium": 0.3, "few": None})
