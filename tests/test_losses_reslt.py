"""ResLT (methods-structures.md §5): the three-branch loss as per-example shares, its class groups from the counts,
and the fused prediction logits, against a float64 NumPy restatement of the reference code; gradients; the global
batch under data parallelism (`vmap` with an axis name) and padding (`mask`).

x64 is switched on only inside the tests that need it (`jax.enable_x64(True)` is a context manager).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from tolerance import assert_close_to_scale

from ltjax import losses
from ltjax.losses.reslt import reslt_class_groups, reslt_logits, reslt_loss

# --- float64 NumPy reference, written from the spec ---------------------------------------------------------------


def ref_groups(counts, medium_from=0.35, tail_from=0.70):
    """The reference's label cut, on the labels a dataset ordered by decreasing count (ties by index) would get."""
    num_classes = len(counts)
    order = sorted(range(num_classes), key=lambda c: (-counts[c], c))  # class at each rank
    groups = np.empty(num_classes, np.int64)
    for rank, c in enumerate(order):
        groups[c] = 0 if rank < int(np.floor(medium_from * num_classes)) else (
            1 if rank < int(np.floor(tail_from * num_classes)) else 2)
    return groups


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_branch_sum(logits, labels, members):
    """The code's branch CE: -sum_i m_i log(softmax(l_i)[y_i] + 1e-7), summed, not averaged."""
    p = _softmax(logits)[np.arange(len(labels)), labels]
    return -np.sum(members * np.log(p + 1e-7))


def ref_loss(branches, labels, groups, beta):
    """The reference's scalar loss of one batch: beta L_ice + (1 - beta) L_fce (CIFAR form)."""
    g = groups[labels]
    m_h, m_m, m_t = np.ones(len(labels)), (g >= 1).astype(np.float64), (g >= 2).astype(np.float64)
    l_h, l_m, l_t = branches[:, 0], branches[:, 1], branches[:, 2]
    ice = (ref_branch_sum(l_h, labels, m_h) + ref_branch_sum(l_m, labels, m_m) + ref_branch_sum(l_t, labels, m_t)
           ) / (m_h.sum() + m_m.sum() + m_t.sum())
    fused = l_h + l_m + l_t
    fce = np.mean(-np.log(_softmax(fused)[np.arange(len(labels)), labels]))
    return beta * ice + (1 - beta) * fce


def ref_shares(branches, labels, groups, beta):
    """The shares the docstring states: beta (B / M) sum_k m_ik bce_ik + (1 - beta) CE(fused)_i."""
    rows = np.arange(len(labels))
    members = groups[labels][:, None] >= np.arange(3)
    bce = -np.log(np.stack([_softmax(branches[:, k])[rows, labels] for k in range(3)], -1) + 1e-7)
    fce = -np.log(_softmax(branches.sum(1))[rows, labels])
    return beta * len(labels) / members.sum() * np.sum(members * bce, -1) + (1 - beta) * fce


def make_case(seed, batch, num_classes, scale=3.0):
    """Branch logits `[B, 3, C]`, labels, and CIFAR-like counts (imbalance 100) in a shuffled class order whose
    rarest class has one image; that class is the first example's label."""
    rng = np.random.default_rng(seed)
    counts = np.round(500 * 0.01 ** (np.arange(num_classes) / max(num_classes - 1, 1))).astype(np.int64)
    counts[-1] = 1
    counts = counts[rng.permutation(num_classes)]
    branches = scale * rng.standard_normal((batch, 3, num_classes))
    labels = rng.integers(0, num_classes, size=batch)
    labels[0] = int(np.argmin(counts))
    return branches, labels, counts


def cifar_counts(num_classes, imbalance=100):
    return np.array([int(50000 / num_classes * (1 / imbalance) ** (c / (num_classes - 1))) for c in range(num_classes)])


def _split(x, parts):
    return jnp.reshape(x, (parts, -1) + x.shape[1:])


CASES = [(0, 1, 3), (1, 7, 10), (2, 64, 10), (3, 64, 100), (4, 9, 5)]
BETAS = [0.0, 0.5, 0.72, 0.995, 1.0]

