"""Vector-scaling loss (Kini et al., NeurIPS 2021): a per-class scale and offset on the logits, then cross-entropy."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_class_vector, check_class_weights, check_counts, check_range


def vs_logit_scales_and_offsets(
    class_counts: jax.Array, *, gamma: float = 0.3, tau: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    r"""The VS loss's per-class multiplicative and additive logit adjustments (Kini et al., NeurIPS 2021).

    .. math:: \Delta_c = (n_c / n_{max})^\gamma, \qquad \iota_c = \tau \log \pi_c, \quad \pi_c = n_c / \sum_k n_k

    The largest class gets :math:`\Delta = 1`, rarer classes a smaller one (their logits shrink). :math:`n_{max}`
    is a max over the counts, so class order does not matter.

    Args:
      class_counts: `[C]` training examples per class (>= 1).
      gamma: exponent of the multiplicative factor, >= 0; 0 gives unit scales (logit adjustment). May be traced.
      tau: weight of the log-prior offset; 0 gives zero offsets (CDT). May be traced.

    Returns:
      `(scales, offsets)`, each `[C]` in `promote(float32, counts dtype)`.

    Raises:
      ValueError: counts that are not a vector of finite values >= 1, or a (concrete) negative gamma.

    Differences from the reference code: `orparask/VS-Loss` divides the logits by
    :math:`(1/n_c)^\gamma / \min_k (1/n_k)^\gamma`; ltjax multiplies by its reciprocal :math:`(n_c/n_{max})^\gamma`,
    the same vector up to rounding.
    """
    check_range(gamma, 0.0, float("inf"), "gamma")
    check_counts(class_counts)
    counts = _math.as_compute(class_counts)
    gamma, tau = (jnp.asarray(value, counts.dtype) for value in (gamma, tau))
    scales = (counts / jnp.max(counts, axis=-1, keepdims=True)) ** gamma
    offsets = tau * jnp.log(counts / jnp.sum(counts, axis=-1, keepdims=True))
    return scales, offsets


@_math.per_example_loss
def vs_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    gamma: float = 0.3,
    tau: float = 1.0,
    class_weights: jax.Array | None = None,
) -> jax.Array:
    r"""Vector-scaling (VS) loss (Kini et al., Label-Imbalanced and Group-Sensitive Classification under
    Overparameterization, NeurIPS 2021).

    .. math:: \ell = -w_y \log \mathrm{softmax}(\Delta \odot z + \iota)_y, \qquad
      \Delta_c = (n_c / n_{max})^\gamma, \quad \iota_c = \tau \log \pi_c

    (`vs_logit_scales_and_offsets`). `gamma=0` is the logit-adjusted loss (the reference's `LA`, without its
    `1e-12`), `tau=0` CDT (the reference's `CDT`), and `gamma=0, tau=0` cross-entropy. The adjustment is used only
    in the loss: predict with the argmax of the raw logits. The gradient w.r.t. `z` is
    :math:`w_y \Delta \odot (\mathrm{softmax}(\Delta z + \iota) - \mathrm{onehot}(y))`.

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`), from a plain linear classifier.
      labels: `[...]` integer class indices; out-of-range gives NaN.
      class_counts: `[C]` training examples per class (>= 1), in any class order.
      gamma: exponent of the multiplicative factor, >= 0 (CIFAR script default 0.3). May be traced.
      tau: weight of the additive log-prior term (CIFAR script default 1.0). May be traced.
      class_weights: optional `[C]` weights `w` (the reference's `--train_rule Reweight` or `DRW`:
        `schedules.drw_class_weights`).

    Returns:
      `[...]` per-example losses `w_y l`. Without class weights the reference reduces with the batch mean
      (`reduction.mean`); with them with PyTorch's `sum_i w_{y_i} l_i / sum_i w_{y_i}` (`reduction.weighted_mean`).

    Raises:
      ValueError: mismatched shapes, counts that are not finite and >= 1, or a (concrete) negative gamma.

    Differences from the reference code: none in the value; the scale is a multiplication by
    :math:`(n_c/n_{max})^\gamma` instead of a division by its reciprocal (equal up to rounding).

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.vector_scaling import vs_loss
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> vs_loss(logits, labels, class_counts=counts).tolist()
      [0.0405, 3.2014]

    References:
      Kini, Paraskevas, Oymak, Thrampoulidis, NeurIPS 2021 (github.com/orparask/VS-Loss, `class_imbalance/`).
    """
    num_classes = logits.shape[-1]
    check_class_vector(class_counts, num_classes, "class_counts")
    check_class_weights(class_weights, num_classes)
    scales, offsets = vs_logit_scales_and_offsets(
        _math.like(class_counts, logits), gamma=_math.like(gamma, logits), tau=_math.like(tau, logits))
    adjusted = _math.as_compute(logits) * scales + offsets
    return _math.weight_per_example(_math.cross_entropy(adjusted, labels), _math.like(class_weights, logits), labels)
