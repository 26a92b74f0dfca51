r"""DisAlign (Zhang et al., CVPR 2021): adaptive calibration of a trained classifier's logits and the generalized
re-weighting (GRW) loss that trains it, as the classification code computes them (`Megvii-BaseDetection/DisAlign`
with `cvpods`' `DisAlignLinear` and `grw_loss.py`).

Differences from the reference code: none in the math. The paper writes the calibration as
:math:`(1 - \sigma) z + \sigma(\alpha z + \beta)`; the classification code computes
:math:`(1 + \sigma \alpha) z + \sigma \beta` with :math:`\alpha` starting at one, which ltjax follows (the two are
reparameterisations, :math:`\alpha_{paper} = 1 + \alpha_{code}`, but start and weight decay differ).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_class_vector, check_range, check_same_batch_shape
from ltjax.losses.class_vectors import _counts, normalize_class_weights


def grw_class_weights(class_counts: jax.Array, *, rho: float = 1.2) -> jax.Array:
    r"""Generalized re-weighting: :math:`w_c = (n_c / N)^{-\rho}`, rescaled to sum to C.

    Args:
      class_counts: `[C]` training examples per class (>= 1).
      rho: the exponent (ImageNet-LT: 1.2; 0: every weight 1). May be traced.

    Returns:
      `[C]` weights summing to C.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses import grw_class_weights
      >>> [round(w, 4) for w in grw_class_weights(jnp.array([100, 10, 1]), rho=1.0).tolist()]
      [0.0270, 0.2703, 2.7027]
    """
    check_range(rho, 0.0, float("inf"), "rho")
    counts = _counts(class_counts)
    frequencies = counts / jnp.sum(counts, axis=-1, keepdims=True)
    return normalize_class_weights(jnp.exp(-_math.like(rho, frequencies) * jnp.log(frequencies)), "num_classes")


@_math.per_example_loss
def grw_loss(logits: jax.Array, labels: jax.Array, *, class_counts: jax.Array, rho: float = 1.2) -> jax.Array:
    r"""DisAlign's generalized re-weighting loss: :math:`\ell_i = w_{y_i} \mathrm{CE}(z_i, y_i)` with the weights of
    `grw_class_weights`.

    The reference reduces with PyTorch's weighted mean, :math:`\sum_i w_{y_i} \mathrm{CE}_i / \sum_i w_{y_i}`
    (`losses.weighted_mean(grw_loss(...), grw_class_weights(...)[labels])`), so the weights' sum-to-C scale cancels.
    The paper's KL divergence to a re-weighted reference distribution is this loss for one-hot labels.

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`), the calibrated logits (`disalign_logits`).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      class_counts: `[C]` training examples per class (>= 1).
      rho: the re-weighting exponent (ImageNet-LT: 1.2; 0: cross-entropy). May be traced.

    Returns:
      `[...]` per-example weighted losses.

    Raises:
      ValueError: bad logits, labels or counts; a concrete negative `rho`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses import grw_loss
      >>> grw_loss(jnp.array([[2.0, 0.5, -1.0]]), jnp.array([2]), class_counts=jnp.array([100, 10, 1])).tolist()
      [9.1127]
    """
    num_classes = logits.shape[-1]
    check_class_vector(class_counts, num_classes, "class_counts")
    weights = grw_class_weights(_math.like(class_counts, logits), rho=_math.like(rho, logits))
    return _math.weight_per_example(_math.cross_entropy(_math.as_compute(logits), labels), weights, labels)


def disalign_logits(logits: jax.Array, confidence: jax.Array, *, logit_scale: jax.Array,
                    logit_bias: jax.Array) -> jax.Array:
    r"""DisAlign's adaptive calibration: :math:`\hat z_c = (1 + \sigma \alpha_c) z_c + \sigma \beta_c`, with the
    per-example confidence :math:`\sigma = \mathrm{sigmoid}(v^\top x + v_0)` given as its pre-sigmoid value.

    Args:
      logits: `[..., C]` the frozen classifier's logits `W x + b`.
      confidence: `[...]` :math:`v^\top x + v_0`, the confidence layer's output before the sigmoid.
      logit_scale: `[C]` :math:`\alpha` (the reference starts it at ones).
      logit_bias: `[C]` :math:`\beta` (starts at zeros).

    Returns:
      `[..., C]` calibrated logits in `promote(float32, logits dtype)`.

    Raises:
      ValueError: a confidence not of the logits' batch shape, or per-class vectors not `[C]`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses import disalign_logits
      >>> disalign_logits(jnp.array([[2.0, -1.0]]), jnp.array([0.0]), logit_scale=jnp.ones(2),
      ...                 logit_bias=jnp.array([0.0, 1.0])).tolist()
      [[3.0, -1.0]]
    """
    num_classes = logits.shape[-1]
    check_class_vector(logit_scale, num_classes, "logit_scale")
    check_class_vector(logit_bias, num_classes, "logit_bias")
    check_same_batch_shape(confidence, jnp.zeros(logits.shape[:-1]), "confidence")
    logits = _math.as_compute(logits)
    sigma = jax.nn.sigmoid(_math.like(confidence, logits))[..., None]
    return (1.0 + sigma * _math.like(logit_scale, logits)) * logits + sigma * _math.like(logit_bias, logits)
