r"""ResLT (Cui et al., TPAMI 2022): the three-branch residual loss, its class groups, and its prediction rule, as the
CIFAR code of `jiequancui/ResLT` computes them.

The network ends in three branches, head, medium and tail, whose logits `[..., B, 3, C]` share one classifier. An
example trains the head branch always, the medium branch when its class is a medium or tail class, and the tail
branch when its class is a tail class (`reslt_class_groups` gives each class its group from the counts). The loss
mixes the branches' own cross-entropies, averaged over every (example, branch) membership of the batch, with the
cross-entropy of the fused logits :math:`l_H + l_M + l_T`, averaged over the examples; the prediction is the argmax
of the fused logits (`reslt_logits`).

The two terms have different batch-level normalisers, so the loss is not a plain mean of per-example terms.
`reslt_loss` returns per-example shares whose plain mean over the (global) batch is the reference's loss, in value
and in gradient, as `lade_loss` does for its regulariser: under data parallelism `axis_name` sums the normalisers
over the devices, and `mask` leaves padded examples out of them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses import _math
from ltjax.losses._checks import (
    check_branch_logits_and_labels,
    check_class_vector,
    check_counts,
    check_range,
    check_same_batch_shape,
    concrete,
)

__all__ = ["reslt_class_groups", "reslt_logits", "reslt_loss"]

NUM_BRANCHES = 3

# The reference's branch cross-entropy takes `log(softmax(l)[y] + 1e-7)`.
_PROB_EPSILON = 1e-7

# `floor(fraction * C)` would cut one class early where a decimal fraction's binary value times C rounds just below
# the integer it reads as (0.29 * 100 = 28.999999999999996); the cut is taken with this relative slack.
_CUT_SLACK = 1e-6


def reslt_class_groups(class_counts: jax.Array, *, medium_from: float = 0.35, tail_from: float = 0.70) -> jax.Array:
    r"""ResLT's class groups: 0 head, 1 medium, 2 tail, from each class's rank in decreasing-count order.

    With :math:`r_c` the rank of class c among the classes sorted by decreasing count (ties by class index, stable):

    .. math:: g_c = \begin{cases} 0 & r_c < \lfloor f_M C \rfloor \\ 1 & \lfloor f_M C \rfloor \le r_c <
      \lfloor f_T C \rfloor \\ 2 & \text{otherwise} \end{cases}

    The reference cuts on the label index of a dataset whose labels are ordered by count, which is the rank here.
    The defaults are its CIFAR-100 cut (medium branch: labels >= 35, tail branch: labels >= 70; for CIFAR-100-LT at
    imbalance 100 these are exactly the classes with at most 100 and with fewer than 20 images). Its CIFAR-10 scripts
    cut at labels 2 and 4, which is `medium_from=0.2, tail_from=0.4`. ImageNet-LT relabels the classes by
    *increasing* count (label 0 the rarest) and gives the medium branch labels < 825 and the tail branch labels
    < 220 of 1000: decreasing rank :math:`r = 999 - \text{label}`, so the medium branch is :math:`r \ge 175` and the
    tail branch :math:`r \ge 780`, that is `medium_from=0.175, tail_from=0.78`.

    Args:
      class_counts: `[C]` training examples per class (>= 1), any class order.
      medium_from: :math:`f_M` in [0, 1], the fraction of classes (the most frequent) that only the head branch
        trains on. May be traced.
      tail_from: :math:`f_T` in [`medium_from`, 1], the fraction of classes outside the tail group. May be traced.

    Returns:
      `[C]` int32 group of each class.

    Raises:
      ValueError: counts that are not a non-empty `[C]` vector of finite values >= 1; a concrete fraction outside
        [0, 1], or `medium_from > tail_from`.

    Differences from the reference code: the cut is :math:`\lfloor f C (1 + 10^{-6}) \rfloor`, so that a decimal
    fraction cuts where it reads (0.29 of 100 classes: 29, where the float product 28.999999999999996 would floor to
    28). Ties in the counts go by class index; ImageNet-LT's relabelling breaks them by NumPy's unstable argsort, so
    among classes of equal count at a cut the reference may group differently.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.reslt import reslt_class_groups
      >>> reslt_class_groups(jnp.array([5, 500, 40, 90, 300, 20, 7, 60, 200, 10])).tolist()
      [2, 0, 1, 1, 0, 1, 2, 1, 0, 2]
    """
    check_counts(class_counts)
    check_range(medium_from, 0.0, 1.0, "medium_from")
    check_range(tail_from, 0.0, 1.0, "tail_from")
    medium, tail = concrete(medium_from), concrete(tail_from)
    if medium is not None and tail is not None and medium > tail:
        raise ValueError(f"medium_from must be <= tail_from (the medium group precedes the tail group), got "
                         f"medium_from={medium}, tail_from={tail}")
    counts = _math.as_compute(class_counts)
    num_classes = counts.shape[0]
    rank = jnp.argsort(jnp.argsort(-counts, stable=True), stable=True)

    def cut(fraction):
        return jnp.floor(_math.like(fraction, counts) * num_classes * (1.0 + _CUT_SLACK))

    return jnp.where(rank < cut(medium_from), 0, jnp.where(rank < cut(tail_from), 1, 2)).astype(jnp.int32)


def reslt_logits(branch_logits: jax.Array) -> jax.Array:
    r"""ResLT's prediction logits: the fused :math:`l_H + l_M + l_T` (a plain sum over the branch axis).

    Args:
      branch_logits: `[..., 3, C]` floating point, the head, medium and tail branches' logits.

    Returns:
      `[..., C]` in the logits' compute dtype; predict with their argmax.

    Raises:
      ValueError: logits that are not `[..., 3, C]`.

    Differences from the reference code: none on CIFAR. (On ImageNet-LT and iNaturalist the reference evaluates with
    a bias-free, weight-normalised classifier; that is a property of the head, not of this sum.)

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.reslt import reslt_logits
      >>> reslt_logits(jnp.array([[[1.0, 0.0], [0.5, 0.0], [-2.0, 0.0]]])).tolist()
      [[-0.5, 0.0]]
    """
    branch_logits = jnp.asarray(branch_logits)
    _check_branch_logits(branch_logits, batch_axis=False)
    return jnp.sum(_math.as_compute(branch_logits), axis=-2)


def _check_branch_logits(branch_logits: jax.Array, *, batch_axis: bool) -> None:
    shape = "[..., B, 3, C]" if batch_axis else "[..., 3, C]"
    if branch_logits.ndim < (3 if batch_axis else 2) or branch_logits.shape[-2] != NUM_BRANCHES:
        raise ValueError(
            f"branch_logits must be {shape}: the head, medium and tail branches' logits on axis -2"
            f"{', after the batch axis (the loss is normalised over the batch)' if batch_axis else ''}, got shape "
            f"{branch_logits.shape}"
        )
    if not jnp.issubdtype(branch_logits.dtype, jnp.floating):
        raise ValueError(f"branch_logits must be floating point (bfloat16, float32, float64), got "
                         f"{branch_logits.dtype}")


def _check_inputs(branch_logits, labels, class_groups, beta, mask) -> None:
    num_classes = check_branch_logits_and_labels(branch_logits, labels, name="branch_logits", branch="branch",
                                                 num_branches=NUM_BRANCHES)
    check_class_vector(class_groups, num_classes, "class_groups")
    groups_dtype = class_groups.dtype if hasattr(class_groups, "dtype") else np.asarray(class_groups).dtype
    if not jnp.issubdtype(groups_dtype, jnp.integer):
        raise ValueError(f"class_groups must be integer groups 0 (head), 1 (medium), 2 (tail), got dtype "
                         f"{groups_dtype}; reslt_class_groups computes them from the counts")
    if not isinstance(class_groups, jax.core.Tracer):
        known = np.asarray(class_groups)
        bad = np.flatnonzero((known < 0) | (known >= NUM_BRANCHES)).tolist()
        if bad:
            raise ValueError(
                f"class_groups must be 0 (head), 1 (medium) or 2 (tail) for every class; classes "
                f"{bad[:10]}{'...' if len(bad) > 10 else ''} have {known[bad[:10]].tolist()}"
            )
    check_range(beta, 0.0, 1.0, "beta")
    if mask is not None:
        check_same_batch_shape(mask, labels, "mask")


def reslt_loss(
    branch_logits: jax.Array,
    labels: jax.Array,
    *,
    class_groups: jax.Array,
    beta: float = 0.995,
    mask: jax.Array | None = None,
    axis_name: str | tuple[str, ...] | None = None,
) -> jax.Array:
    r"""ResLT's training loss (Cui et al., "ResLT: Residual Learning for Long-tailed Recognition", TPAMI 2022), CIFAR
    form, as per-example shares of the batch loss.

    Example i is a member of branch k (0 head, 1 medium, 2 tail) when its class's group is at least k:
    :math:`m_{ik} = [g_{y_i} \ge k]`, so every example trains the head branch. With :math:`p^k_i` the softmax of
    branch k's logits :math:`l^k_i`, :math:`M = \sum_{i,k} m_{ik}` the memberships of the batch and B its examples:

    .. math::
      L_{ice} = \frac1M \sum_i \sum_k m_{ik}\,\big(-\log(p^k_{i y_i} + 10^{-7})\big), \qquad
      L_{fce} = \frac1B \sum_i \mathrm{CE}\big(l^0_i + l^1_i + l^2_i,\ y_i\big),

    .. math:: L = \beta L_{ice} + (1 - \beta) L_{fce}
      = \frac1B \sum_i \ell_i, \qquad
      \ell_i = \beta\,\frac{B}{M} \sum_k m_{ik}\,\big(-\log(p^k_{i y_i} + 10^{-7})\big)
      + (1 - \beta)\,\mathrm{CE}\big(\textstyle\sum_k l^k_i,\ y_i\big)

    This function returns the shares :math:`\ell_i`: reduce them with the plain mean over the global batch
    (`reduction.mean`, or the sum over devices divided by the global number of examples). B and M are those of the
    global batch (the examples `mask` keeps, over every device of `axis_name`) and are constants for autodiff. The
    `1e-7` sits inside the log, as in the reference, computed stably as
    :math:`-\operatorname{logaddexp}(\log p^k_{iy}, \log 10^{-7})`; the fused term is the exact cross-entropy.
    Predict with `reslt_logits` (the fused logits). There is no state and no randomness.

    Args:
      branch_logits: `[..., B, 3, C]` floating point (the dtype rule of `ltjax.losses`): the head, medium and tail
        branches' logits :math:`l_H, l_M, l_T` on axis -2, after the batch axis. Further leading axes index separate
        batches.
      labels: `[..., B]` integer class indices; an out-of-range label gives NaN for its example, which is left out
        of the batch (of B and M) for the others.
      class_groups: `[C]` integer group of each class, 0 (head), 1 (medium) or 2 (tail), any class order
        (`reslt_class_groups`). Checked when concrete; a traced group outside {0, 1, 2} acts as the nearest one.
      beta: :math:`\beta` in [0, 1], the paper's alpha (scripts: CIFAR-100-LT 0.995 at imbalance 100, 0.99 at 50,
        0.72 at 10; CIFAR-10-LT 0.998 at 100 and 50, 0.96 at 10). May be traced.
      mask: optional `[..., B]` bool; a False example (padding) is left out of B and M, and its share is 0 (NaN, as
        every loss's, if its label is out of range); its logits may be anything, even NaN.
      axis_name: the named axis (or tuple of axes) of a `shard_map`/`pmap`/`vmap` that splits the batch; B and M are
        then summed over it (`psum`), so the shares' mean over the global batch is the loss of the global batch.
        None: this call sees the whole batch.

    Returns:
      `[..., B]` per-example shares in the logits' compute dtype; their mean over the (global) batch is L.

    Raises:
      ValueError: branch logits not `[..., B, 3, C]` floating point, labels not integer of shape `[..., B]`, groups
        not an integer `[C]` vector (or, when concrete, outside {0, 1, 2}), a mask not of the labels' shape, or a
        concrete `beta` outside [0, 1].

    Differences from the reference code: none in the value or gradient of the batch loss; the reference computes the
    scalar L, ltjax its per-example shares (same mean and gradient). `mask` and `axis_name` are additions (the
    reference sees one unpadded batch). This is the CIFAR form: the ImageNet-LT script's fused term also carries the
    1e-7 and optional label smoothing, and its iNaturalist script uses two branches; neither is implemented.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.reslt import reslt_loss
      >>> branches = jnp.array([[[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0]],
      ...                       [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [-0.5, 0.0, 1.5]]])
      >>> labels, groups = jnp.array([0, 2]), jnp.array([0, 1, 2])
      >>> reslt_loss(branches, labels, class_groups=groups, beta=0.9).tolist()
      [0.1354, 1.0840]
    """
    branch_logits, labels = jnp.asarray(branch_logits), jnp.asarray(labels)
    _check_inputs(branch_logits, labels, class_groups, beta, mask)
    num_classes = branch_logits.shape[-1]
    in_range = (labels >= 0) & (labels < num_classes)
    real = in_range if mask is None else in_range & jnp.asarray(mask, bool)
    # Left-out examples get zero logits: their values are written over below, and their gradient stays finite.
    logits = jnp.where(real[..., None, None], _math.as_compute(branch_logits), 0.0)
    dtype = logits.dtype

    groups = jnp.clip(jnp.asarray(class_groups)[jnp.clip(labels, 0, num_classes - 1)], 0, NUM_BRANCHES - 1)
    members = (groups[..., None] >= jnp.arange(NUM_BRANCHES)) & real[..., None]  # [..., B, 3]
    num_examples = _math.psum_over(jnp.sum(real, axis=-1).astype(dtype), axis_name)
    num_members = _math.psum_over(jnp.sum(members, axis=(-2, -1)).astype(dtype), axis_name)
    ratio = jnp.where(num_members > 0, num_examples / jnp.where(num_members > 0, num_members, 1.0), 0.0)

    branch_labels = jnp.broadcast_to(labels[..., None], logits.shape[:-1])
    log_prob_true = _math.take_true_class(_math.log_probs(logits), branch_labels)  # [..., B, 3]
    branch_losses = -jnp.logaddexp(log_prob_true, jnp.log(jnp.asarray(_PROB_EPSILON, dtype)))
    individual = jnp.sum(jnp.where(members, branch_losses, 0.0), axis=-1)
    fused = _math.cross_entropy(jnp.sum(logits, axis=-2), labels)

    beta = _math.like(beta, logits)
    shares = beta * ratio[..., None] * individual + (1.0 - beta) * fused
    return jnp.where(in_range, jnp.where(real, shares, 0.0), jnp.nan).astype(dtype)