# --- values ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, batch, num_classes", CASES)
def test_values_match_the_float64_reference(seed, batch, num_classes):
    branches, labels, counts = make_case(seed, batch, num_classes)
    groups = ref_groups(counts)
    assert groups[labels[0]] == 2  # the one-image class is a tail class, and it is in the batch
    with jax.enable_x64(True):
        got_groups = reslt_class_groups(counts)
        np.testing.assert_array_equal(got_groups, groups)
        shares = [np.asarray(reslt_loss(jnp.asarray(branches), jnp.asarray(labels), class_groups=got_groups,
                                        beta=beta)) for beta in BETAS]
        assert all(share.dtype == np.float64 for share in shares)
    for beta, share in zip(BETAS, shares):
        np.testing.assert_allclose(share, ref_shares(branches, labels, groups, beta), rtol=1e-12)
        expected = ref_loss(branches, labels, groups, beta)
        assert_close_to_scale(np.mean(share), expected, rtol=1e-12, scale=np.max(np.abs(share)))


def test_values_in_float32_match_the_reference():
    branches, labels, counts = make_case(5, 32, 100)
    groups = reslt_class_groups(counts)
    got = reslt_loss(jnp.asarray(branches, jnp.float32), labels, class_groups=groups)
    assert got.dtype == jnp.float32
    rounded = branches.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(np.mean(np.asarray(got, np.float64)), ref_loss(rounded, labels, ref_groups(counts),
                                                                              0.995), rtol=2e-6)


def test_the_epsilon_caps_each_branch_loss_but_not_the_fused_one():
    """A branch that gives its label probability ~e^-60 costs -log(1e-7) = 16.12, not 60; the fused CE is exact."""
    branches = np.zeros((1, 3, 4))
    branches[0, :, 1] = 60.0  # label 0, every branch sure of class 1
    with jax.enable_x64(True):
        groups = jnp.array([2, 0, 0, 0])  # the example is a member of all three branches
        ice = float(reslt_loss(jnp.asarray(branches), jnp.array([0]), class_groups=groups, beta=1.0)[0])
        fce = float(reslt_loss(jnp.asarray(branches), jnp.array([0]), class_groups=groups, beta=0.0)[0])
    # B / M = 1/3 times three capped branch losses
    np.testing.assert_allclose(ice, -np.log(np.exp(-60.0) / (1 + 3 * np.exp(-60.0)) + 1e-7), rtol=1e-12)
    np.testing.assert_allclose(fce, 180.0 + np.log1p(3 * np.exp(-180.0)), rtol=1e-12)


def test_one_normaliser_for_the_three_branches():
    """L_ice divides the three branch sums by the total memberships, not each by its own count."""
    branches, labels, counts = make_case(6, 12, 10)
    groups = ref_groups(counts)
    with jax.enable_x64(True):
        mean = float(jnp.mean(reslt_loss(jnp.asarray(branches), jnp.asarray(labels), class_groups=groups, beta=1.0)))
    g = groups[labels]
    sums = [ref_branch_sum(branches[:, k], labels, (g >= k).astype(float)) for k in range(3)]
    members = [(g >= k).sum() for k in range(3)]
    np.testing.assert_allclose(mean, sum(sums) / sum(members), rtol=1e-12)
    assert abs(mean - np.mean([s / n for s, n in zip(sums, members) if n])) > 1e-3


def test_the_class_order_does_not_matter():
    branches, labels, counts = make_case(7, 16, 10)
    order = np.random.default_rng(0).permutation(10)
    relabel = np.argsort(order)  # new index of each old class
    with jax.enable_x64(True):
        before = reslt_loss(jnp.asarray(branches), jnp.asarray(labels), class_groups=reslt_class_groups(counts))
        after = reslt_loss(jnp.asarray(branches[..., order]), jnp.asarray(relabel[labels]),
                           class_groups=reslt_class_groups(counts[order]))
        np.testing.assert_allclose(after, before, rtol=1e-13)
        np.testing.assert_array_equal(reslt_class_groups(counts[order]), reslt_class_groups(counts)[order])


def test_leading_axes_are_separate_batches():
    branches, labels, counts = make_case(8, 12, 5)
    nested_b, nested_y = branches.reshape(3, 4, 3, 5), labels.reshape(3, 4)
    groups = reslt_class_groups(counts)
    with jax.enable_x64(True):
        nested = reslt_loss(jnp.asarray(nested_b), jnp.asarray(nested_y), class_groups=groups)
        assert nested.shape == (3, 4)
        for k in range(3):
            np.testing.assert_allclose(nested[k], ref_shares(nested_b[k], nested_y[k], np.asarray(groups), 0.995),
                                       rtol=1e-12)
        mapped = jax.vmap(functools.partial(reslt_loss, class_groups=groups))(jnp.asarray(nested_b),
                                                                               jnp.asarray(nested_y))
        np.testing.assert_allclose(mapped, nested, rtol=1e-13)


