"""Trace-time input checks shared by every loss and per-class helper.

Shapes and dtypes are static under `jit`, so they are checked on every call. Values (counts must be positive) are
checked only when the array is concrete: inside `jit` or `vmap` they are tracers and cannot be inspected, which is
why `ClassStats.from_counts` checks counts once, eagerly, before training starts.
"""
from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np


def check_logits_and_labels(logits: jax.Array, labels: jax.Array, *, logits_name: str = "logits") -> int:
    """Checks `logits [..., C]` against integer `labels [...]` and returns C."""
    if logits.ndim < 1:
        raise ValueError(f"{logits_name} must have a trailing class axis [..., C], got a scalar")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(f"{logits_name} must be floating point (float32 or bfloat16), got {logits.dtype}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integer class indices, got dtype {labels.dtype}; convert one-hot targets with argmax"
        )
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels shape {labels.shape} must equal {logits_name} shape without its class axis "
            f"{logits.shape[:-1]} ({logits_name} is {logits.shape})"
        )
    return logits.shape[-1]


def check_class_vector(vector: jax.Array, num_classes: int, name: str) -> None:
    """Checks that a per-class vector has shape [C]."""
    if jnp.ndim(vector) != 1 or jnp.shape(vector)[0] != num_classes:
        raise ValueError(f"{name} must have shape [{num_classes}] (one value per class), got {jnp.shape(vector)}")


def check_same_batch_shape(values: jax.Array, labels: jax.Array, name: str) -> None:
    """Checks that a per-example input has the labels' shape."""
    if jnp.shape(values) != labels.shape:
        raise ValueError(f"{name} must have the labels' shape {labels.shape}, got {jnp.shape(values)}")


def check_counts(class_counts: jax.Array, name: str = "class_counts") -> None:
    """Checks a count vector's shape, and its values when they are concrete: every class needs >= 1 example."""
    if jnp.ndim(class_counts) != 1 or jnp.shape(class_counts)[0] < 1:
        raise ValueError(f"{name} must be a non-empty 1-D vector [C], got shape {jnp.shape(class_counts)}")
    if isinstance(class_counts, jax.core.Tracer):
        return
    counts = np.asarray(class_counts)
    if not np.all(counts > 0):
        empty = np.flatnonzero(~(counts > 0)).tolist()
        raise ValueError(
            f"{name} must be positive for every class; classes {empty[:10]}{'...' if len(empty) > 10 else ''} "
            f"have {counts[empty[:10]].tolist()}. Drop classes with no training examples, or give them a count "
            "of at least 1, before computing per-class statistics"
        )


def check_choice(value: str, choices: Iterable[str], name: str) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
