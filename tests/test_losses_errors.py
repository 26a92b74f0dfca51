"""Bad input fails at trace time with a message naming the argument."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import losses, stats
from ltjax.testing import make_problem

P = make_problem(seed=0, batch=4, num_classes=5)


def test_labels_must_match_the_logits_batch_shape():
    with pytest.raises(ValueError, match=r"labels shape \(3,\) must equal logits shape"):
        losses.softmax_cross_entropy(P.logits, P.labels[:3])
    with pytest.raises(ValueError, match=r"labels shape .* must equal cosines shape"):
        losses.ldam_loss(P.logits, P.labels[:3], class_counts=P.counts)


def test_labels_must_be_integers_and_logits_floating():
    with pytest.raises(ValueError, match="labels must be integer class indices"):
        losses.focal_loss(P.logits, P.labels.astype(jnp.float32))
    with pytest.raises(ValueError, match="logits must be floating point"):
        losses.softmax_cross_entropy(P.labels[:, None], P.labels)


def test_shape_errors_are_raised_under_jit_at_trace_time():
    with pytest.raises(ValueError, match="class_counts must have shape \\[5\\]"):
        jax.jit(lambda z, y: losses.class_balanced_loss(z, y, class_counts=jnp.ones(4)))(P.logits, P.labels)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: losses.iif_loss(P.logits, P.labels, class_counts=P.counts[:4]), "class_counts must have shape"),
        (lambda: losses.focal_loss(P.logits, P.labels, class_weights=jnp.ones(6)), "class_weights must have shape"),
        (lambda: losses.swrm_loss(P.logits, P.labels, class_weights=jnp.ones(5), margins=jnp.ones(3)),
         "margins must have shape"),
        (lambda: losses.ffds_loss(P.logits, P.labels, class_counts=P.counts, class_mean_probs=jnp.ones(2)),
         "class_mean_probs must have shape"),
        (lambda: losses.influence_balanced_loss(P.logits, P.labels, jnp.ones(3), class_counts=P.counts),
         "feature_norms must have the labels' shape"),
        (lambda: losses.logit_adjusted_loss(P.logits, P.labels, class_priors=jnp.ones((5, 1))),
         "class_priors must have shape"),
        (lambda: losses.weighted_mean(jnp.ones(4), jnp.ones(3)), "sample_weights shape"),
    ],
)
def test_mismatched_per_class_and_per_example_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda c: losses.class_balanced_weights(c),
        lambda c: losses.ldam_margins(c),
        lambda c: losses.kps_margins(c),
        lambda c: losses.iif_weights(c),
        lambda c: losses.freqfocus_gammas(c),
        lambda c: losses.balanced_softmax_loss(P.logits, P.labels, class_counts=c),
        lambda c: losses.swr_weights(c, P.coordinates, window_size=3),
        lambda c: stats.ClassStats.from_counts(c),
    ],
)
def test_counts_with_zeros_are_rejected(call):
    with pytest.raises(ValueError, match=r"class_counts must be finite and positive for every class; classes \[2\] "
                                         r"have \[0\]"):
        call(jnp.array([50, 10, 0, 4, 2]))
    with pytest.raises(ValueError, match=r"classes \[1\] have \[inf\]"):
        call(jnp.array([50.0, jnp.inf, 3.0, 4.0, 2.0]))


@pytest.mark.parametrize("bad", [0.0, jnp.inf, -3.0, jnp.nan])
def test_invalid_traced_counts_raise_under_jit(bad):
    """Counts passed into jit (or swept under vmap) are tracers: checked when the computation runs, not skipped."""
    loss = jax.jit(lambda counts: losses.balanced_softmax_loss(P.logits, P.labels, class_counts=counts))
    good = jnp.asarray(P.counts, jnp.float32)
    assert np.all(np.isfinite(loss(good)))
    with pytest.raises(Exception, match=r"class_counts must be finite and positive for every class; classes \[2\]"):
        jax.block_until_ready(loss(good.at[2].set(bad)))
    swept = jax.vmap(lambda counts: losses.class_balanced_weights(counts))
    with pytest.raises(Exception, match=r"class_counts must be finite and positive"):
        jax.block_until_ready(swept(jnp.stack([good, good.at[2].set(bad)])))


def test_window_larger_than_the_number_of_classes():
    with pytest.raises(ValueError, match=r"window_size must lie in \[1, 5\]"):
        losses.swm_margins(P.coordinates, window_size=6)
    with pytest.raises(ValueError, match=r"window_size must lie in \[1, 5\]"):
        losses.swr_weights(P.counts, P.coordinates, window_size=0)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: losses.iif_weights(P.counts, variant="log"), "variant"),
        (lambda: losses.class_balanced_loss(P.logits, P.labels, class_counts=P.counts, loss_type="bce"), "loss_type"),
        (lambda: losses.freqfocus_gammas(P.counts, form="quadratic"), "form"),
        (lambda: losses.class_balanced_weights(P.counts, normalization="sum"), "normalization"),
        (lambda: losses.swm_margins(P.coordinates, window_size=3, kernel="cauchy"), "kernel"),
        (lambda: losses.influence_balanced_loss(P.logits, P.labels, P.feature_norms, class_counts=P.counts,
                                                variant="ib_ldam"), "variant"),
    ],
)
def test_unknown_variant_names(call, name):
    with pytest.raises(ValueError, match=f"unknown {name} .*; choose one of"):
        call()


def test_label_smoothing_out_of_range():
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        losses.softmax_cross_entropy(P.logits, P.labels, label_smoothing=1.5)


def test_bad_group_boundaries():
    with pytest.raises(ValueError, match="group_ends must be strictly increasing"):
        stats.ClassStats.from_counts(P.counts, group_ends=[2, 2, 5])
    with pytest.raises(ValueError, match="group_ends must be strictly increasing"):
        stats.ClassStats.from_counts(P.counts, group_ends=[3, 10])
    with pytest.raises(ValueError, match=r"num_groups must lie in \[1, 5\]"):
        stats.ClassStats.from_counts(P.counts, num_groups=6)
