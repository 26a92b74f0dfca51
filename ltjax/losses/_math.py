"""The math every loss shares: float32 log-probabilities, per-class gathers, target shifts, focal modulators.

Out-of-range labels: every public loss is wrapped by `per_example_loss`, which makes the loss of an example whose
label lies outside [0, C) NaN, so it is visible rather than a plausible number computed for a wrong class. Inside,
gathers clip the label, so the computation stays finite and the NaN is only written into the output: the gradient
of a sum that leaves such examples out (a masked, padded batch) is finite, and zero for them.
"""
from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp

from ltjax.losses._checks import check_logits_and_labels


def as_float32(x: jax.Array) -> jax.Array:
    """Promotes bf16/f16 inputs to float32; the losses' math always runs in float32."""
    return jnp.asarray(x).astype(jnp.float32)


def log_probs(logits: jax.Array) -> jax.Array:
    """float32 log-softmax over the class axis."""
    return jax.nn.log_softmax(as_float32(logits), axis=-1)


def per_example_loss(loss_fn):
    """Decorates a public loss `fn(logits, labels, ...)`: checks the two, and writes NaN for out-of-range labels."""
    logits_name = next(iter(inspect.signature(loss_fn).parameters))

    @functools.wraps(loss_fn)
    def checked(logits, labels, *args, **kwargs):
        logits, labels = jnp.asarray(logits), jnp.asarray(labels)
        num_classes = check_logits_and_labels(logits, labels, logits_name=logits_name)
        losses = loss_fn(logits, labels, *args, **kwargs)
        return jnp.where((labels >= 0) & (labels < num_classes), losses, jnp.nan)

    return checked


def _clip_labels(labels: jax.Array, num_classes: int) -> jax.Array:
    return jnp.clip(labels, 0, num_classes - 1)


def take_true_class(values: jax.Array, labels: jax.Array) -> jax.Array:
    """`values[..., labels]` for `values [..., C]` (labels clipped into range)."""
    index = _clip_labels(labels, values.shape[-1])
    return jnp.take_along_axis(values, index[..., None], axis=-1)[..., 0]


def per_example(class_vector: jax.Array, labels: jax.Array) -> jax.Array:
    """`class_vector[labels]` for a per-class vector `[C]` (labels clipped into range)."""
    class_vector = as_float32(class_vector)
    return class_vector[_clip_labels(labels, class_vector.shape[0])]


def target_mask(labels: jax.Array, num_classes: int) -> jax.Array:
    """Boolean one-hot `[..., C]`; all False for an out-of-range label."""
    return labels[..., None] == jnp.arange(num_classes)


def shift_target_logit(logits: jax.Array, labels: jax.Array, shift: jax.Array) -> jax.Array:
    """Adds a per-example `shift [...]` to the target logit only: `z + shift * onehot(y)`."""
    return jnp.where(target_mask(labels, logits.shape[-1]), logits + shift[..., None], logits)


def smoothed_nll(log_probs: jax.Array, labels: jax.Array, *, target_mass: float, other_mass: float) -> jax.Array:
    """`-(target_mass * log p_y + other_mass * sum_{j != y} log p_j)`, the cross-entropy against a smoothed target.

    `other_mass` is the mass on each non-target class; with `other_mass = 0` this is the plain negative
    log-likelihood and the sum over classes is never formed.
    """
    log_prob_true = take_true_class(log_probs, labels)
    loss = -target_mass * log_prob_true
    if other_mass:
        loss = loss - other_mass * (jnp.sum(log_probs, axis=-1) - log_prob_true)
    return loss


def power_of_nonnegative(base: jax.Array, exponent: jax.Array | float) -> jax.Array:
    """`base ** exponent` for `base >= 0`, with a finite gradient at `base == 0` for every exponent.

    `d/db b**g = g * b**(g-1)` is NaN at `b = 0, g = 0` and infinite for `g < 1`; the focal modulators hit
    `b = 0` whenever a probability saturates to 1, so the zero is routed around the power (value `0**g`, which is
    1 for `g = 0` and 0 otherwise; gradient 0).
    """
    positive = base > 0
    if isinstance(exponent, (int, float)) and float(exponent).is_integer():
        exponent = int(exponent)  # lax.integer_pow: multiplications instead of exp(g * log(b))
    powered = jnp.power(jnp.where(positive, base, 1.0), exponent)
    return jnp.where(positive, powered, jnp.where(jnp.asarray(exponent) == 0, 1.0, 0.0))


def one_minus_prob(log_prob: jax.Array) -> jax.Array:
    """`1 - exp(log_prob)` without cancellation when the probability is close to 1."""
    return -jnp.expm1(log_prob)


def weight_per_example(losses: jax.Array, class_weights: jax.Array | None, labels: jax.Array) -> jax.Array:
    """Multiplies each example's loss by its true class's weight (no-op without weights)."""
    if class_weights is None:
        return losses
    return losses * per_example(class_weights, labels)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example `-log softmax(logits)[y]`, in float32."""
    return -take_true_class(log_probs(logits), labels)
