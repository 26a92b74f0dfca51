"""MiSLAS's label-aware smoothing (methods-baselines.md §6.3, §6.5): the per-class smoothing vector in its four shapes
and the LAS loss, against a float64 NumPy restatement of the authors' `LabelAwareSmoothing`, in a random class order
with a class of one image; equal counts; the reductions to label-smoothed and plain cross-entropy; `check_grads` in
float64; jit/vmap over every numeric hyper-parameter; the dtype rule; out-of-range labels; input errors.

x64 is switched on only inside these tests (`jax.enable_x64(True)` is a context manager), so no other test sees it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from numpy_reference import longtail_case
from tolerance import assert_close_to_scale

from ltjax import losses
from ltjax.losses.label_aware import LAS_SHAPES, label_aware_smoothing_loss, las_smoothing

# --- float64 NumPy reference, written from the spec (the code's formulas, as it writes them) ---------------------


def ref_smoothing(counts, head, tail, shape, power=None):
    """`LabelAwareSmoothing.__init__`'s `self.smooth`, before its float32 cast."""
    n = np.asarray(counts, np.float64)
    n_1, n_k = n.max(), n.min()
    if shape == "concave":
        return tail + (head - tail) * np.sin((n - n_k) * np.pi / (2 * (n_1 - n_k)))
    if shape == "linear":
        return tail + (head - tail) * (n - n_k) / (n_1 - n_k)
    if shape == "convex":
        return head + (head - tail) * np.sin(1.5 * np.pi + (n - n_k) * np.pi / (2 * (n_1 - n_k)))
    assert shape == "exp" and power is not None
    return tail + (head - tail) * np.power((n - n_k) / (n_1 - n_k), power)


def ref_las(z, y, smooth):
    """`LabelAwareSmoothing.forward` per example, and dL/dz of its batch mean."""
    eps = smooth[y]
    shifted = z - z.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -log_probs[np.arange(len(y)), y]
    smooth_loss = -log_probs.mean(-1)
    per_example = (1.0 - eps) * nll + eps * smooth_loss
    num_classes = z.shape[-1]
    target = (1.0 - eps)[:, None] * np.eye(num_classes)[y] + eps[:, None] / num_classes
    grad = (np.exp(log_probs) - target) / len(y)
    return per_example, grad


CASES = [(0, 1, 3), (1, 7, 10), (2, 64, 100)]
# (shape, power) and (head, tail): the CIFAR configs, no smoothing, tail above head, full smoothing of the head.
SHAPES = [("concave", None), ("linear", None), ("convex", None), ("exp", 0.5), ("exp", 2.0), ("exp", 3.0)]
HEAD_TAIL = [(0.4, 0.1), (0.3, 0.0), (0.0, 0.0), (0.05, 0.5), (1.0, 0.2)]


def _kwargs(shape, power, head, tail):
    return dict(smooth_head=head, smooth_tail=tail, shape=shape, **({} if power is None else {"power": power}))


# --- the smoothing vector --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, power", SHAPES)
def test_smoothing_vector_matches_the_reference_in_float64_and_float32(shape, power):
    for seed, _, num_classes in CASES:
        _, _, counts = longtail_case(seed, 1, num_classes)
        for head, tail in HEAD_TAIL:
            expected = ref_smoothing(counts, head, tail, shape, power)
            with jax.enable_x64(True):
                got64 = las_smoothing(jnp.asarray(counts, jnp.float64), **_kwargs(shape, power, head, tail))
                assert got64.dtype == jnp.float64
                np.testing.assert_allclose(got64, expected, rtol=1e-13, atol=1e-15)
            got32 = las_smoothing(counts, **_kwargs(shape, power, head, tail))
            assert got32.dtype == jnp.float32  # integer counts compute in float32
            assert_close_to_scale(got32, expected, rtol=1e-6, scale=1.0)
            # The largest class gets the head value, the smallest (one image) the tail value.
            np.testing.assert_allclose(got32[np.argmax(counts)], head, rtol=1e-6)
            np.testing.assert_allclose(got32[np.argmin(counts)], tail, rtol=1e-6, atol=1e-7)


