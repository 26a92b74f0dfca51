"""Test and benchmark helpers: every loss of `ltjax.losses` as a case on one random problem.

A `Case` is callable as `case(logits, labels, problem, **numbers) -> per-example losses`, where `problem` supplies
the per-class and per-example side inputs (counts, feature norms, DynaSmooth means, SWRM coordinates) and `numbers`
overrides the paper-default numeric hyper-parameters. Each case lists its numeric hyper-parameters with values to
sweep (`case.numbers`), and a loss with a stop-gradient inside gives `case.frozen(logits, labels, problem, at)`: the
same loss with its stop-gradient factors evaluated at the logits `at`, a function whose true derivative at `at` is
the loss's autodiff gradient there, so finite differences can check it. Use them to property-test a new loss the way
ltjax tests its own, or to time one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import losses


@dataclasses.dataclass
class Problem:
    logits: jax.Array
    labels: jax.Array
    counts: jax.Array
    feature_norms: jax.Array
    class_means: jax.Array
    coordinates: jax.Array


def make_problem(seed: int = 0, batch: int = 6, num_classes: int = 5, scale: float = 2.0, dtype=jnp.float32
                 ) -> Problem:
    """A random problem: normal logits times `scale`, uniform labels, sorted random counts in [3, 400).

    `dtype` is that of the floating inputs (float64 needs `jax_enable_x64`)."""
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(3, 400, size=num_classes))[::-1].copy()
    return Problem(
        logits=jnp.asarray(scale * rng.standard_normal((batch, num_classes)), dtype),
        labels=jnp.asarray(rng.integers(0, num_classes, size=batch), jnp.int32),
        counts=jnp.asarray(counts, jnp.int32),
        feature_norms=jnp.asarray(rng.uniform(0.5, 3.0, size=batch), dtype),
        class_means=jnp.asarray(rng.uniform(0.05, 0.9, size=num_classes), dtype),
        coordinates=jnp.asarray(rng.standard_normal(num_classes), dtype),
    )


@dataclasses.dataclass(frozen=True)
class Case:
    """A loss on a `Problem`, its numeric hyper-parameters, and (with a stop-gradient) its frozen form."""

    loss: Callable[..., jax.Array]
    numbers: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    frozen: Callable[..., jax.Array] | None = None

    def __call__(self, logits, labels, problem: Problem, **numbers) -> jax.Array:
        return self.loss(logits, labels, problem, **numbers)


_WINDOW = 3


def _swrm(z, y, a, beta=1.0):
    window = min(_WINDOW, a.counts.shape[0])
    return losses.swrm_loss(
        z, y,
        class_weights=losses.swr_weights(a.counts, a.coordinates, window_size=window),
        margins=losses.swm_margins(a.coordinates, window_size=window, beta=beta),
    )


def _ffds(z, y, a, **numbers):
    return losses.ffds_loss(z, y, class_counts=a.counts, class_mean_probs=a.class_means, **numbers)


def _ffds_frozen(z, y, a, at, **numbers):
    """FFDS with its focusing factor `w_y (1 - p_hat_y)^gamma_y` computed from the logits `at`."""
    defaults = {"beta": 0.9999, "gamma_min": 0.0, "gamma_max": 3.0, "smoothing_strength": 0.9, **numbers}
    smoothing = defaults.pop("label_smoothing", 0.1)
    counts = a.counts.astype(at.dtype)  # the loss computes its class vectors in the logits' dtype
    gammas = losses.freqfocus_gammas(counts, gamma_min=defaults["gamma_min"], gamma_max=defaults["gamma_max"])[y]
    weights = losses.class_balanced_weights(counts, beta=defaults["beta"], normalization="inverse_num_classes")[y]
    true_probs = jnp.clip(jnp.exp(-losses.softmax_cross_entropy(at, y)), 1e-6, 1 - 1e-6)
    smoothed = losses.dynasmooth_probs(true_probs, a.class_means[y], smoothing_strength=defaults["smoothing_strength"])
    constant = weights * (1.0 - smoothed) ** gammas
    # FFDS with no focusing and unit weights is its label-smoothed cross-entropy on clipped probabilities.
    smoothed_ce = losses.ffds_loss(z, y, class_counts=a.counts, class_mean_probs=a.class_means, gamma_min=0.0,
                                   gamma_max=0.0, beta=0.0, weight_normalization="num_classes",
                                   label_smoothing=smoothing)
    return constant.astype(smoothed_ce.dtype) * smoothed_ce


def _focal_detached_frozen(z, y, a, at, gamma=2.0):
    modulator = (1.0 - jnp.exp(-losses.softmax_cross_entropy(at, y))) ** gamma
    return modulator * losses.softmax_cross_entropy(z, y)


_BETAS = (0.9, 0.99, 0.9999)
_MARGINS = {"max_margin": (0.2, 0.5), "scale": (10.0, 30.0)}
_INFLUENCE = {"alpha": (100.0, 1000.0), "epsilon": (1e-3, 1e-1)}

# Losses differentiable end to end (no stop-gradient): `check_grads` applies directly.
DIFFERENTIABLE = {
    "softmax_cross_entropy": Case(lambda z, y, a: losses.softmax_cross_entropy(z, y)),
    "softmax_cross_entropy_smoothed": Case(
        lambda z, y, a, label_smoothing=0.1: losses.softmax_cross_entropy(z, y, label_smoothing=label_smoothing),
        {"label_smoothing": (0.0, 0.1, 0.3)},
    ),
    "focal": Case(
        lambda z, y, a, gamma=2.0: losses.focal_loss(
            z, y, gamma=gamma, class_weights=losses.class_balanced_weights(a.counts)),
        {"gamma": (0.0, 1.0, 2.5)},
    ),
    "class_balanced_softmax": Case(
        lambda z, y, a, beta=0.9999: losses.class_balanced_loss(z, y, class_counts=a.counts, beta=beta),
        {"beta": _BETAS},
    ),
    "class_balanced_sigmoid": Case(
        lambda z, y, a, beta=0.9999: losses.class_balanced_loss(
            z, y, class_counts=a.counts, loss_type="sigmoid", beta=beta),
        {"beta": _BETAS},
    ),
    "class_balanced_focal": Case(
        lambda z, y, a, beta=0.9999, gamma=2.0: losses.class_balanced_loss(
            z, y, class_counts=a.counts, loss_type="focal", beta=beta, gamma=gamma),
        {"beta": _BETAS, "gamma": (0.5, 1.0, 2.0)},
    ),
    "ldam": Case(lambda z, y, a, **n: losses.ldam_loss(z, y, class_counts=a.counts, **n), _MARGINS),
    "ldam_drw": Case(
        lambda z, y, a, **n: losses.ldam_loss(
            z, y, class_counts=a.counts, class_weights=losses.class_balanced_weights(a.counts), **n),
        _MARGINS,
    ),
    "kps": Case(lambda z, y, a, **n: losses.kps_loss(z, y, class_counts=a.counts, **n),
                {**_MARGINS, "max_scale": (40.0, 50.0)}),
    "kps_ga": Case(lambda z, y, a, **n: losses.kps_loss(z, y, class_counts=a.counts, gradient_adjustment=True, **n),
                   {**_MARGINS, "max_scale": (20.0, 50.0)}),
    "ib": Case(lambda z, y, a, **n: losses.influence_balanced_loss(z, y, a.feature_norms, class_counts=a.counts, **n),
               _INFLUENCE),
    "ib_cb": Case(
        lambda z, y, a, **n: losses.influence_balanced_loss(
            z, y, a.feature_norms, class_counts=a.counts, variant="ib_cb", **n),
        {**_INFLUENCE, "beta": _BETAS},
    ),
    "ib_focal": Case(
        lambda z, y, a, **n: losses.influence_balanced_loss(
            z, y, a.feature_norms, class_counts=a.counts, variant="ib_focal", **n),
        {**_INFLUENCE, "gamma": (0.0, 1.0, 2.0)},
    ),
    "logit_adjusted": Case(
        lambda z, y, a, tau=1.0: losses.logit_adjusted_loss(z, y, class_priors=a.counts / jnp.sum(a.counts), tau=tau),
        {"tau": (0.0, 0.5, 1.0)},
    ),
    "balanced_softmax": Case(lambda z, y, a: losses.balanced_softmax_loss(z, y, class_counts=a.counts)),
    **{
        f"iif_{variant}": Case((lambda v: lambda z, y, a: losses.iif_loss(z, y, class_counts=a.counts, variant=v))(
            variant))
        for variant in losses.class_vectors.IIF_VARIANTS
    },
    "swrm": Case(_swrm, {"beta": (0.5, 1.0, 2.0)}),
}

# Losses with a stop-gradient inside (their modulator is a constant for autodiff, as in the references).
WITH_STOP_GRADIENT = {
    "ffds": Case(
        _ffds,
        {"beta": _BETAS, "gamma_min": (0.0, 1.0), "gamma_max": (2.0, 3.0), "label_smoothing": (0.0, 0.1),
         "smoothing_strength": (0.5, 0.9)},
        frozen=_ffds_frozen,
    ),
    "focal_detached": Case(
        lambda z, y, a, gamma=2.0: losses.focal_loss(z, y, gamma=gamma, stop_gradient_modulator=True),
        {"gamma": (0.0, 1.0, 2.0)},
        frozen=_focal_detached_frozen,
    ),
}

ALL = {**DIFFERENTIABLE, **WITH_STOP_GRADIENT}
