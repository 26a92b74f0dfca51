"""The math every loss shares: log-probabilities in the compute dtype, per-class gathers, target shifts, focal
modulators, the precise complement of a probability.

Dtypes (the rule `ltjax.losses` documents): a loss computes in `promote(float32, logits dtype)`, so bf16, f16 and
float32 logits compute in float32 and float64 logits (with `jax_enable_x64`) in float64; `per_example_loss` casts
the output to that dtype, and each loss casts its per-class inputs to it (`like`). A helper of per-class vectors
computes in `promote(float32, dtype of its vector)`.

Out-of-range labels: every public loss is wrapped by `per_example_loss`, which makes the loss of an example whose
label lies outside [0, C) NaN, so it is visible rather than a plausible number computed for a wrong class. Inside,
gathers clip the label, so the computation stays finite and the NaN is only written into the output: the gradient
of a sum that leaves such examples out (a masked, padded batch) is finite, and zero for them.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses._checks import check_logits_and_labels


def compute_dtype(x) -> jnp.dtype:
    """`promote(float32, dtype of x)`: float32 for bf16, f16, float32 and integer inputs, float64 for float64."""
    dtype = x.dtype if isinstance(x, (jax.Array, np.ndarray, np.generic)) else jnp.asarray(x).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(jnp.float32)
    return jnp.promote_types(jnp.float32, dtype)


def as_compute(x) -> jax.Array:
    """`x` in its compute dtype (`compute_dtype`)."""
    if isinstance(x, (np.ndarray, np.generic)) and not np.issubdtype(x.dtype, np.floating):
        # NumPy integers go to float32 directly: without x64, JAX would first narrow int64 to int32, and counts of
        # 2^31 or more would wrap to negative.
        return jnp.asarray(np.asarray(x, np.float32))
    x = jnp.asarray(x)
    return x.astype(compute_dtype(x))


def like(x, reference) -> jax.Array | np.ndarray | None:
    """`x` (a per-class input or hyper-parameter of a loss) in the compute dtype of `reference` (the logits).

    NumPy and Python values stay NumPy constants (under `jit` a `jnp` conversion would be staged, a tracer), so the
    checks of their values still run once, at trace time, instead of on the device at every call."""
    if x is None:
        return None
    if isinstance(x, (np.ndarray, np.generic, int, float)):
        return np.asarray(x, compute_dtype(reference))
    return jnp.asarray(x).astype(compute_dtype(reference))


def log_probs(logits: jax.Array) -> jax.Array:
    """Log-softmax over the class axis, in the logits' compute dtype."""
    return jax.nn.log_softmax(as_compute(logits), axis=-1)


def per_example_loss(loss_fn):
    """Decorates a public loss `fn(logits, labels, ...)`: checks the two, writes NaN for out-of-range labels, and
    returns the losses in the logits' compute dtype."""
    logits_name = next(iter(inspect.signature(loss_fn).parameters))

    @functools.wraps(loss_fn)
    def checked(logits, labels, *args, **kwargs):
        logits, labels = jnp.asarray(logits), jnp.asarray(labels)
        num_classes = check_logits_and_labels(logits, labels, logits_name=logits_name)
        losses = loss_fn(logits, labels, *args, **kwargs).astype(compute_dtype(logits))
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
    class_vector = as_compute(class_vector)
    return class_vector[_clip_labels(labels, class_vector.shape[0])]


def target_mask(labels: jax.Array, num_classes: int) -> jax.Array:
    """Boolean one-hot `[..., C]`; all False for an out-of-range label."""
    return labels[..., None] == jnp.arange(num_classes)


def shift_target_logit(logits: jax.Array, labels: jax.Array, shift: jax.Array) -> jax.Array:
    """Adds a per-example `shift [...]` to the target logit only: `z + shift * onehot(y)`."""
    return jnp.where(target_mask(labels, logits.shape[-1]), logits + shift[..., None], logits)


def smoothed_nll(
    log_prob_true: jax.Array, log_prob_total: Callable[[], jax.Array], *, target_mass: float, other_mass: float
) -> jax.Array:
    """`-(target_mass * log p_y + other_mass * sum_{j != y} log p_j)`, the cross-entropy against a smoothed target.

    `other_mass` is the mass on each non-target class; `log_prob_total()` gives `sum_j log p_j` and is called only
    where `other_mass` may be nonzero, so the plain negative log-likelihood never forms the sum over classes.
    """
    loss = -target_mass * log_prob_true
    if not (isinstance(other_mass, (int, float)) and other_mass == 0):  # a traced mass may be anything
        loss = loss - other_mass * (log_prob_total() - log_prob_true)
    return loss


