"""Seesaw loss (Wang et al., CVPR 2021): cross-entropy whose non-target logits are scaled by a mitigation factor from
cumulative class counts (a state) and a compensation factor from the detached probabilities."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses import _math
from ltjax.losses._checks import check_class_vector, check_logits_and_labels, check_range, check_same_batch_shape


def _check_cumulative_counts(cumulative_counts, num_classes: int) -> None:
    """A `[C]` vector; concrete values must be finite and >= 0 (a zero is valid: a class not seen yet)."""
    check_class_vector(cumulative_counts, num_classes, "cumulative_counts")
    if isinstance(cumulative_counts, jax.core.Tracer):
        return
    values = np.asarray(cumulative_counts)
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise ValueError(f"cumulative_counts must be a real numeric vector, got dtype {values.dtype}")
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0))).tolist()
    if bad:
        raise ValueError(
            f"cumulative_counts must be finite and >= 0 for every class; classes {bad[:10]}"
            f"{'...' if len(bad) > 10 else ''} have {values[bad[:10]].tolist()}. Start from zeros and grow the "
            "counts with seesaw_count_update"
        )


def seesaw_count_update(
    cumulative_counts: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Seesaw's state update: adds the batch's examples of each class to the cumulative counts.

    .. math:: \mathrm{cum}_c \leftarrow \mathrm{cum}_c + \#\{i : y_i = c\}

    The reference adds the **current** batch before computing its loss, so the first batch already sees its own
    labels: call this first and pass the result to `seesaw_loss` (and keep it as the new state). The counts are
    never reset. Start from `jnp.zeros((C,), jnp.float32)`, the reference's float32 buffer (exact up to 2^24 per
    class; an int32 state keeps its dtype and is exact up to 2^31).

    Args:
      cumulative_counts: `[C]` counts so far (float or integer; the result keeps this dtype).
      labels: `[...]` integer class indices; a label outside [0, C) is not counted.
      mask: optional `[...]` bool, the examples to count (None: all); the padding of a batch is not.
      axis_name: in a data-parallel step, the device axis to `psum` the batch's counts over, so every replica
        holds the counts of the global batch (equal to one process seeing the whole batch). This is an ltjax
        choice: the authors' code (mmdetection/mmpretrain under DDP) keeps a separate buffer in each process,
        counting only its own shard, never all-reduced. None (the default) reproduces that under `pmap`/
        `shard_map`, and is the only option outside a mapped axis.

    Returns:
      `[C]` the updated counts, in the dtype of `cumulative_counts`; no gradient flows through them.

    Raises:
      ValueError: counts not a `[C]` vector or (when concrete) negative or not finite; labels not integer; a mask of
        another shape.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.seesaw import seesaw_count_update
      >>> seesaw_count_update(jnp.zeros(3), jnp.array([2, 0, 2, 2])).tolist()
      [1.0, 0.0, 3.0]
    """
    if jnp.ndim(cumulative_counts) != 1 or jnp.shape(cumulative_counts)[0] < 1:
        raise ValueError(f"cumulative_counts must be a non-empty 1-D vector [C], got shape "
                         f"{jnp.shape(cumulative_counts)}")
    num_classes = jnp.shape(cumulative_counts)[0]
    _check_cumulative_counts(cumulative_counts, num_classes)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    cumulative_counts = jnp.asarray(cumulative_counts)
    valid = (labels >= 0) & (labels < num_classes)
    if mask is not None:
        check_same_batch_shape(mask, labels, "mask")
        valid = valid & jnp.asarray(mask, bool)
    batch_counts = jax.ops.segment_sum(
        valid.reshape(-1).astype(jnp.int32), jnp.clip(labels, 0, num_classes - 1).reshape(-1),
        num_segments=num_classes)
    if axis_name is not None:
        batch_counts = jax.lax.psum(batch_counts, axis_name)
    return jax.lax.stop_gradient(cumulative_counts + batch_counts.astype(cumulative_counts.dtype))


def _switched_off(exponent) -> bool:
    """Whether a Python-number exponent switches its factor off (the reference applies a factor only when > 0)."""
    return isinstance(exponent, (int, float)) and exponent <= 0


