"""Seesaw loss (with its cumulative-count state) and softmax EQL (with its Bernoulli mask), against float64 NumPy
re-statements of methods-baselines.md sections 2 and 3, written here step by step as the reference code computes
them (mmpretrain's `seesaw_ce_loss`/`SeesawLoss`, BagofTricks-LT's SEQL): values over several steps from a zero
and from a filled state, gradients, equivalences, sweeps, dtypes, NaN for bad labels, and input errors.

Classes are in a permuted order and include classes of one image. x64 is switched on only inside the tests that
need it (`jax.enable_x64(True)`).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from tolerance import assert_close_to_scale

from ltjax import losses
from ltjax.losses.equalization import eql_drop_mask, eql_tail_classes, softmax_eql_loss
from ltjax.losses.seesaw import seesaw_count_update, seesaw_log_factors, seesaw_loss

# Permuted class order; classes 2 and 6 have a single image (EQL's counts; Seesaw's filled state).
COUNTS = np.array([37, 500, 1, 120, 9, 3, 1, 60])
C = len(COUNTS)


# --- float64 NumPy references ----------------------------------------------------------------------------------

def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ce(z, y):
    return -np.log(_softmax(z)[np.arange(len(y)), y])


def ref_count_update(cum, y, mask=None):
    """`SeesawLoss.forward`'s accumulation: each label adds one to its class."""
    cum = np.array(cum, np.float64)
    for index, label in enumerate(y):
        if mask is None or mask[index]:
            cum[label] += 1
    return cum


def ref_seesaw_factors(z, y, cum, p, q, eps):
    """`S [B, C]` as `seesaw_ce_loss` builds `seesaw_weights` (before its log and the target masking)."""
    weights = np.ones_like(z)
    if p > 0:
        clamped = np.maximum(cum, 1.0)
        ratio = clamped[None, :] / clamped[:, None]  # [row class, column class]
        index = (ratio < 1.0).astype(np.float64)
        weights = weights * (ratio ** p * index + (1 - index))[y]
    if q > 0:
        scores = _softmax(z)
        self_scores = scores[np.arange(len(y)), y]
        matrix = scores / np.maximum(self_scores, eps)[:, None]
        index = (matrix > 1.0).astype(np.float64)
        weights = weights * (matrix ** q * index + (1 - index))
    return weights


def ref_seesaw(z, y, cum, p=0.8, q=2.0, eps=1e-2, w=None):
    onehot = np.eye(z.shape[1])[y]
    adjusted = z + np.log(ref_seesaw_factors(z, y, cum, p, q, eps)) * (1 - onehot)
    loss = _ce(adjusted, y)
    return loss if w is None else loss * w


def ref_seesaw_grad(z, y, cum, p, q, eps, w):
    """`d/dz mean_i(w_i l_i) = (softmax(z + log S) - Y) * w / B`."""
    onehot = np.eye(z.shape[1])[y]
    adjusted = z + np.log(ref_seesaw_factors(z, y, cum, p, q, eps)) * (1 - onehot)
    return (_softmax(adjusted) - onehot) * w[:, None] / len(y)


def ref_eql(z, y, beta, counts, lam):
    """SEQL: `w = 1 - beta * T * (1 - Y)`, `l = log sum w exp(z) - z_y` (here with the max shifted out)."""
    f = counts / counts.sum()
    tail = (f < lam).astype(np.float64)
    onehot = np.eye(z.shape[1])[y]
    w = 1 - beta * tail[None, :] * (1 - onehot)
    top = z.max(-1, keepdims=True)
    return np.log(np.sum(w * np.exp(z - top), -1)) + top[:, 0] - z[np.arange(len(y)), y]


def ref_eql_grad(z, y, beta, counts, lam):
    f = counts / counts.sum()
    onehot = np.eye(z.shape[1])[y]
    w = 1 - beta * (f < lam)[None, :] * (1 - onehot)
    e = w * np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True) - onehot


