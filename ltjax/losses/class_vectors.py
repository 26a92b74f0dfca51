"""Per-class vectors computed from training counts: class weights, margins, focusing exponents, scales.

Each helper is a pure function of a count vector `[C]` (any order of classes: nothing here assumes classes sorted by
frequency) and returns a vector `[C]` in `promote(float32, counts dtype)` (float32 for integer counts). All are
`jit`- and `vmap`-safe, also over their numeric hyper-parameters, so the vectors for several count profiles (say,
several imbalance factors) or several betas come from one `jax.vmap` call. Options that pick a code path
(`normalization`, `form`, `variant`, `norm_order`) stay static. Hyper-parameter defaults are the authors' CIFAR
values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from ltjax.losses._checks import check_choice, check_counts
from ltjax.losses._math import as_compute

WEIGHT_NORMALIZATIONS = ("none", "num_classes", "inverse_num_classes")
FREQFOCUS_FORMS = ("linear", "convex", "concave")
IIF_VARIANTS = ("raw", "smooth", "rel", "normit", "gombit", "base2", "base10")

# KPS builds its radii and margins on log(50 * n / n_min): the constant is the reference code's.
_KPS_LOG_BASE = 50.0


def _counts(class_counts: jax.Array) -> jax.Array:
    check_counts(class_counts)
    return as_compute(class_counts)


def normalize_class_weights(class_weights: jax.Array, normalization: str = "num_classes") -> jax.Array:
    """Rescales class weights so they sum to a fixed total.

    Args:
      class_weights: `[C]` positive weights.
      normalization: `"num_classes"` (sum to C, the CB/LDAM-DRW/IB convention), `"inverse_num_classes"` (sum to
        1/C: what the FFDS reference code computes, `w /= sum(w) * C`), or `"none"`.

    Returns:
      `[C]` weights.
    """
    check_choice(normalization, WEIGHT_NORMALIZATIONS, "normalization")
    class_weights = as_compute(class_weights)
    if normalization == "none":
        return class_weights
    num_classes = class_weights.shape[-1]
    total = jnp.sum(class_weights, axis=-1, keepdims=True)
    if normalization == "num_classes":
        return class_weights / total * num_classes
    return class_weights / (total * num_classes)


def class_balanced_weights(
    class_counts: jax.Array, *, beta: float = 0.9999, normalization: str = "num_classes"
) -> jax.Array:
    r"""Class-balanced weights from the effective number of samples (Cui et al., CVPR 2019).

    .. math:: w_c = \frac{1 - \beta}{1 - \beta^{n_c}}

    `1 - beta**n` is evaluated as `-expm1(n * log1p(-(1 - beta)))`, so beta = 0.9999 keeps float32 precision; with
    beta = 0 every weight is 1 (before normalisation).

    Args:
      class_counts: `[C]` training examples per class, all >= 1.
      beta: in [0, 1).
      normalization: see `normalize_class_weights`; the CB paper and LDAM-DRW use `"num_classes"`, the FFDS
        reference `"inverse_num_classes"`.

    Returns:
      `[C]` weights.
    """
    counts = _counts(class_counts)
    one_minus_beta = 1.0 - beta  # formed before any float32 rounding of a Python beta
    effective_fraction = -jnp.expm1(counts * jnp.log1p(-jnp.asarray(one_minus_beta, counts.dtype)))
    return normalize_class_weights(jnp.asarray(one_minus_beta, counts.dtype) / effective_fraction, normalization)


def inverse_frequency_weights(class_counts: jax.Array, *, normalization: str = "num_classes") -> jax.Array:
    r"""Inverse-frequency weights :math:`w_c \propto 1 / n_c` (the IB reference's `IBReweight` with the default).

    Returns:
      `[C]` weights, normalised as asked (default: sum to C).
    """
    return normalize_class_weights(1.0 / _counts(class_counts), normalization)


def ldam_margins(class_counts: jax.Array, *, max_margin: float = 0.5) -> jax.Array:
    r"""LDAM margins (Cao et al., NeurIPS 2019): :math:`m_c = m_{max} n_c^{-1/4} / \max_k n_k^{-1/4}`.

    Returns:
      `[C]` margins; the rarest class gets `max_margin`.
    """
    inverse_fourth_root = _counts(class_counts) ** -0.25
    max_margin = jnp.asarray(max_margin, inverse_fourth_root.dtype)
    return max_margin * inverse_fourth_root / jnp.max(inverse_fourth_root, axis=-1, keepdims=True)


def freqfocus_gammas(
    class_counts: jax.Array, *, gamma_min: float = 0.0, gamma_max: float = 3.0, form: str = "concave"
) -> jax.Array:
    r"""FreqFocus focusing exponents of FFDS (Nah et al., ICIP 2023, eqs. 4-6).

    With :math:`x_c = (n_c - n_{min}) / (n_{max} - n_{min})`:
    linear :math:`\gamma_{min} + \Delta x`, convex :math:`\gamma_{min} + \Delta x^3`, concave
    :math:`\gamma_{min} + \Delta \tanh(4x)`, with :math:`\Delta = \gamma_{max} - \gamma_{min}`. Head classes get the
    large exponent. When every class has the same count, x = 0 for all (every class gets `gamma_min`).

    Differences from the reference code: n_max and n_min are the minimum and maximum of the counts, not the first
    and last entries, so class order does not matter.

    Returns:
      `[C]` exponents.
    """
    check_choice(form, FREQFOCUS_FORMS, "form")
    counts = _counts(class_counts)
    n_min = jnp.min(counts, axis=-1, keepdims=True)
    spread = jnp.max(counts, axis=-1, keepdims=True) - n_min
    x = (counts - n_min) / jnp.where(spread > 0, spread, 1.0)
    shape = {"linear": x, "convex": x**3, "concave": jnp.tanh(4.0 * x)}[form]
    gamma_min, gamma_max = (jnp.asarray(gamma, counts.dtype) for gamma in (gamma_min, gamma_max))
    return gamma_min + (gamma_max - gamma_min) * shape


def _log_count_range(class_counts: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    log_counts = jnp.log(_counts(class_counts))
    return (
        log_counts,
        jnp.min(log_counts, axis=-1, keepdims=True),
        jnp.max(log_counts, axis=-1, keepdims=True),
    )


def kps_radii(class_counts: jax.Array) -> jax.Array:
    r"""KPS per-class radii (Li, Cheung, Hu, TPAMI 2022): :math:`r_c = 1 + \log(n_c / n_{min}) / \log 50`.

    The rarest class gets 1; the reference computes `log(50 n / n_min) / min(...)`, the same vector.
    """
    log_counts, log_min, _ = _log_count_range(class_counts)
    return 1.0 + (log_counts - log_min) / jnp.log(_KPS_LOG_BASE)


def kps_margins(class_counts: jax.Array, *, max_margin: float = 0.2) -> jax.Array:
    r"""KPS margins from the counts: :math:`m_c = m_{max} (C_m - \log n_c) / (C_m - \log n_{min})`,
    :math:`C_m = \log(50\, n_{max})` (the paper's :math:`C_m - \log n_c`, scaled so the rarest class gets
    `max_margin`).

    Differences from the reference code: the reference flips the radius vector (`m = flip(r)`), which is right only
    for classes sorted by frequency and off by the `int()` flooring of the counts (at most 0.113 % on CIFAR-10-LT
    IF 100, 3.6 % on CIFAR-100-LT IF 100); ltjax computes the margins from the counts, so class order does not
    matter.
    """
    log_counts, log_min, log_max = _log_count_range(class_counts)
    c_m = jnp.log(_KPS_LOG_BASE) + log_max
    return jnp.asarray(max_margin, log_counts.dtype) * (c_m - log_counts) / (c_m - log_min)


def kps_scales(class_counts: jax.Array, *, scale: float = 15.0, max_scale: float = 50.0) -> jax.Array:
    r"""KPS gradient-adjustment (GA) scales: :math:`s_c = \mathrm{clip}(s (1 + (\log n_{max} - \log n_c)/\log 50),
    s, s_{max})`. The head class gets `scale`, rarer classes a larger one.

    Differences from the reference code: the reference uses the flipped radius vector; ltjax uses the counts, as
    for `kps_margins`.
    """
    log_counts, _, log_max = _log_count_range(class_counts)
    scale, max_scale = (jnp.asarray(value, log_counts.dtype) for value in (scale, max_scale))
    return jnp.clip(scale * (1.0 + (log_max - log_counts) / jnp.log(_KPS_LOG_BASE)), scale, max_scale)


def iif_weights(class_counts: jax.Array, *, variant: str = "raw", norm_order: float = 0) -> jax.Array:
    r"""Inverse Image Frequency vectors (Alexandridis et al., IEEE TIP 2023), with :math:`N = \sum_c n_c`:

    raw :math:`\log(N/n_c)`; smooth :math:`\log((N+1)/(n_c+1)) + 1`; rel :math:`\log((N - n_c)/n_c)`;
    normit :math:`-\Phi^{-1}(n_c/N)`; gombit :math:`-\log(-\log(1 - n_c/N))`; base2 :math:`\log_2(N/n_c)`;
    base10 :math:`\log_{10}(N/n_c)`.

    Args:
      class_counts: `[C]` training examples per class.
      variant: one of `IIF_VARIANTS`.
      norm_order: if > 0, the vector is divided by its `norm_order`-norm over classes (the reference's
        `iif_norm`); 0 leaves it as is.

    Returns:
      `[C]` vector. `rel` and `normit` are positive only while every class holds under half the data.

    Raises:
      ValueError: C = 1 for `rel`, `normit`, `gombit` (infinite), or `raw`, `base2`, `base10` normalised (0 / 0).
    """
    check_choice(variant, IIF_VARIANTS, "variant")
    counts = _counts(class_counts)
    if counts.shape[-1] == 1 and (variant in ("rel", "normit", "gombit") or
                                  norm_order > 0 and variant in ("raw", "base2", "base10")):
        # One class holds all the data: these vectors are infinite there, or zero and then normalised.
        raise ValueError(f"IIF variant {variant!r}{' with norm_order > 0' if norm_order > 0 else ''} needs at least 2 "
                         "classes, got C = 1: with a single class it is not finite")
    total = jnp.sum(counts, axis=-1, keepdims=True)
    fraction = counts / total
    if variant == "raw":
        vector = jnp.log(total / counts)
    elif variant == "smooth":
        vector = jnp.log((total + 1.0) / (counts + 1.0)) + 1.0
    elif variant == "rel":
        vector = jnp.log((total - counts) / counts)
    elif variant == "normit":
        vector = -ndtri(fraction)
    elif variant == "gombit":
        vector = -jnp.log(-jnp.log1p(-fraction))
    elif variant == "base2":
        vector = jnp.log2(total / counts)
    else:
        vector = jnp.log10(total / counts)
    if norm_order > 0:
        vector = vector / jnp.linalg.norm(vector, ord=norm_order, axis=-1, keepdims=True)
    return vector