# --- class groups -------------------------------------------------------------------------------------------------


def test_groups_from_cifar100_if100_counts_are_the_label_cut_at_35_and_70():
    counts = cifar_counts(100)
    assert counts[0] == 500 and counts[-1] == 5 and counts.sum() == 10847
    assert counts[-2] == counts[-1]  # a tie, broken by the class index
    expected = np.where(np.arange(100) >= 70, 2, np.where(np.arange(100) >= 35, 1, 0))
    np.testing.assert_array_equal(reslt_class_groups(counts), expected)
    # The count boundaries the spec names: > 100, 20-100, < 20.
    assert counts[34] > 100 >= counts[35] and counts[69] >= 20 > counts[70]
    # The same cut in any class order: the groups follow the counts, not the indices.
    order = np.random.default_rng(1).permutation(100)
    np.testing.assert_array_equal(reslt_class_groups(counts[order]), expected[order])


def test_groups_of_the_other_scripts():
    # CIFAR-10: labels >= 2 and >= 4.
    np.testing.assert_array_equal(reslt_class_groups(cifar_counts(10), medium_from=0.2, tail_from=0.4),
                                  [0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
    # ImageNet-LT: labels remapped by increasing count; medium branch label < 825, tail branch label < 220.
    rng = np.random.default_rng(2)
    counts = rng.permutation(np.arange(5, 1005))  # distinct, so the reference's unstable argsort has no ties
    remapped = np.empty(1000, np.int64)
    remapped[np.argsort(counts)] = np.arange(1000)
    expected = (remapped < 825).astype(np.int64) + (remapped < 220)
    np.testing.assert_array_equal(reslt_class_groups(counts, medium_from=0.175, tail_from=0.78), expected)


@pytest.mark.parametrize("medium_from, tail_from", [(0.35, 0.7), (0.0, 0.5), (0.3, 0.3), (0.0, 1.0), (1.0, 1.0),
                                                    (0.13, 0.61)])
def test_groups_match_the_reference_with_ties(medium_from, tail_from):
    counts = np.random.default_rng(3).integers(1, 6, size=23)  # many ties
    np.testing.assert_array_equal(reslt_class_groups(counts, medium_from=medium_from, tail_from=tail_from),
                                  ref_groups(counts, medium_from, tail_from))


def test_a_decimal_fraction_cuts_where_it_reads():
    assert int(np.floor(0.29 * 100)) == 28  # the float product rounds below 29
    groups = np.asarray(reslt_class_groups(np.arange(100, 0, -1), medium_from=0.29, tail_from=0.57))
    assert np.sum(groups == 0) == 29 and np.sum(groups <= 1) == 57


def test_traced_fractions_and_counts_under_jit_and_vmap():
    counts = cifar_counts(100)
    swept = jax.jit(jax.vmap(lambda f: reslt_class_groups(counts, medium_from=f, tail_from=0.7)))(
        jnp.asarray([0.2, 0.35, 0.5]))
    for row, f in zip(swept, (0.2, 0.35, 0.5)):
        np.testing.assert_array_equal(row, ref_groups(counts, f, 0.7))
    traced = jax.jit(lambda c: reslt_class_groups(c))(jnp.asarray(counts, jnp.float32))
    assert traced.dtype == jnp.int32
    np.testing.assert_array_equal(traced, ref_groups(counts))


# --- equivalences -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_beta_zero_is_cross_entropy_of_the_summed_logits(dtype):
    branches, labels, counts = make_case(9, 16, 10)
    with jax.enable_x64(dtype == jnp.float64):
        b = jnp.asarray(branches, dtype)
        got = reslt_loss(b, labels, class_groups=reslt_class_groups(counts), beta=0.0)
        ce = losses.softmax_cross_entropy(b.sum(axis=1), jnp.asarray(labels))
        np.testing.assert_allclose(got, ce, rtol=1e-12 if dtype == jnp.float64 else 1e-6)
        np.testing.assert_allclose(reslt_logits(b), b.sum(axis=1), rtol=1e-12 if dtype == jnp.float64 else 1e-6)


def test_only_head_classes_and_beta_one_is_the_head_branch_ce_with_its_epsilon():
    branches, labels, _ = make_case(10, 16, 10)
    with jax.enable_x64(True):
        got = reslt_loss(jnp.asarray(branches), jnp.asarray(labels), class_groups=jnp.zeros(10, jnp.int32),
                         beta=1.0)
        head_ce = losses.softmax_cross_entropy(jnp.asarray(branches[:, 0]), jnp.asarray(labels))
        np.testing.assert_allclose(got, -np.log(np.exp(-np.asarray(head_ce)) + 1e-7), rtol=1e-12)
    p = _softmax(branches[:, 0])[np.arange(16), labels]
    np.testing.assert_allclose(np.mean(np.asarray(got)), np.mean(-np.log(p + 1e-7)), rtol=1e-12)


def test_only_tail_classes_and_beta_one_averages_the_three_branches():
    branches, labels, _ = make_case(11, 8, 10)
    with jax.enable_x64(True):
        got = reslt_loss(jnp.asarray(branches), jnp.asarray(labels), class_groups=jnp.full(10, 2), beta=1.0)
    rows = np.arange(8)
    per_branch = [-np.log(_softmax(branches[:, k])[rows, labels] + 1e-7) for k in range(3)]
    np.testing.assert_allclose(got, sum(per_branch) / 3, rtol=1e-12)


def test_reslt_logits_predict_with_the_plain_sum():
    branches, _, _ = make_case(12, 20, 10)
    fused = reslt_logits(jnp.asarray(branches, jnp.bfloat16))
    assert fused.dtype == jnp.float32 and fused.shape == (20, 10)
    np.testing.assert_array_equal(np.argmax(reslt_logits(jnp.asarray(branches)), -1), np.argmax(branches.sum(1), -1))


# --- gradients, data parallelism, padding --------------------------------------------------------------------------


@pytest.mark.parametrize("seed, batch, num_classes, beta, order", [(13, 1, 3, 0.995, 2), (14, 9, 5, 1.0, 1)])
def test_check_grads_in_float64(seed, batch, num_classes, beta, order):
    branches, labels, counts = make_case(seed, batch, num_classes)
    groups = reslt_class_groups(counts)
    with jax.enable_x64(True):
        @jax.jit
        def total(b):
            return jnp.sum(reslt_loss(b, jnp.asarray(labels), class_groups=groups, beta=beta))

        check_grads(total, (jnp.asarray(branches),), order=order, modes=("fwd", "rev"))
        # Only the member branches get a gradient from L_ice: at beta = 1, a head example's medium and tail are 0.
        grad = np.asarray(jax.grad(total)(jnp.asarray(branches)))
        not_member = np.asarray(groups)[labels][:, None] < np.arange(3)
        if beta == 1.0:
            assert np.all(grad[not_member] == 0.0)


def test_axis_name_over_two_halves_is_the_whole_batch():
    branches, labels, counts = make_case(16, 12, 10)
    groups = reslt_class_groups(counts)
    mask = np.ones(12, bool)
    mask[-2:] = False  # padding at the end of the second half
    real = int(mask.sum())

    def whole(b):
        return jnp.mean(reslt_loss(b[:real], jnp.asarray(labels[:real]), class_groups=groups, beta=0.7))

    def halves(b):
        per_half = jax.vmap(functools.partial(reslt_loss, class_groups=groups, beta=0.7, axis_name="halves"),
                            axis_name="halves")(_split(b, 2), _split(jnp.asarray(labels), 2), mask=_split(mask, 2))
        return jnp.sum(per_half) / real

    def per_half_alone(b):
        per_half = jax.vmap(functools.partial(reslt_loss, class_groups=groups, beta=0.7))(
            _split(b, 2), _split(jnp.asarray(labels), 2), mask=_split(mask, 2))
        return jnp.sum(per_half) / real

    with jax.enable_x64(True):
        b = jnp.asarray(branches)
        value, grad = jax.jit(jax.value_and_grad(halves))(b)
        expected, expected_grad = jax.value_and_grad(whole)(b)
        np.testing.assert_allclose(value, expected, rtol=1e-13)
        np.testing.assert_allclose(value, ref_loss(branches[:real], labels[:real], np.asarray(groups), 0.7),
                                   rtol=1e-12)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)
        # Each half's own normalisers give a different loss (unless the halves' ratios B/M agree).
        assert abs(float(per_half_alone(b)) - float(expected)) > 1e-6


def test_a_masked_example_is_left_out_of_the_batch():
    branches, labels, counts = make_case(17, 10, 5)
    groups = reslt_class_groups(counts)
    mask = np.array([True] * 7 + [False] * 3)
    with jax.enable_x64(True):
        b, y = jnp.asarray(branches), jnp.asarray(labels)
        kept = reslt_loss(b[:7], y[:7], class_groups=groups)
        masked = reslt_loss(b, y, class_groups=groups, mask=jnp.asarray(mask))
        np.testing.assert_allclose(masked[:7], kept, rtol=1e-13)
        np.testing.assert_array_equal(masked[7:], 0.0)
        np.testing.assert_allclose(jnp.sum(masked) / 7, jnp.mean(kept), rtol=1e-13)
        # Padding with non-finite logits stays out of the value and the gradient.
        padded = b.at[8].set(jnp.inf).at[9].set(jnp.nan)

        def total(v):
            return jnp.sum(reslt_loss(v, y, class_groups=groups, mask=mask))

        np.testing.assert_allclose(total(padded), jnp.sum(kept), rtol=1e-13)
        grad = jax.grad(total)(padded)
        assert np.all(np.isfinite(grad)) and np.all(grad[7:] == 0.0)
        np.testing.assert_allclose(grad[:7], jax.grad(lambda v: jnp.sum(reslt_loss(v, y[:7], class_groups=groups)))(
            b[:7]), rtol=1e-12, atol=1e-15)
    # An empty batch: zeros, and a zero gradient.
    empty = reslt_loss(jnp.asarray(branches, jnp.float32), labels, class_groups=groups, mask=np.zeros(10, bool))
    np.testing.assert_array_equal(empty, 0.0)


def test_an_out_of_range_label_gives_nan_for_that_example_only():
    branches, labels, counts = make_case(18, 6, 5)
    groups = reslt_class_groups(counts)
    keep = np.arange(6) != 2

    @jax.jit
    def outputs(v, y):
        out = reslt_loss(v, y, class_groups=groups)
        grad = jax.grad(lambda u: jnp.sum(jnp.where(keep, reslt_loss(u, y, class_groups=groups), 0.0)))(v)
        return out, grad

    with jax.enable_x64(True):
        b = jnp.asarray(branches)
        without = reslt_loss(b[keep], jnp.asarray(labels[keep]), class_groups=groups)
        for bad in (-1, 5):
            out, grad = outputs(b, jnp.asarray(labels).at[2].set(bad))
            assert np.isnan(out[2]) and np.all(np.isfinite(out[keep]))
            np.testing.assert_allclose(out[keep], without, rtol=1e-13)  # the batch without that example
            assert np.all(np.isfinite(grad)) and np.all(grad[2] == 0.0)


# --- dtypes, jit and vmap over beta ---------------------------------------------------------------------------------


def test_bf16_logits_compute_in_float32():
    branches, labels, counts = make_case(19, 8, 10)
    groups = reslt_class_groups(counts)
    low = jnp.asarray(branches, jnp.bfloat16)
    out = reslt_loss(low, labels, class_groups=groups)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, reslt_loss(low.astype(jnp.float32), labels, class_groups=groups), rtol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(reslt_loss(v, labels, class_groups=groups)))(low)
    assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_extreme_logits_give_finite_losses_and_gradients():
    _, labels, counts = make_case(20, 6, 5)
    groups = reslt_class_groups(counts)
    signs = np.where(np.random.default_rng(4).random((6, 3, 5)) < 0.5, 1.0, -1.0)
    onehot = np.eye(5)[labels][:, None, :].repeat(3, 1)
    for logits in (1e4 * signs, 1e4 * onehot, -1e4 * onehot):
        z = jnp.asarray(logits, jnp.float32)
        assert np.all(np.isfinite(reslt_loss(z, labels, class_groups=groups)))
        assert np.all(np.isfinite(jax.grad(lambda v: jnp.sum(reslt_loss(v, labels, class_groups=groups)))(z)))


