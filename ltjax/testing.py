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
from ltjax.losses.gaussian_cloud import GCL_CLASSIFIER_DEFAULTS


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
    # Each example's value depends on the whole batch (LADE's regulariser): an example with an out-of-range label
    # leaves the batch rather than leaving the others' values unchanged.
    batch_coupled: bool = False

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


def _seesaw(z, y, a, **numbers):
    # The problem's counts stand for the state after this batch was counted (`seesaw_count_update`); not updated
    # here, so an out-of-range label changes no other example's loss.
    return losses.seesaw_loss(z, y, cumulative_counts=a.counts, **numbers)


def _seesaw_frozen(z, y, a, at, p=0.8, q=2.0, eps=1e-2):
    """Seesaw with its factors log S computed from the logits `at`, differentiably in `at` (unlike the loss, whose
    factors are constants)."""
    counts = jnp.maximum(a.counts.astype(at.dtype), 1.0)
    ratios = counts / counts[jnp.clip(y, 0, counts.shape[0] - 1)][..., None]
    log_probs = jax.nn.log_softmax(at, axis=-1)
    log_true = jnp.take_along_axis(log_probs, jnp.clip(y, 0, at.shape[-1] - 1)[..., None], axis=-1)
    log_factors = p * jnp.log(jnp.minimum(ratios, 1.0)) + q * jnp.maximum(
        log_probs - jnp.maximum(log_true, jnp.log(eps)), 0.0)
    target = y[..., None] == jnp.arange(at.shape[-1])
    return losses.softmax_cross_entropy(z + jnp.where(target, 0.0, log_factors), y)


def _eql_mask(z, counts, gamma):
    """A fixed Bernoulli(gamma) draw per (row, class), tied to each class's count so that it follows the class
    through a permutation of the class order (and is the same per row under vmap and on a stacked batch)."""
    uniforms = jax.random.uniform(jax.random.key(0), (z.shape[-2], 1024))
    columns = jnp.asarray(counts, jnp.int32) % 1024
    return jnp.broadcast_to(uniforms[jnp.arange(z.shape[-2])[:, None], columns[None, :]] < gamma, z.shape)


def _eql(z, y, a, tail_threshold=0.15, gamma=0.9):  # 0.15: make_problem's 5 classes include tail classes
    return losses.softmax_eql_loss(z, y, _eql_mask(z, a.counts, gamma), class_counts=a.counts,
                                   tail_threshold=tail_threshold)


def _cloud(a):
    """A fixed stand-in for GCL's normal draws, `[..., B, C]` from the problem's per-example feature norms and
    per-class coordinates, so it stacks, vmaps and permutes with them (and is a constant of the logits)."""
    return jnp.sin(3.0 * a.feature_norms[..., None] + 5.0 * a.coordinates) / 3.0


def _gcl_classifier(z, y, a, **numbers):
    return losses.gcl_loss(z, y, _cloud(a), class_counts=a.counts,
                           **{**GCL_CLASSIFIER_DEFAULTS, **numbers})


def _gcl_classifier_frozen(z, y, a, at, **numbers):
    """GCL's classifier stage with its detached focal factor `(1 - exp(-w_y CE))^gamma` computed at `at`."""
    numbers = {**GCL_CLASSIFIER_DEFAULTS, **numbers}
    gamma = numbers.pop("gamma")

    def plain(c):
        return losses.gcl_loss(c, y, _cloud(a), class_counts=a.counts, gamma=0.0, **numbers)

    return (-jnp.expm1(-plain(at))) ** gamma * plain(z)


def _branches(z: jax.Array, factors: tuple[float, ...]) -> jax.Array:
    """Distinct branch logits `[..., B, K, C]` from the logits: exact power-of-two scalings (bfloat16-exact),
    elementwise in the class, so they permute, stack and vmap with the logits."""
    return jnp.stack([factor * z for factor in factors], axis=-2)


def _reslt(z, y, a, beta=0.995, medium_from=0.35, tail_from=0.7):
    groups = losses.reslt_class_groups(a.counts, medium_from=medium_from, tail_from=tail_from)
    return losses.reslt_loss(_branches(z, (1.0, -0.5, 2.0)), y, class_groups=groups, beta=beta)


