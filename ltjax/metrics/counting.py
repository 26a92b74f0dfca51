"""Evaluation and training statistics counted on device: confusion counts, calibration bins, training totals.

The jitted steps only count. `confusion_counts` builds a `[C, C]` matrix (rows = true class, columns = predicted
class) and `calibration_bins` fills 15 equal-width confidence bins; `EvalStats` carries both. `TrainTotals` sums a
training epoch's loss and per-class correct predictions, and remembers the first step whose loss or gradient was not
finite. Counts add across batches, devices (`axis_name` -> `psum`) and hosts, so no per-example output leaves the
device and a padded last batch is handled by its validity mask.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

NUM_CALIBRATION_BINS = 15


def _check_labels_and_mask(labels: jax.Array, mask: jax.Array | None) -> None:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if mask is not None and jnp.shape(mask) != labels.shape:
        raise ValueError(f"mask must have the labels' shape {labels.shape}, got {jnp.shape(mask)}")


def _predictions(logits_or_predictions: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """Predicted classes from logits `[..., C]` (argmax) or from integer predictions `[...]`."""
    values = jnp.asarray(logits_or_predictions)
    if jnp.issubdtype(values.dtype, jnp.floating):
        if values.shape != labels.shape + (num_classes,):
            raise ValueError(
                f"logits must have shape labels.shape + (num_classes,) = {labels.shape + (num_classes,)}, "
                f"got {values.shape}"
            )
        return jnp.argmax(values, axis=-1).astype(jnp.int32)
    if jnp.issubdtype(values.dtype, jnp.integer):
        if values.shape != labels.shape:
            raise ValueError(f"integer predictions must have the labels' shape {labels.shape}, got {values.shape}")
        return values.astype(jnp.int32)
    raise ValueError(f"logits_or_predictions must be floating logits or integer predictions, got {values.dtype}")


def _valid_examples(
    labels: jax.Array, predictions: jax.Array, num_classes: int, mask: jax.Array | None
) -> jax.Array:
    """Examples to count: inside the mask, with label and prediction in [0, C) (so a padding label -1 is inert)."""
    valid = (labels >= 0) & (labels < num_classes) & (predictions >= 0) & (predictions < num_classes)
    if mask is not None:
        valid = valid & jnp.asarray(mask).astype(bool)
    return valid


def confusion_counts(
    logits_or_predictions: jax.Array,
    labels: jax.Array,
    num_classes: int,
    *,
    mask: jax.Array | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    """Counts (true class, predicted class) pairs of a batch; pure and jit-safe.

    Args:
      logits_or_predictions: float logits `[..., C]` (the prediction is their argmax) or integer predictions `[...]`.
      labels: `[...]` integer labels; an example whose label or prediction lies outside [0, C) is not counted.
      num_classes: C (static).
      mask: optional `[...]` validity mask (bool or 0/1) of a padded batch; masked-out examples are not counted.
      axis_name: in a data-parallel step, the device axis to `psum` over, so every replica holds the global counts.

    Returns:
      `[C, C]` int32 counts, rows = true class, columns = predicted class. They add across batches and devices.
      Memory is C^2 int32 per replica (4 MB at C = 1000).
    """
    labels = jnp.asarray(labels)
    _check_labels_and_mask(labels, mask)
    predictions = _predictions(logits_or_predictions, labels, num_classes)
    valid = _valid_examples(labels, predictions, num_classes, mask)
    # Invalid examples point at cell 0 with weight 0, which keeps every scatter index in range.
    cells = jnp.where(valid, labels * num_classes + predictions, 0).reshape(-1)
    counts = jnp.zeros((num_classes * num_classes,), jnp.int32).at[cells].add(valid.reshape(-1).astype(jnp.int32))
    counts = counts.reshape(num_classes, num_classes)
    if axis_name is not None:
        counts = jax.lax.psum(counts, axis_name)
    return counts


@flax.struct.dataclass
class CalibrationBins:
    """Per-bin sums for the expected calibration error; bin b holds confidences in (b / B, (b + 1) / B].

    Attributes:
      counts: `[B]` int32 examples per bin.
      confidence_sums: `[B]` float32 sum of the examples' confidences (top softmax probability).
      correct_counts: `[B]` int32 examples whose prediction (the argmax) equals the label.
    """

    counts: jax.Array
    confidence_sums: jax.Array
    correct_counts: jax.Array

    @classmethod
    def init(cls, num_bins: int = NUM_CALIBRATION_BINS) -> CalibrationBins:
        """Empty bins."""
        return cls(
            counts=jnp.zeros((num_bins,), jnp.int32),
            confidence_sums=jnp.zeros((num_bins,), jnp.float32),
            correct_counts=jnp.zeros((num_bins,), jnp.int32),
        )

    @property
    def num_bins(self) -> int:
        return self.counts.shape[-1]

    def merge(self, other: CalibrationBins) -> CalibrationBins:
        """Bins of the union of both example sets (element-wise sums)."""
        return jax.tree.map(jnp.add, self, other)


def calibration_bins(
    logits: jax.Array,
    labels: jax.Array,
    *,
    mask: jax.Array | None = None,
    axis_name: str | None = None,
    num_bins: int = NUM_CALIBRATION_BINS,
) -> CalibrationBins:
    """Bins a batch's confidences into `num_bins` equal-width bins over [0, 1]; pure and jit-safe.

    Args:
      logits: `[..., C]` float logits (softmax in float32).
      labels: `[...]` integer labels; examples with a label outside [0, C) are not counted.
      mask: optional `[...]` validity mask of a padded batch.
      axis_name: in a data-parallel step, the device axis to `psum` over.
      num_bins: B, 15 by default (the ECE of Guo et al. 2017).

    Returns:
      The batch's `CalibrationBins`.
    """
    labels = jnp.asarray(labels)
    _check_labels_and_mask(labels, mask)
    logits = jnp.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating) or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits must be floating [..., C] with leading shape {labels.shape}, got {logits.dtype} {logits.shape}"
        )
    num_classes = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    confidences = jnp.exp(jnp.max(log_probs, axis=-1)).reshape(-1)
    predictions = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    valid = _valid_examples(labels, predictions, num_classes, mask)
    correct = (valid & (predictions == labels)).reshape(-1)
    valid = valid.reshape(-1)
    # ceil - 1 puts a confidence on a bin edge into the lower bin: right-closed bins (b/B, (b+1)/B].
    bins = jnp.clip(jnp.ceil(confidences * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    sums = CalibrationBins(
        counts=jax.ops.segment_sum(valid.astype(jnp.int32), bins, num_segments=num_bins),
        confidence_sums=jax.ops.segment_sum(jnp.where(valid, confidences, 0.0), bins, num_segments=num_bins),
        correct_counts=jax.ops.segment_sum(correct.astype(jnp.int32), bins, num_segments=num_bins),
    )
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    return sums


@flax.struct.dataclass
class EvalStats:
    """Everything an evaluation pass accumulates on device; merge = element-wise addition.

    Attributes:
      confusion: `[C, C]` int32 counts (rows = true class, columns = predicted class).
      calibration: the confidence bins for ECE.
    """

    confusion: jax.Array
    calibration: CalibrationBins

    @classmethod
    def init(cls, num_classes: int, num_bins: int = NUM_CALIBRATION_BINS) -> EvalStats:
        """Empty statistics for C classes."""
        return cls(
            confusion=jnp.zeros((num_classes, num_classes), jnp.int32),
            calibration=CalibrationBins.init(num_bins),
        )

    @property
    def num_classes(self) -> int:
        return self.confusion.shape[-1]

    def update(
        self,
        logits: jax.Array,
        labels: jax.Array,
        mask: jax.Array | None = None,
        *,
        axis_name: str | None = None,
    ) -> EvalStats:
        """Adds a batch (call inside the jitted eval step).

        Args:
          logits: `[..., C]` float logits.
          labels: `[...]` integer labels.
          mask: optional `[...]` validity mask of a padded batch.
          axis_name: in a data-parallel step, the device axis to `psum` the batch's counts over.

        Returns:
          The updated statistics.
        """
        batch = EvalStats(
            confusion=confusion_counts(logits, labels, self.num_classes, mask=mask, axis_name=axis_name),
            calibration=calibration_bins(
                logits, labels, mask=mask, axis_name=axis_name, num_bins=self.calibration.num_bins
            ),
        )
        return self.merge(batch)

    def merge(self, other: EvalStats) -> EvalStats:
        """Statistics of the union of both example sets (e.g. two hosts' or two shards' passes)."""
        return jax.tree.map(jnp.add, self, other)


@flax.struct.dataclass
class TrainTotals:
    """A training epoch's running sums, kept in the train state so they survive a mid-epoch checkpoint.

    Attributes:
      loss_sum: sum of the steps' batch losses.
      steps: steps summed.
      class_correct: `[C]` int32 training examples predicted correctly (by the method's prediction rule).
      class_count: `[C]` int32 training examples seen.
      first_nonfinite_step: the global step whose loss or gradient was first not finite this epoch, -1 if none.
    """

    loss_sum: jax.Array
    steps: jax.Array
    class_correct: jax.Array
    class_count: jax.Array
    first_nonfinite_step: jax.Array

    @classmethod
    def init(cls, num_classes: int) -> TrainTotals:
        return cls(
            loss_sum=jnp.zeros((), jnp.float32),
            steps=jnp.zeros((), jnp.int32),
            class_correct=jnp.zeros((num_classes,), jnp.int32),
            class_count=jnp.zeros((num_classes,), jnp.int32),
            first_nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    def add(
        self, batch_loss: jax.Array, logits: jax.Array, labels: jax.Array, step: jax.Array, finite: jax.Array, *,
        mask: jax.Array | None = None, axis_name: str | None = None,
    ) -> TrainTotals:
        """Adds one step: its batch loss (already global), this device's predictions of the examples `mask` marks
        (None: all), and whether it was finite."""
        num_classes = self.class_count.shape[-1]
        counted = jnp.ones(labels.shape, jnp.int32) if mask is None else mask.astype(jnp.int32)
        correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.int32) * counted
        class_correct = jnp.zeros(num_classes, jnp.int32).at[labels].add(correct)
        class_count = jnp.zeros(num_classes, jnp.int32).at[labels].add(counted)
        if axis_name is not None:
            class_correct, class_count = jax.lax.psum((class_correct, class_count), axis_name)
        first_bad = jnp.where((self.first_nonfinite_step < 0) & ~finite, step, self.first_nonfinite_step)
        return TrainTotals(
            loss_sum=self.loss_sum + batch_loss,
            steps=self.steps + 1,
            class_correct=self.class_correct + class_correct,
            class_count=self.class_count + class_count,
            first_nonfinite_step=first_bad.astype(jnp.int32),
        )
