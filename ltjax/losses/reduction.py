"""Batch reductions of per-example losses.

The long-tail reference repos reduce in two ways, and the difference changes the effective learning rate:
FFDS, IB, IIF, the focal variants and the TF class-balanced code divide the sum by the batch size (`mean`);
PyTorch's `cross_entropy(weight=w)`, used by LDAM-DRW and KPS-DRW, divides by the sum of the examples' class weights
(`weighted_mean`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses import _math


def mean(losses: jax.Array) -> jax.Array:
    """`sum(losses) / num_examples` over every axis."""
    return jnp.mean(_math.as_compute(losses))


def weighted_mean(weighted_losses: jax.Array, sample_weights: jax.Array) -> jax.Array:
    r"""PyTorch's weighted mean: :math:`\sum_i w_{y_i} \ell_i / \sum_i w_{y_i}`.

    Args:
      weighted_losses: `[...]` losses that already carry their class weight (what a loss called with
        `class_weights=w` returns).
      sample_weights: `[...]` the weights `w[labels]` of the same examples.

    Returns:
      A scalar in the losses' compute dtype; 0 when every weight is 0 (an empty or fully masked batch), never NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax import losses
      >>> losses.weighted_mean(jnp.array([1.0, 6.0]), jnp.array([1.0, 3.0]))
      Array(1.75, dtype=float32)
    """
    if jnp.shape(weighted_losses) != jnp.shape(sample_weights):
        raise ValueError(
            f"sample_weights shape {jnp.shape(sample_weights)} must equal the losses' shape "
            f"{jnp.shape(weighted_losses)}"
        )
    weighted_losses = _math.as_compute(weighted_losses)
    total_weight = jnp.sum(_math.like(sample_weights, weighted_losses))
    safe_total = jnp.where(total_weight != 0, total_weight, 1.0)
    return jnp.where(total_weight != 0, jnp.sum(weighted_losses) / safe_total, 0.0)