def test_the_shapes_order_between_the_ends():
    """Concave lies above linear above convex strictly inside (0, 1); exp with power 1 is linear."""
    counts = np.array([7, 500, 1, 60, 250, 30])
    inner = (counts > 1) & (counts < 500)
    concave, linear, convex = (np.asarray(las_smoothing(counts, shape=s)) for s in ("concave", "linear", "convex"))
    assert np.all(concave[inner] > linear[inner]) and np.all(linear[inner] > convex[inner])
    np.testing.assert_array_equal(las_smoothing(counts, shape="exp"), linear)  # default power 1
    np.testing.assert_array_equal(las_smoothing(counts, shape="exp", power=1.0), linear)


@pytest.mark.parametrize("shape", LAS_SHAPES)
def test_equal_counts_give_every_class_the_head_value(shape):
    """The reference's 0 / 0 (NaN) is defined here: every class is a largest class, so gets smooth_head."""
    for counts in (np.full(4, 37), np.array([1]), np.full(3, 1)):
        got = las_smoothing(counts, smooth_head=0.3, smooth_tail=0.05, shape=shape, power=2.5)
        np.testing.assert_allclose(got, np.full(len(counts), 0.3), rtol=1e-7)
    z, y, _ = longtail_case(5, 6, 4)
    np.testing.assert_allclose(
        label_aware_smoothing_loss(z, y, class_counts=np.full(4, 9), smooth_head=0.3, shape=shape),
        losses.softmax_cross_entropy(z, y, label_smoothing=0.3), rtol=1e-6)


def test_smoothing_under_jit_with_traced_counts_and_hyper_parameters():
    counts = np.array([12, 3, 400, 1, 77])
    for shape in LAS_SHAPES:
        eager = las_smoothing(counts, smooth_head=0.35, smooth_tail=0.05, shape=shape, power=2.0)
        jitted = jax.jit(lambda c, h, t, p, s=shape: las_smoothing(c, smooth_head=h, smooth_tail=t, shape=s, power=p))
        np.testing.assert_allclose(jitted(jnp.asarray(counts), 0.35, 0.05, 2.0), eager, rtol=1e-6)


# --- the loss --------------------------------------------------------------------------------------------------


@jax.jit
def _values_and_mean_gradients(z, y, counts, head, tail, power):
    """`{shape: (per-example losses, gradient of their mean)}` for every shape, the numbers traced: one program per
    problem size."""
    def of(shape):
        def loss(logits):
            return label_aware_smoothing_loss(logits, y, class_counts=counts, smooth_head=head, smooth_tail=tail,
                                              shape=shape, power=power)

        return loss(z), jax.grad(lambda logits: jnp.mean(loss(logits)))(z)

    return {shape: of(shape) for shape in LAS_SHAPES}


@pytest.mark.parametrize("seed, batch, num_classes", CASES)
def test_values_and_gradients_match_the_float64_reference(seed, batch, num_classes):
    z, y, counts = longtail_case(seed, batch, num_classes)
    with jax.enable_x64(True):
        for head, tail in HEAD_TAIL:
            for power in (0.5, 2.0, 3.0):
                results = _values_and_mean_gradients(jnp.asarray(z), jnp.asarray(y), jnp.asarray(counts, jnp.float64),
                                                     head, tail, power)
                for shape, (got, grad) in results.items():
                    if shape != "exp" and power != 2.0:
                        continue  # the power is the exp shape's only
                    expected, expected_grad = ref_las(z, y, ref_smoothing(counts, head, tail, shape, power))
                    assert got.dtype == jnp.float64
                    np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=f"{shape} {head} {tail} {power}")
                    assert_close_to_scale(grad, expected_grad, rtol=1e-12)


def test_float32_values_match_the_reference():
    z, y, counts = longtail_case(7, 64, 100)
    for shape, power in SHAPES:
        expected, _ = ref_las(z, y, ref_smoothing(counts, 0.4, 0.1, shape, power))
        got = label_aware_smoothing_loss(jnp.asarray(z, jnp.float32), y, class_counts=counts,
                                         **_kwargs(shape, power, 0.4, 0.1))
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, expected, rtol=2e-6)


def test_permuting_the_class_order_permutes_nothing_else():
    z, y, counts = longtail_case(8, 16, 10)
    perm = np.random.default_rng(0).permutation(10)  # new class k is old class perm[k]
    inverse = np.argsort(perm)
    for shape in LAS_SHAPES:
        original = label_aware_smoothing_loss(z, y, class_counts=counts, shape=shape, power=2.0)
        permuted = label_aware_smoothing_loss(z[:, perm], inverse[y], class_counts=counts[perm], shape=shape,
                                              power=2.0)
        np.testing.assert_allclose(permuted, original, rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4, 1.0])