def seesaw_log_factors(
    logits: jax.Array,
    labels: jax.Array,
    *,
    cumulative_counts: jax.Array,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
) -> jax.Array:
    r"""Seesaw's logit offsets :math:`\log S_{ij} = \log M_{yj} + \log C_{ij}` (0 in the target column).

    What `seesaw_loss` adds to the logits, exposed so that the loss can be frozen at given logits (its gradient is
    that of `softmax_cross_entropy(z + seesaw_log_factors(at, ...))` at `z = at`). No gradient flows through it.

    Returns:
      `[..., C]` offsets (<= 0 from the mitigation, >= 0 from the compensation) in the logits' compute dtype; an
      out-of-range label is clipped into range here (the loss writes NaN for it).
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    num_classes = check_logits_and_labels(logits, labels)
    _check_cumulative_counts(cumulative_counts, num_classes)
    logits = _math.as_compute(logits)
    log_factors = jnp.zeros_like(logits)
    if not _switched_off(p):
        # M_yj = r_j^p where r_j = max(cum_j, 1) / max(cum_y, 1) < 1, else 1.
        p = _math.like(p, logits)
        counts = jnp.maximum(_math.like(cumulative_counts, logits), 1.0)
        ratios = counts / _math.per_example(counts, labels)[..., None]
        log_mitigation = p * jnp.log(jnp.where(ratios < 1.0, ratios, 1.0))
        log_factors = log_factors + jnp.where(p > 0, log_mitigation, 0.0)
    if not _switched_off(q):
        # C_ij = t_j^q where t_j = sigma_j / max(sigma_y, eps) > 1, else 1; in logs, which cannot underflow.
        q, eps = _math.like(q, logits), _math.like(eps, logits)
        log_probs = jax.nn.log_softmax(jax.lax.stop_gradient(logits), axis=-1)
        log_true = _math.take_true_class(log_probs, labels)
        log_ratios = log_probs - jnp.maximum(log_true, jnp.log(eps))[..., None]
        log_compensation = q * jnp.where(log_ratios > 0, log_ratios, 0.0)
        log_factors = log_factors + jnp.where(q > 0, log_compensation, 0.0)
    target = _math.target_mask(jnp.clip(labels, 0, num_classes - 1), num_classes)
    return jax.lax.stop_gradient(jnp.where(target, 0.0, log_factors))


@_math.per_example_loss
def seesaw_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    cumulative_counts: jax.Array,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
    sample_weights: jax.Array | None = None,
) -> jax.Array:
    r"""Seesaw loss (Wang et al., CVPR 2021), as mmpretrain's `SeesawLoss` (a port of the authors' mmdetection code).

    .. math::
      \ell_i = w_i \Big[\log \sum_j S_{ij} e^{z_{ij}} - z_{iy}\Big], \qquad S_{iy} = 1,\quad
      S_{ij} = M_{yj} C_{ij}\ (j \ne y)

    with the mitigation :math:`M_{yj} = r_j^p` if :math:`r_j = \max(\mathrm{cum}_j, 1) / \max(\mathrm{cum}_y, 1) < 1`
    (else 1; only when `p > 0`) and the compensation :math:`C_{ij} = t_j^q` if
    :math:`t_j = \sigma_j / \max(\sigma_y, \epsilon) > 1` (else 1; only when `q > 0`), where
    :math:`\sigma = \mathrm{softmax}(\mathrm{sg}(z_i))`. `S` is a constant for autodiff: the gradient is
    :math:`w_i (\mathrm{softmax}(z_i + \log S_i) - \mathrm{onehot}(y_i))`.

    The counts are Seesaw's state and must already include this batch (the reference counts the batch before its
    loss): `counts = seesaw_count_update(counts, labels)`, then `seesaw_loss(..., cumulative_counts=counts)`.

    Reductions: the function returns the per-example :math:`w_i \ell_i` (the reference casts the sample weights to
    float32; here they take the logits' compute dtype). The reference's batch loss without `avg_factor` is
    `loss_weight * reduction.mean(losses)` (the sum over B, also with sample weights, not over their sum); with
    `avg_factor` it is `loss_weight * jnp.sum(losses) / avg_factor` (in an `ltjax.methods` phase: per-example
    weights that sum to `avg_factor`, e.g. `avg_factor / B` each).

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      cumulative_counts: `[C]` examples of each class seen so far, this batch included (`seesaw_count_update`);
        zeros are valid (clamped to 1).
      p: mitigation exponent (>= 0; 0 switches it off). May be traced.
      q: compensation exponent (>= 0; 0 switches it off). May be traced.
      eps: lower clamp of the target probability in the compensation ratio (>= 0). May be traced.
      sample_weights: optional `[...]` per-example weights `w` (the reference's `weight`; default ones).

    Returns:
      `[...]` per-example losses `w_i l_i`.

    Raises:
      ValueError: bad logits or labels; counts not `[C]`, or (when concrete) negative or not finite; sample weights
        of another shape; a concrete `p`, `q` or `eps` below 0.

    Differences from the reference code: the factors are computed in logs (`p log r`, `q log t` from the
    log-softmax), which equals the reference's `log(r**p * t**q)` up to rounding and cannot underflow; a negative
    traced `p` or `q` switches its factor off as the reference does, but a concrete one is rejected. The classification
    port has no objectness branch, no foreground selection and no C+1 counts (mmdetection's detection head); the
    paper's factors lack the clamps `cum >= 1` and `sigma_y >= eps` and the detached probabilities, which the code has.
    The optional `psum` of the counts (`seesaw_count_update(axis_name=...)`) is an ltjax choice.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.seesaw import seesaw_count_update, seesaw_loss
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 1])
      >>> counts = seesaw_count_update(jnp.array([100.0, 20.0, 5.0]), labels)
      >>> counts.tolist()
      [101.0, 21.0, 5.0]
      >>> seesaw_loss(logits, labels, cumulative_counts=counts).tolist()
      [0.0658, 0.8472]
    """
    num_classes = logits.shape[-1]
    _check_cumulative_counts(cumulative_counts, num_classes)
    for name, value in (("p", p), ("q", q), ("eps", eps)):
        check_range(value, 0.0, np.inf, name)
    if sample_weights is not None:
        check_same_batch_shape(sample_weights, labels, "sample_weights")
    logits = _math.as_compute(logits)
    log_factors = seesaw_log_factors(logits, labels, cumulative_counts=cumulative_counts, p=p, q=q, eps=eps)
    losses = _math.cross_entropy(logits + log_factors, labels)
    if sample_weights is not None:
        losses = losses * _math.like(sample_weights, logits)
    return losses
