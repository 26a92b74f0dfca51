"""VS loss (Kini et al., NeurIPS 2021) and GCL (Li, Cheung, Lu, CVPR 2022), both stages.

Values and gradients against float64 NumPy re-statements of the authors' code written here from
methods-baselines.md §4 and §5 (`orparask/VS-Loss` `VSLoss`, `Keke921/GCLLoss` `GCLLoss`), in a random class order
with a class of one image; the special cases the spec names (LA, CDT, CE; stage 1 / stage 2); `check_grads` in
float64; jit/vmap over every numeric hyper-parameter; the dtype rule; out-of-range labels; input errors.

x64 is switched on only inside these tests (`jax.enable_x64(True)` is a context manager), so no other test sees it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from jax.test_util import check_grads
from tolerance import assert_close_to_scale

from ltjax import losses
from ltjax.losses.gaussian_cloud import (
    CLOUD_STD,
    GCL_CLASSIFIER_DEFAULTS,
    gcl_cloud,
    gcl_cloud_amplitudes,
    gcl_loss,
)
from ltjax.losses.vector_scaling import vs_logit_scales_and_offsets, vs_loss

# --- float64 NumPy references, step by step as the authors' code computes them --------------------------------------


def ref_vs(z, y, counts, gamma, tau, w=None):
    """`VSLoss.forward` with `reduction='none'`: `w_y * CE(z / Delta_list + iota_list)`, and dL/dz of the reduced
    loss (the batch mean, or `sum w_y l / sum w_y` with weights)."""
    n = counts.astype(np.float64)
    temp = (1.0 / n) ** gamma
    temp = temp / temp.min()
    iota = tau * np.log(n / n.sum())
    out = z / temp + iota
    wy = np.ones(len(y)) if w is None else w[y]
    losses_ = wy * ref.ce(out, y)
    norm = len(y) if w is None else wy.sum()
    grad = wy[:, None] * (ref.softmax(out) - ref.onehot(y, z.shape[1])) / temp / norm
    return losses_, losses_.sum() / norm, grad


def _ce_and_slope_saturating(x, y):
    """CE and its derivative `softmax - onehot` with the target's terms from `sum_{j != y} p_j`: every digit kept
    as `p_y -> 1`, where `-log(softmax)` and `p_y - 1` round to 0 even in float64."""
    target = ref.onehot(y, x.shape[1]) > 0
    ratios = np.exp(x - x[np.arange(len(y)), y][:, None])  # p_j / p_y
    others = np.where(target, 0.0, ratios).sum(1)
    slope = np.where(target, -(others / (1 + others))[:, None], ratios / (1 + others)[:, None])
    return np.log1p(others), slope


def ref_gcl(cos, y, noise, counts, m, s, noise_mul, gamma, w=None, train_cls=False, saturating=False):
    """`GCLLoss.forward` with a given noise sample: per-example terms, the reduced loss, and d loss / d cosine.
    `saturating`: the same function with `-log p_y` and `1 - p` written to keep their digits as `p_y -> 1`."""
    m_list = np.log(counts.astype(np.float64))
    m_list = m_list.max() - m_list
    clouded = cos - noise_mul * np.abs(np.clip(noise, -1, 1)) / m_list.max() * m_list
    out = np.where(ref.onehot(y, cos.shape[1]) > 0, clouded - m, clouded)
    x = s * out
    wy = np.ones(len(y)) if w is None else w[y]
    if saturating:
        plain_ce, slope = _ce_and_slope_saturating(x, y)
    else:
        plain_ce, slope = ref.ce(x, y), ref.softmax(x) - ref.onehot(y, cos.shape[1])
    ce = wy * plain_ce
    dce = wy[:, None] * s * slope
    if train_cls:
        one_minus_p = -np.expm1(-ce) if saturating else 1 - np.exp(-ce)
        per_example = one_minus_p ** gamma * ce
        return per_example, per_example.mean(), (one_minus_p ** gamma)[:, None] * dce / len(y)
    return ce, ce.sum() / wy.sum(), dce / wy.sum()


# --- problems --------------------------------------------------------------------------------------------------------


def _counts(num_classes, seed):
    """Exponential profile with a class of one image, in a random class order (so never sorted)."""
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, np.round(500 * 0.01 ** (np.arange(num_classes) / (num_classes - 1)))).astype(np.int64)
    counts[-1] = 1
    return counts[rng.permutation(num_classes)]


def _problem(seed=0, batch=16, num_classes=10, spread=3.0):
    rng = np.random.default_rng(seed)
    counts = _counts(num_classes, seed)
    labels = rng.integers(0, num_classes, size=batch)
    labels[0] = int(np.argmin(counts))  # the one-image class is always in the batch
    logits = spread * rng.standard_normal((batch, num_classes))
    cosines = np.tanh(rng.standard_normal((batch, num_classes)))
    noise = CLOUD_STD * rng.standard_normal((batch, num_classes))
    noise[0, :2] = [1.7, -1.4]  # draws beyond three sigma, clamped by the loss
    weights = rng.uniform(0.2, 3.0, size=num_classes)
    return logits, labels, counts, cosines, noise, weights


def _close(actual, expected, rtol=1e-10):
    assert_close_to_scale(actual, expected, rtol=rtol)


# --- VS --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma, tau", [(0.3, 1.0), (0.2, 1.2), (0.0, 1.0), (0.5, 0.0), (0.0, 0.0), (1.0, 2.0)])
@pytest.mark.parametrize("weighted", [False, True])
def test_vs_matches_the_reference_in_float64(gamma, tau, weighted):
    z, y, counts, _, _, w = _problem(seed=1)
    w = w if weighted else None
    expected, expected_total, expected_grad = ref_vs(z, y, counts, gamma, tau, w)
    with jax.enable_x64(True):
        def total(logits):
            per_example = vs_loss(logits, y, class_counts=counts, gamma=gamma, tau=tau,
                                  class_weights=None if w is None else jnp.asarray(w))
            return losses.mean(per_example) if w is None else losses.weighted_mean(per_example, jnp.asarray(w[y]))

        per_example = vs_loss(jnp.asarray(z), y, class_counts=counts, gamma=gamma, tau=tau,
                              class_weights=None if w is None else jnp.asarray(w))
        assert per_example.dtype == jnp.float64
        _close(per_example, expected)
        _close(total(jnp.asarray(z)), expected_total)
        _close(jax.grad(total)(jnp.asarray(z)), expected_grad)


def test_vs_scales_and_offsets():
    counts = _counts(10, seed=2)
    with jax.enable_x64(True):
        scales, offsets = vs_logit_scales_and_offsets(jnp.asarray(counts, jnp.float64), gamma=0.3, tau=1.2)
        n = counts.astype(np.float64)
        _close(scales, (n / n.max()) ** 0.3, rtol=1e-14)
        _close(offsets, 1.2 * np.log(n / n.sum()), rtol=1e-14)
        assert scales[np.argmax(counts)] == 1.0 and np.all(np.asarray(scales) <= 1.0)
    scales, offsets = vs_logit_scales_and_offsets(counts, gamma=0.0, tau=0.0)
    assert scales.dtype == jnp.float32
    np.testing.assert_array_equal(scales, np.ones(10))
    np.testing.assert_array_equal(offsets, np.zeros(10))


def test_vs_special_cases_are_ce_logit_adjustment_and_balanced_softmax():
    z, y, counts, _, _, _ = _problem(seed=3)
    with jax.enable_x64(True):
        z = jnp.asarray(z)
        _close(vs_loss(z, y, class_counts=counts, gamma=0.0, tau=0.0), losses.softmax_cross_entropy(z, y), 1e-14)
        _close(vs_loss(z, y, class_counts=counts, gamma=0.0, tau=1.0),
               losses.balanced_softmax_loss(z, y, class_counts=counts), 1e-13)
        priors = jnp.asarray(counts / counts.sum())
        for tau in (0.5, 1.0, 1.5):  # ltjax's LA adds 1e-12 inside the log: a change at the 1e-8 level at most
            _close(vs_loss(z, y, class_counts=counts, gamma=0.0, tau=tau),
                   losses.logit_adjusted_loss(z, y, class_priors=priors, tau=tau), 1e-7)
        # CDT (tau = 0) is cross-entropy on the scaled logits.
        scaled = z * (counts / counts.max()) ** 0.4
        _close(vs_loss(z, y, class_counts=counts, gamma=0.4, tau=0.0), losses.softmax_cross_entropy(scaled, y), 1e-13)


def test_vs_does_not_depend_on_the_class_order():
    z, y, counts, _, _, w = _problem(seed=4)
    order = np.random.default_rng(0).permutation(len(counts))
    rank = np.argsort(order)  # new index of each old class
    base = vs_loss(z, y, class_counts=counts, class_weights=w)
    moved = vs_loss(z[:, order], rank[y], class_counts=counts[order], class_weights=w[order])
    np.testing.assert_allclose(moved, base, rtol=1e-6)


def test_vs_check_grads_in_float64():
    z, y, counts, _, _, w = _problem(seed=5, batch=6, num_classes=5)
    with jax.enable_x64(True):
        def total(logits, gamma, tau):
            return jnp.sum(vs_loss(logits, y, class_counts=counts, gamma=gamma, tau=tau, class_weights=w))

        check_grads(total, (jnp.asarray(z), 0.3, 1.0), order=2, modes=("fwd", "rev"))


# --- GCL -------------------------------------------------------------------------------------------------------------

_STAGE_1 = {"margin": 0.0, "scale": 30.0, "noise_mul": 0.5, "gamma": 0.0}


@pytest.mark.parametrize(
    "numbers, train_cls",
    [
        (_STAGE_1, False),
        ({"margin": 0.5, "scale": 30.0, "noise_mul": 1.0, "gamma": 0.0}, False),  # the class defaults
        ({"margin": 0.2, "scale": 10.0, "noise_mul": 0.3, "gamma": 0.0}, False),
        (GCL_CLASSIFIER_DEFAULTS, True),
        ({"margin": 0.1, "scale": 20.0, "noise_mul": 0.5, "gamma": 2.0}, True),
        ({"margin": 0.3, "scale": 15.0, "noise_mul": 1.0, "gamma": 0.5}, True),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_gcl_matches_the_reference_in_float64(numbers, train_cls, weighted):
    _, y, counts, cos, noise, w = _problem(seed=6)
    w = w if weighted else None
    expected, expected_total, expected_grad = ref_gcl(cos, y, noise, counts, numbers["margin"], numbers["scale"],
                                                      numbers["noise_mul"], numbers["gamma"], w, train_cls)
    with jax.enable_x64(True):
        weights = None if w is None else jnp.asarray(w)

        def total(cosines):
            per_example = gcl_loss(cosines, y, jnp.asarray(noise), class_counts=counts, class_weights=weights,
                                   **numbers)
            # Stage 1 reduces like cross_entropy(weight=w), stage 2 with the plain batch mean.
            if train_cls or w is None:
                return losses.mean(per_example)
            return losses.weighted_mean(per_example, jnp.asarray(w[y]))

        per_example = gcl_loss(jnp.asarray(cos), y, jnp.asarray(noise), class_counts=counts, class_weights=weights,
                               **numbers)
        assert per_example.dtype == jnp.float64
        _close(per_example, expected)
        _close(total(jnp.asarray(cos)), expected_total)
        _close(jax.grad(total)(jnp.asarray(cos)), expected_grad)


def test_gcl_saturated_losses_match_with_an_absolute_tolerance():
    """s * (cosine gap) up to 60: the loss is ~1e-13 (both sides carry ~1e-15 of absolute round-off)."""
    _, y, counts, _, noise, _ = _problem(seed=7)
    cos = np.full((len(y), len(counts)), -1.0)
    cos[np.arange(len(y)), y] = 1.0
    with jax.enable_x64(True):
        for numbers, train_cls in ((_STAGE_1, False), (GCL_CLASSIFIER_DEFAULTS, True)):
            expected = ref_gcl(cos, y, noise, counts, *numbers.values(), None, train_cls)[0]
            got = gcl_loss(jnp.asarray(cos), y, jnp.asarray(noise), class_counts=counts, **numbers)
            assert np.max(expected) < 1e-8
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)


def test_gcl_saturated_losses_keep_their_digits_in_float32():
    """`-log p_y` comes from the complement: float32 matches a float64 reference that keeps its digits as p_y -> 1
    relatively, far below the ulp of 1 (the reference code's own `-log(softmax)` rounds these losses to 0)."""
    _, y, counts, _, noise, _ = _problem(seed=7)
    cos = np.full((len(y), len(counts)), -0.6)
    cos[np.arange(len(y)), y] = 0.9
    for numbers, train_cls in ((_STAGE_1, False), (GCL_CLASSIFIER_DEFAULTS, True)):
        expected, _, expected_grad = ref_gcl(cos, y, noise, counts, *numbers.values(), None, train_cls,
                                             saturating=True)
        assert np.max(expected) < 1e-10
        got = gcl_loss(jnp.asarray(cos, jnp.float32), y, noise, class_counts=counts, **numbers)
        np.testing.assert_allclose(got, expected, rtol=1e-4)
        grad = jax.grad(lambda c, n=numbers: losses.mean(gcl_loss(c, y, noise, class_counts=counts, **n)))(
            jnp.asarray(cos, jnp.float32))
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-4)