def test_equal_head_and_tail_is_label_smoothed_cross_entropy(smoothing):
    """With h == t == a every class is smoothed by a: `softmax_cross_entropy(label_smoothing=a)` (0: plain CE)."""
    z, y, counts = longtail_case(9, 32, 10)
    for shape in LAS_SHAPES:
        kwargs = dict(class_counts=counts, smooth_head=smoothing, smooth_tail=smoothing, shape=shape, power=2.0)
        np.testing.assert_allclose(label_aware_smoothing_loss(jnp.asarray(z, jnp.float32), y, **kwargs),
                                   losses.softmax_cross_entropy(jnp.asarray(z, jnp.float32), y,
                                                                label_smoothing=smoothing), rtol=2e-6)
        with jax.enable_x64(True):
            np.testing.assert_allclose(label_aware_smoothing_loss(jnp.asarray(z), y, **kwargs),
                                       losses.softmax_cross_entropy(jnp.asarray(z), y, label_smoothing=smoothing),
                                       rtol=1e-13)
    if smoothing == 0.0:
        np.testing.assert_allclose(label_aware_smoothing_loss(z, y, class_counts=counts, smooth_head=0.0,
                                                              smooth_tail=0.0),
                                   losses.softmax_cross_entropy(z, y), rtol=1e-6)


def test_the_target_spreads_eps_over_all_classes_the_true_one_included():
    """The gradient of one example is softmax(z) - ((1 - eps_y) onehot(y) + eps_y / C), as the code (not the paper's
    eps_y / (C - 1) on the other classes only)."""
    z, y, counts = np.array([[0.3, -1.2, 2.0, 0.5]]), np.array([2]), np.array([10, 1, 400, 50])
    with jax.enable_x64(True):
        grad = jax.grad(lambda logits: jnp.sum(label_aware_smoothing_loss(logits, y, class_counts=counts)))(
            jnp.asarray(z))
    eps = 0.4  # the true class is the largest
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(grad, probs - ((1 - eps) * np.eye(4)[y] + eps / 4), rtol=1e-13)


@pytest.mark.parametrize("shape, power", [("concave", 1.0), ("convex", 1.0), ("exp", 2.5)])
def test_check_grads_in_float64(shape, power):
    z, y, counts = longtail_case(10, 5, 6)
    with jax.enable_x64(True):
        zj = jnp.asarray(z)

        def in_logits(logits):
            return jnp.sum(label_aware_smoothing_loss(logits, y, class_counts=counts, shape=shape, power=power))

        check_grads(in_logits, (zj,), order=1, modes=("fwd", "rev"))

        def in_numbers(head, tail, p):
            return jnp.sum(label_aware_smoothing_loss(zj, y, class_counts=counts, smooth_head=head, smooth_tail=tail,
                                                      shape=shape, power=p))

        check_grads(in_numbers, (jnp.float64(0.3), jnp.float64(0.1), jnp.float64(power)), order=1,
                    modes=("fwd", "rev"))


@pytest.mark.parametrize("name, values", [("smooth_head", (0.0, 0.2, 0.4)), ("smooth_tail", (0.0, 0.1, 0.3)),
                                          ("power", (0.5, 1.0, 3.0))])
def test_one_compiled_program_sweeps_each_numeric_hyper_parameter(name, values):
    z, y, counts = longtail_case(11, 8, 10)
    z = jnp.asarray(z, jnp.float32)

    def loss(value):
        return label_aware_smoothing_loss(z, y, class_counts=counts, shape="exp", **{name: value})

    swept = jax.jit(jax.vmap(loss))(jnp.asarray(values, jnp.float32))
    for index, value in enumerate(values):
        np.testing.assert_allclose(swept[index], loss(value), rtol=2e-6, err_msg=f"{name}={value}")
    grads = jax.vmap(jax.grad(lambda value: jnp.sum(loss(value))))(jnp.asarray(values, jnp.float32))
    assert np.all(np.isfinite(grads))