def _batch(seed, batch=7, scale=3.0, labels=None):
    rng = np.random.default_rng(seed)
    batch = batch if labels is None else len(labels)
    z = scale * rng.standard_normal((batch, C))
    y = rng.integers(0, C, size=batch) if labels is None else np.asarray(labels)
    return z, y


def _close(actual, expected, rtol):
    assert_close_to_scale(actual, expected, rtol=rtol, scale=max(float(np.max(np.abs(expected))), 1e-3))


# --- Seesaw: values and state --------------------------------------------------------------------------------

SEESAW_SETTINGS = [
    dict(p=0.8, q=2.0, eps=1e-2),  # the defaults
    dict(p=0.0, q=2.0, eps=1e-2),  # compensation only
    dict(p=0.8, q=0.0, eps=1e-2),  # mitigation only
    dict(p=1.5, q=1.0, eps=0.3),  # a large eps: the clamp of sigma_y binds often
    dict(p=0.3, q=3.0, eps=1e-6),
]


@pytest.mark.parametrize("setting", SEESAW_SETTINGS)
def test_seesaw_over_consecutive_steps_from_a_zero_state_matches_the_reference_in_float64(setting):
    """Four steps from zeros: the counts include each batch before its loss, and the values follow them; the scale-8
    logits put some target probabilities under eps."""
    with jax.enable_x64(True):
        cum, ref_cum = jnp.zeros(C, jnp.float64), np.zeros(C)
        for step in range(4):
            z, y = _batch(step, scale=8.0 if step % 2 else 3.0)
            cum = seesaw_count_update(cum, jnp.asarray(y))
            ref_cum = ref_count_update(ref_cum, y)
            np.testing.assert_array_equal(cum, ref_cum)
            got = seesaw_loss(jnp.asarray(z), jnp.asarray(y), cumulative_counts=cum, **setting)
            assert got.dtype == jnp.float64
            _close(got, ref_seesaw(z, y, ref_cum, **setting), rtol=1e-12)


def test_seesaw_first_batch_sees_its_own_counts():
    """From a zero state, a class seen twice in the first batch already mitigates the classes not yet seen."""
    with jax.enable_x64(True):
        z, y = _batch(5, labels=[3, 3, 1])
        counts = seesaw_count_update(jnp.zeros(C), jnp.asarray(y))
        np.testing.assert_array_equal(counts, np.eye(C)[3] * 2 + np.eye(C)[1])
        factors = np.asarray(seesaw_log_factors(jnp.asarray(z), jnp.asarray(y), cumulative_counts=counts, q=0.0))
        # Row 0 (class 3, count 2): every class with count 0 or 1 (clamped to 1) gets (1/2)^0.8.
        np.testing.assert_allclose(factors[0, [0, 1, 2]], 0.8 * np.log(0.5), rtol=1e-14)
        assert factors[0, 3] == 0.0
        # Row 2 (class 1, count 1): nothing is rarer than one image after the clamp.
        np.testing.assert_array_equal(factors[2], 0.0)


@pytest.mark.parametrize("setting", SEESAW_SETTINGS[:3])
def test_seesaw_from_a_filled_state_with_sample_weights_and_both_reductions(setting):
    with jax.enable_x64(True):
        z, y = _batch(11, batch=9)
        w = np.random.default_rng(12).uniform(0.0, 2.0, size=len(y))
        cum = ref_count_update(COUNTS.astype(np.float64), y)
        got = seesaw_loss(jnp.asarray(z), jnp.asarray(y), cumulative_counts=seesaw_count_update(
            jnp.asarray(COUNTS, jnp.float64), jnp.asarray(y)), sample_weights=jnp.asarray(w), **setting)
        expected = ref_seesaw(z, y, cum, w=w, **setting)
        _close(got, expected, rtol=1e-12)
        # No avg_factor: loss_weight * mean(w * l), the sum over B; with avg_factor: the sum over it.
        np.testing.assert_allclose(losses.mean(got), np.mean(expected), rtol=1e-12)
        np.testing.assert_allclose(jnp.sum(got) / 5.0, np.sum(expected) / 5.0, rtol=1e-12)


