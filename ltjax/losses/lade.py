"""LADE (Hong et al., CVPR 2021): the LADE-CE loss, the batch-level LADE regulariser, and the test-time rule.

LADE-CE is cross-entropy on `z + log(p_s + 1e-9)` (the code's `PriorCELoss`: PC softmax with the source prior).
The regulariser is not a sum of per-example terms: for every class it takes a log-sum-exp over the batch axis and a
mean over the class's examples in the batch, so it is a function of the whole batch. Under data parallelism it must be
the value of the *global* batch (the authors' `nn.DataParallel` forms one batch); every function here that depends
on the batch takes `axis_name`, and then combines the per-device partial sums with `psum`/`pmax` over that axis, so
each device gets the global value and autodiff carries every device's share of the gradient back to the device whose
logits caused it. `mask` leaves padded examples out of the batch.

Two forms of the regulariser:

- `lade_regularizer`: the scalar `R` of the (global) batch.
- `lade_regularizer_per_example`: per-example shares `r_i` whose sum over the global batch, divided by the global
  number of (real) examples B, is `R`, in value and in gradient. That is the form a train step needs that sums
  per-example losses and divides by the global batch size (`ltjax.methods.Objective`): the class-mean term splits
  exactly into one term per example (`-B p_y z_iy / (n_y^b + 1e-8)`), and the log-partition term, a function of the
  whole batch, is given to every real example in equal shares (each carries the whole term, and the division by B
  takes it back to one copy). `lade_loss` is LADE-CE plus `alpha` times these shares.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses import _math
from ltjax.losses._checks import (
    check_class_vector,
    check_counts,
    check_logits_and_labels,
    check_range,
    check_same_batch_shape,
)

__all__ = ["lade_ce_loss", "lade_logits", "lade_loss", "lade_regularizer", "lade_regularizer_per_example"]

# The reference adds 1e-9 inside both logs of priors (source prior and the uniform 1/C) and 1e-8 to the per-class
# batch counts that divide the class sums.
_PRIOR_EPSILON = 1e-9
_COUNT_EPSILON = 1e-8


def _source_prior(class_counts: jax.Array, logits: jax.Array) -> jax.Array:
    """`p_s = n / N` in the logits' compute dtype, after checking the counts."""
    check_class_vector(class_counts, logits.shape[-1], "class_counts")
    check_counts(class_counts)
    counts = _math.like(class_counts, logits)
    return counts / counts.sum()


def _check_hyper_parameters(alpha=None, remine_lambda=None) -> None:
    if alpha is not None:
        check_range(alpha, 0.0, float("inf"), "alpha")
    if remine_lambda is not None:
        check_range(remine_lambda, 0.0, float("inf"), "remine_lambda")


@_math.per_example_loss
def lade_ce_loss(logits: jax.Array, labels: jax.Array, *, class_counts: jax.Array) -> jax.Array:
    r"""LADE-CE (Hong et al., CVPR 2021), the code's `PriorCELoss`: cross-entropy on prior-shifted logits.

    .. math:: \ell = -\log \mathrm{softmax}\big(z + \log(p_s + 10^{-9})\big)_y, \qquad p_s = n / \textstyle\sum n

    This is balanced softmax / logit adjustment with `tau=1` (`balanced_softmax_loss`, `logit_adjusted_loss`) up to
    the epsilon inside the log. LADE trains it together with `alpha` times the regulariser (`lade_loss`).

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      class_counts: `[C]` training examples per class (>= 1), any class order.

    Returns:
      `[...]` per-example losses; the reference takes their plain batch mean (`reduction.mean`).

    Raises:
      ValueError: logits, labels or counts of the wrong shape or dtype, or a count that is not finite and >= 1.

    Differences from the reference code: none; the source prior is computed in the logits' compute dtype (float32
    in the reference).

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.lade import lade_ce_loss
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> lade_ce_loss(logits, labels, class_counts=counts).tolist()
      [0.0460, 3.0442]
    """
    prior = _source_prior(class_counts, logits)
    return _math.cross_entropy(_math.as_compute(logits) + jnp.log(prior + _PRIOR_EPSILON), labels)


