"""Loss values against the numeric anchors of methods.md §7 and float64 re-statements of the reference code."""
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
import pytest

from ltjax import losses
from ltjax.testing import make_problem

CIFAR10_IF100 = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])


def assert_4_decimals(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=1.01e-4)


def test_ldam_margins_anchor():
    assert_4_decimals(
        losses.ldam_margins(CIFAR10_IF100),
        [0.1581, 0.1797, 0.2042, 0.2321, 0.2638, 0.2998, 0.3407, 0.3872, 0.4405, 0.5],
    )


def test_class_balanced_weights_anchor():
    expected = np.array([0.0506, 0.0769, 0.1211, 0.1950, 0.3188, 0.5246, 0.8683, 1.4426, 2.4092, 3.9927])
    assert_4_decimals(losses.class_balanced_weights(CIFAR10_IF100, beta=0.9999), expected)
    ffds_weights = losses.class_balanced_weights(CIFAR10_IF100, normalization="inverse_num_classes")
    np.testing.assert_allclose(ffds_weights, expected / 100, atol=1.01e-6)
    np.testing.assert_allclose(np.sum(ffds_weights), 0.1, rtol=1e-6)


@pytest.mark.parametrize(
    "form, expected",
    [
        ("concave", [2.998, 2.9492, 2.6631, 2.0413, 1.3407, 0.7974, 0.4381, 0.2154, 0.0800, 0]),
        ("linear", [3, 1.7861, 1.0582, 0.6224, 0.3606, 0.2042, 0.1103, 0.0539, 0.0200, 0]),
        ("convex", [3, 0.6331, 0.1317, 0.0268, 0.0052, 0.0009, 0.0001, 0, 0, 0]),
    ],
)
def test_freqfocus_gamma_anchor(form, expected):
    assert_4_decimals(losses.freqfocus_gammas(CIFAR10_IF100, gamma_min=0.0, gamma_max=3.0, form=form), expected)


def test_dynasmooth_anchor():
    smoothed = losses.dynasmooth_probs(jnp.array([0.05, 0.5, 0.95]), jnp.full(3, 0.4), smoothing_strength=0.9)
    assert_4_decimals(smoothed, [0.0974, 0.4995, 0.8978])


def test_kps_vectors_anchor():
    assert_4_decimals(
        losses.kps_radii(CIFAR10_IF100),
        [2.1772, 2.0463, 1.9155, 1.7847, 1.6537, 1.5231, 1.3923, 1.2614, 1.1296, 1],
    )
    assert_4_decimals(
        losses.kps_margins(CIFAR10_IF100, max_margin=0.2),
        [0.0919, 0.1039, 0.1159, 0.1279, 0.1400, 0.1519, 0.1640, 0.1760, 0.1881, 0.2],
    )
    assert_4_decimals(
        losses.kps_scales(CIFAR10_IF100, scale=15.0),
        [15, 16.9625, 18.9259, 20.8867, 22.8525, 24.8112, 26.7732, 28.7373, 30.7144, 32.6578],
    )


def test_kps_margins_match_the_reference_flip_within_flooring_error():
    """On sorted exponential counts the reference's flipped radius differs from ltjax's only by count flooring."""
    radii = np.asarray(losses.kps_radii(CIFAR10_IF100))
    flipped = radii[::-1] * 0.2 / radii.max()
    np.testing.assert_allclose(losses.kps_margins(CIFAR10_IF100), flipped, rtol=1.5e-3)


@pytest.mark.parametrize(
    "variant, expected",
    [
        ("raw", [0.9087, 1.4206, 1.9326, 2.4440, 2.9567, 3.4675, 3.9792, 4.4915, 5.0071, 5.5139]),
        ("smooth", [1.9086, 2.4203, 2.9321, 3.4432, 3.9552, 4.4650, 4.9750, 5.4844, 5.9952, 6.4942]),
        ("rel", [0.3929, 1.1441, 1.7762, 2.3532, 2.9033, 3.4358, 3.9603, 4.4802, 5.0004, 5.5099]),
        ("normit", [0.2455, 0.7012, 1.0591, 1.3606, 1.6258, 1.8635, 2.0814, 2.2834, 2.4735, 2.6495]),
        ("gombit", [0.6619, 1.2855, 1.8554, 2.3989, 2.9301, 3.4517, 3.9698, 4.4858, 5.0037, 5.5119]),
    ],
)
def test_iif_vector_anchor(variant, expected):
    assert_4_decimals(losses.iif_weights(CIFAR10_IF100, variant=variant), expected)


def test_iif_log_bases_and_norm():
    raw = np.asarray(losses.iif_weights(CIFAR10_IF100))
    np.testing.assert_allclose(losses.iif_weights(CIFAR10_IF100, variant="base2"), raw / np.log(2), rtol=1e-5)
    np.testing.assert_allclose(losses.iif_weights(CIFAR10_IF100, variant="base10"), raw / np.log(10), rtol=1e-5)
    normed = losses.iif_weights(CIFAR10_IF100, norm_order=2)
    np.testing.assert_allclose(normed, raw / np.linalg.norm(raw), rtol=1e-5)


@pytest.fixture
def problem():
    return make_problem(seed=3, batch=16, num_classes=10)


def test_cross_entropy_matches_optax(problem):
    z, y = problem.logits, problem.labels
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(z, y), optax.softmax_cross_entropy_with_integer_labels(z, y), rtol=1e-5
    )
    smoothed_targets = optax.smooth_labels(jax_onehot(y, 10), 0.2)
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(z, y, label_smoothing=0.2),
        optax.softmax_cross_entropy(z, smoothed_targets),
        rtol=1e-5,
    )


def jax_onehot(y, c):
    return jnp.eye(c)[y]