def test_gcl_cloud_amplitudes():
    counts = _counts(10, seed=8)
    with jax.enable_x64(True):
        amplitudes = gcl_cloud_amplitudes(jnp.asarray(counts, jnp.float64))
        gaps = np.log(counts.max()) - np.log(counts.astype(np.float64))
        _close(amplitudes, gaps / gaps.max(), rtol=1e-15)
    amplitudes = np.asarray(amplitudes)
    assert amplitudes[np.argmin(counts)] == 1.0 and amplitudes[np.argmax(counts)] == 0.0
    # Equal counts: the reference's 0 / 0; ltjax puts no cloud. A single class likewise.
    np.testing.assert_array_equal(gcl_cloud_amplitudes(jnp.full(4, 7)), np.zeros(4))
    np.testing.assert_array_equal(gcl_cloud_amplitudes(jnp.array([3])), np.zeros(1))


def test_gcl_with_equal_counts_or_no_noise_is_a_scaled_margin_cross_entropy():
    """No cloud (equal counts, or noise_mul = 0): stage 1 is LDAM with one margin for every class; stage 2 its focal
    loss with a detached modulator."""
    _, y, counts, cos, noise, _ = _problem(seed=9)
    equal = np.full_like(counts, 40)
    with jax.enable_x64(True):
        cos, noise = jnp.asarray(cos), jnp.asarray(noise)
        ldam = losses.ldam_loss(cos, y, class_counts=equal, max_margin=0.3, scale=20.0)
        _close(gcl_loss(cos, y, noise, class_counts=equal, margin=0.3, scale=20.0), ldam, 1e-13)
        _close(gcl_loss(cos, y, noise, class_counts=counts, margin=0.3, scale=20.0, noise_mul=0.0), ldam, 1e-13)
        def stage_2(c):
            return gcl_loss(c, y, noise, class_counts=counts, noise_mul=0.0, margin=0.1, scale=20.0, gamma=1.0)

        def focal(c):
            shifted = 20.0 * (c - 0.1 * jax.nn.one_hot(y, c.shape[1], dtype=c.dtype))
            return losses.focal_loss(shifted, y, gamma=1.0, stop_gradient_modulator=True)

        _close(stage_2(cos), focal(cos), 1e-12)
        _close(jax.grad(lambda c: jnp.sum(stage_2(c)))(cos), jax.grad(lambda c: jnp.sum(focal(c)))(cos), 1e-12)


