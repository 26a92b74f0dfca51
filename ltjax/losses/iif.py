"""IIF: cross-entropy on logits scaled by the inverse image frequency (Alexandridis et al., IEEE TIP 2023)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_class_vector, check_class_weights
from ltjax.losses.class_vectors import iif_weights


def iif_logits(logits: jax.Array, *, class_counts: jax.Array, variant: str = "raw", norm_order: float = 0):
    r"""IIF-scaled logits :math:`z \odot \mathrm{iif}`: what IIF trains on and predicts with (also post hoc, on a
    cross-entropy model's logits).

    `variant` and `norm_order` pick code paths and stay static (Python values).

    Returns:
      `[..., C]` logits in the logits' compute dtype.
    """
    check_class_vector(class_counts, jnp.shape(logits)[-1], "class_counts")
    counts = _math.like(class_counts, logits)
    return _math.as_compute(logits) * iif_weights(counts, variant=variant, norm_order=norm_order)


@_math.per_example_loss
def iif_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    variant: str = "raw",
    norm_order: float = 0,
    class_weights: jax.Array | None = None,
) -> jax.Array:
    r"""Inverse Image Frequency loss.

    .. math:: \ell = -w_y \log \mathrm{softmax}(z \odot \mathrm{iif})_y

    with `iif = iif_weights(counts, variant=...)`: raw `log(N/n)` (the paper), smooth, rel, normit, gombit, base2,
    base10. Predict with `iif_logits` (the reference evaluates on the scaled logits).

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      class_counts: `[C]` training examples per class.
      variant: one of `class_vectors.IIF_VARIANTS` (the reference's CLI default is raw; its recipes use smooth).
      norm_order: p-norm normalisation of the vector (0: off).
      class_weights: optional `[C]` weights (the reference's `--deffered` flag passes `N / n`, unnormalised).

    Returns:
      `[...]` per-example losses (the reference takes a plain batch mean, also with weights).

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax import losses
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> losses.iif_loss(logits, labels, class_counts=counts).tolist()
      [0.9653, 0.6620]

    References:
      Alexandridis et al., Inverse Image Frequency for Long-tailed Image Recognition, IEEE TIP 2023
      (github.com/kostas1515/iif, `classification/custom.py`).
    """
    num_classes = logits.shape[-1]
    check_class_weights(class_weights, num_classes)
    scaled = iif_logits(logits, class_counts=class_counts, variant=variant, norm_order=norm_order)
    return _math.weight_per_example(_math.cross_entropy(scaled, labels), class_weights, labels)
