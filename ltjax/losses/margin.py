"""Margin losses: a per-class margin on the target logit, then cross-entropy (LDAM, KPS, SWRM)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_class_vector, check_class_weights
from ltjax.losses.class_vectors import kps_margins, kps_radii, kps_scales, ldam_margins


def _margin_cross_entropy(
    logits: jax.Array, labels: jax.Array, target_shift: jax.Array, class_weights: jax.Array | None
) -> jax.Array:
    """`w_y * CE(z + target_shift * onehot(y), y)`: the form every loss of this module reduces to."""
    shifted = _math.shift_target_logit(_math.as_compute(logits), labels, target_shift)
    return _math.weight_per_example(_math.cross_entropy(shifted, labels), _math.like(class_weights, logits), labels)


@_math.per_example_loss
def ldam_loss(
    cosines: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    max_margin: float = 0.5,
    scale: float = 30.0,
    class_weights: jax.Array | None = None,
) -> jax.Array:
    r"""Label-distribution-aware margin loss (Cao et al., NeurIPS 2019).

    .. math:: \ell = -w_y \log \mathrm{softmax}\big(s\,(\cos\theta - m_y\,\mathrm{onehot}(y))\big)_y,
      \qquad m_c \propto n_c^{-1/4},\ \max_c m_c = m_{max}

    The margin is subtracted from the target cosine before scaling, as in `kaidic/LDAM-DRW/losses.py`.

    Args:
      cosines: `[..., C]` cosine logits from a normalised linear head.
      labels: `[...]` integer class indices; out-of-range gives NaN.
      class_counts: `[C]` training examples per class.
      max_margin: margin of the rarest class.
      scale: the scale `s` applied after the margin.
      class_weights: optional `[C]` weights; LDAM-DRW passes `schedules.drw_class_weights(...)` and reduces with
        `reduction.weighted_mean` (PyTorch `cross_entropy(weight=...)` semantics).

    Returns:
      `[...]` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax import losses
      >>> cosines, labels = jnp.array([[0.2, 0.1, -0.3], [0.2, 0.1, 0.4]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> losses.ldam_loss(cosines, labels, class_counts=counts).tolist()
      [4.1096, 9.0487]
    """
    num_classes = cosines.shape[-1]
    check_class_vector(class_counts, num_classes, "class_counts")
    check_class_weights(class_weights, num_classes)
    counts, max_margin, scale = (_math.like(value, cosines) for value in (class_counts, max_margin, scale))
    margins = _math.per_example(ldam_margins(counts, max_margin=max_margin), labels)
    return _margin_cross_entropy(scale * _math.as_compute(cosines), labels, -scale * margins, class_weights)


@_math.per_example_loss
def kps_loss(
    cosines: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    max_margin: float = 0.2,
    scale: float = 15.0,
    max_scale: float = 50.0,
    gradient_adjustment: bool | jax.Array = False,
    class_weights: jax.Array | None = None,
) -> jax.Array:
    r"""Key Point Sensitive loss (Li, Cheung and Hu, TPAMI 2022), with its gradient adjustment (GA).

    .. math:: z_j = S\,(r_j \cos\theta_j - m_y [j = y]), \qquad \ell = -w_y \log \mathrm{softmax}(z)_y

    with radii `r = kps_radii(counts)`, margins `m = kps_margins(counts)`, and `S = s` or, with GA, the
    per-example `S = kps_scales(counts)[y]` (larger for rarer classes). Predict with the raw cosines, as the
    reference does; the radii are a training-time device.

    Args:
      cosines: `[..., C]` cosine logits from a normalised linear head (no bias).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      class_counts: `[C]` training examples per class.
      max_margin: margin of the rarest class (CIFAR: 0.2).
      scale: `s` (CIFAR: 15).
      max_scale: upper clip of the GA scales.
      gradient_adjustment: use the per-class GA scales; a Python bool or a traced boolean scalar (so the switch
        at `schedules.kps_ga_active(epoch)` needs no recompilation).
      class_weights: optional `[C]` weights (the KPS-DRW variant; reduce with `reduction.weighted_mean`).

    Returns:
      `[...]` per-example losses.

    Differences from the reference code: margins and GA scales come from the counts, not from flipping the radius
    vector, so class order does not matter (equal to the reference up to count flooring on sorted classes).

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax import losses
      >>> cosines, labels = jnp.array([[0.2, 0.1, -0.3], [0.2, 0.1, 0.4]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> losses.kps_loss(cosines, labels, class_counts=counts, gradient_adjustment=True).tolist()
      [0.1898, 4.0768]
    """
    num_classes = cosines.shape[-1]
    check_class_vector(class_counts, num_classes, "class_counts")
    check_class_weights(class_weights, num_classes)
    counts, max_margin, scale, max_scale = (
        _math.like(value, cosines) for value in (class_counts, max_margin, scale, max_scale))
    sample_scale = jnp.where(
        gradient_adjustment,
        _math.per_example(kps_scales(counts, scale=scale, max_scale=max_scale), labels),
        scale,
    )
    radial = _math.as_compute(cosines) * kps_radii(counts) * sample_scale[..., None]
    margins = _math.per_example(kps_margins(counts, max_margin=max_margin), labels)
    return _margin_cross_entropy(radial, labels, -sample_scale * margins, class_weights)


@_math.per_example_loss
def swrm_loss(
    logits: jax.Array, labels: jax.Array, *, class_weights: jax.Array, margins: jax.Array
) -> jax.Array:
    r"""Similarity Window Reweighting and Margin loss (SWRM, seed paper eq. 4).

    .. math:: \ell = -w_y \log \frac{e^{z_y + m_y}}{e^{z_y + m_y} + \sum_{j \ne y} e^{z_j}}

    The margin is *added* to the target logit (the opposite sign of LDAM), as eq. 4 writes it. Weights and margins
    come from `swr_weights` and `swm_margins` (SWRM: fixed t-SNE coordinates; DySWRM: a trainable coordinate
    vector, in which the margins are differentiable).

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      class_weights: `[C]` SWR weights.
      margins: `[C]` SWM margins.

    Returns:
      `[...]` per-example losses; the batch reduction is the mean (ltjax decision, the paper is silent).

    Differences from the reference code: no public code exists; the open points (window order and edges, the
    similarity kernel, coordinate standardisation) are settled as `similarity_window` documents.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax import losses
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> weights, margins = jnp.array([0.5, 1.0, 2.0]), jnp.array([0.0, 0.1, 0.3])
      >>> losses.swrm_loss(logits, labels, class_weights=weights, margins=margins).tolist()
      [0.1207, 1.6456]
    """
    num_classes = logits.shape[-1]
    check_class_vector(class_weights, num_classes, "class_weights")
    check_class_vector(margins, num_classes, "margins")
    return _margin_cross_entropy(logits, labels, _math.per_example(_math.like(margins, logits), labels), class_weights)