def test_seesaw_factors_are_the_reference_weights():
    with jax.enable_x64(True):
        z, y = _batch(3, scale=6.0)
        cum = COUNTS.astype(np.float64)
        got = np.exp(np.asarray(seesaw_log_factors(jnp.asarray(z), jnp.asarray(y), cumulative_counts=jnp.asarray(cum))))
        expected = ref_seesaw_factors(z, y, cum, 0.8, 2.0, 1e-2)
        expected[np.arange(len(y)), y] = 1.0
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_seesaw_count_update_masks_skips_bad_labels_and_keeps_the_dtype():
    labels = jnp.array([0, 5, 5, -1, C, 2, 5])
    mask = jnp.array([True, True, False, True, True, True, True])
    start = jnp.asarray(COUNTS, jnp.float32)
    updated = seesaw_count_update(start, labels, mask)
    assert updated.dtype == jnp.float32
    np.testing.assert_array_equal(updated, ref_count_update(COUNTS, [0, 5, 2, 5]))
    as_int = seesaw_count_update(jnp.asarray(COUNTS, jnp.int32), labels.reshape(7, 1))
    assert as_int.dtype == jnp.int32
    np.testing.assert_array_equal(as_int, ref_count_update(COUNTS, [0, 5, 5, 2, 5]))
    # Under jit the result is the same.
    np.testing.assert_array_equal(jax.jit(seesaw_count_update)(start, labels, mask), updated)


def test_seesaw_count_update_psums_over_a_named_axis_or_keeps_per_device_counts():
    """A mapped axis of 4 'devices': with axis_name every replica gets the global batch's counts; without, each
    keeps its own shard's (the authors' per-process buffers)."""
    shards = jnp.asarray(np.random.default_rng(0).integers(0, C, size=(4, 6)))
    start = jnp.zeros((4, C), jnp.float32)
    summed = jax.vmap(lambda c, y: seesaw_count_update(c, y, axis_name="devices"), axis_name="devices")(start, shards)
    for row in np.asarray(summed):
        np.testing.assert_array_equal(row, ref_count_update(np.zeros(C), np.asarray(shards).reshape(-1)))
    local = jax.vmap(seesaw_count_update)(start, shards)
    for row, shard in zip(np.asarray(local), np.asarray(shards)):
        np.testing.assert_array_equal(row, ref_count_update(np.zeros(C), shard))


# --- Seesaw: gradients and equivalences ----------------------------------------------------------------------

@pytest.mark.parametrize("setting", SEESAW_SETTINGS[:4])
def test_seesaw_gradient_is_the_reference_closed_form(setting):
    with jax.enable_x64(True):
        z, y = _batch(21, scale=5.0)
        w = np.random.default_rng(22).uniform(0.5, 1.5, size=len(y))
        cum = COUNTS.astype(np.float64)

        def batch_loss(logits):
            return jnp.mean(seesaw_loss(logits, jnp.asarray(y), cumulative_counts=jnp.asarray(cum),
                                        sample_weights=jnp.asarray(w), **setting))

        expected = ref_seesaw_grad(z, y, cum, w=w, **setting)
        _close(jax.grad(batch_loss)(jnp.asarray(z)), expected, rtol=1e-12)


def test_seesaw_check_grads_in_float64():
    """Without compensation the factors depend on the counts alone, so the loss is differentiable end to end; with
    it, the frozen form (factors taken at `at`) has the loss's value and autodiff gradient there."""
    with jax.enable_x64(True):
        z, y = _batch(31)
        z, y, cum = jnp.asarray(z), jnp.asarray(y), jnp.asarray(COUNTS, jnp.float64)
        check_grads(lambda logits: jnp.sum(seesaw_loss(logits, y, cumulative_counts=cum, q=0.0)), (z,), order=2,
                    modes=("fwd", "rev"))
        offsets = seesaw_log_factors(z, y, cumulative_counts=cum)

        def frozen(logits):
            return jnp.sum(losses.softmax_cross_entropy(logits + offsets, y))

        check_grads(frozen, (z,), order=2, modes=("fwd", "rev"))

        def full(logits):
            return jnp.sum(seesaw_loss(logits, y, cumulative_counts=cum))

        np.testing.assert_allclose(full(z), frozen(z), rtol=1e-13)
        np.testing.assert_allclose(jax.grad(full)(z), jax.grad(frozen)(z), rtol=1e-12, atol=1e-15)


