"""FFDS: frequency-weighted focusing with dynamic probability smoothing (Nah et al., ICIP 2023)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_class_vector, check_range, concrete
from ltjax.losses.class_vectors import class_balanced_weights, freqfocus_gammas

# The reference clamps probabilities to [EPS, 1 - EPS] before the log and before DynaSmooth.
PROBABILITY_CLIP = 1e-6
_LOG_LOW, _LOG_HIGH = math.log(PROBABILITY_CLIP), math.log1p(-PROBABILITY_CLIP)


@jax.custom_jvp
def _top_logit(logits: jax.Array) -> jax.Array:
    """The row's largest logit; its derivative is the indicator of the largest entries (one entry wherever
    `_clipped_log_prob_sum` uses it: a probability above 1/2)."""
    return jnp.max(logits, axis=-1)


@_top_logit.defjvp
def _top_logit_jvp(primals, tangents):
    (logits,), (logits_dot,) = primals, tangents
    top = jnp.max(logits, axis=-1)
    return top, jnp.sum(jnp.where(logits == top[..., None], logits_dot, 0.0), axis=-1)


def _clipped_log_prob_sum(logits: jax.Array, log_normalizer: jax.Array) -> jax.Array:
    """`sum_j log(clip(p_j, EPS, 1 - EPS))` per row, `log_normalizer` being `logsumexp(z)`.

    The lower bound is a `max` inside the row sum. The upper bound can only bind on the row's largest probability
    (it is then above 1/2), so it is taken off that one term outside the sum. XLA:CPU sums `max` in one fast
    reduction but writes a `clamp` out as a `[B, C]` array first: FFDS took 1.3x softmax cross-entropy's time with
    the gradient at B = 512, C = 1000, and takes 1.15x so.
    """
    above_high = jnp.maximum(_top_logit(logits) - log_normalizer - _LOG_HIGH, 0.0)
    return jnp.sum(jnp.maximum(logits - log_normalizer[..., None], _LOG_LOW), axis=-1) - above_high


def dynasmooth_probs(
    true_class_probs: jax.Array, group_mean_probs: jax.Array, *, smoothing_strength: float = 0.9
) -> jax.Array:
    r"""DynaSmooth (FFDS eq. 8 with the code's `f(d) = (k d)^2`): pulls `p_y` towards its group's mean.

    .. math:: d = \sqrt{p_y} - \sqrt{\mu}, \quad f = (k d)^2, \quad \hat p_y = p_y - f (p_y - \mu)

    For `k <= 1`, `|d| <= 1` so `p_hat` is a convex combination of `p_y` and `mu`, inside [0, 1].

    Args:
      true_class_probs: `[...]` probabilities of the true class.
      group_mean_probs: `[...]` previous epoch's mean true-class probability of each example's frequency group.
      smoothing_strength: `k`.

    Returns:
      `[...]` smoothed probabilities `p_hat`.
    """
    distance = jnp.sqrt(true_class_probs) - jnp.sqrt(group_mean_probs)
    pull = (smoothing_strength * distance) ** 2
    return true_class_probs - pull * (true_class_probs - group_mean_probs)


@_math.per_example_loss
def ffds_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    class_mean_probs: jax.Array,
    has_means: bool | jax.Array = True,
    beta: float = 0.9999,
    gamma_min: float = 0.0,
    gamma_max: float = 3.0,
    focus_form: str = "concave",
    weight_normalization: str = "inverse_num_classes",
    label_smoothing: float = 0.1,
    smoothing_strength: float = 0.9,
) -> jax.Array:
    r"""FFDS loss: class-balanced, frequency-focused, dynamically smoothed label-smoothing cross-entropy.

    .. math::
      \ell = w_y\, \mathrm{sg}\big[(1 - \hat p_y)^{\gamma_y}\big] \sum_j -Q_j \log \tilde p_j, \qquad
      Q_y = 1 - \epsilon,\ Q_{j \ne y} = \frac{\epsilon}{C - 1}

    with :math:`\tilde p = \mathrm{clip}(\mathrm{softmax}(z), 10^{-6}, 1 - 10^{-6})`, :math:`w` the class-balanced
    weights, :math:`\gamma` the FreqFocus exponents (`freqfocus_gammas`), and :math:`\hat p_y` DynaSmooth of the
    clipped :math:`\tilde p_y` towards the group mean :math:`\mu` (`dynasmooth_probs`). The modulator carries no
    gradient, as in the reference (`gt_probs` is taken under `no_grad`). While `has_means` is False (the first
    epoch of a fresh DynaSmooth state) the loss is plain cross-entropy, as in the reference.

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      class_counts: `[C]` training examples per class.
      class_mean_probs: `[C]` each class's group mean probability from the previous epoch
        (`dynasmooth.class_mean_probs(state)`).
      has_means: whether `class_mean_probs` holds a finished epoch (`state.has_means`); may be traced.
      beta: class-balanced beta (CIFAR-100 IF10 uses 0.999).
      gamma_min, gamma_max, focus_form: FreqFocus range and form (`"linear"`, `"convex"`, `"concave"`).
      weight_normalization: the reference's weights sum to 1/C (`"inverse_num_classes"`); see
        `normalize_class_weights` for the alternatives.
      label_smoothing: epsilon.
      smoothing_strength: DynaSmooth's `k`.

    Returns:
      `[...]` per-example losses; the reference divides their sum by the batch size (`reduction.mean`).

    Differences from the reference code: FreqFocus uses the min/max counts rather than the first/last class (class
    order does not matter); the group statistics must be fed from training batches only (the reference also feeds
    them from the test pass, a leak ltjax does not copy: see `ltjax.dynasmooth`).

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax import losses
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> means = jnp.array([0.7, 0.4, 0.2])
      >>> losses.ffds_loss(logits, labels, class_counts=counts, class_mean_probs=means).tolist()
      [5.95e-05, 0.2607]

    References:
      Nah et al., Rethinking Long-tailed Visual Recognition with Dynamic Probability Smoothing and Frequency
      Weighted Focusing, ICIP 2023 (github.com/nwjun/FFDS-Loss, `losses/ffds.py`).
    """
    num_classes = logits.shape[-1]
    check_class_vector(class_counts, num_classes, "class_counts")
    check_class_vector(class_mean_probs, num_classes, "class_mean_probs")
    if num_classes < 2 and concrete(label_smoothing) != 0:
        raise ValueError("FFDS label smoothing spreads epsilon over C - 1 classes and needs C >= 2")
    check_range(label_smoothing, 0.0, 1.0, "label_smoothing")
    counts = _math.like(class_counts, logits)
    label_smoothing = label_smoothing if isinstance(label_smoothing, (int, float)) else _math.like(
        label_smoothing, logits)
    logits = _math.as_compute(logits)
    log_normalizer = jax.nn.logsumexp(logits, axis=-1)
    log_prob_true = jnp.clip(_math.take_true_class(logits, labels) - log_normalizer, _LOG_LOW, _LOG_HIGH)
    smoothed_ce = _math.smoothed_nll(
        log_prob_true,
        lambda: _clipped_log_prob_sum(logits, log_normalizer),
        target_mass=1.0 - label_smoothing,
        other_mass=label_smoothing / max(num_classes - 1, 1),
    )
    true_class_probs = jax.lax.stop_gradient(jnp.exp(log_prob_true))
    smoothed_probs = dynasmooth_probs(
        true_class_probs,
        _math.per_example(_math.like(class_mean_probs, logits), labels),
        smoothing_strength=_math.like(smoothing_strength, logits),
    )
    gammas = _math.per_example(
        freqfocus_gammas(counts, gamma_min=_math.like(gamma_min, logits), gamma_max=_math.like(gamma_max, logits),
                         form=focus_form), labels
    )
    modulator = _math.power_of_nonnegative(1.0 - smoothed_probs, gammas)
    class_weights = class_balanced_weights(counts, beta=_math.like(beta, logits), normalization=weight_normalization)
    ffds = _math.weight_per_example(modulator * smoothed_ce, class_weights, labels)
    if isinstance(has_means, bool):
        return ffds if has_means else _math.cross_entropy(logits, labels)
    return jnp.where(has_means, ffds, _math.cross_entropy(logits, labels))
