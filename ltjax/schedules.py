"""Deferred (two-phase) schedules as pure functions of the 0-indexed epoch.

Each returns a traced value when the epoch is traced, so a jitted train step switches phase without recompiling.
The default switch epochs are the reference repositories' CIFAR recipes (200 epochs); the loss switches there use
0-indexed epochs (`epoch // 160`, `epoch >= 100`, ...), as do these functions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses.class_vectors import class_balanced_weights


def phase_active(epoch, start_epoch: int) -> jax.Array:
    """Whether the deferred phase that starts at `start_epoch` is on: `epoch >= start_epoch`."""
    return jnp.asarray(epoch) >= start_epoch


def drw_class_weights(class_counts: jax.Array, epoch, *, switch_epoch: int = 160, beta: float = 0.9999) -> jax.Array:
    """Deferred re-weighting (LDAM-DRW): unit weights, then class-balanced weights (sum C) from `switch_epoch`.

    The reference picks beta from `[0, 0.9999][epoch // 160]`; beta = 0 gives unit weights.
    """
    weights = class_balanced_weights(class_counts, beta=beta)
    return jnp.where(phase_active(epoch, switch_epoch), weights, jnp.ones_like(weights))


def dffds_active(epoch, *, trigger_epoch: int = 130) -> jax.Array:
    """D-FFDS: cross-entropy before `trigger_epoch`, the FFDS criterion from it on.

    Start a fresh `dynasmooth` state at the trigger epoch: that epoch then trains with plain CE while it collects
    the first group means (the reference builds a new criterion there), and FFDS proper begins one epoch later.
    """
    return phase_active(epoch, trigger_epoch)


def ib_active(epoch, *, start_epoch: int = 100) -> jax.Array:
    """Influence-balanced loss: plain CE before `start_epoch` (IB reference: `start_ib_epoch = 100`)."""
    return phase_active(epoch, start_epoch)


def kps_ga_active(epoch, *, start_epoch: int = 120) -> jax.Array:
    """KPS gradient adjustment: per-class scales from `start_epoch` (the reference's `weighted = epoch >= 120`)."""
    return phase_active(epoch, start_epoch)


def swrm_active(epoch, *, num_epochs: int = 200, active_epochs: int = 60) -> jax.Array:
    """SWRM: cross-entropy, then the SWRM loss for the last `active_epochs` of `num_epochs` (CIFAR: from 140)."""
    if not 0 <= active_epochs <= num_epochs:
        raise ValueError(f"active_epochs must lie in [0, num_epochs={num_epochs}], got {active_epochs}")
    return phase_active(epoch, num_epochs - active_epochs)
