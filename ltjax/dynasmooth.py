"""DynaSmooth's state: per-group mean true-class probabilities, carried across epochs (FFDS, Nah et al. 2023).

During an epoch the jitted train step adds each batch's clipped true-class probabilities to per-group running sums
(`accumulate`); at the epoch's end `end_epoch` turns them into the means the next epoch's `ffds_loss` smooths
towards. A fresh state has no means, and `ffds_loss(has_means=False)` is plain cross-entropy, so the first epoch
of FFDS (the trigger epoch of D-FFDS) trains with CE while it collects statistics, as the reference does.

Only training batches may be accumulated. The reference also feeds the evaluation pass (its criterion stays in
training mode during validation), so its group means are mostly test-set statistics; ltjax does not copy that.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax._pytree import pytree_dataclass, static_field
from ltjax.losses.ffds import PROBABILITY_CLIP


@pytree_dataclass
class DynaSmoothState:
    """Attributes:
      group_of_class: `[C]` int32 frequency group of each class (`ClassStats.group_of_class`).
      prob_sums: `[M]` this epoch's sum of clipped true-class probabilities per group.
      example_counts: `[M]` this epoch's examples per group.
      group_means: `[M]` the previous epoch's mean per group.
      has_means: scalar bool, whether `group_means` holds a finished epoch.
      num_groups: M (static).
    """

    group_of_class: jax.Array
    prob_sums: jax.Array
    example_counts: jax.Array
    group_means: jax.Array
    has_means: jax.Array
    num_groups: int = static_field()


def init(group_of_class: jax.Array, num_groups: int) -> DynaSmoothState:
    """A fresh state with no means (the loss is CE until the first `end_epoch`)."""
    zeros = jnp.zeros((num_groups,), jnp.float32)
    return DynaSmoothState(
        group_of_class=jnp.asarray(group_of_class, jnp.int32),
        prob_sums=zeros,
        example_counts=zeros,
        group_means=zeros,
        has_means=jnp.asarray(False),
        num_groups=num_groups,
    )


def accumulate(
    state: DynaSmoothState,
    probs_of_true_class: jax.Array,
    labels: jax.Array,
    *,
    valid: jax.Array | None = None,
    axis_name: str | None = None,
) -> DynaSmoothState:
    """Adds a training batch's true-class probabilities to the running group sums (call inside the train step).

    Args:
      state: the current state.
      probs_of_true_class: `[...]` softmax probability of each example's label (clipped to [1e-6, 1 - 1e-6] here,
        as the reference clips; no gradient flows).
      labels: `[...]` integer labels; examples with labels outside [0, C) are not counted.
      valid: `[...]` bool, the examples to count (None: all); the padding of a batch is not.
      axis_name: in a data-parallel step, the device axis to `psum` the batch's sums over, so every replica
        keeps the same state.

    Returns:
      The updated state.
    """
    probs = jnp.clip(jax.lax.stop_gradient(probs_of_true_class), PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    num_classes = state.group_of_class.shape[0]
    in_range = (labels >= 0) & (labels < num_classes)
    valid = (in_range if valid is None else in_range & valid).astype(jnp.float32)
    groups = state.group_of_class[jnp.clip(labels, 0, num_classes - 1)].reshape(-1)
    sums = jax.ops.segment_sum((probs * valid).reshape(-1), groups, num_segments=state.num_groups)
    counts = jax.ops.segment_sum(valid.reshape(-1), groups, num_segments=state.num_groups)
    if axis_name is not None:
        sums, counts = jax.lax.psum((sums, counts), axis_name)
    return state.replace(prob_sums=state.prob_sums + sums, example_counts=state.example_counts + counts)


def end_epoch(state: DynaSmoothState) -> DynaSmoothState:
    """Turns the epoch's sums into group means and resets the sums.

    A group that saw no example this epoch keeps its previous mean, or takes this epoch's mean over all groups if it
    has none yet (the reference divides 0 by 0 there and poisons the loss with NaN).
    """
    seen = state.example_counts > 0
    total_count = jnp.sum(state.example_counts)
    overall_mean = jnp.sum(state.prob_sums) / jnp.where(total_count > 0, total_count, 1.0)
    fallback = jnp.where(state.has_means, state.group_means, overall_mean)
    means = jnp.where(seen, state.prob_sums / jnp.where(seen, state.example_counts, 1.0), fallback)
    zeros = jnp.zeros_like(state.prob_sums)
    return state.replace(
        prob_sums=zeros,
        example_counts=zeros,
        group_means=means,
        has_means=state.has_means | jnp.any(seen),
    )


def class_mean_probs(state: DynaSmoothState) -> jax.Array:
    """`[C]` each class's group mean, the `class_mean_probs` argument of `ffds_loss`."""
    return state.group_means[state.group_of_class]
