"""Per-class statistics of a training set, as a pytree carried through training.

`class_stats(counts)` is pure and `vmap`-able (e.g. over several imbalance factors at once);
`ClassStats.from_counts` is the eager entry point that also checks the counts' values.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ltjax._pytree import pytree_dataclass, static_field
from ltjax.losses._checks import check_counts

# The usual long-tail split (Liu et al., OLTR, 2019): many > 100 training images, few < 20, medium in between.
MANY_SHOT_ABOVE = 100
FEW_SHOT_BELOW = 20


@pytree_dataclass
class ClassStats:
    """Training-set statistics of each class.

    Attributes:
      counts: `[C]` float32 training examples per class.
      prior: `[C]` label frequencies `n_c / N`.
      log_prior: `[C]` their logarithm.
      many_shot, medium_shot, few_shot: `[C]` boolean masks (> 100, 20..100, < 20 examples).
      group_of_class: `[C]` int32 frequency group of each class (FFDS's DynaSmooth groups).
      num_groups: number of frequency groups (static).
    """

    counts: jax.Array
    prior: jax.Array
    log_prior: jax.Array
    many_shot: jax.Array
    medium_shot: jax.Array
    few_shot: jax.Array
    group_of_class: jax.Array
    num_groups: int = static_field()

    @property
    def num_classes(self) -> int:
        return self.counts.shape[-1]

    @classmethod
    def from_counts(
        cls, class_counts, *, num_groups: int = 1, group_ends: Sequence[int] | None = None
    ) -> ClassStats:
        """Checks the counts (every class needs >= 1 example) and builds the statistics; see `class_stats`."""
        counts = np.asarray(class_counts)
        if not np.issubdtype(counts.dtype, np.number):
            raise ValueError(f"class_counts must be numeric, got dtype {counts.dtype}")
        check_counts(counts)
        # Straight from NumPy to float32: `jnp.asarray` would first narrow int64 counts of 2^31 or more to int32.
        return class_stats(counts.astype(np.float32), num_groups=num_groups, group_ends=group_ends)


def shot_masks(class_counts: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Many-, medium- and few-shot masks `[C]` from training counts (> 100, 20..100, < 20)."""
    few = class_counts < FEW_SHOT_BELOW
    many = class_counts > MANY_SHOT_ABOVE
    return many, ~(many | few), few


def frequency_groups(
    class_counts: jax.Array, *, num_groups: int = 1, group_ends: Sequence[int] | None = None
) -> jax.Array:
    """Frequency group of every class: contiguous blocks of the classes sorted by count (descending, ties by index).

    Args:
      class_counts: `[C]` training examples per class, in any class order.
      num_groups: M near-equal blocks (sizes differ by at most one), used when `group_ends` is None.
      group_ends: exclusive block ends in the sorted order, as the FFDS configs write them (e.g. `[3, 6, 10]`);
        strictly increasing, ending at C.

    Returns:
      `[C]` int32 group index per class; group 0 holds the most frequent classes.
    """
    num_classes = jnp.shape(class_counts)[-1]
    rank = jnp.argsort(jnp.argsort(-class_counts, stable=True), stable=True)
    if group_ends is None:
        if not 1 <= num_groups <= num_classes:
            raise ValueError(f"num_groups must lie in [1, {num_classes}] (the number of classes), got {num_groups}")
        return (rank * num_groups // num_classes).astype(jnp.int32)
    ends = list(group_ends)
    if not ends or ends[-1] != num_classes or any(b <= a for a, b in zip([0] + ends, ends)):
        raise ValueError(
            f"group_ends must be strictly increasing exclusive ends that finish at C={num_classes}, got {ends}"
        )
    return jnp.searchsorted(jnp.asarray(ends), rank, side="right").astype(jnp.int32)


def class_stats(
    class_counts: jax.Array, *, num_groups: int = 1, group_ends: Sequence[int] | None = None
) -> ClassStats:
    """Builds `ClassStats` from counts; pure, so `jax.vmap(class_stats)(batch_of_counts)` works.

    Values are not checked here (they may be tracers); use `ClassStats.from_counts` for concrete counts.
    """
    counts = jnp.asarray(class_counts, jnp.float32)
    if counts.ndim != 1:
        raise ValueError(f"class_counts must be 1-D [C] (vmap over a batch of them), got shape {counts.shape}")
    prior = counts / jnp.sum(counts)
    many, medium, few = shot_masks(counts)
    groups = frequency_groups(counts, num_groups=num_groups, group_ends=group_ends)
    return ClassStats(
        counts=counts,
        prior=prior,
        log_prior=jnp.log(prior),
        many_shot=many,
        medium_shot=medium,
        few_shot=few,
        group_of_class=groups,
        num_groups=len(group_ends) if group_ends is not None else num_groups,
    )
