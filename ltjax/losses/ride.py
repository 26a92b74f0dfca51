"""RIDE (Wang et al., ICLR 2021): the multi-expert loss of its first stage (the code's `RIDELoss`), per example.

RIDE trains K experts, each with its own normalised linear head; the model's output (the prediction, and the
"ensemble" the loss sees) is the mean of their logits. The loss sums over the experts an LDAM cross-entropy of each
expert's logits and a diversity term, the KL divergence from the detached ensemble distribution to the expert's,
weighted by a negative factor so that training pushes every expert away from the ensemble. Re-weighting (DRW class
weights for the cross-entropy, per-class temperatures for the diversity term) switches on in a second phase.

The reference reduces each term of each expert to a batch-level mean, with different normalisers: the weighted mean
`sum_i w_{y_i} ce_i / sum_i w_{y_i}` (PyTorch's `cross_entropy(weight=w)`) for the cross-entropy while re-weighting,
the batch size B for everything else. `ride_loss` returns per-example shares whose plain mean over the (global) batch
is that loss, in value and in gradient, so a train step that sums per-example losses and divides by the global number
of examples (`ltjax.methods.Objective`) trains on it; the normalisers are those of the global batch (`axis_name`),
padding left out (`mask`), as `lade_loss` does for its batch-level regulariser.
"""
from __future__ import annotations

from typing import NamedTuple

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
from ltjax.losses.class_vectors import class_balanced_weights, ldam_margins

__all__ = ["RideClassVectors", "ride_class_vectors", "ride_loss"]


class RideClassVectors(NamedTuple):
    """RIDE's per-class constants (`ride_class_vectors`).

    Attributes:
      margins: `[C]` LDAM margins m_c, before the scale s.
      drw_weights: `[C]` class-balanced weights summing to C (the cross-entropy's, while re-weighting).
      temperature_weights: `[C]` v_c, at most 1: the diversity temperature is `base_temperature * v_c` while
        re-weighting.
    """

    margins: jax.Array
    drw_weights: jax.Array
    temperature_weights: jax.Array


def _check_class_hyper_parameters(max_margin, drw_beta, diversity_prior_weight) -> None:
    check_range(max_margin, 0.0, float("inf"), "max_margin")
    known = concrete(drw_beta)
    if known is not None and not 0.0 <= known < 1.0:
        raise ValueError(f"drw_beta must lie in [0, 1) (1 gives 0 / 0 weights), got {known}")
    check_range(diversity_prior_weight, 0.0, 1.0, "diversity_prior_weight")


def ride_class_vectors(
    class_counts: jax.Array,
    *,
    max_margin: float = 0.5,
    drw_beta: float = 0.9999,
    diversity_prior_weight: float = 0.05,
) -> RideClassVectors:
    r"""RIDE's constants from the training counts: LDAM margins, DRW weights and diversity temperature weights.

    .. math:: m_c = m_{max} \frac{n_c^{-1/4}}{\max_j n_j^{-1/4}}, \qquad
      w_c \propto \frac{1 - \beta}{1 - \beta^{n_c}},\ \sum_c w_c = C, \qquad
      v_c = \frac{\gamma C p_c + 1 - \gamma}{\max_j (\gamma C p_j + 1 - \gamma)},\ p_c = \frac{n_c}{\sum_j n_j}

    The rarest class gets the margin `max_margin`, the largest class the temperature weight 1 (on CIFAR-100-LT IF100
    the rarest gets about 0.81).

    Args:
      class_counts: `[C]` training examples per class (>= 1), any class order.
      max_margin: LDAM margin of the rarest class (the reference's `max_m`). May be traced.
      drw_beta: effective-number beta of the DRW weights, in [0, 1) (0 gives unit weights). May be traced.
      diversity_prior_weight: gamma, the reference's `reweight_factor`, in [0, 1]. May be traced.

    Returns:
      `RideClassVectors(margins, drw_weights, temperature_weights)`, each `[C]` in `promote(float32, counts dtype)`.

    Raises:
      ValueError: counts not a `[C]` vector of finite values >= 1, or (when concrete) a hyper-parameter out of range.

    Differences from the reference code: none (the reference asserts the temperature weights are positive, which the
    range of gamma guarantees here).

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.ride import ride_class_vectors
      >>> vectors = ride_class_vectors(jnp.array([100, 20, 5]))
      >>> vectors.margins.tolist(), vectors.temperature_weights.tolist()
      ([0.2364, 0.3536, 0.5], [1.0, 0.9103, 0.8935])
    """
    _check_class_hyper_parameters(max_margin, drw_beta, diversity_prior_weight)
    check_counts(class_counts)
    counts = _math.as_compute(class_counts)
    margins = ldam_margins(counts, max_margin=max_margin)
    drw_weights = class_balanced_weights(counts, beta=drw_beta)
    gamma = jnp.asarray(diversity_prior_weight, counts.dtype)
    prior = counts / jnp.sum(counts, axis=-1, keepdims=True)
    temperature_weights = counts.shape[-1] * prior * gamma + 1.0 - gamma
    temperature_weights = temperature_weights / jnp.max(temperature_weights, axis=-1, keepdims=True)
    return RideClassVectors(margins, drw_weights, temperature_weights)