def test_the_dtype_rule():
    z, y, counts = longtail_case(12, 6, 5)
    z32 = jnp.asarray(z, jnp.float32)
    low = label_aware_smoothing_loss(z32.astype(jnp.bfloat16), y, class_counts=counts)
    assert low.dtype == jnp.float32
    rounded = z32.astype(jnp.bfloat16).astype(jnp.float32)
    np.testing.assert_allclose(low, label_aware_smoothing_loss(rounded, y, class_counts=counts), rtol=1e-6)
    grads = jax.grad(lambda logits: jnp.sum(label_aware_smoothing_loss(logits, y, class_counts=counts)))(
        z32.astype(jnp.bfloat16))
    assert grads.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grads, np.float32)))
    with jax.enable_x64(True):
        assert label_aware_smoothing_loss(jnp.asarray(z), y, class_counts=counts).dtype == jnp.float64


def test_extreme_logits_give_finite_losses_and_gradients():
    _, y, counts = longtail_case(13, 6, 5)
    signs = np.where(np.random.default_rng(0).random((6, 5)) < 0.5, 1.0, -1.0)
    for logits in (1e4 * signs, 1e4 * np.eye(5)[y], -1e4 * np.eye(5)[y]):
        logits = jnp.asarray(logits, jnp.float32)
        assert np.all(np.isfinite(label_aware_smoothing_loss(logits, y, class_counts=counts)))
        grads = jax.grad(lambda z: jnp.sum(label_aware_smoothing_loss(z, y, class_counts=counts)))(logits)
        assert np.all(np.isfinite(grads))


def test_out_of_range_labels_give_nan_for_that_example_only():
    z, y, counts = longtail_case(14, 6, 5)
    z = jnp.asarray(z, jnp.float32)
    bad = y.copy()
    bad[1], bad[4] = 5, -1
    out = label_aware_smoothing_loss(z, bad, class_counts=counts)
    assert np.isnan(out[1]) and np.isnan(out[4])
    keep = np.array([0, 2, 3, 5])
    np.testing.assert_allclose(out[keep], label_aware_smoothing_loss(z, y, class_counts=counts)[keep], rtol=1e-6)
    grads = jax.grad(lambda logits: jnp.sum(label_aware_smoothing_loss(logits, bad, class_counts=counts)[keep]))(z)
    assert np.all(np.isfinite(grads))


# --- errors ----------------------------------------------------------------------------------------------------

_Z, _Y, _COUNTS = longtail_case(15, 4, 5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: las_smoothing(_COUNTS, shape="sigmoid"), "unknown shape 'sigmoid'; choose one of 'concave'"),
        (lambda: label_aware_smoothing_loss(_Z, _Y, class_counts=_COUNTS, shape="Concave"), "unknown shape"),
        (lambda: las_smoothing(_COUNTS, smooth_head=1.5), r"smooth_head must lie in \[0, 1\], got 1.5"),
        (lambda: label_aware_smoothing_loss(_Z, _Y, class_counts=_COUNTS, smooth_tail=-0.1),
         r"smooth_tail must lie in \[0, 1\], got -0.1"),
        (lambda: las_smoothing(_COUNTS, shape="exp", power=-1.0), r"power must lie in \[0, inf\], got -1.0"),
        (lambda: las_smoothing(np.array([3, 0, 2])), "class_counts must be finite and positive"),
        (lambda: label_aware_smoothing_loss(_Z, _Y, class_counts=np.array([3, 1, 2, 5, np.inf])),
         "class_counts must be finite and positive"),
        (lambda: las_smoothing(np.ones((2, 3))), r"class_counts must be a non-empty 1-D vector"),
        (lambda: label_aware_smoothing_loss(_Z, _Y, class_counts=_COUNTS[:4]), r"class_counts must have shape \[5\]"),
        (lambda: label_aware_smoothing_loss(_Z, _Y.astype(np.float32), class_counts=_COUNTS),
         "labels must be integer class indices"),
        (lambda: label_aware_smoothing_loss(_Z, _Y[:3], class_counts=_COUNTS), r"labels shape \(3,\) must equal"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_power_of_the_other_shapes_is_not_checked():
    """`power` is only the exp shape's: a value the other shapes ignore raises nothing."""
    np.testing.assert_array_equal(las_smoothing(_COUNTS, power=-1.0), las_smoothing(_COUNTS))
