r"""De-confounded training and TDE inference (Tang, Huang and Zhang, "Long-Tailed Classification by Keeping the Good
and Removing the Bad Momentum Causal Effect", NeurIPS 2020), as `KaihuaTang/Long-Tailed-Recognition.pytorch`
(`classification/models/CausalNormClassifier.py`, `run_networks.py`) computes them.

The classifier splits the feature :math:`x` and every class weight :math:`w_c` into K consecutive slices (heads) and
sums per-head cosine-like scores; training is plain cross-entropy on these logits. A moving sum :math:`d` of the
training features (`moving_feature_direction`) is the "momentum" direction, and Total Direct Effect inference
subtracts each head's projection on it:

.. math::

    z_c = \frac{\tau}{K} \sum_h \Big\langle \hat x_h - \alpha \cos(\hat x_h, \hat d_h) \hat d_h,
    \frac{w_{ch}}{\lVert w_{ch} \rVert + \gamma} \Big\rangle, \qquad \hat x_h = x_h / \lVert x_h \rVert,
    \ \hat d_h = d_h / \lVert d_h \rVert

(:math:`\alpha = 0`: the training logits).

Differences from the reference code: the feature slices are normalised with `F.normalize`'s floor of 1e-12 on the
norm (the reference divides by the bare norm, NaN for an all-zero slice); :math:`d` and its norm likewise, so the
counterfactual term is 0 before the first update (the reference divides 0 by 0 there). The moving sum is updated with
the mean over the global batch, padding left out (the reference: one device's batch).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_range

_NORM_FLOOR = 1e-12


def _unit(x: jax.Array, axis: int = -1) -> jax.Array:
    squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(squared, _NORM_FLOOR**2))


def _heads(x: jax.Array, num_heads: int, axis: int) -> jax.Array:
    """`x` with its `axis` (of size D) split into `[..., num_heads, D / num_heads, ...]`."""
    size = x.shape[axis]
    if size % num_heads:
        raise ValueError(f"the feature dimension {size} must divide by num_heads={num_heads}")
    axis %= x.ndim
    return x.reshape(*x.shape[:axis], num_heads, size // num_heads, *x.shape[axis + 1:])


def tde_logits(features: jax.Array, kernel: jax.Array, direction: jax.Array | None = None, *, alpha: float = 1.5,
               num_heads: int = 2, tau: float = 16.0, gamma: float = 0.03125) -> jax.Array:
    r"""The causal-norm classifier's logits with the TDE counterfactual subtracted (the module's equation).

    Args:
      features: `[B, D]` penultimate features (D divisible by `num_heads`).
      kernel: `[D, C]` class weights (a class is a column).
      direction: `[D]` the moving feature sum (`moving_feature_direction`); None: the training logits (alpha = 0).
      alpha: strength of the counterfactual subtraction (reference configs: CIFAR-100-LT 1.5, CIFAR-10-LT 1.0,
        ImageNet-LT and Places-LT 3.0). May be traced.
      num_heads: K, the number of slices (static).
      tau: the total scale; each head's scores are scaled by `tau / K`.
      gamma: added to each class slice's norm (the reference's 1/32; it crashes at 0).

    Returns:
      `[B, C]` logits in `promote(float32, features.dtype)`.

    Raises:
      ValueError: D not divisible by `num_heads`, mismatched shapes, a concrete negative `alpha` or `gamma`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses import tde_logits
      >>> x, w = jnp.array([[1.0, 0.0, 0.0, 2.0]]), jnp.eye(4)[:, :2]
      >>> [round(v, 4) for v in tde_logits(x, w, alpha=0.0)[0].tolist()]
      [7.7576, 0.0]
    """
    check_range(alpha, 0.0, float("inf"), "alpha")
    check_range(gamma, 0.0, float("inf"), "gamma")
    if features.ndim != 2 or kernel.ndim != 2 or kernel.shape[0] != features.shape[-1]:
        raise ValueError(f"features must be [B, D] and kernel [D, C]; got {features.shape} and {kernel.shape}")
    dtype = _math.compute_dtype(features)
    unit_features = _unit(_heads(features.astype(dtype), num_heads, -1))  # [B, K, D/K]
    class_slices = _heads(kernel.astype(dtype), num_heads, 0)  # [K, D/K, C]
    norms = jnp.sqrt(jnp.sum(jnp.square(class_slices), axis=1, keepdims=True))
    class_slices = class_slices / (norms + _math.like(gamma, norms))
    if direction is not None:
        if direction.shape != (features.shape[-1],):
            raise ValueError(f"direction must be [D] = [{features.shape[-1]}], got {direction.shape}")
        unit_direction = _unit(_heads(direction.astype(dtype), num_heads, 0))  # [K, D/K]
        cosines = jnp.einsum("bkd,kd->bk", unit_features, unit_direction)
        unit_features = unit_features - _math.like(alpha, cosines) * cosines[..., None] * unit_direction
    logits = jnp.einsum("bkd,kdc->bc", unit_features, class_slices, precision=jax.lax.Precision.HIGHEST)
    return _math.like(tau, logits) / num_heads * logits


def moving_feature_direction(direction: jax.Array, features: jax.Array, *, momentum: float = 0.9,
                             mask: jax.Array | None = None, axis_name: str | None = None) -> jax.Array:
    r"""The TDE reference's moving sum of training features: :math:`d \leftarrow \mu d + \bar x`, with
    :math:`\bar x` the mean feature of the batch (no gradient; no :math:`(1 - \mu)` factor, as the reference).

    Args:
      direction: `[D]` the current sum (zeros at the start).
      features: `[B, D]` this batch's (or this device's shard's) features.
      momentum: :math:`\mu` (the reference keeps 0.9 on CIFAR; see the module docstring). May be traced.
      mask: `[B]` bool, the real examples; the others are left out of the mean.
      axis_name: the device axis the batch is split over: the mean is that of the global batch.

    Returns:
      `[D]` the updated sum, in `direction`'s dtype (computed in `promote(float32, features, direction)`).
    """
    dtype = jnp.promote_types(_math.compute_dtype(features), direction.dtype)
    features = jax.lax.stop_gradient(features.astype(dtype))
    weights = jnp.ones(features.shape[:1], dtype) if mask is None else mask.astype(dtype)
    sums, count = jnp.sum(features * weights[:, None], axis=0), jnp.sum(weights)
    if axis_name is not None:
        sums, count = jax.lax.psum((sums, count), axis_name)
    mean = sums / jnp.maximum(count, 1.0)
    return (momentum * direction + mean).astype(direction.dtype)