def test_gcl_takes_the_folded_cloud_and_has_no_gradient_through_it():
    _, y, counts, cos, noise, _ = _problem(seed=10)
    folded = np.abs(np.clip(noise, -1, 1))
    for numbers in (_STAGE_1, GCL_CLASSIFIER_DEFAULTS):
        raw = gcl_loss(cos, y, noise, class_counts=counts, **numbers)
        np.testing.assert_array_equal(gcl_loss(cos, y, folded, class_counts=counts, **numbers), raw)
        np.testing.assert_array_equal(gcl_loss(cos, y, -noise, class_counts=counts, **numbers), raw)
        # The cloud is a constant of the loss: no gradient flows into it.
        cloud_grad = jax.grad(lambda n, numbers=numbers: jnp.sum(gcl_loss(cos, y, n, class_counts=counts, **numbers)))(
            jnp.asarray(noise, jnp.float32))
        np.testing.assert_array_equal(cloud_grad, np.zeros_like(noise))


def test_gcl_does_not_depend_on_the_class_order():
    _, y, counts, cos, noise, w = _problem(seed=11)
    order = np.random.default_rng(1).permutation(len(counts))
    rank = np.argsort(order)
    for numbers in (_STAGE_1, GCL_CLASSIFIER_DEFAULTS):
        base = gcl_loss(cos, y, noise, class_counts=counts, class_weights=w, **numbers)
        moved = gcl_loss(cos[:, order], rank[y], noise[:, order], class_counts=counts[order], class_weights=w[order],
                         **numbers)
        np.testing.assert_allclose(moved, base, rtol=1e-5, atol=1e-7)


