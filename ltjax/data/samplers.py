"""Epoch samplers: pure functions `(labels, epoch, seed) -> global index order` for one epoch.

Every sampler returns ONE global order per epoch, the same on every host and device; data parallelism then cuts each
global batch into contiguous per-process shares (`process_share`), and the train step shards each share over the
devices. Nothing is resampled per device, so a run's batches do not depend on how many devices it has.

Randomness comes only from `np.random.default_rng([seed, epoch])`, so an order is reproducible from `(seed, epoch)`
alone: a resumed run rebuilds the epoch it stopped in without replaying earlier ones.

Class-level samplers follow Kang et al. 2020 ("Decoupling representation and classifier for long-tailed
recognition"): class `c` is drawn with probability `p_c = n_c^q / sum_k n_k^q` (q = 1 instance-balanced, q = 0
class-balanced, q = 1/2 square-root), then an instance of that class uniformly, both with replacement. Classes with
no training example get probability 0 whatever q is.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import numpy as np


class Sampler(Protocol):
    """An epoch sampler: `sampler(labels, epoch, seed)` returns the int64 global index order of that epoch."""

    def __call__(self, labels: np.ndarray, epoch: int, seed: int) -> np.ndarray: ...


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return np.random.default_rng([seed, epoch])


def _class_counts(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, found {labels.min()}")
    return np.bincount(labels)


def _grouped_by_class(labels: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices sorted by class, and where each class starts: class c is `by_class[starts[c]: starts[c] + counts[c]]`."""
    by_class = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return by_class, starts


def _epoch_length(labels: np.ndarray, num_samples: int | None) -> int:
    return len(labels) if num_samples is None else num_samples


