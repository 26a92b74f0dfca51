"""Softmax equalization loss (Tan et al., CVPR 2020): cross-entropy whose normaliser randomly leaves out the
negative logits of tail classes, so that rare classes are not suppressed by every other class's examples."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses import _math
from ltjax.losses._checks import check_class_vector, check_counts, check_range


def eql_drop_mask(key: jax.Array, shape: tuple[int, ...], *, gamma: float = 0.9) -> jax.Array:
    r"""Draws softmax EQL's Bernoulli mask :math:`\beta`: one draw per (example, class), True with probability gamma.

    As BagofTricks-LT's SEQL: uniforms `U [..., C]`, :math:`\beta = U < \gamma`.

    Args:
      key: a `jax.random` key (draw a fresh one per step, e.g. `jax.random.fold_in(key, step)`).
      shape: the logits' shape `[..., C]`.
      gamma: the probability of True, in [0, 1]. May be traced.

    Returns:
      `[..., C]` bool, the `drop_mask` argument of `softmax_eql_loss`.

    Example:
      >>> import jax
      >>> from ltjax.losses.equalization import eql_drop_mask
      >>> mask = eql_drop_mask(jax.random.key(0), (1000, 10), gamma=0.9)
      >>> bool(abs(mask.mean() - 0.9) < 0.01)
      True
    """
    check_range(gamma, 0.0, 1.0, "gamma")
    uniforms = jax.random.uniform(key, tuple(shape), jnp.float32)
    return uniforms < jnp.asarray(gamma, jnp.float32)


def _check_drop_mask(drop_mask, logits_shape) -> jax.Array:
    if jnp.shape(drop_mask) != tuple(logits_shape):
        raise ValueError(f"drop_mask must have the logits' shape {tuple(logits_shape)} (one draw per example and "
                         f"class), got {jnp.shape(drop_mask)}")
    dtype = jnp.asarray(drop_mask).dtype
    if dtype == jnp.bool_:
        return jnp.asarray(drop_mask)
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        raise ValueError(f"drop_mask must be boolean (or 0/1 numbers), got dtype {dtype}")
    if not isinstance(drop_mask, jax.core.Tracer):
        values = np.asarray(drop_mask)
        if not np.all((values == 0) | (values == 1)):
            raise ValueError("drop_mask must hold only 0 and 1 (a Bernoulli draw, e.g. from eql_drop_mask), got "
                             f"values such as {np.unique(values[(values != 0) & (values != 1)])[:5].tolist()}")
    return jnp.asarray(drop_mask) != 0


def eql_tail_classes(class_counts: jax.Array, *, tail_threshold: float = 0.005) -> jax.Array:
    r"""Softmax EQL's tail indicator :math:`T_k = [n_k / N < \lambda]` (strict: a frequency equal to lambda is not
    a tail class).

    The frequencies are computed in `promote(float32, dtype of the counts)` (BagofTricks-LT: float32), so one that
    lies within rounding of `tail_threshold` may fall on either side of it.

    Args:
      class_counts: `[C]` training examples per class (>= 1).
      tail_threshold: :math:`\lambda` in [0, 1]. May be traced.

    Returns:
      `[C]` bool.
    """
    check_counts(class_counts)
    check_range(tail_threshold, 0.0, 1.0, "tail_threshold")
    counts = _math.as_compute(class_counts)
    return counts / jnp.sum(counts) < _math.like(tail_threshold, counts)


@_math.per_example_loss
def softmax_eql_loss(
    logits: jax.Array,
    labels: jax.Array,
    drop_mask: jax.Array,
    *,
    class_counts: jax.Array,
    tail_threshold: float = 0.005,
) -> jax.Array:
    r"""Softmax equalization loss (Tan et al., CVPR 2020, image-classification section), given its random mask.

    .. math::
      \ell_i = \log \sum_k w_{ik} e^{z_{ik}} - z_{iy}, \qquad
      w_{ik} = 1 - \beta_{ik}\, T_k\, (1 - Y_{ik}), \qquad T_k = [n_k / N < \lambda]

    A tail class's logit leaves the normaliser of example i where :math:`\beta_{ik} = 1`, unless it is i's label.
    The weights are constants (no gradient flows through the mask); the gradient is
    :math:`w \odot e^{z} / \sum_k w_k e^{z_k} - \mathrm{onehot}(y)`. Draw :math:`\beta` with `eql_drop_mask` (one
    Bernoulli(gamma) per example and class, fresh at every step; BagofTricks-LT: gamma = 0.9), so that the loss is
    deterministic given it. Predict with the plain logits; there is no state.

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      drop_mask: `[..., C]` the Bernoulli draw :math:`\beta`, bool (or 0/1 numbers).
      class_counts: `[C]` training examples per class (>= 1).
      tail_threshold: :math:`\lambda` in [0, 1], the frequency below which a class is a tail class
        (BagofTricks-LT: 0.005; 0: no tail class, plain cross-entropy). May be traced.

    Returns:
      `[...]` per-example losses; the reference takes their plain batch mean (`reduction.mean`).

    Raises:
      ValueError: bad logits or labels; counts not `[C]` or not >= 1; a mask of another shape or with values other
        than 0/1.

    Differences from the reference code: the authors published only a detection (sigmoid) EQL; this follows the
    paper's softmax form as BagofTricks-LT's SEQL computes it (third-party code), with its per-(example, class)
    draw, which the paper leaves open. The log-sum-exp is the stable one: SEQL's `exp(z)` without a shift overflows
    for logits above ~88 in float32.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.equalization import softmax_eql_loss
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 1])
      >>> counts = jnp.array([100, 20, 5])
      >>> mask = jnp.array([[True, True, True], [False, True, True]])
      >>> softmax_eql_loss(logits, labels, mask, class_counts=counts, tail_threshold=0.1).tolist()
      [0.2014, 0.6444]
    """
    num_classes = logits.shape[-1]
    check_class_vector(class_counts, num_classes, "class_counts")
    check_range(tail_threshold, 0.0, 1.0, "tail_threshold")
    dropped = _check_drop_mask(drop_mask, logits.shape)
    tail = eql_tail_classes(_math.like(class_counts, logits), tail_threshold=_math.like(tail_threshold, logits))
    # The clipped label's column is always kept, so an out-of-range example still has a finite normaliser (its loss
    # is written as NaN by the wrapper).
    target = _math.target_mask(jnp.clip(labels, 0, num_classes - 1), num_classes)
    logits = _math.as_compute(logits)
    left_out = dropped & tail & ~target
    return _math.cross_entropy(jnp.where(left_out, -jnp.inf, logits), labels)
