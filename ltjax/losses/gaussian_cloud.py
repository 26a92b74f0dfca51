"""Gaussian clouded logits (GCL, Li, Cheung and Lu, CVPR 2022): cosines lowered by a per-class-scaled half-normal
cloud, a target margin and a scale, then cross-entropy; with the focal modulation of its classifier stage."""
from __future__ import annotations

import types

import jax
import jax.numpy as jnp

from ltjax.losses import _math
from ltjax.losses._checks import check_class_vector, check_class_weights, check_counts, check_range, concrete

# The reference samples the cloud from `Normal(0, 1/3)`: clamped to [-1, 1] it is cut at three standard deviations.
CLOUD_STD = 1.0 / 3.0

# What the authors' CIFAR scripts run in stage 2 (`cifar_train_classifier.py`, classifier re-training on a frozen
# backbone with class-balanced sampling); `gcl_loss`'s own defaults are stage 1's (`cifar_train_backbone.py`).
GCL_CLASSIFIER_DEFAULTS = types.MappingProxyType({"margin": 0.1, "scale": 20.0, "noise_mul": 0.5, "gamma": 1.0})


def gcl_cloud(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    r"""Draws GCL's cloud: independent :math:`\mathcal{N}(0, (1/3)^2)` values, one per (example, class).

    These are the raw draws of the reference's `normal.Normal(0, 1/3).sample(cosine.shape)`; `gcl_loss` clamps them
    to [-1, 1] and takes their absolute value. Draw a fresh cloud at every step (e.g. from
    `jax.random.fold_in(key, step)`, or one row per example from per-example keys:
    `jax.vmap(lambda k: gcl_cloud(k, (C,)))(keys)`); mixup's two terms each draw their own.

    Args:
      key: a `jax.random` key.
      shape: the cosines' shape `[..., C]` (the cloud is per element, not per class).
      dtype: floating dtype of the draws.

    Returns:
      `shape` array of normal draws with standard deviation 1/3, the `cloud` argument of `gcl_loss`.

    Example:
      >>> import jax
      >>> from ltjax.losses.gaussian_cloud import gcl_cloud
      >>> cloud = gcl_cloud(jax.random.key(0), (1000, 10))
      >>> bool(abs(cloud.std() - 1 / 3) < 0.01)
      True
    """
    return jax.random.normal(key, tuple(shape), dtype) * jnp.asarray(CLOUD_STD, dtype)


def gcl_cloud_amplitudes(class_counts: jax.Array) -> jax.Array:
    r"""GCL's per-class cloud amplitude: :math:`a_c = (\log n_{max} - \log n_c) / \max_k (\log n_{max} - \log n_k)`.

    The rarest class gets 1, the largest 0. When every class has the same count (and for a single class) the
    reference's ratio is 0 / 0 = NaN; ltjax returns zeros there (no cloud: the limit of a vanishing imbalance).

    Args:
      class_counts: `[C]` training examples per class (>= 1), in any class order.

    Returns:
      `[C]` amplitudes in [0, 1], in `promote(float32, counts dtype)`.
    """
    check_counts(class_counts)
    log_counts = jnp.log(_math.as_compute(class_counts))
    gaps = jnp.max(log_counts, axis=-1, keepdims=True) - log_counts
    widest = jnp.max(gaps, axis=-1, keepdims=True)
    return gaps / jnp.where(widest > 0, widest, 1.0)


def _check_positive(value, name: str) -> None:
    known = concrete(value)
    if known is not None and not known > 0:
        raise ValueError(f"{name} must be positive, got {known}")


@_math.per_example_loss
def gcl_loss(
    cosines: jax.Array,
    labels: jax.Array,
    cloud: jax.Array,
    *,
    class_counts: jax.Array,
    margin: float = 0.0,
    scale: float = 30.0,
    noise_mul: float = 0.5,
    gamma: float = 0.0,
    class_weights: jax.Array | None = None,
) -> jax.Array:
    r"""Gaussian clouded logit loss (Li, Cheung and Lu, Long-tailed Visual Recognition via Gaussian Clouded Logit
    Adjustment, CVPR 2022), both stages.

    .. math::
      \tilde c_{j} = \cos\theta_{j} - \nu\, |\mathrm{clip}(\epsilon_{j}, -1, 1)|\, a_j, \qquad
      x = s\,(\tilde c - m\,\mathrm{onehot}(y)), \qquad
      \ell = \big(1 - \mathrm{sg}(e^{-w_y \mathrm{CE}})\big)^\gamma\, w_y\, \mathrm{CE}, \quad
      \mathrm{CE} = -\log \mathrm{softmax}(x)_y

    with the cloud :math:`\epsilon \sim \mathcal{N}(0, (1/3)^2)` per (example, class) (`gcl_cloud`), the
    amplitudes :math:`a = ` `gcl_cloud_amplitudes(class_counts)` (1 for the rarest class, 0 for the largest), the
    noise multiplier :math:`\nu` = `noise_mul`, and `sg` a stop-gradient. The cloud only lowers cosines, every
    class's including the target's, most for rare classes; it is a constant for the gradient, which flows to the
    cosines only. Predict with the argmax of the raw cosines (no cloud, margin or scale).

    Stage 1 (`cifar_train_backbone.py`, representation learning): the defaults (`margin=0`, `scale=30`,
    `noise_mul=0.5`, `gamma=0`, the reference's `train_cls=False`); reduce with `reduction.mean`, or with class
    weights `reduction.weighted_mean` (PyTorch's `cross_entropy(weight=w)`). Stage 2 (`cifar_train_classifier.py`,
    the cosine classifier re-trained on the frozen backbone with class-balanced sampling): `GCL_CLASSIFIER_DEFAULTS`
    (`margin=0.1`, `scale=20`, `noise_mul=0.5`, `gamma=1`, the reference's `train_cls=True`); reduce with
    `reduction.mean` even with class weights. `gamma=0` is stage 1 per example, whatever the reduction. Both stages
    train on mixup batches, `lam * gcl(z, y_a, cloud_a) + (1 - lam) * gcl(z, y_b, cloud_b)` with two independent
    clouds.

    Args:
      cosines: `[..., C]` cosine logits of a normalised linear head (features and class weights L2-normalised).
      labels: `[...]` integer class indices; out-of-range gives NaN.
      cloud: `[..., C]` the raw normal draws, the cosines' shape (`gcl_cloud(key, cosines.shape)`); they are
        clamped to [-1, 1] and their absolute value taken here, so already-folded draws in [0, 1] give the same loss.
      class_counts: `[C]` training examples per class (>= 1), in any class order.
      margin: `m`, subtracted from the (clouded) target cosine before scaling (stage 1: 0, stage 2: 0.1; the
        reference class's default is 0.5). May be traced.
      scale: `s` > 0 (stage 1: 30, stage 2: 20). May be traced.
      noise_mul: `nu` >= 0, the cloud's size (both stages: 0.5; the reference class's default is 1). May be traced.
      gamma: focal exponent >= 0 of stage 2 (1 there); 0 is stage 1's plain weighted cross-entropy. May be traced.
      class_weights: optional `[C]` weights `w` (the reference's `weight`; its CIFAR scripts pass none).

    Returns:
      `[...]` per-example losses.

    Raises:
      ValueError: a cloud whose shape is not the cosines', mismatched per-class shapes, counts that are not finite
        and >= 1, or a (concrete) non-positive scale or negative noise multiplier or gamma.

    Differences from the reference code: the cloud is an argument, so the loss is deterministic given it (the
    reference samples inside `forward`). When all counts are equal the reference's amplitudes are NaN and ltjax's
    zero. The cross-entropy is `-log p_y` from the precise complement `log sum_{j != y} p_j`, and the focal factor
    `-expm1(-w CE)` rather than `1 - exp(-w CE)`: the same values up to rounding, but saturated losses (the target
    ahead by `s * gap` up to 60, losses ~1e-13 and below) keep their digits and their gradients, in float32 too,
    where `logsumexp(x) - x_y` rounds to 0. The focal `p` comes from the weighted cross-entropy (`p_y ** w_y`), as
    in the reference (unlike `focal_loss`).

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from ltjax.losses.gaussian_cloud import gcl_cloud, gcl_loss
      >>> cosines, labels = jnp.array([[0.2, 0.1, -0.3], [0.2, 0.1, 0.4]]), jnp.array([0, 2])
      >>> counts = jnp.array([100, 20, 5])
      >>> cloud = jnp.array([[0.1, -0.5, 0.3], [2.0, 0.2, -0.4]])  # e.g. gcl_cloud(key, cosines.shape)
      >>> gcl_loss(cosines, labels, cloud, class_counts=counts).tolist()
      [0.0009, 0.6981]
      >>> gcl_loss(cosines, labels, cloud, class_counts=counts, margin=0.1, scale=20.0, gamma=1.0).tolist()
      [0.0042, 1.9186]
    """
    num_classes = cosines.shape[-1]
    if jnp.shape(cloud) != cosines.shape:
        raise ValueError(
            f"cloud must have the cosines' shape {cosines.shape} (one draw per example and class), got "
            f"{jnp.shape(cloud)}"
        )
    check_class_vector(class_counts, num_classes, "class_counts")
    check_class_weights(class_weights, num_classes)
    _check_positive(scale, "scale")
    check_range(noise_mul, 0.0, float("inf"), "noise_mul")
    check_range(gamma, 0.0, float("inf"), "gamma")
    no_focus = isinstance(gamma, (int, float)) and gamma == 0
    margin, scale, noise_mul, gamma = (_math.like(value, cosines) for value in (margin, scale, noise_mul, gamma))
    folded = jax.lax.stop_gradient(jnp.abs(jnp.clip(_math.like(cloud, cosines), -1.0, 1.0)))
    amplitudes = gcl_cloud_amplitudes(_math.like(class_counts, cosines))
    clouded = _math.as_compute(cosines) - noise_mul * folded * amplitudes
    logits = scale * jnp.where(_math.target_mask(labels, num_classes), clouded - margin, clouded)
    # -log p_y from the precise complement: at s = 30 the target saturates (s * gap up to 60, losses ~1e-13), where
    # `logsumexp(x) - x_y` rounds to 0 in float32 and its gradient `p_y - 1` to 0 or a wrong-signed ulp.
    log_prob_true, log_complement = _math.log_prob_and_complement(logits, labels)
    cross_entropy = -_math.log_prob_from_complement(log_prob_true, log_complement)
    losses = _math.weight_per_example(cross_entropy, _math.like(class_weights, cosines), labels)
    if no_focus:
        return losses
    modulator = _math.power_of_nonnegative(-jnp.expm1(-jax.lax.stop_gradient(losses)), gamma)
    return modulator * losses