def class_probabilities(class_counts: np.ndarray, power: float) -> np.ndarray:
    """Class sampling probabilities `p_c = n_c^power / sum_k n_k^power`, 0 for empty classes.

    Args:
      class_counts: [C] training examples per class.
      power: q; 1 gives instance-balanced, 0 class-balanced, 0.5 square-root sampling.

    Returns:
      float64 [C] probabilities summing to 1.
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.sum() <= 0 or (counts < 0).any():
        raise ValueError(f"class_counts must be a 1-D array of non-negative counts with a positive sum, got {counts}")
    weights = np.zeros_like(counts)
    present = counts > 0
    weights[present] = counts[present] ** power
    return weights / weights.sum()


def progressive_class_probabilities(class_counts: np.ndarray, epoch: int, total_epochs: int) -> np.ndarray:
    """Progressively-balanced probabilities `p_c(t) = (1 - t/T) p_c^IB + (t/T) p_c^CB` (Kang et al. 2020, eq. 2).

    Args:
      class_counts: [C] training examples per class.
      epoch: t, 0-indexed, in [0, total_epochs].
      total_epochs: T, the length of the run.

    Returns:
      float64 [C] probabilities: instance-balanced at t = 0, class-balanced at t = T.
    """
    if total_epochs <= 0:
        raise ValueError(f"total_epochs must be positive, got {total_epochs}")
    if not 0 <= epoch <= total_epochs:
        raise ValueError(f"epoch must lie in [0, total_epochs={total_epochs}], got {epoch}")
    progress = epoch / total_epochs
    return (1.0 - progress) * class_probabilities(class_counts, 1.0) + progress * class_probabilities(class_counts, 0.0)


def class_weighted_order(
    labels: np.ndarray, class_probs: np.ndarray, rng: np.random.Generator, num_samples: int
) -> np.ndarray:
    """Draws `num_samples` indices: a class from `class_probs`, then an instance of it uniformly, with replacement.

    Args:
      labels: [N] integer labels.
      class_probs: [C] class probabilities, C > max label; classes absent from `labels` must have probability 0.
      rng: the generator to draw from.
      num_samples: length of the returned order.

    Returns:
      int64 [num_samples] indices into `labels`.
    """
    counts = _class_counts(labels)
    class_probs = np.asarray(class_probs, dtype=np.float64)
    if len(class_probs) < len(counts):
        raise ValueError(f"class_probs has {len(class_probs)} entries but labels reach class {len(counts) - 1}")
    counts = np.pad(counts, (0, len(class_probs) - len(counts)))
    if (class_probs[counts == 0] > 0).any():
        raise ValueError("class_probs gives positive probability to a class with no examples in labels")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    by_class, starts = _grouped_by_class(labels, counts)
    classes = rng.choice(len(class_probs), size=num_samples, p=class_probs)
    offsets = np.floor(rng.random(num_samples) * counts[classes]).astype(np.int64)
    return by_class[starts[classes] + offsets].astype(np.int64)


def instance_uniform_order(labels: np.ndarray, epoch: int, seed: int) -> np.ndarray:
    """Instance-uniform sampling: a random permutation of all N indices (each example once per epoch).

    Args:
      labels: [N] integer labels (only their number is used).
      epoch: 0-indexed epoch.
      seed: run seed.

    Returns:
      int64 [N] permutation.
    """
    return _epoch_rng(seed, epoch).permutation(len(labels)).astype(np.int64)


def _class_power_order(labels: np.ndarray, epoch: int, seed: int, num_samples: int | None, power: float):
    probs = class_probabilities(_class_counts(labels), power)
    return class_weighted_order(labels, probs, _epoch_rng(seed, epoch), _epoch_length(labels, num_samples))


def class_balanced_order(labels: np.ndarray, epoch: int, seed: int, num_samples: int | None = None) -> np.ndarray:
    """Class-balanced sampling: every class equally likely (q = 0), with replacement.

    Args:
      labels: [N] integer labels.
      epoch: 0-indexed epoch.
      seed: run seed.
      num_samples: epoch length; N when None.

    Returns:
      int64 [num_samples] indices.
    """
    return _class_power_order(labels, epoch, seed, num_samples, power=0.0)


def square_root_order(labels: np.ndarray, epoch: int, seed: int, num_samples: int | None = None) -> np.ndarray:
    """Square-root sampling: class probability proportional to sqrt(n_c) (q = 1/2), with replacement.

    Args:
      labels: [N] integer labels.
      epoch: 0-indexed epoch.
      seed: run seed.
      num_samples: epoch length; N when None.

    Returns:
      int64 [num_samples] indices.
    """
    return _class_power_order(labels, epoch, seed, num_samples, power=0.5)


def progressively_balanced_order(
    labels: np.ndarray, epoch: int, seed: int, total_epochs: int, num_samples: int | None = None
) -> np.ndarray:
    """Progressively-balanced sampling: moves linearly from instance- to class-balanced over `total_epochs`.

    Args:
      labels: [N] integer labels.
      epoch: t, 0-indexed, in [0, total_epochs].
      seed: run seed.
      total_epochs: T (bind it with `make_sampler("progressive", total_epochs=T)` for the pipeline).
      num_samples: epoch length; N when None.

    Returns:
      int64 [num_samples] indices drawn with `progressive_class_probabilities(counts, epoch, total_epochs)`.
    """
    probs = progressive_class_probabilities(_class_counts(labels), epoch, total_epochs)
    return class_weighted_order(labels, probs, _epoch_rng(seed, epoch), _epoch_length(labels, num_samples))


def oversample_order(labels: np.ndarray, epoch: int, seed: int) -> np.ndarray:
    """Random over-sampling: every present class brought to n_max examples, then shuffled.

    Each class keeps all its examples `n_max // n_c` times plus `n_max % n_c` of them drawn without replacement,
    so every instance appears floor or ceil of `n_max / n_c` times (the least-variance way to reach n_max).

    Args:
      labels: [N] integer labels.
      epoch: 0-indexed epoch.
      seed: run seed.

    Returns:
      int64 [C_present * n_max] indices, exactly n_max per present class.
    """
    counts = _class_counts(labels)
    rng = _epoch_rng(seed, epoch)
    n_max = counts.max()
    by_class, starts = _grouped_by_class(labels, counts)
    parts = []
    for c in np.flatnonzero(counts):
        members = by_class[starts[c]: starts[c] + counts[c]]
        repeats, remainder = divmod(int(n_max), int(counts[c]))
        parts.append(np.tile(members, repeats))
        parts.append(rng.choice(members, size=remainder, replace=False))
    return rng.permutation(np.concatenate(parts)).astype(np.int64)


def undersample_order(labels: np.ndarray, epoch: int, seed: int) -> np.ndarray:
    """Random under-sampling: every present class reduced to n_min examples (without replacement), then shuffled.

    Args:
      labels: [N] integer labels.
      epoch: 0-indexed epoch.
      seed: run seed.

    Returns:
      int64 [C_present * n_min] indices, exactly n_min per present class, no index twice.
    """
    counts = _class_counts(labels)
    rng = _epoch_rng(seed, epoch)
    n_min = counts[counts > 0].min()
    by_class, starts = _grouped_by_class(labels, counts)
    parts = [
        rng.choice(by_class[starts[c]: starts[c] + counts[c]], size=n_min, replace=False)
        for c in np.flatnonzero(counts)
    ]
    return rng.permutation(np.concatenate(parts)).astype(np.int64)


_SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "instance": instance_uniform_order,
    "class_balanced": class_balanced_order,
    "square_root": square_root_order,
    "progressive": progressively_balanced_order,
    "oversample": oversample_order,
    "undersample": undersample_order,
}


class PartnerDraws(Protocol):
    """Draws a partner for each example of a batch (`partner_draws(labels, size, rng)` -> int64 [size] indices), for a
    method that trains on pairs (BBN's re-balancing branch)."""

    def __call__(self, labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray: ...


def reversed_partners(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """BBN's reversed sampler (`lib/dataset/imbalance_cifar.py`): `size` independent draws, a class with probability
    proportional to `n_max / n_c`, then an instance of it uniformly, both with replacement (one per example of the
    uniform batch, unrelated to it)."""
    return class_weighted_order(labels, class_probabilities(_class_counts(labels), -1.0), rng, size)


PARTNER_SAMPLERS: dict[str, PartnerDraws] = {"reversed": reversed_partners}


def make_sampler(name: str, **options) -> Sampler:
    """The sampler called `name`, with its extra options (`num_samples`, `total_epochs`) bound.

    Args:
      name: one of "instance", "class_balanced", "square_root", "progressive", "oversample", "undersample".
      **options: keyword options of that sampler; "progressive" needs `total_epochs`.

    Returns:
      A `Sampler`: `sampler(labels, epoch, seed) -> index order`.
    """
    if name not in _SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(_SAMPLERS)}")
    if name == "progressive" and "total_epochs" not in options:
        raise ValueError("the 'progressive' sampler needs total_epochs=T (the number of training epochs)")
    return functools.partial(_SAMPLERS[name], **options)


def process_share(global_batch: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """This process's contiguous share of a global batch (multi-host: each host loads only its share).

    Args:
      global_batch: [B, ...] the global batch (indices or data), B divisible by `process_count`.
      process_index: `jax.process_index()`.
      process_count: `jax.process_count()`.

    Returns:
      [B / process_count, ...] rows `process_index * B/P` to `(process_index + 1) * B/P`.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must lie in [0, process_count={process_count}), got {process_index}")
    size = len(global_batch)
    if size % process_count:
        raise ValueError(
            f"global batch size {size} does not divide by the process count {process_count}; "
            f"choose a multiple of {process_count}"
        )
    share = size // process_count
    return global_batch[process_index * share: (process_index + 1) * share]