def test_gcl_check_grads_in_float64():
    """Stage 1 end to end (order 2 in the cosines, order 1 also in the hyper-parameters: at s = 20 the second
    differences in them leave the default tolerance); stage 2 through its frozen form, whose derivative at `at` is the
    loss's autodiff gradient there."""
    _, y, counts, cos, noise, w = _problem(seed=12, batch=6, num_classes=5)
    with jax.enable_x64(True):
        cos, noise = jnp.asarray(cos), jnp.asarray(noise)

        def stage_1(c, margin, scale, noise_mul):
            return jnp.sum(gcl_loss(c, y, noise, class_counts=counts, margin=margin, scale=scale,
                                    noise_mul=noise_mul, class_weights=w))

        check_grads(lambda c: stage_1(c, 0.1, 20.0, 0.5), (cos,), order=2, modes=("fwd", "rev"))
        check_grads(stage_1, (cos, 0.1, 20.0, 0.5), order=1, modes=("fwd", "rev"))

        def stage_2(c):
            return jnp.sum(gcl_loss(c, y, noise, class_counts=counts, class_weights=w, **GCL_CLASSIFIER_DEFAULTS))

        def frozen(c, at=cos):
            plain = {**GCL_CLASSIFIER_DEFAULTS, "gamma": 0.0}
            at_losses = gcl_loss(at, y, noise, class_counts=counts, class_weights=w, **plain)
            modulator = 1.0 - jnp.exp(-at_losses)
            return jnp.sum(modulator * gcl_loss(c, y, noise, class_counts=counts, class_weights=w, **plain))

        _close(frozen(cos), stage_2(cos), 1e-13)
        check_grads(frozen, (cos,), order=2, modes=("fwd", "rev"))
        _close(jax.grad(stage_2)(cos), jax.grad(frozen)(cos), 1e-12)