# Two experts, not three: three experts' margin losses (s m_y up to 15) are large enough that float32 finite
# differences lose the gradient's digits.
_RIDE_EXPERTS = (1.0, 0.5)
_RIDE_NUMBERS = {"diversity_factor": (-0.45, 0.0, 0.3), "base_temperature": (0.5, 1.0, 2.0), "scale": (10.0, 30.0),
                 "max_margin": (0.2, 0.5)}


def _bbn(z, y, a, alpha=0.5):
    # The partners' labels: each example's least likely class (so they follow a class permutation), out of range
    # where its own label is.
    partner_labels = jnp.where((y >= 0) & (y < z.shape[-1]), jnp.argmin(z, axis=-1), y)
    return losses.bbn_loss(z, -0.5 * z, y, partner_labels, alpha=alpha)


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
    "reslt": Case(_reslt, {"beta": (0.0, 0.5, 0.995), "medium_from": (0.0, 0.35, 0.6), "tail_from": (0.6, 0.7, 1.0)},
                  batch_coupled=True),
    "bbn": Case(_bbn, {"alpha": (0.0, 0.3, 1.0)}),
    # RIDE detaches the ensemble in its diversity term, which changes no first derivative (the ensemble is the
    # experts' mean): `check_grads` of order 1 applies.
    "ride": Case(lambda z, y, a, **n: losses.ride_loss(_branches(z, _RIDE_EXPERTS), y, class_counts=a.counts, **n),
                 _RIDE_NUMBERS),
    "ride_drw": Case(
        lambda z, y, a, **n: losses.ride_loss(_branches(z, _RIDE_EXPERTS), y, class_counts=a.counts, reweight=True,
                                              **n),
        {**_RIDE_NUMBERS, "drw_beta": (0.9, 0.9999), "diversity_prior_weight": (0.05, 0.5)}, batch_coupled=True),
    "softmax_eql": Case(_eql, {"tail_threshold": (0.0, 0.15, 0.3), "gamma": (0.0, 0.5, 0.9)}),
    "lade": Case(lambda z, y, a, **n: losses.lade_loss(z, y, class_counts=a.counts, **n),
                 {"alpha": (0.0, 0.1, 0.5), "remine_lambda": (0.0, 0.01, 0.5)}, batch_coupled=True),
    "lade_ce": Case(lambda z, y, a: losses.lade_ce_loss(z, y, class_counts=a.counts)),
    "vs": Case(lambda z, y, a, **n: losses.vs_loss(z, y, class_counts=a.counts, **n),
               {"gamma": (0.0, 0.3, 1.0), "tau": (0.0, 1.0, 1.5)}),
    "vs_weighted": Case(
        lambda z, y, a, **n: losses.vs_loss(
            z, y, class_counts=a.counts, class_weights=losses.class_balanced_weights(a.counts), **n),
        {"gamma": (0.0, 0.3), "tau": (0.0, 1.0)},
    ),
    "gcl": Case(lambda z, y, a, **n: losses.gcl_loss(z, y, _cloud(a), class_counts=a.counts, **n),
                {"margin": (0.0, 0.5), "scale": (10.0, 30.0), "noise_mul": (0.0, 0.5, 1.0)}),
    "grw": Case(lambda z, y, a, rho=1.2: losses.grw_loss(z, y, class_counts=a.counts, rho=rho),
                {"rho": (0.0, 0.5, 1.2)}),
    "las": Case(lambda z, y, a, **n: losses.label_aware_smoothing_loss(z, y, class_counts=a.counts, **n),
                {"smooth_head": (0.0, 0.2, 0.4), "smooth_tail": (0.0, 0.1, 0.3)}),
    "las_exp": Case(
        lambda z, y, a, **n: losses.label_aware_smoothing_loss(z, y, class_counts=a.counts, shape="exp", **n),
        {"smooth_head": (0.1, 0.4), "smooth_tail": (0.0, 0.1), "power": (0.5, 1.0, 3.0)},
    ),
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
    "seesaw": Case(_seesaw, {"p": (0.0, 0.8, 1.5), "q": (0.0, 1.0, 2.0), "eps": (1e-3, 1e-2, 0.3)},
                   frozen=_seesaw_frozen),
    "gcl_classifier": Case(
        _gcl_classifier,
        {"margin": (0.0, 0.1), "scale": (10.0, 20.0), "noise_mul": (0.5, 1.0), "gamma": (0.0, 1.0, 2.0)},
        frozen=_gcl_classifier_frozen,
    ),
}

ALL = {**DIFFERENTIABLE, **WITH_STOP_GRADIENT}