def test_jit_and_vmap_over_beta():
    branches, labels, counts = make_case(21, 8, 10)
    groups = reslt_class_groups(counts)
    z = jnp.asarray(branches, jnp.float32)
    betas = (0.0, 0.72, 0.995, 1.0)

    def loss(beta):
        return reslt_loss(z, labels, class_groups=groups, beta=beta)

    swept = jax.jit(jax.vmap(loss))(jnp.asarray(betas, jnp.float32))
    rounded = branches.astype(np.float32).astype(np.float64)
    for index, beta in enumerate(betas):
        np.testing.assert_allclose(swept[index], loss(beta), rtol=2e-6, atol=2e-6 * np.max(np.abs(swept[index])))
        np.testing.assert_allclose(np.mean(np.asarray(swept[index], np.float64)),
                                   ref_loss(rounded, labels, np.asarray(groups), beta), rtol=2e-6)
    assert np.all(np.isfinite(jax.vmap(jax.grad(lambda v: jnp.sum(loss(v))))(jnp.asarray(betas, jnp.float32))))


# --- bad inputs -----------------------------------------------------------------------------------------------------

GROUPS = np.array([0, 0, 1, 2, 2])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda b, y: reslt_loss(b[:, :2], y, class_groups=GROUPS), r"branch_logits must be \[\.\.\., B, 3, C\]"),
        (lambda b, y: reslt_loss(b[0], y[0], class_groups=GROUPS), r"branch_logits must be \[\.\.\., B, 3, C\]"),
        (lambda b, y: reslt_loss(b.astype(jnp.int32), y, class_groups=GROUPS), "floating point"),
        (lambda b, y: reslt_loss(b, y[:3], class_groups=GROUPS), r"labels shape \(3,\) must equal"),
        (lambda b, y: reslt_loss(b, y.astype(jnp.float32), class_groups=GROUPS), "integer class"),
        (lambda b, y: reslt_loss(b, y, class_groups=GROUPS[:4]), r"class_groups must have shape \[5\]"),
        (lambda b, y: reslt_loss(b, y, class_groups=GROUPS.astype(np.float32)), "class_groups must be integer"),
        (lambda b, y: reslt_loss(b, y, class_groups=np.array([0, 1, 3, 2, -1])),
         r"classes \[2, 4\] have \[3, -1\]"),
        (lambda b, y: reslt_loss(b, y, class_groups=GROUPS, beta=1.5), r"beta must lie in \[0, 1\]"),
        (lambda b, y: reslt_loss(b, y, class_groups=GROUPS, mask=np.ones(3, bool)), "mask must have the labels'"),
        (lambda b, y: reslt_logits(b[:, :2]), r"branch_logits must be \[\.\.\., 3, C\]"),
        (lambda b, y: reslt_class_groups(np.array([3, 0, 2])), "finite and positive"),
        (lambda b, y: reslt_class_groups(np.ones((2, 3))), r"non-empty 1-D vector"),
        (lambda b, y: reslt_class_groups(np.ones(5), medium_from=-0.1), r"medium_from must lie in \[0, 1\]"),
        (lambda b, y: reslt_class_groups(np.ones(5), tail_from=1.2), r"tail_from must lie in \[0, 1\]"),
        (lambda b, y: reslt_class_groups(np.ones(5), medium_from=0.8, tail_from=0.5), "medium_from must be <="),
    ],
)
def test_bad_inputs_raise_a_clear_value_error(call, message):
    branches, labels, _ = make_case(22, 4, 5)
    with pytest.raises(ValueError, match=message):
        call(jnp.asarray(branches, jnp.float32), jnp.asarray(labels))


def test_traced_groups_work_and_act_as_the_nearest_group():
    branches, labels, counts = make_case(23, 8, 5)
    groups = np.asarray(reslt_class_groups(counts))
    z = jnp.asarray(branches, jnp.float32)
    fn = jax.jit(lambda g: reslt_loss(z, labels, class_groups=g))
    np.testing.assert_allclose(fn(jnp.asarray(groups)), reslt_loss(z, labels, class_groups=groups), rtol=1e-6)
    stretched = np.where(groups == 0, -3, np.where(groups == 2, 7, 1))  # not checked when traced
    np.testing.assert_allclose(fn(jnp.asarray(stretched)), reslt_loss(z, labels, class_groups=groups), rtol=1e-6)