def test_gaussian_cloud_draws():
    key = jax.random.key(0)
    cloud = gcl_cloud(key, (400, 100))
    assert cloud.shape == (400, 100) and cloud.dtype == jnp.float32
    np.testing.assert_allclose(np.std(cloud), 1 / 3, rtol=0.02)
    np.testing.assert_allclose(np.mean(cloud), 0.0, atol=0.005)
    np.testing.assert_array_equal(gcl_cloud(key, (400, 100)), cloud)
    assert not np.array_equal(gcl_cloud(jax.random.fold_in(key, 1), (400, 100)), cloud)
    with jax.enable_x64(True):
        assert gcl_cloud(key, (3, 4), jnp.float64).dtype == jnp.float64


# --- shared properties -----------------------------------------------------------------------------------------------


def _vs(z, y, counts, noise, **numbers):
    return vs_loss(z, y, class_counts=counts, **numbers)


def _gcl(z, y, counts, noise, **numbers):
    return gcl_loss(z, y, noise, class_counts=counts, **numbers)


_SWEEPS = [
    (_vs, "gamma", (0.0, 0.3, 1.0)),
    (_vs, "tau", (0.0, 1.0, 1.5)),
    (_gcl, "margin", (0.0, 0.1, 0.5)),
    (_gcl, "scale", (10.0, 20.0, 30.0)),
    (_gcl, "noise_mul", (0.0, 0.5, 1.0)),
    (_gcl, "gamma", (0.0, 1.0, 2.0)),
]