def test_seesaw_without_factors_or_on_equal_counts_is_cross_entropy():
    z, y = _batch(41)
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    ce = losses.softmax_cross_entropy(z, y)
    counts = jnp.asarray(COUNTS, jnp.float32)
    np.testing.assert_allclose(seesaw_loss(z, y, cumulative_counts=counts, p=0.0, q=0.0), ce, rtol=1e-6)
    np.testing.assert_allclose(seesaw_loss(z, y, cumulative_counts=jnp.full(C, 50.0), q=0.0), ce, rtol=1e-6)
    # Every class below one image is clamped to one: the zero state without compensation is CE as well.
    np.testing.assert_allclose(seesaw_loss(z, y, cumulative_counts=jnp.zeros(C), q=0.0), ce, rtol=1e-6)
    # The factors only ever lower the rarer classes' logits and raise the more probable ones'.
    mitigation = seesaw_log_factors(z, y, cumulative_counts=counts, q=0.0)
    compensation = seesaw_log_factors(z, y, cumulative_counts=counts, p=0.0)
    assert np.all(np.asarray(mitigation) <= 0) and np.all(np.asarray(compensation) >= 0)


# --- Seesaw: sweeps, dtypes, bad labels, errors ---------------------------------------------------------------

@pytest.mark.parametrize("name, values", [("p", (0.0, 0.5, 0.8, 2.0)), ("q", (0.0, 1.0, 2.0)),
                                          ("eps", (1e-6, 1e-2, 0.5))])
def test_seesaw_hyper_parameters_vmap_under_jit(name, values):
    z, y = _batch(51, scale=5.0)
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    counts = jnp.asarray(COUNTS, jnp.float32)

    def loss(value):
        return seesaw_loss(z, y, cumulative_counts=counts, **{name: value})

    swept = jax.jit(jax.vmap(loss))(jnp.asarray(values, jnp.float32))
    for index, value in enumerate(values):
        _close(swept[index], seesaw_loss(z, y, cumulative_counts=counts, **{name: value}), rtol=2e-6)
        _close(swept[index], ref_seesaw(np.asarray(z, np.float64), np.asarray(y), COUNTS,
                                        **{"p": 0.8, "q": 2.0, "eps": 1e-2, name: value}), rtol=2e-5)
    grads = jax.vmap(jax.grad(lambda value: jnp.sum(loss(value))))(jnp.asarray(values, jnp.float32))
    assert np.all(np.isfinite(grads))


def test_seesaw_counts_may_be_traced_state_under_jit():
    z, y = _batch(52)
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y)

    @jax.jit
    def step(counts):
        counts = seesaw_count_update(counts, y)
        return counts, seesaw_loss(z, y, cumulative_counts=counts)

    counts, got = step(jnp.asarray(COUNTS, jnp.float32))
    expected = ref_seesaw(np.asarray(z, np.float64), np.asarray(y), ref_count_update(COUNTS, np.asarray(y)))
    _close(got, expected, rtol=2e-6)


def test_seesaw_bf16_logits_compute_in_float32():
    z, y = _batch(61)
    z16 = jnp.asarray(z, jnp.bfloat16)
    counts = jnp.asarray(COUNTS, jnp.float32)
    got = seesaw_loss(z16, jnp.asarray(y), cumulative_counts=counts)
    assert got.dtype == jnp.float32
    _close(got, ref_seesaw(np.asarray(z16.astype(jnp.float32), np.float64), y, COUNTS), rtol=2e-6)