def power_of_nonnegative(base: jax.Array, exponent: jax.Array | float) -> jax.Array:
    """`base ** exponent` for `base >= 0`, with a finite gradient at `base == 0` for every exponent.

    `d/db b**g = g * b**(g-1)` is NaN at `b = 0, g = 0` and infinite for `g < 1`; the focal modulators hit
    `b = 0` whenever a probability saturates to 1, so the zero is routed around the power (value `0**g`, which is
    1 for `g = 0` and 0 otherwise; gradient 0).
    """
    positive = base > 0
    if not isinstance(exponent, jax.core.Tracer) and np.ndim(exponent) == 0 and float(exponent).is_integer():
        exponent = int(exponent)  # lax.integer_pow: multiplications instead of exp(g * log(b))
    powered = jnp.power(jnp.where(positive, base, 1.0), exponent)
    return jnp.where(positive, powered, jnp.where(jnp.asarray(exponent) == 0, 1.0, 0.0))


# `log(1 + x) / x` on [0, 1], interpolated at degree 9 at the Chebyshev points: in float32, `x` times it is within
# 1.5 ulp of `log1p(x)` everywhere on [0, 1] (XLA's own `log1p`: 2.5 ulp).
_LOG1P_RATIO_COEFFICIENTS = tuple(np.polynomial.Chebyshev.interpolate(
    lambda x: np.log1p(x) / x, 9, domain=[0, 1]).convert(kind=np.polynomial.Polynomial).coef)


def log1p_of_fraction(x: jax.Array) -> jax.Array:
    """`log(1 + x)` for `x` in [0, 1], as `x` times a polynomial in float32 (float64 keeps `log1p`).

    The polynomial is all multiplications and additions, which XLA:CPU fuses into an elementwise loop cheaply
    (0.06 ms over 512 x 1000 values, `benchmarks/elementwise_cost.py`); its `log1p` in such a loop takes twice a
    `log`, and the sigmoid focal loss's gradient needs the BCE elementwise (2.0x cross-entropy's time with `log1p`,
    1.2x with the polynomial, at B = 512, C = 1000).
    """
    if x.dtype == jnp.float64:
        return jnp.log1p(x)
    ratio = np.float32(_LOG1P_RATIO_COEFFICIENTS[-1])
    for coefficient in _LOG1P_RATIO_COEFFICIENTS[-2::-1]:
        ratio = ratio * x + np.float32(coefficient)
    return x * ratio


def log_prob_and_complement(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`log p_y` and `log(1 - p_y) = log sum_{j != y} p_j` of the softmax, both from one pass over the logits.

    `1 - exp(log p_y)` loses `1 - p_y` to the rounding of `log p_y = z_y - logsumexp(z)` once `p_y` is near 1
    (float32: 3% at `1 - p_y = 2e-6`); summing the other classes' terms keeps every digit. Both sums share one
    exponential per logit (a second log-softmax over the masked logits would cost half a cross-entropy more).
    Where every other class underflows, `log(1 - p_y)` is -inf with a finite (zero) gradient.
    """
    logits = as_compute(logits)
    # The max only shifts the exponentials into range: the result does not depend on it, nor its gradient.
    shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    terms = jnp.exp(shifted)
    log_total = jnp.log(jnp.sum(terms, axis=-1))
    others = jnp.sum(jnp.where(target_mask(labels, logits.shape[-1]), 0.0, terms), axis=-1)
    positive = others > 0
    log_others = jnp.where(positive, jnp.log(jnp.where(positive, others, 1.0)), -jnp.inf)
    return take_true_class(shifted, labels) - log_total, log_others - log_total


def log_prob_from_complement(log_prob_true: jax.Array, log_complement_prob: jax.Array) -> jax.Array:
    """`log p_y`, precise also as `p_y -> 1`: then `log1p(-(1 - p_y))` from the precise complement, where
    `z_y - logsumexp(z)` keeps none of the digits of the tiny result; below 1/2, the log-softmax itself."""
    near_one = log_complement_prob < jnp.log(0.5)
    safe = jnp.where(near_one, log_complement_prob, jnp.log(0.5))  # keeps the unused branch's gradient finite
    return jnp.where(near_one, jnp.log1p(-jnp.exp(safe)), log_prob_true)


def weight_per_example(losses: jax.Array, class_weights: jax.Array | None, labels: jax.Array) -> jax.Array:
    """Multiplies each example's loss by its true class's weight (no-op without weights)."""
    if class_weights is None:
        return losses
    return losses * per_example(class_weights, labels)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example `-log softmax(logits)[y]`, in float32."""
    return -take_true_class(log_probs(logits), labels)


def psum_over(x: jax.Array, axis_name: str | tuple[str, ...] | None) -> jax.Array:
    """`x` summed over the named axis `axis_name` (the devices a batch is split over); `x` itself for None."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)
