"""Influence-balanced loss (Park et al., ICCV 2021): down-weights examples with a large influence on the decision
boundary."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_choice, check_class_vector, check_same_batch_shape
from ltjax.losses.class_vectors import class_balanced_weights, inverse_frequency_weights

INFLUENCE_BALANCED_VARIANTS = ("ib", "ib_cb", "ib_focal")


@_math.per_example_loss
def influence_balanced_loss(
    logits: jax.Array,
    labels: jax.Array,
    feature_norms: jax.Array,
    *,
    class_counts: jax.Array,
    variant: str = "ib",
    alpha: float = 1000.0,
    epsilon: float = 1e-3,
    beta: float = 0.9999,
    gamma: float = 1.0,
    stop_gradient_influence: bool = False,
) -> jax.Array:
    r"""Influence-balanced loss, with its class-balanced (IB-CB) and focal (IB-focal) variants.

    .. math::
      \ell = w_y\, \phi(p_y)\, \mathrm{CE}(z, y) \cdot \frac{\alpha}{\lVert p - \mathrm{onehot}(y) \rVert_1
      \lVert h \rVert_1 + \epsilon}

    where :math:`\lVert p - \mathrm{onehot}(y) \rVert_1 = 2 (1 - p_y)` and :math:`\lVert h \rVert_1` is the L1 norm
    of the penultimate features. `ib` and `ib_focal` use inverse-frequency weights :math:`w \propto 1/n` (sum C),
    `ib_cb` class-balanced weights (sum C); :math:`\phi = (1 - p_y)^\gamma` for `ib_focal`, else 1. As in the
    reference, nothing is detached: the gradient flows through the influence term into the logits and the features.

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      feature_norms: `[...]` L1 norms of the penultimate features, `sum(abs(h), -1)`.
      class_counts: `[C]` training examples per class.
      variant: `"ib"`, `"ib_cb"` or `"ib_focal"`.
      alpha: influence scale (the CIFAR script uses 1000).
      epsilon: keeps the influence finite for a perfectly fit example.
      beta: class-balanced beta of `ib_cb`.
      gamma: focusing exponent of `ib_focal`.
      stop_gradient_influence: treat the influence factor as a constant weight (the paper's reading).

    Returns:
      `[...]` per-example losses; the reference takes a plain batch mean (`reduction.mean`).

    Differences from the reference code: the focal variant takes `p_y` from the unweighted log-softmax (the
    reference uses `exp(-w_y CE)`), as for `focal_loss`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax import losses
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> losses.influence_balanced_loss(logits, labels, jnp.array([10.0, 4.0]), class_counts=counts).tolist()
      [6.4918, 456.6199]

    References:
      Park et al., Influence-Balanced Loss for Imbalanced Visual Classification, ICCV 2021
      (github.com/pseulki/IB-Loss, `losses.py`).
    """
    num_classes = logits.shape[-1]
    check_class_vector(class_counts, num_classes, "class_counts")
    check_same_batch_shape(feature_norms, labels, "feature_norms")
    check_choice(variant, INFLUENCE_BALANCED_VARIANTS, "variant")
    # ||p - onehot(y)||_1 = 2 (1 - p_y) from the other classes' probabilities, and CE = -log p_y from it: both keep
    # their precision as p_y -> 1, where the influence term ~ 1 / (1 - p_y) multiplies the tiny cross-entropy.
    log_prob_true, log_complement = _math.log_prob_and_complement(logits, labels)
    one_minus_p = jnp.exp(log_complement)
    log_prob_true = _math.log_prob_from_complement(log_prob_true, log_complement)
    alpha, epsilon = _math.like(alpha, logits), _math.like(epsilon, logits)
    influence = alpha / (2.0 * one_minus_p * _math.like(feature_norms, logits) + epsilon)
    if stop_gradient_influence:
        influence = jax.lax.stop_gradient(influence)
    losses = -log_prob_true * influence
    if variant == "ib_focal":
        losses = losses * _math.power_of_nonnegative(one_minus_p, _math.like(gamma, logits))
    counts = _math.like(class_counts, logits)
    if variant == "ib_cb":
        class_weights = class_balanced_weights(counts, beta=_math.like(beta, logits))
    else:
        class_weights = inverse_frequency_weights(counts)
    return _math.weight_per_example(losses, class_weights, labels)