@pytest.mark.parametrize("loss, number, values", _SWEEPS, ids=[f"{f.__name__[1:]}-{n}" for f, n, _ in _SWEEPS])
def test_numeric_hyper_parameters_jit_and_vmap(loss, number, values):
    _, y, counts, cos, noise, _ = _problem(seed=13, batch=8, num_classes=6)
    fixed = {"gamma": 1.0} if loss is _gcl and number != "gamma" else {}
    swept = jax.jit(jax.vmap(lambda value: loss(cos, y, counts, noise, **fixed, **{number: value})))(
        jnp.asarray(values, jnp.float32))
    for index, value in enumerate(values):
        np.testing.assert_allclose(swept[index], loss(cos, y, counts, noise, **fixed, **{number: value}), rtol=2e-5,
                                   atol=2e-6 * np.max(np.abs(swept[index])), err_msg=f"{number}={value}")
    grads = jax.vmap(jax.grad(lambda value: jnp.sum(loss(cos, y, counts, noise, **fixed, **{number: value}))))(
        jnp.asarray(values, jnp.float32))
    assert np.all(np.isfinite(grads))


@pytest.mark.parametrize("loss", [_vs, _gcl], ids=["vs", "gcl"])
def test_dtype_rule_batch_shapes_and_jit(loss):
    _, y, counts, cos, noise, w = _problem(seed=14, batch=6, num_classes=5)
    numbers = {"class_weights": w, "gamma": 1.0} if loss is _gcl else {"class_weights": w}
    bf16 = jnp.asarray(cos, jnp.bfloat16)
    from_bf16 = loss(bf16, y, counts, noise, **numbers)
    assert from_bf16.dtype == jnp.float32
    assert_close_to_scale(from_bf16, loss(bf16.astype(jnp.float32), y, counts, noise, **numbers), rtol=1e-6)
    in_float32 = loss(cos, y, counts, noise, **numbers)
    assert in_float32.dtype == jnp.float32
    jitted = jax.jit(lambda z, labels, n: loss(z, labels, counts, n, **numbers))(cos, y, noise)
    assert_close_to_scale(jitted, in_float32, rtol=1e-6)
    # Any leading batch shape, and a batch of one.
    folded = loss(cos.reshape(2, 3, 5), y.reshape(2, 3), counts, noise.reshape(2, 3, 5), **numbers)
    assert_close_to_scale(folded.reshape(6), in_float32, rtol=1e-6)
    assert_close_to_scale(loss(cos[:1], y[:1], counts, noise[:1], **numbers), in_float32[:1], rtol=1e-6)
    with jax.enable_x64(True):
        assert loss(jnp.asarray(cos), y, counts, noise, **numbers).dtype == jnp.float64