def test_focal_matches_reference(problem):
    z, y = problem.logits, problem.labels
    w = ref.cb_weights(np.asarray(problem.counts), 0.9999, 10)
    np.testing.assert_allclose(
        losses.focal_loss(z, y, gamma=2.0, class_weights=jnp.asarray(w, jnp.float32)),
        ref.focal(np.asarray(z, np.float64), np.asarray(y), 2.0, w),
        rtol=1e-4,
    )


@pytest.mark.parametrize("loss_type, gamma", [("sigmoid", None), ("focal", 1.0), ("focal", 2.0)])
def test_class_balanced_sigmoid_and_focal_match_the_tf_reference(problem, loss_type, gamma):
    z, y, counts = problem.logits, problem.labels, problem.counts
    ours = losses.class_balanced_loss(z, y, class_counts=counts, loss_type=loss_type, gamma=gamma or 0.0)
    expected = ref.cb_sigmoid(np.asarray(z, np.float64), np.asarray(y), np.asarray(counts), 0.9999, gamma)
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


def test_ldam_matches_reference(problem):
    cos = jnp.tanh(problem.logits)
    ours = losses.ldam_loss(cos, problem.labels, class_counts=problem.counts)
    expected = ref.ldam(np.asarray(cos, np.float64), np.asarray(problem.labels), np.asarray(problem.counts), 0.5, 30)
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


@pytest.mark.parametrize("ga", [False, True])
def test_kps_matches_reference(problem, ga):
    cos = jnp.tanh(problem.logits)
    ours = losses.kps_loss(cos, problem.labels, class_counts=problem.counts, gradient_adjustment=ga)
    expected = ref.kps(np.asarray(cos, np.float64), np.asarray(problem.labels), np.asarray(problem.counts), 0.2, 15, ga)
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


@pytest.mark.parametrize("variant", ["ib", "ib_cb", "ib_focal"])
def test_influence_balanced_matches_the_l1_form_of_the_reference(problem, variant):
    z, y = problem.logits, problem.labels
    ours = losses.influence_balanced_loss(z, y, problem.feature_norms, class_counts=problem.counts, variant=variant)
    expected = ref.ib(
        np.asarray(z, np.float64), np.asarray(y), np.asarray(problem.feature_norms, np.float64),
        np.asarray(problem.counts), 1000.0, 1e-3, variant,
    )
    np.testing.assert_allclose(ours, expected, rtol=2e-4)


def test_ffds_matches_the_reference_step_by_step(problem):
    z, y, counts = problem.logits, problem.labels, problem.counts
    ours = losses.ffds_loss(z, y, class_counts=counts, class_mean_probs=problem.class_means, gamma_max=4.5)
    expected = ref.ffds(
        np.asarray(z, np.float64), np.asarray(y), np.asarray(counts), np.asarray(problem.class_means, np.float64),
        0.9999, 0.0, 4.5, 0.1, 0.9, 1 / 10,
    )
    np.testing.assert_allclose(ours, expected, rtol=2e-4)


def test_ffds_first_epoch_is_plain_cross_entropy(problem):
    z, y = problem.logits, problem.labels
    first = losses.ffds_loss(z, y, class_counts=problem.counts, class_mean_probs=problem.class_means, has_means=False)
    np.testing.assert_allclose(first, ref.ce(np.asarray(z, np.float64), np.asarray(y)), rtol=1e-5)
    traced = losses.ffds_loss(
        z, y, class_counts=problem.counts, class_mean_probs=problem.class_means, has_means=jnp.asarray(False)
    )
    np.testing.assert_allclose(traced, first, rtol=1e-6)


def test_iif_matches_reference(problem):
    ours = losses.iif_loss(problem.logits, problem.labels, class_counts=problem.counts)
    expected = ref.iif_raw(
        np.asarray(problem.logits, np.float64), np.asarray(problem.labels), np.asarray(problem.counts)
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


def test_swrm_adds_the_margin_to_the_target_logit(problem):
    z, y = problem.logits, problem.labels
    weights = jnp.linspace(0.5, 2.0, 10)
    margins = jnp.linspace(0.0, 1.0, 10)
    shifted = np.asarray(z, np.float64) + np.asarray(margins)[np.asarray(y)][:, None] * ref.onehot(np.asarray(y), 10)
    expected = ref.ce(shifted, np.asarray(y)) * np.asarray(weights)[np.asarray(y)]
    np.testing.assert_allclose(losses.swrm_loss(z, y, class_weights=weights, margins=margins), expected, rtol=1e-5)


def test_reductions():
    weighted = jnp.array([1.0, 4.0, 9.0])
    sample_weights = jnp.array([0.5, 2.0, 3.0])
    assert float(losses.mean(weighted)) == pytest.approx(14.0 / 3)
    assert float(losses.weighted_mean(weighted, sample_weights)) == pytest.approx(14.0 / 5.5)
    assert float(losses.weighted_mean(weighted, jnp.zeros(3))) == 0.0


def test_weighted_mean_is_pytorch_weighted_cross_entropy(problem):
    """PyTorch's cross_entropy(weight=w) mean: sum_i w_yi CE_i / sum_i w_yi."""
    z, y, counts = problem.logits, problem.labels, problem.counts
    w = losses.class_balanced_weights(counts)
    per_example = losses.ldam_loss(z, y, class_counts=counts, class_weights=w)
    plain = ref.ldam(np.asarray(z, np.float64), np.asarray(y), np.asarray(counts), 0.5, 30)
    wy = np.asarray(w, np.float64)[np.asarray(y)]
    expected = (wy * plain).sum() / wy.sum()
    np.testing.assert_allclose(losses.weighted_mean(per_example, w[y]), expected, rtol=1e-4)