class _BatchTerms(NamedTuple):
    """The regulariser's quantities of each batch (axis -2; B examples after masking, over every device)."""

    prior: jax.Array  # [C] p_s
    logits: jax.Array  # [..., B_local, C] compute dtype
    labels: jax.Array  # [..., B_local] clipped into range
    real: jax.Array  # [..., B_local] bool: counted in the batch (unmasked, label in range)
    class_batch_counts: jax.Array  # [..., C] n_c^b over the global batch
    batch_size: jax.Array  # [...] B over the global batch
    first: jax.Array  # [..., C] sum_{y_i = c} z_ic / (n_c^b + 1e-8)
    second: jax.Array  # [..., C] lse_i(z_ic - log(p_s(c) + 1e-9) + log(1/C + 1e-9)) - log B
    num_out_of_range: jax.Array  # [...] unmasked examples of the global batch with a label outside [0, C)


def _batch_terms(logits, labels, class_counts, mask, axis_name) -> _BatchTerms:
    """Checks the inputs and computes the per-class terms of each batch, combined over `axis_name`."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    num_classes = check_logits_and_labels(logits, labels)
    if logits.ndim < 2:
        raise ValueError(
            f"logits must be [..., B, C], a batch axis before the class axis (the LADE regulariser is a function of "
            f"the whole batch), got shape {logits.shape}"
        )
    if mask is not None:
        check_same_batch_shape(mask, labels, "mask")
    prior = _source_prior(class_counts, logits)
    z = _math.as_compute(logits)
    dtype = z.dtype
    in_range = (labels >= 0) & (labels < num_classes)
    unmasked = jnp.ones_like(in_range) if mask is None else jnp.asarray(mask, bool)
    real = unmasked & in_range
    members = _math.target_mask(labels, num_classes) & real[..., None]  # [..., B, C]
    class_batch_counts = _math.psum_over(jnp.sum(members, axis=-2).astype(dtype), axis_name)
    batch_size = _math.psum_over(jnp.sum(real, axis=-1).astype(dtype), axis_name)
    num_out_of_range = _math.psum_over(jnp.sum(unmasked & ~in_range, axis=-1), axis_name)

    class_sums = _math.psum_over(jnp.sum(jnp.where(members, z, 0.0), axis=-2), axis_name)
    first = class_sums / (class_batch_counts + _COUNT_EPSILON)

    # Log-sum-exp over the examples of the global batch, per class: a global max shifts the exponentials into range
    # (a constant for autodiff: the result depends on it only through rounding), partial sums are psummed. Left-out
    # examples enter as exp(-inf) = 0, so neither their value nor their gradient can be NaN.
    real_column = real[..., None]
    local_max = jnp.max(jnp.where(real_column, z, -jnp.inf), axis=-2)
    local_max = jax.lax.stop_gradient(local_max)  # pmax has no derivative rule; the shift needs none
    shift = local_max if axis_name is None else jax.lax.pmax(local_max, axis_name)
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    exponentials = jnp.exp(jnp.where(real_column, z - shift[..., None, :], -jnp.inf))
    sums = _math.psum_over(jnp.sum(exponentials, axis=-2), axis_name)
    log_sums = jnp.log(jnp.where(sums > 0, sums, 1.0))
    log_uniform = jnp.log(jnp.asarray(1.0 / num_classes, dtype) + _PRIOR_EPSILON)
    second = (shift + log_sums + log_uniform - jnp.log(prior + _PRIOR_EPSILON)
              - jnp.log(jnp.maximum(batch_size, 1.0))[..., None])
    return _BatchTerms(prior, z, jnp.clip(labels, 0, num_classes - 1), real, class_batch_counts, batch_size, first,
                       second, num_out_of_range)


def _partition_term(terms: _BatchTerms, remine_lambda) -> jax.Array:
    """`sum_c p_s(c) (second_c + lambda second_c^2)` per batch: the regulariser's part that is not a sum over
    examples."""
    second = terms.second
    return jnp.sum(terms.prior * (second + remine_lambda * second**2), axis=-1)


def lade_regularizer(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    remine_lambda: float = 0.01,
    mask: jax.Array | None = None,
    axis_name: str | tuple[str, ...] | None = None,
) -> jax.Array:
    r"""The LADE regulariser of a batch (Hong et al., CVPR 2021; the code's `LADELoss`), before the weight alpha.

    For every class c, present in the batch or not, with :math:`n^b_c` the batch examples of class c and B the batch
    size:

    .. math::
      f_c = \frac{\sum_{i: y_i = c} z_{ic}}{n^b_c + 10^{-8}}, \qquad
      s_c = \operatorname{lse}_i\Big(z_{ic} - \log(p_s(c) + 10^{-9}) + \log(\tfrac1C + 10^{-9})\Big) - \log B,

    .. math:: R = -\sum_c p_s(c)\,\big(f_c - s_c - \lambda s_c^2\big)

    The log-sum-exp runs over the batch axis, so R is a function of the whole batch, not a sum over examples; its
    gradient in :math:`z_{ic}` through :math:`s_c` is a softmax over the batch, per class. The batch is axis -2 of
    `logits [..., B, C]`: the examples along it that `mask` keeps, on every device of `axis_name`. Further leading
    axes index separate batches (ensemble members, say), so `vmap` over one of them equals the stacked call.

    Args:
      logits: `[..., B, C]` floating point (the dtype rule of `ltjax.losses`).
      labels: `[..., B]` integer class indices.
      class_counts: `[C]` training examples per class (>= 1), any class order.
      remine_lambda: lambda of the ReMINE penalty `lambda s_c^2` (the authors' CIFAR-100 value, README: 0.01; their
        configs and class default: 0.1; ImageNet-LT 0.5). May be traced.
      mask: optional `[..., B]` bool; False leaves an example out of the batch (a padded example).
      axis_name: the named axis (or tuple of axes) of a `shard_map`/`pmap`/`vmap` that splits the batch; the counts,
        class sums, B and the log-sum-exps are then combined over it (`psum`, `pmax`), so every shard returns R of the
        global batch, and its gradient reaches every shard's logits. None: this call sees the whole batch.

    Returns:
      `[...]` (a scalar for `[B, C]` logits) in the logits' compute dtype: R of each global batch; 0 for a batch with
      no example; NaN when an example that `mask` keeps has a label outside [0, C) (its gradient stays finite: zero).

    Raises:
      ValueError: inputs of the wrong shape or dtype (logits need a batch axis), a count that is not finite and
        >= 1, or a negative `remine_lambda`.

    Differences from the reference code: the regularised class's own importance weight `log(p_u(c) / p_s(c))` is
    added to every example and the class weights are the source prior, as in the code (the paper weights each sample
    by its own label's ratio and leaves the class weights open); the epsilons are the code's. `mask` and `axis_name`
    are additions: the reference sees one unpadded global batch. The max that shifts the log-sum-exp is taken out of
    the sum (the reference shifts the logits by the class constant first): the same value up to rounding.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.lade import lade_regularizer
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> lade_regularizer(logits, labels, class_counts=counts).item()
      -0.8954
    """
    _check_hyper_parameters(remine_lambda=remine_lambda)
    terms = _batch_terms(logits, labels, class_counts, mask, axis_name)
    remine_lambda = _math.like(remine_lambda, terms.logits)
    estimate = terms.first - terms.second - remine_lambda * terms.second**2
    value = -jnp.sum(terms.prior * estimate, axis=-1)
    value = jnp.where(terms.batch_size > 0, value, 0.0)
    return jnp.where(terms.num_out_of_range > 0, jnp.nan, value)


def _regularizer_shares(logits, labels, class_counts, remine_lambda, mask, axis_name) -> jax.Array:
    """`r_i` `[..., B]`; 0 for left-out examples."""
    terms = _batch_terms(logits, labels, class_counts, mask, axis_name)
    remine_lambda = _math.like(remine_lambda, terms.logits)
    prior_y = _math.per_example(terms.prior, terms.labels)
    count_y = jnp.take_along_axis(terms.class_batch_counts, terms.labels, axis=-1)
    true_logit = _math.take_true_class(terms.logits, terms.labels)
    shares = (-terms.batch_size[..., None] * prior_y * true_logit / (count_y + _COUNT_EPSILON)
              + _partition_term(terms, remine_lambda)[..., None])
    return jnp.where(terms.real, shares, 0.0)


@_math.per_example_loss
def lade_regularizer_per_example(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    remine_lambda: float = 0.01,
    mask: jax.Array | None = None,
    axis_name: str | tuple[str, ...] | None = None,
) -> jax.Array:
    r"""The LADE regulariser as per-example shares whose global-batch mean is `lade_regularizer`.

    .. math:: r_i = -\frac{B\,p_s(y_i)\,z_{i y_i}}{n^b_{y_i} + 10^{-8}}
      + \sum_c p_s(c)\,\big(s_c + \lambda s_c^2\big), \qquad \frac1B \sum_i r_i = R

    (notation of `lade_regularizer`; B, :math:`n^b` and :math:`s_c` are those of the global batch). The first term
    is the class-mean term split exactly over the examples; the second, which depends on the whole batch, is carried
    whole by every example, so the division by B counts it once. Summing the shares of each device, adding the sums
    over devices and dividing by the global B therefore gives R and its gradient: the form for a train step that
    reduces per-example losses by their sum over the global batch size.

    Args:
      logits: `[..., B, C]` floating point; the batch is axis -2 (see `lade_regularizer`).
      labels: `[..., B]` integer class indices; an out-of-range label gives NaN for its example, which is left out
        of the batch for the others.
      class_counts: `[C]` training examples per class (>= 1).
      remine_lambda: lambda of the ReMINE penalty (CIFAR-100: 0.01). May be traced.
      mask: optional `[..., B]` bool; a False example is left out of the batch and its share is 0.
      axis_name: the named axis (or axes) that splits the batch over shards (see `lade_regularizer`).

    Returns:
      `[..., B]` per-example shares; their sum over the global batch divided by its number of examples kept is R.

    Raises:
      ValueError: as `lade_regularizer`.

    Differences from the reference code: the reference computes only the scalar R; splitting it into shares is an
    ltjax device with the same batch mean and gradient.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.lade import lade_regularizer_per_example
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> lade_regularizer_per_example(logits, labels, class_counts=counts).tolist()
      [-2.4834, 0.6926]
    """
    _check_hyper_parameters(remine_lambda=remine_lambda)
    return _regularizer_shares(logits, labels, class_counts, remine_lambda, mask, axis_name)


@_math.per_example_loss
def lade_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    alpha: float = 0.1,
    remine_lambda: float = 0.01,
    mask: jax.Array | None = None,
    axis_name: str | tuple[str, ...] | None = None,
) -> jax.Array:
    r"""LADE's training loss per example: LADE-CE plus `alpha` times the regulariser's per-example share.

    .. math:: \ell_i = \mathrm{CE}\big(z_i + \log(p_s + 10^{-9}), y_i\big) + \alpha\, r_i, \qquad
      \frac1B \sum_i \ell_i = \text{LADE-CE} + \alpha R

    with `r_i` from `lade_regularizer_per_example` and R from `lade_regularizer`. Reduce with the plain mean over the
    global batch (`reduction.mean`, or the sum over devices divided by the global number of examples). Predict with
    `lade_logits`.

    Args:
      logits: `[..., B, C]` floating point, the batch on axis -2 (see `lade_regularizer`); both terms take the same
        logits, as in the reference.
      labels: `[..., B]` integer class indices; out-of-range gives NaN for that example (left out of the batch).
      class_counts: `[C]` training examples per class (>= 1), any class order.
      alpha: weight of the regulariser (the reference's `--alpha`, 0.1, which always overrides the yaml weight;
        ImageNet-LT and iNat18 0.05, Places-LT 0.005). May be traced.
      remine_lambda: lambda of the ReMINE penalty (CIFAR-100: 0.01). May be traced.
      mask: optional `[..., B]` bool; a False example is left out of the batch and its loss is 0 (NaN, as every
        loss's, if its label is out of range).
      axis_name: the named axis (or axes) that splits the batch over shards (see `lade_regularizer`).

    Returns:
      `[..., B]` per-example losses.

    Raises:
      ValueError: as `lade_regularizer`, or a negative `alpha`.

    Differences from the reference code: the regulariser enters per example (same batch mean and gradient); see
    `lade_regularizer` for its own differences. Nothing is detached, and there is no running estimate of the
    partition term, as in the reference.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.lade import lade_loss
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> lade_loss(logits, labels, class_counts=counts).tolist()
      [-0.2023, 3.1135]
    """
    _check_hyper_parameters(alpha=alpha, remine_lambda=remine_lambda)
    prior = _source_prior(class_counts, logits)
    ce = _math.cross_entropy(_math.as_compute(logits) + jnp.log(prior + _PRIOR_EPSILON), labels)
    shares = _regularizer_shares(logits, labels, class_counts, remine_lambda, mask, axis_name)
    values = ce + _math.like(alpha, logits) * shares
    return values if mask is None else jnp.where(jnp.asarray(mask, bool), values, 0.0)


def lade_logits(logits: jax.Array, *, target_priors: jax.Array | None = None) -> jax.Array:
    r"""LADE's test-time rule: :math:`z + \log p_t`, the logits shifted to the label distribution of the test split.

    Predict with their argmax; the reference reports `softmax(z + log p_t)` as the probabilities. The standard test
    sets are uniform, where the rule is the argmax of `z` (the default, `target_priors=None`, adds `log(1/C)`).

    Args:
      logits: `[..., C]` floating point.
      target_priors: optional `[C]` label distribution of the evaluated split, or its class counts (they are divided
        by their sum, without epsilon, as the reference does). A class with 0 gets `-inf`: it is never predicted,
        as in the reference. Must be finite and >= 0 with a positive sum.

    Returns:
      `[..., C]` adjusted logits in the logits' compute dtype.

    Raises:
      ValueError: logits without a class axis, priors of the wrong shape, or (when concrete) negative, non-finite or
        all-zero priors.

    Differences from the reference code: none. (The CE-only "PC softmax" baseline predicts with `z - log p_s`
    instead: `posthoc_logit_adjustment`.)

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.lade import lade_logits
      >>> logits = jnp.array([[2.0, 0.5, -1.0]])
      >>> lade_logits(logits, target_priors=jnp.array([1, 10, 100])).argmax(-1).tolist()
      [2]
    """
    if jnp.ndim(logits) < 1:
        raise ValueError("logits must have a trailing class axis [..., C]")
    logits = _math.as_compute(logits)
    num_classes = logits.shape[-1]
    if target_priors is None:
        return logits + jnp.log(jnp.asarray(1.0 / num_classes, logits.dtype))
    check_class_vector(target_priors, num_classes, "target_priors")
    if not isinstance(target_priors, jax.core.Tracer):
        known = np.asarray(target_priors, np.float64)
        if not (np.all(np.isfinite(known)) and np.all(known >= 0) and known.sum() > 0):
            raise ValueError(
                f"target_priors must be finite and >= 0 with a positive sum (a distribution or class counts), got "
                f"{known.tolist()[:10]}{'...' if known.size > 10 else ''}"
            )
    priors = _math.like(target_priors, logits)
    return logits + jnp.log(priors / priors.sum())