def ride_loss(
    expert_logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    reweight: bool = False,
    diversity_factor: float = -0.45,
    base_temperature: float = 1.0,
    scale: float = 30.0,
    max_margin: float = 0.5,
    drw_beta: float = 0.9999,
    diversity_prior_weight: float = 0.05,
    mask: jax.Array | None = None,
    axis_name: str | tuple[str, ...] | None = None,
) -> jax.Array:
    r"""RIDE's stage-1 loss (Wang et al., ICLR 2021; the code's `RIDELoss`) as per-example shares.

    With expert logits :math:`z_{ik}` (already scaled, :math:`s \cos`), the ensemble
    :math:`\bar z_i = \frac1K \sum_k z_{ik}`, margins m, DRW weights w and temperature weights v
    (`ride_class_vectors`):

    .. math::
      \ell_i = \frac{B}{\sum_j w_{y_j}}\, w_{y_i} \sum_k \mathrm{CE}\big(z_{ik} - s\, m_{y_i} e_{y_i}, y_i\big)
      + \lambda \bar T^2 \sum_k \mathrm{KL}\Big(\mathrm{sg}\big[\mathrm{softmax}(\bar z_i / T)\big] \,\Big\|\,
      \mathrm{softmax}(z_{ik} / T)\Big),
      \qquad \frac1B \sum_i \ell_i = \text{the reference's loss}

    where :math:`e_y` is the one-hot vector, sg the stop-gradient, :math:`\lambda` = `diversity_factor`, and
    :math:`T` is divided into each class's logit. Before re-weighting (`reweight=False`): w = 1 and
    :math:`T = \bar T = T_0` (`base_temperature`). While re-weighting: w the DRW weights (so the cross-entropy is
    PyTorch's weighted mean over the batch), :math:`T_c = T_0 v_c` per class and :math:`\bar T` its mean over the
    classes. If :math:`\lambda = 0`, every expert's cross-entropy takes the ensemble :math:`\bar z_i` instead of
    :math:`z_{ik}` (the reference's special case). The experts' terms are summed, not averaged. B and
    :math:`\sum_j w_{y_j}` are those of the global batch: the examples `mask` keeps, on every device of `axis_name`.
    Predict with the argmax of the ensemble logits.

    Args:
      expert_logits: `[..., B, K, C]` the K experts' logits as the reference's loss sees them (for its normalised
        heads: `scale * cosine`); floating point (the dtype rule of `ltjax.losses`). Leading axes are separate
        batches.
      labels: `[..., B]` integer class indices; an out-of-range label gives NaN for its example, which is left out
        of the batch for the others.
      class_counts: `[C]` training examples per class (>= 1), any class order.
      reweight: static bool, the phase: False before the reference's `reweight_epoch` (epochs 1-160 of its CIFAR
        recipe), True after it (DRW weights and per-class temperatures).
      diversity_factor: lambda, the reference's `additional_diversity_factor`: negative (CIFAR config -0.45, the
        class default -0.2), so the loss rewards experts that differ from the ensemble. May be traced; exactly 0
        switches the cross-entropy to the ensemble logits.
      base_temperature: :math:`T_0` of the diversity term (> 0). May be traced.
      scale: s, the scale the logits carry; the margin enters as :math:`s\, m_y` (the reference's `s`). May be
        traced.
      max_margin: LDAM margin of the rarest class (`max_m`). May be traced.
      drw_beta: effective-number beta of the DRW weights, in [0, 1). May be traced.
      diversity_prior_weight: gamma of the temperature weights (`reweight_factor`), in [0, 1]. May be traced.
      mask: optional `[..., B]` bool; a False example (padding) is left out of every sum and its share is 0 (NaN, as
        every loss's, if its label is out of range). Its logits may be anything, even non-finite.
      axis_name: the named axis (or axes) of a `shard_map`, `pmap` or `vmap` that splits the batch; B and
        :math:`\sum_j w_{y_j}` are then summed over it (`psum`), so every shard's shares are those of the global batch.
        None: this call sees the whole batch.

    Returns:
      `[..., B]` per-example shares in the logits' compute dtype; their plain mean over the global batch (its sum
      over devices divided by its number of kept examples, `reduction.mean` on one device) is the reference's loss.

    Raises:
      ValueError: inputs of the wrong shape or dtype (expert_logits need batch, expert and class axes; labels the
        batch axes), counts not a `[C]` vector of finite values >= 1, a `reweight` that is not a Python bool, or
        (when concrete) a hyper-parameter out of range.

    The stop-gradient on the ensemble distribution is the reference's. It changes no first derivative: the ensemble
    being the mean of the experts' logits, :math:`\sum_k \log q_k - K \log p` is the same for every class, so the
    KL terms' derivative through p vanishes, and finite differences agree with the gradient; second derivatives do
    see it.

    Differences from the reference code: the batch-level means enter as per-example shares (same batch mean and
    gradient); `mask` and `axis_name` are additions (the reference sees one unpadded batch). The temperature mean
    :math:`\bar T` is a number in the reference (`.item()`); here it may be traced, which changes no gradient in
    the logits. The reference crashes when re-weighting is disabled altogether (`reweight_epoch = -1`); here the
    phase is chosen by `reweight`. Validation in the reference calls the loss without the experts (plain CE of the
    ensemble); ltjax leaves evaluation losses to the caller. Stage 2's router and the distillation variant
    (`RIDELossWithDistill`, which multiplies everything by K) are not part of this loss.

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.ride import ride_loss
      >>> cosines = jnp.array([[[0.2, 0.1, -0.3], [0.3, -0.1, 0.0]], [[0.2, 0.1, 0.4], [-0.1, 0.2, 0.5]]])
      >>> labels, counts = jnp.array([0, 2]), jnp.array([100, 20, 5])
      >>> ride_loss(30.0 * cosines, labels, class_counts=counts).tolist()
      [4.2331, 15.0502]
      >>> ride_loss(30.0 * cosines, labels, class_counts=counts, reweight=True).tolist()
      [0.3820, 28.6624]
    """
    expert_logits, labels = jnp.asarray(expert_logits), jnp.asarray(labels)
    num_classes = check_branch_logits_and_labels(expert_logits, labels, name="expert_logits", branch="expert")
    if mask is not None:
        check_same_batch_shape(mask, labels, "mask")
    if not isinstance(reweight, (bool, np.bool_)):
        raise ValueError(
            f"reweight must be a Python bool: it picks the phase's code path (static), got {reweight!r}; switch "
            "phases with two calls (lax.switch/lax.cond), one with each value"
        )
    _check_class_hyper_parameters(max_margin, drw_beta, diversity_prior_weight)
    check_range(scale, 0.0, float("inf"), "scale")
    known_temperature = concrete(base_temperature)
    if known_temperature is not None and not known_temperature > 0:
        raise ValueError(f"base_temperature must be positive, got {known_temperature}")
    check_class_vector(class_counts, num_classes, "class_counts")

    z = _math.as_compute(expert_logits)
    dtype = z.dtype
    in_range = (labels >= 0) & (labels < num_classes)
    unmasked = jnp.ones_like(in_range) if mask is None else jnp.asarray(mask, bool)
    real = unmasked & in_range
    # Left-out rows compute on zeros, so padding with non-finite logits makes neither a NaN value nor a NaN gradient.
    z = jnp.where(real[..., None, None], z, 0.0)
    vectors = ride_class_vectors(
        _math.like(class_counts, z),
        max_margin=_math.like(max_margin, z),
        drw_beta=drw_beta,  # as given: class_balanced_weights forms 1 - beta before any float32 rounding
        diversity_prior_weight=_math.like(diversity_prior_weight, z),
    )
    diversity_factor, base_temperature, scale = (
        _math.like(value, z) for value in (diversity_factor, base_temperature, scale))
    ensemble = jnp.mean(z, axis=-2)  # [..., B, C]

    # Base terms: LDAM cross-entropy of each expert (of the ensemble, K times, when the diversity factor is 0).
    base_logits = jnp.where(diversity_factor == 0, ensemble[..., None, :], z)  # [..., B, K, C]
    expert_labels = jnp.broadcast_to(labels[..., None], z.shape[:-1])
    target_shift = -scale * _math.per_example(vectors.margins, expert_labels)
    base = jnp.sum(_math.cross_entropy(_math.shift_target_logit(base_logits, expert_labels, target_shift),
                                       expert_labels), axis=-1)  # [..., B]
    if reweight:
        weights = jnp.where(real, _math.per_example(vectors.drw_weights, labels), 0.0)
        total_weight = _math.psum_over(jnp.sum(weights, axis=-1), axis_name)
        batch_size = _math.psum_over(jnp.sum(real, axis=-1).astype(dtype), axis_name)
        normalizer = batch_size / jnp.where(total_weight > 0, total_weight, 1.0)
        base = normalizer[..., None] * weights * base

    # Diversity terms: KL(detached ensemble distribution || each expert's), at the phase's temperature.
    if reweight:
        temperature = base_temperature * vectors.temperature_weights  # [C]
        temperature_mean = jnp.mean(temperature)
    else:
        temperature = temperature_mean = base_temperature
    log_ensemble = jax.lax.stop_gradient(jax.nn.log_softmax(ensemble / temperature, axis=-1))[..., None, :]
    log_experts = jax.nn.log_softmax(z / temperature, axis=-1)
    divergence = jnp.sum(jnp.exp(log_ensemble) * (log_ensemble - log_experts), axis=(-2, -1))  # [..., B]
    shares = base + diversity_factor * temperature_mean**2 * divergence

    shares = jnp.where(unmasked, shares, 0.0).astype(dtype)
    return jnp.where(in_range, shares, jnp.nan)