def test_seesaw_out_of_range_label_is_nan_for_that_example_only():
    z, _ = _batch(71, batch=4)
    y = jnp.array([1, C, 2, -1])
    z = jnp.asarray(z, jnp.float32)
    counts = jnp.asarray(COUNTS, jnp.float32)
    got = seesaw_loss(z, y, cumulative_counts=counts)
    assert np.isnan(got[1]) and np.isnan(got[3]) and np.all(np.isfinite(np.asarray(got)[[0, 2]]))
    good = jnp.array([True, False, True, False])
    grad = jax.grad(lambda logits: jnp.sum(jnp.where(good, seesaw_loss(logits, y, cumulative_counts=counts), 0)))(z)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[[1, 3]] == 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cumulative_counts=jnp.zeros(C - 1)), r"cumulative_counts must have shape \[8\]"),
        (dict(cumulative_counts=-np.ones(C)), "cumulative_counts must be finite and >= 0"),
        (dict(cumulative_counts=np.full(C, np.nan)), "cumulative_counts must be finite and >= 0"),
        (dict(cumulative_counts=np.zeros(C), p=-0.1), r"p must lie in \[0, inf\]"),
        (dict(cumulative_counts=np.zeros(C), q=-1.0), r"q must lie in \[0, inf\]"),
        (dict(cumulative_counts=np.zeros(C), eps=-1e-3), r"eps must lie in \[0, inf\]"),
        (dict(cumulative_counts=np.zeros(C), sample_weights=jnp.ones(3)), "sample_weights must have the labels'"),
    ],
)
def test_seesaw_bad_inputs_raise(kwargs, message):
    z, y = _batch(81)
    with pytest.raises(ValueError, match=message):
        seesaw_loss(jnp.asarray(z, jnp.float32), jnp.asarray(y), **kwargs)


