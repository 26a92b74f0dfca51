"""Label-aware smoothing (LAS, MiSLAS: Zhong et al., Improving Calibration for Long-Tailed Recognition, CVPR 2021):
cross-entropy against a target smoothed by a per-class amount, most for the largest class."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses import _math
from ltjax.losses._checks import check_choice, check_class_vector, check_counts, check_range

LAS_SHAPES = ("concave", "linear", "convex", "exp")


def _check_hyper_parameters(smooth_head, smooth_tail, shape: str, power) -> None:
    check_choice(shape, LAS_SHAPES, "shape")
    check_range(smooth_head, 0.0, 1.0, "smooth_head")
    check_range(smooth_tail, 0.0, 1.0, "smooth_tail")
    if shape == "exp":
        check_range(power, 0.0, float("inf"), "power")


def _smoothing(counts: jax.Array, smooth_head, smooth_tail, shape: str, power) -> jax.Array:
    """`t + (h - t) f(r)` with `r = (n - n_min) / (n_max - n_min)` (1 for every class when all counts are equal)
    and the shape's rise `f`, `f(0) = 0`, `f(1) = 1`; computed in the counts' dtype."""
    n_min = jnp.min(counts, axis=-1, keepdims=True)
    spread = jnp.max(counts, axis=-1, keepdims=True) - n_min
    ratio = jnp.where(spread > 0, (counts - n_min) / jnp.where(spread > 0, spread, 1.0), 1.0)
    if shape == "concave":
        rise = jnp.sin(np.pi / 2 * ratio)
    elif shape == "linear":
        rise = ratio
    elif shape == "convex":
        # The reference's h + (h - t) sin(3 pi / 2 + pi r / 2) is t + (h - t) (1 - cos(pi r / 2)); written with
        # sin(pi (1 - r) / 2) for the cosine, the rise is exactly 0 at r = 0 and 1 at r = 1 (the reference's sine
        # of 2 pi in float32 leaves ~2e-7).
        rise = 1.0 - jnp.sin(np.pi / 2 * (1.0 - ratio))
    else:
        rise = _math.power_of_nonnegative(ratio, power)
    head, tail = (jnp.asarray(value, counts.dtype) for value in (smooth_head, smooth_tail))
    return tail + (head - tail) * rise


def las_smoothing(
    class_counts: jax.Array,
    *,
    smooth_head: float = 0.4,
    smooth_tail: float = 0.1,
    shape: str = "concave",
    power: float = 1.0,
) -> jax.Array:
    r"""MiSLAS's per-class label smoothing `eps` (Zhong et al., CVPR 2021; the reference's `LabelAwareSmoothing`).

    With :math:`r_c = (n_c - n_{min}) / (n_{max} - n_{min})`, :math:`h` = `smooth_head`, :math:`t` = `smooth_tail`:

    .. math::
      \text{concave: } t + (h - t) \sin(\tfrac{\pi}{2} r_c), \quad
      \text{linear: } t + (h - t)\, r_c, \quad
      \text{convex: } h + (h - t) \sin(\tfrac{3\pi}{2} + \tfrac{\pi}{2} r_c), \quad
      \text{exp: } t + (h - t)\, r_c^{p}

    The largest class gets `smooth_head` and the smallest `smooth_tail` (with the configs' h > t, the head
    classes, which the paper finds over-confident, are smoothed most); nothing assumes the classes sorted. Between
    them, concave rises fastest from the tail and convex slowest; exp with `power` p is concave-like for p < 1 and
    convex-like for p > 1.

    Args:
      class_counts: `[C]` training examples per class (>= 1), in any class order.
      smooth_head: `h` in [0, 1], the largest class's smoothing (CIFAR-100-LT IF100: 0.4). May be traced.
      smooth_tail: `t` in [0, 1], the smallest class's smoothing (CIFAR-100-LT IF100: 0.1). May be traced.
      shape: one of `LAS_SHAPES`: "concave" (the reference's default), "linear", "convex" or "exp"; static.
      power: the exponent p >= 0 of the "exp" shape (ignored by the others). The reference has no default (its
        `power=None` leaves the vector unset, an error); ltjax's default 1 makes "exp" the linear shape until a
        power is given. May be traced.

    Returns:
      `[C]` smoothing values in `promote(float32, counts dtype)` (float32 for integer counts).

    Raises:
      ValueError: an unknown shape, counts that are not a vector of finite values >= 1, or a (concrete) smoothing
        outside [0, 1] or negative power of the exp shape.

    Differences from the reference code: when every class has the same count (or there is one class) the
    reference's ratio is 0 / 0 and its vector NaN; ltjax gives every class `smooth_head` (r = 1: every class is a
    largest class), so that LAS on balanced counts is `softmax_cross_entropy(label_smoothing=smooth_head)`. The
    convex shape is evaluated as :math:`t + (h - t) (1 - \sin(\tfrac{\pi}{2} (1 - r_c)))`, the same function (its
    rise exactly 0 and 1 at the ends). The reference computes the vector in float64 and stores it in float32;
    ltjax computes it in the counts' compute dtype (in the loss: the logits').

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.label_aware import las_smoothing
      >>> counts = jnp.array([100, 5, 20, 50])
      >>> las_smoothing(counts).tolist()
      [0.4, 0.1, 0.1736, 0.3032]
      >>> las_smoothing(counts, shape="exp", power=2.0).tolist()
      [0.4, 0.1, 0.1075, 0.1673]
    """
    _check_hyper_parameters(smooth_head, smooth_tail, shape, power)
    check_counts(class_counts)
    return _smoothing(_math.as_compute(class_counts), smooth_head, smooth_tail, shape, power)


@_math.per_example_loss
def label_aware_smoothing_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts: jax.Array,
    smooth_head: float = 0.4,
    smooth_tail: float = 0.1,
    shape: str = "concave",
    power: float = 1.0,
) -> jax.Array:
    r"""Label-aware smoothing loss of MiSLAS's second stage (Zhong et al., Improving Calibration for Long-Tailed
    Recognition, CVPR 2021; `dvlab-research/MiSLAS` `methods.py` `LabelAwareSmoothing`).

    .. math::
      \ell = -\sum_j q_j \log p_j
           = (1 - \epsilon_y)\,(-\log p_y) + \epsilon_y \tfrac{1}{C} \sum_j (-\log p_j), \qquad
      q = (1 - \epsilon_y)\,\mathrm{onehot}(y) + \epsilon_y / C

    with :math:`\epsilon = ` `las_smoothing(class_counts, ...)` indexed by the label: every class, the true one
    included, gets :math:`\epsilon_y / C`. The gradient is :math:`\mathrm{softmax}(z) - q`. With
    `smooth_head == smooth_tail == a` this is `softmax_cross_entropy(label_smoothing=a)`, and with both 0 plain
    cross-entropy.

    In MiSLAS it trains the classifier and a per-class LWS scale of a mixup-trained first stage, on class-balanced
    batches, without mixup, and the batch loss is the plain mean (`reduction.mean`). Predict with the argmax of
    the (scaled) logits.

    Args:
      logits: `[..., C]` floating point (the dtype rule of `ltjax.losses`).
      labels: `[...]` integer class indices in [0, C); an out-of-range label gives NaN for that example.
      class_counts: `[C]` training examples per class (>= 1), in any class order.
      smooth_head: the largest class's smoothing in [0, 1] (CIFAR-100-LT IF100: 0.4). May be traced.
      smooth_tail: the smallest class's smoothing in [0, 1] (CIFAR-100-LT IF100: 0.1). May be traced.
      shape: "concave" (default), "linear", "convex" or "exp", see `las_smoothing`; static.
      power: exponent of the "exp" shape (default 1: linear; the reference has none). May be traced.

    Returns:
      `[...]` per-example losses.

    Raises:
      ValueError: logits, labels or counts of the wrong shape or dtype, a count that is not finite and >= 1, an
        unknown shape, or a (concrete) smoothing outside [0, 1] or negative power of the exp shape.

    Differences from the reference code: the paper's target puts :math:`\epsilon_y / (C - 1)` on each other class
    and nothing extra on the true one; the code, followed here, spreads :math:`\epsilon_y / C` over all C classes.
    Equal counts give every class `smooth_head` (the reference: NaN). The smoothing is computed in the logits'
    compute dtype; the reference stores it, and `1 - eps`, in float32 (in float64 the two differ by that rounding,
    at most ~3e-8 in `eps`).

    Example:
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.label_aware import label_aware_smoothing_loss
      >>> logits, labels = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> label_aware_smoothing_loss(logits, labels, class_counts=counts).tolist()
      [0.8413, 1.0119]
    """
    num_classes = logits.shape[-1]
    check_class_vector(class_counts, num_classes, "class_counts")
    _check_hyper_parameters(smooth_head, smooth_tail, shape, power)
    check_counts(class_counts)
    smoothing = _smoothing(_math.as_compute(_math.like(class_counts, logits)), _math.like(smooth_head, logits),
                           _math.like(smooth_tail, logits), shape, _math.like(power, logits))
    eps = _math.per_example(smoothing, labels)
    other_mass = eps / num_classes
    log_probs = _math.log_probs(logits)
    return _math.smoothed_nll(_math.take_true_class(log_probs, labels), lambda: jnp.sum(log_probs, axis=-1),
                              target_mass=1.0 - eps + other_mass, other_mass=other_mass)
