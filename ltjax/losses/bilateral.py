r"""BBN's bilateral-branch loss (Zhou et al., "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed
Visual Recognition", CVPR 2020), as `Megvii-Nanjing/BBN` (`lib/core/combiner.py`, `bbn_mix`) computes it.

An example of the uniformly sampled batch and its partner from the reversed sampler go through the network
separately; the conventional branch's features of the first and the re-balancing branch's of the second meet in one
linear classifier, weighted by the cumulative-learning :math:`\alpha` (`ltjax.schedules.bbn_alpha`):

.. math::

    z = 2 \alpha W_c f_c + 2 (1 - \alpha) W_r f_r + b, \qquad
    \ell = \alpha \, \mathrm{CE}(z, y) + (1 - \alpha) \, \mathrm{CE}(z, y_r)

Differences from the reference code: none in the math. The paper writes :math:`\alpha W_c f_c + (1 - \alpha) W_r
f_r` with two classifiers; the code doubles the feature terms and adds one bias, unscaled, which ltjax follows (its
bilateral head returns each branch's logits with half the bias, so that the mix above is exact).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_logits_and_labels, check_range


def bbn_logits(conventional: jax.Array, rebalancing: jax.Array, *, alpha: float | jax.Array) -> jax.Array:
    r"""The mixed logits :math:`2 \alpha z_c + 2 (1 - \alpha) z_r` of two branches' logits (each with half the bias).

    Args:
      conventional: `[..., C]` the conventional branch's logits of the uniformly sampled examples.
      rebalancing: `[..., C]` the re-balancing branch's logits of their partners.
      alpha: the conventional branch's weight in [0, 1]. May be traced.

    Returns:
      `[..., C]` in `promote(float32, input dtypes)`.
    """
    check_range(alpha, 0.0, 1.0, "alpha")
    if conventional.shape != rebalancing.shape:
        raise ValueError(f"the branches' logits must have one shape, got {conventional.shape} and "
                         f"{rebalancing.shape}")
    dtype = jnp.promote_types(_math.compute_dtype(conventional), _math.compute_dtype(rebalancing))
    alpha = _math.like(alpha, jnp.zeros((), dtype))
    return 2 * alpha * conventional.astype(dtype) + 2 * (1 - alpha) * rebalancing.astype(dtype)


def bbn_loss(conventional: jax.Array, rebalancing: jax.Array, labels: jax.Array, partner_labels: jax.Array, *,
             alpha: float | jax.Array) -> jax.Array:
    r"""BBN's loss of each (example, partner) pair: :math:`\alpha \mathrm{CE}(z, y) + (1 - \alpha)
    \mathrm{CE}(z, y_r)` with :math:`z` = `bbn_logits` (the module's equation); the reference takes the batch mean.

    Args:
      conventional: `[..., C]` the conventional branch's logits of the examples (with half the bias).
      rebalancing: `[..., C]` the re-balancing branch's logits of their partners (with half the bias).
      labels: `[...]` the examples' labels; out of range gives NaN.
      partner_labels: `[...]` the partners' labels; likewise.
      alpha: the cumulative-learning weight (`ltjax.schedules.bbn_alpha`), in [0, 1]. May be traced.

    Returns:
      `[...]` per-pair losses; NaN where either label is out of range.

    Raises:
      ValueError: mismatched shapes, a concrete alpha outside [0, 1].

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses import bbn_loss
      >>> z = jnp.array([[1.0, 0.0]])
      >>> [round(v, 4) for v in bbn_loss(z, -z, jnp.array([0]), jnp.array([1]), alpha=1.0).tolist()]
      [0.1269]
    """
    num_classes = check_logits_and_labels(conventional, labels, logits_name="conventional")
    check_logits_and_labels(rebalancing, partner_labels, logits_name="rebalancing")
    logits = bbn_logits(conventional, rebalancing, alpha=alpha)
    weight = _math.like(alpha, logits)
    values = (weight * _math.cross_entropy(logits, labels)
              + (1 - weight) * _math.cross_entropy(logits, partner_labels))
    valid = (labels >= 0) & (labels < num_classes) & (partner_labels >= 0) & (partner_labels < num_classes)
    return jnp.where(valid, values, jnp.nan)