def test_seesaw_count_update_bad_inputs_raise():
    with pytest.raises(ValueError, match="non-empty 1-D vector"):
        seesaw_count_update(jnp.zeros((2, C)), jnp.array([0]))
    with pytest.raises(ValueError, match="labels must be integer"):
        seesaw_count_update(jnp.zeros(C), jnp.array([0.0]))
    with pytest.raises(ValueError, match="mask must have the labels' shape"):
        seesaw_count_update(jnp.zeros(C), jnp.array([0, 1]), jnp.array([True]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        seesaw_count_update(-jnp.ones(C), jnp.array([0]))


# --- softmax EQL ------------------------------------------------------------------------------------------------

EQL_SETTINGS = [(0.005, 0.9), (0.05, 0.9), (0.2, 0.5), (0.0, 0.9), (1.0, 1.0)]


@pytest.mark.parametrize("threshold, gamma", EQL_SETTINGS)
def test_eql_matches_the_reference_in_float64_and_float32(threshold, gamma):
    counts = COUNTS * 10  # frequencies 1/7310 ... 5000/7310
    z, y = _batch(91, batch=9, scale=4.0)
    beta = np.random.default_rng(92).uniform(size=z.shape) < gamma
    expected = ref_eql(z, y, beta.astype(np.float64), counts.astype(np.float64), threshold)
    with jax.enable_x64(True):
        got = softmax_eql_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(beta), class_counts=counts,
                               tail_threshold=threshold)
        assert got.dtype == jnp.float64
        _close(got, expected, rtol=1e-12)
        grad = jax.grad(lambda logits: jnp.sum(softmax_eql_loss(logits, jnp.asarray(y), jnp.asarray(beta),
                                                                class_counts=counts, tail_threshold=threshold)))
        _close(grad(jnp.asarray(z)), ref_eql_grad(z, y, beta, counts.astype(np.float64), threshold), rtol=1e-12)
    got32 = softmax_eql_loss(jnp.asarray(z, jnp.float32), jnp.asarray(y), jnp.asarray(beta.astype(np.float32)),
                             class_counts=counts, tail_threshold=threshold)
    assert got32.dtype == jnp.float32
    _close(got32, expected, rtol=2e-6)


def test_eql_threshold_is_strict_and_the_target_always_stays():
    counts = np.array([5, 995, 3, 1, 40, 50, 900, 6])  # N = 2000: class 0 sits exactly at 0.0025
    with jax.enable_x64(True):
        tail64 = eql_tail_classes(jnp.asarray(counts, jnp.float64), tail_threshold=0.0025)
    tail32 = eql_tail_classes(counts, tail_threshold=0.0025)
    for tail in (tail64, tail32):
        np.testing.assert_array_equal(tail, [False, False, True, True, False, False, False, False])
    # Every tail negative dropped: only the target and the head classes stay in the normaliser.
    z, y = _batch(93, labels=[2, 3, 0, 1])
    z = jnp.asarray(z, jnp.float32)
    everything = jnp.ones(z.shape, bool)
    got = softmax_eql_loss(z, jnp.asarray(y), everything, class_counts=counts, tail_threshold=0.0025)
    _close(got, ref_eql(np.asarray(z, np.float64), y, np.ones(z.shape), counts.astype(np.float64), 0.0025),
           rtol=2e-6)
    # Every class a tail class and every draw 1: each normaliser holds the target alone, a zero loss.
    np.testing.assert_array_equal(softmax_eql_loss(z, jnp.asarray(y), everything, class_counts=counts,
                                                   tail_threshold=1.0), 0.0)


def test_eql_reduces_to_cross_entropy():
    z, y = _batch(94)
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    ce = losses.softmax_cross_entropy(z, y)
    nothing, everything = jnp.zeros(z.shape, bool), jnp.ones(z.shape, bool)
    np.testing.assert_allclose(softmax_eql_loss(z, y, nothing, class_counts=COUNTS, tail_threshold=1.0), ce,
                               rtol=1e-6)
    np.testing.assert_allclose(softmax_eql_loss(z, y, everything, class_counts=COUNTS, tail_threshold=0.0), ce,
                               rtol=1e-6)
    mask = eql_drop_mask(jax.random.key(0), z.shape, gamma=0.0)
    np.testing.assert_allclose(softmax_eql_loss(z, y, mask, class_counts=COUNTS), ce, rtol=1e-6)


def test_eql_check_grads_in_float64():
    with jax.enable_x64(True):
        z, y = _batch(95)
        beta = jnp.asarray(np.random.default_rng(96).uniform(size=z.shape) < 0.9)
        check_grads(
            lambda logits: jnp.sum(softmax_eql_loss(logits, jnp.asarray(y), beta, class_counts=COUNTS,
                                                    tail_threshold=0.05)),
            (jnp.asarray(z),), order=2, modes=("fwd", "rev"))


def test_eql_drop_mask_helper():
    key = jax.random.key(7)
    mask = eql_drop_mask(key, (2000, C), gamma=0.9)
    assert mask.dtype == jnp.bool_ and mask.shape == (2000, C)
    assert abs(float(jnp.mean(mask)) - 0.9) < 0.01
    np.testing.assert_array_equal(mask, eql_drop_mask(key, (2000, C), gamma=0.9))  # deterministic given the key
    assert bool(jnp.all(eql_drop_mask(key, (5, C), gamma=1.0)))
    assert not bool(jnp.any(eql_drop_mask(key, (5, C), gamma=0.0)))
    # One compiled program over a sweep of gamma; the same uniforms, thresholded.
    swept = jax.jit(jax.vmap(lambda g: eql_drop_mask(key, (50, C), gamma=g)))(jnp.array([0.3, 0.9]))
    np.testing.assert_array_equal(swept[1], eql_drop_mask(key, (50, C), gamma=0.9))
    assert np.all(np.asarray(swept[0]) <= np.asarray(swept[1]))
    # The loss with the helper's mask is the loss with that mask given explicitly.
    z, y = _batch(97)
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    drawn = eql_drop_mask(jax.random.key(3), z.shape)
    expected = ref_eql(np.asarray(z, np.float64), np.asarray(y), np.asarray(drawn, np.float64),
                       COUNTS.astype(np.float64), 0.005)
    _close(jax.jit(lambda k: softmax_eql_loss(z, y, eql_drop_mask(k, z.shape), class_counts=COUNTS))(
        jax.random.key(3)), expected, rtol=2e-6)


def test_eql_threshold_vmaps_under_jit():
    z, y = _batch(98)
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    beta = jnp.asarray(np.random.default_rng(99).uniform(size=z.shape) < 0.9)
    values = (0.0, 0.005, 0.05, 0.3)

    def loss(threshold):
        return softmax_eql_loss(z, y, beta, class_counts=COUNTS, tail_threshold=threshold)

    swept = jax.jit(jax.vmap(loss))(jnp.asarray(values, jnp.float32))
    for index, value in enumerate(values):
        np.testing.assert_allclose(swept[index], loss(value), rtol=1e-6)
    assert np.all(np.isfinite(jax.vmap(jax.grad(lambda t: jnp.sum(loss(t))))(jnp.asarray(values, jnp.float32))))


def test_eql_bf16_logits_compute_in_float32():
    z, y = _batch(100)
    z16 = jnp.asarray(z, jnp.bfloat16)
    beta = np.random.default_rng(101).uniform(size=z.shape) < 0.9
    got = softmax_eql_loss(z16, jnp.asarray(y), jnp.asarray(beta), class_counts=COUNTS, tail_threshold=0.05)
    assert got.dtype == jnp.float32
    _close(got, ref_eql(np.asarray(z16.astype(jnp.float32), np.float64), y, beta.astype(np.float64),
                        COUNTS.astype(np.float64), 0.05), rtol=2e-6)


def test_eql_out_of_range_label_is_nan_for_that_example_only():
    """Even with every class a dropped tail class, a bad label's row stays finite inside (its gradient is 0)."""
    z, _ = _batch(102, batch=4)
    z = jnp.asarray(z, jnp.float32)
    y = jnp.array([1, C, 2, -3])
    everything = jnp.ones(z.shape, bool)
    got = softmax_eql_loss(z, y, everything, class_counts=COUNTS, tail_threshold=1.0)
    assert np.isnan(got[1]) and np.isnan(got[3]) and np.all(np.isfinite(np.asarray(got)[[0, 2]]))
    good = jnp.array([True, False, True, False])
    grad = jax.grad(lambda logits: jnp.sum(jnp.where(
        good, softmax_eql_loss(logits, y, everything, class_counts=COUNTS, tail_threshold=0.5), 0.0)))(z)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[[1, 3]] == 0)


@pytest.mark.parametrize(
    "mask, kwargs, message",
    [
        (np.zeros((7, C - 1), bool), {}, r"drop_mask must have the logits' shape \(7, 8\)"),
        (np.full((7, C), 0.5), {}, "drop_mask must hold only 0 and 1"),
        (np.zeros((7, C), bool), dict(class_counts=np.where(np.arange(C) == 2, 0, COUNTS)),
         "class_counts must be finite and positive"),
        (np.zeros((7, C), bool), dict(class_counts=COUNTS[:4]), r"class_counts must have shape \[8\]"),
        (np.zeros((7, C), bool), dict(tail_threshold=1.5), r"tail_threshold must lie in \[0, 1\]"),
    ],
)
def test_eql_bad_inputs_raise(mask, kwargs, message):
    z, y = _batch(103)
    with pytest.raises(ValueError, match=message):
        softmax_eql_loss(jnp.asarray(z, jnp.float32), jnp.asarray(y), mask, **{"class_counts": COUNTS, **kwargs})


def test_eql_drop_mask_rejects_a_probability_out_of_range():
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\]"):
        eql_drop_mask(jax.random.key(0), (2, C), gamma=1.2)
