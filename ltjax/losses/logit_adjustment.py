"""Prior-offset losses: cross-entropy on logits shifted by the log class prior (logit adjustment, balanced softmax)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_class_vector, check_counts

# The reference adds this inside the log so a zero prior stays finite.
_PRIOR_EPSILON = 1e-12


def _log_adjustments(class_priors: jax.Array, tau: float, logits: jax.Array) -> jax.Array:
    """`log(pi^tau + 1e-12)` in the logits' compute dtype."""
    return jnp.log(_math.like(class_priors, logits) ** _math.like(tau, logits) + _PRIOR_EPSILON)


@_math.per_example_loss
def logit_adjusted_loss(
    logits: jax.Array, labels: jax.Array, *, class_priors: jax.Array, tau: float = 1.0
) -> jax.Array:
    r"""Logit-adjusted loss (Menon et al., ICLR 2021).

    .. math:: \ell = -\log \mathrm{softmax}\big(z + \log(\pi^\tau + 10^{-12})\big)_y

    Args:
      logits: `[..., C]` floating point.
      labels: `[...]` integer class indices; out-of-range gives NaN.
      class_priors: `[C]` training label frequencies `pi` (e.g. `ClassStats.prior`).
      tau: temperature; 0 gives cross-entropy.

    Returns:
      `[...]` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax import losses
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> losses.logit_adjusted_loss(logits, labels, class_priors=counts / counts.sum()).tolist()
      [0.0460, 3.0442]
    """
    num_classes = logits.shape[-1]
    check_class_vector(class_priors, num_classes, "class_priors")
    return _math.cross_entropy(_math.as_compute(logits) + _log_adjustments(class_priors, tau, logits), labels)


def posthoc_logit_adjustment(logits: jax.Array, *, class_priors: jax.Array, tau: float = 1.0) -> jax.Array:
    r"""Post-hoc logit adjustment for prediction (Menon et al.): :math:`z - \log(\pi^\tau + 10^{-12})`.

    Returns:
      `[..., C]` adjusted logits in the logits' compute dtype; predict with their argmax.
    """
    if jnp.ndim(logits) < 1:
        raise ValueError("logits must have a trailing class axis [..., C]")
    check_class_vector(class_priors, jnp.shape(logits)[-1], "class_priors")
    return _math.as_compute(logits) - _log_adjustments(class_priors, tau, logits)


@_math.per_example_loss
def balanced_softmax_loss(logits: jax.Array, labels: jax.Array, *, class_counts: jax.Array) -> jax.Array:
    r"""Balanced softmax (Ren et al., NeurIPS 2020): :math:`\ell = -\log \mathrm{softmax}(z + \log n)_y`.

    Equal to `logit_adjusted_loss` with `tau=1` (the counts and the priors differ by a constant). Predict with the
    plain logits.

    Returns:
      `[...]` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax import losses
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> losses.balanced_softmax_loss(logits, labels, class_counts=counts).tolist()
      [0.0460, 3.0442]
    """
    num_classes = logits.shape[-1]
    check_class_vector(class_counts, num_classes, "class_counts")
    check_counts(class_counts)
    return _math.cross_entropy(_math.as_compute(logits) + jnp.log(_math.like(class_counts, logits)), labels)
