"""Test and benchmark helpers: every loss of `ltjax.losses` as a case on one random problem.

A case is `fn(logits, labels, problem) -> per-example losses`, where `problem` supplies the per-class and
per-example side inputs (counts, feature norms, DynaSmooth means, SWRM coordinates) with the paper-default
hyper-parameters. Use it to property-test a new loss the way ltjax tests its own, or to time one.
"""
import dataclasses

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


def make_problem(seed: int = 0, batch: int = 6, num_classes: int = 5, scale: float = 2.0) -> Problem:
    """A random problem: normal logits times `scale`, uniform labels, sorted random counts in [3, 400)."""
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(3, 400, size=num_classes))[::-1].copy()
    return Problem(
        logits=jnp.asarray(scale * rng.standard_normal((batch, num_classes)), jnp.float32),
        labels=jnp.asarray(rng.integers(0, num_classes, size=batch), jnp.int32),
        counts=jnp.asarray(counts, jnp.int32),
        feature_norms=jnp.asarray(rng.uniform(0.5, 3.0, size=batch), jnp.float32),
        class_means=jnp.asarray(rng.uniform(0.05, 0.9, size=num_classes), jnp.float32),
        coordinates=jnp.asarray(rng.standard_normal(num_classes), jnp.float32),
    )


def _swrm(z, y, a):
    window = min(3, a.counts.shape[0])
    return losses.swrm_loss(
        z,
        y,
        class_weights=losses.swr_weights(a.counts, a.coordinates, window_size=window),
        margins=losses.swm_margins(a.coordinates, window_size=window),
    )


# Losses differentiable end to end (no stop-gradient): `check_grads` applies directly.
DIFFERENTIABLE = {
    "softmax_cross_entropy": lambda z, y, a: losses.softmax_cross_entropy(z, y),
    "softmax_cross_entropy_smoothed": lambda z, y, a: losses.softmax_cross_entropy(z, y, label_smoothing=0.1),
    "focal": lambda z, y, a: losses.focal_loss(
        z, y, gamma=2.0, class_weights=losses.class_balanced_weights(a.counts)
    ),
    "class_balanced_softmax": lambda z, y, a: losses.class_balanced_loss(z, y, class_counts=a.counts),
    "class_balanced_sigmoid": lambda z, y, a: losses.class_balanced_loss(
        z, y, class_counts=a.counts, loss_type="sigmoid"
    ),
    "class_balanced_focal": lambda z, y, a: losses.class_balanced_loss(
        z, y, class_counts=a.counts, loss_type="focal", gamma=2.0
    ),
    "ldam": lambda z, y, a: losses.ldam_loss(z, y, class_counts=a.counts),
    "ldam_drw": lambda z, y, a: losses.ldam_loss(
        z, y, class_counts=a.counts, class_weights=losses.class_balanced_weights(a.counts)
    ),
    "kps": lambda z, y, a: losses.kps_loss(z, y, class_counts=a.counts),
    "kps_ga": lambda z, y, a: losses.kps_loss(z, y, class_counts=a.counts, gradient_adjustment=True),
    "ib": lambda z, y, a: losses.influence_balanced_loss(z, y, a.feature_norms, class_counts=a.counts),
    "ib_cb": lambda z, y, a: losses.influence_balanced_loss(
        z, y, a.feature_norms, class_counts=a.counts, variant="ib_cb"
    ),
    "ib_focal": lambda z, y, a: losses.influence_balanced_loss(
        z, y, a.feature_norms, class_counts=a.counts, variant="ib_focal"
    ),
    "logit_adjusted": lambda z, y, a: losses.logit_adjusted_loss(
        z, y, class_priors=a.counts / jnp.sum(a.counts)
    ),
    "balanced_softmax": lambda z, y, a: losses.balanced_softmax_loss(z, y, class_counts=a.counts),
    **{
        f"iif_{variant}": (lambda v: lambda z, y, a: losses.iif_loss(z, y, class_counts=a.counts, variant=v))(
            variant
        )
        for variant in losses.class_vectors.IIF_VARIANTS
    },
    "swrm": _swrm,
}

# Losses with a stop-gradient inside (their modulator is a constant for autodiff, as in the references).
WITH_STOP_GRADIENT = {
    "ffds": lambda z, y, a: losses.ffds_loss(z, y, class_counts=a.counts, class_mean_probs=a.class_means),
    "focal_detached": lambda z, y, a: losses.focal_loss(z, y, gamma=2.0, stop_gradient_modulator=True),
}

ALL = {**DIFFERENTIABLE, **WITH_STOP_GRADIENT}
