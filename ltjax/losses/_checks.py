"""Trace-time input checks shared by every loss and per-class helper.

Shapes and dtypes are static under `jit`, so they are checked on every call. Values are checked when the array is
concrete; hyper-parameters that are traced (inside `jit` or `vmap`) cannot be inspected and are not, while traced
counts are checked at run time (`check_counts`), because a zero or infinite count would otherwise turn every loss
into NaN or inf without a word.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np


def check_logits_and_labels(logits: jax.Array, labels: jax.Array, *, logits_name: str = "logits") -> int:
    """Checks `logits [..., C]` against integer `labels [...]` and returns C."""
    if logits.ndim < 1:
        raise ValueError(f"{logits_name} must have a trailing class axis [..., C], got a scalar")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(f"{logits_name} must be floating point (bfloat16, float32, float64), got {logits.dtype}")
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


def check_branch_logits_and_labels(branch_logits: jax.Array, labels: jax.Array, *, name: str, branch: str,
                                   num_branches: int | None = None) -> int:
    """Checks `branch_logits [..., B, K, C]` (each example's logits from K branches or experts, of a loss that is a
    function of the whole batch, so the batch axis is required) against integer `labels [..., B]`; returns C."""
    shape = f"[..., B, {'K' if num_branches is None else num_branches}, C]"
    if branch_logits.ndim < 3 or branch_logits.shape[-2] != (num_branches or branch_logits.shape[-2]):
        raise ValueError(f"{name} must be {shape}: a batch axis (the loss is a function of the whole batch), the "
                         f"{branch} axis and a class axis, got shape {branch_logits.shape}")
    if branch_logits.shape[-2] < 1:
        raise ValueError(f"{name} needs at least one {branch} on axis -2, got shape {branch_logits.shape}")
    if labels.shape != branch_logits.shape[:-2]:
        raise ValueError(f"labels shape {labels.shape} must equal {name} shape without its {branch} and class axes "
                         f"{branch_logits.shape[:-2]} ({name} is {branch_logits.shape})")
    per_example = jax.ShapeDtypeStruct(branch_logits.shape[:-2] + branch_logits.shape[-1:], branch_logits.dtype)
    return check_logits_and_labels(per_example, labels, logits_name=name)


def check_class_vector(vector: jax.Array, num_classes: int, name: str) -> None:
    """Checks that a per-class vector has shape [C]."""
    if jnp.ndim(vector) != 1 or jnp.shape(vector)[0] != num_classes:
        raise ValueError(f"{name} must have shape [{num_classes}] (one value per class), got {jnp.shape(vector)}")


def check_class_weights(class_weights: jax.Array | None, num_classes: int) -> None:
    """Checks optional per-class weights: None, or shape [C]."""
    if class_weights is not None:
        check_class_vector(class_weights, num_classes, "class_weights")


def check_same_batch_shape(values: jax.Array, labels: jax.Array, name: str) -> None:
    """Checks that a per-example input has the labels' shape."""
    if jnp.shape(values) != labels.shape:
        raise ValueError(f"{name} must have the labels' shape {labels.shape}, got {jnp.shape(values)}")


# Counts are whole numbers that floating point holds exactly up to 2^53; beyond, they would round (and float32
# overflows near 3.4e38, which turns the prior into NaN).
MAX_COUNT = 2**53


def _raise_if_invalid_counts(counts, *, name: str) -> None:
    counts = np.asarray(counts)
    valid = np.isfinite(counts) & (counts > 0)
    if not np.all(valid):
        bad = np.flatnonzero(~valid).tolist()
        raise ValueError(
            f"{name} must be finite and positive for every class; classes {bad[:10]}{'...' if len(bad) > 10 else ''} "
            f"have {counts[bad[:10]].tolist()}. Drop classes with no training examples, or give them a count "
            "of at least 1, before computing per-class statistics"
        )
    if np.any(counts > MAX_COUNT):
        big = np.flatnonzero(counts > MAX_COUNT).tolist()
        raise ValueError(
            f"{name} must be at most 2^53 = {MAX_COUNT:,} (the largest count a float holds exactly); classes "
            f"{big[:10]}{'...' if len(big) > 10 else ''} have {counts[big[:10]].tolist()}"
        )


def check_counts(class_counts: jax.Array, name: str = "class_counts") -> None:
    """Checks a count vector's shape, and its values: every class needs a finite count >= 1 example, at most 2^53.

    Concrete counts (the usual case: constants of the step) are checked here, at trace time. Traced counts (passed
    into `jit`, closed over by a jitted function, or swept under `vmap`) are checked when the computation runs: on
    the device, and only when a count is invalid does a host callback raise the same ValueError, so an invalid count
    is an error there too, never a silent NaN or inf, and valid counts cost no host round trip.
    """
    if jnp.ndim(class_counts) != 1 or jnp.shape(class_counts)[0] < 1:
        raise ValueError(f"{name} must be a non-empty 1-D vector [C], got shape {jnp.shape(class_counts)}")
    if isinstance(class_counts, jax.core.Tracer):
        valid = jnp.all(jnp.isfinite(class_counts) & (class_counts > 0) & (class_counts <= float(MAX_COUNT)))
        report = functools.partial(_raise_if_invalid_counts, name=name)
        jax.lax.cond(valid, lambda counts: None, lambda counts: jax.debug.callback(report, counts), class_counts)
        return
    _raise_if_invalid_counts(class_counts, name=name)


def concrete(value):
    """A hyper-parameter's Python value, or None when it is traced (under `jit` or `vmap` its value is unknown)."""
    if isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value).item() if np.ndim(value) == 0 else None


def check_range(value, low: float, high: float, name: str) -> None:
    """Checks that a (concrete) hyper-parameter lies in [low, high]; a traced one is not checked."""
    known = concrete(value)
    if known is not None and not low <= known <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {known}")


def check_choice(value: str, choices: Iterable[str], name: str) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