@pytest.mark.parametrize("loss", [_vs, _gcl], ids=["vs", "gcl"])
def test_out_of_range_labels_give_nan_for_that_example_only(loss):
    _, y, counts, cos, noise, w = _problem(seed=15, batch=6, num_classes=5)
    numbers = {"class_weights": w, "gamma": 1.0} if loss is _gcl else {"class_weights": w}
    bad = y.copy()
    bad[2], bad[4] = 5, -1
    out = np.asarray(loss(cos, bad, counts, noise, **numbers))
    assert np.all(np.isnan(out[[2, 4]]))
    valid = np.ones(6, bool)
    valid[[2, 4]] = False
    assert_close_to_scale(out[valid], np.asarray(loss(cos, y, counts, noise, **numbers))[valid], rtol=1e-6)
    grad = jax.grad(lambda z: jnp.sum(jnp.where(valid, loss(z, bad, counts, noise, **numbers), 0.0)))(cos)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~valid] == 0)


_, _Y, _COUNTS, _COS, _NOISE, _W = _problem(seed=16, batch=4, num_classes=5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: vs_loss(_COS, _Y, class_counts=_COUNTS[:4]), r"class_counts must have shape \[5\]"),
        (lambda: vs_loss(_COS, _Y, class_counts=_COUNTS, class_weights=_W[:3]), r"class_weights must have shape"),
        (lambda: vs_loss(_COS, _Y[:3], class_counts=_COUNTS), r"labels shape \(3,\) must equal logits shape"),
        (lambda: vs_loss(_COS, _Y.astype(np.float32), class_counts=_COUNTS), "labels must be integer"),
        (lambda: vs_loss(_COS, _Y, class_counts=_COUNTS, gamma=-0.1), r"gamma must lie in \[0, inf\]"),
        (lambda: vs_loss(_COS, _Y, class_counts=np.array([5, 0, 3, 1, 2])),
         r"class_counts must be finite and positive for every class; classes \[1\]"),
        (lambda: gcl_loss(_COS, _Y, _NOISE[:, :4], class_counts=_COUNTS), r"cloud must have the cosines' shape"),
        (lambda: gcl_loss(_COS, _Y, _NOISE[0], class_counts=_COUNTS), r"cloud must have the cosines' shape"),
        (lambda: gcl_loss(_COS, _Y[:3], _NOISE, class_counts=_COUNTS), r"labels shape \(3,\) must equal cosines"),
        (lambda: gcl_loss(_COS, _Y, _NOISE, class_counts=_COUNTS[:4]), r"class_counts must have shape \[5\]"),
        (lambda: gcl_loss(_COS, _Y, _NOISE, class_counts=_COUNTS, class_weights=_W[:4]), "class_weights must have"),
        (lambda: gcl_loss(_COS, _Y, _NOISE, class_counts=_COUNTS, scale=0.0), "scale must be positive"),
        (lambda: gcl_loss(_COS, _Y, _NOISE, class_counts=_COUNTS, noise_mul=-1.0), r"noise_mul must lie in"),
        (lambda: gcl_loss(_COS, _Y, _NOISE, class_counts=_COUNTS, gamma=-1.0), r"gamma must lie in"),
        (lambda: gcl_loss(_COS, _Y, _NOISE, class_counts=np.array([5, 3, 0, 1, 2])),
         r"class_counts must be finite and positive for every class; classes \[2\]"),
        (lambda: gcl_cloud_amplitudes(np.ones((2, 3))), "class_counts must be a non-empty 1-D vector"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_zero_traced_counts_raise_under_jit():
    counts = jnp.asarray(_COUNTS, jnp.float32)
    for loss in (lambda c: vs_loss(_COS, _Y, class_counts=c), lambda c: gcl_loss(_COS, _Y, _NOISE, class_counts=c)):
        jitted = jax.jit(loss)
        assert np.all(np.isfinite(jitted(counts)))
        with pytest.raises(Exception, match=r"class_counts must be finite and positive"):
            jax.block_until_ready(jitted(counts.at[1].set(0.0)))
