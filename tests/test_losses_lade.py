"""LADE (methods-baselines.md §1): LADE-CE, the batch-level regulariser and its per-example shares, their sum, and
the test-time rule, against a float64 NumPy restatement of the reference code; gradients; the global batch under
data parallelism (`vmap` with an axis name, and a `shard_map`/`pmap` train step on the test session's CPU devices).

x64 is switched on only inside the tests that need it (`jax.enable_x64(True)` is a context manager).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec
from jax.test_util import check_grads
from numpy_reference import longtail_case
from tolerance import assert_close_to_scale

from ltjax import losses
from ltjax.losses.lade import (
    lade_ce_loss,
    lade_logits,
    lade_loss,
    lade_regularizer,
    lade_regularizer_per_example,
)

# --- float64 NumPy reference, written from the spec (the code's C x B layout) ------------------------------------


def _logsumexp(x, axis):
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def ref_lade_ce(z, y, counts):
    prior = counts / counts.sum()
    shifted = z + np.log(prior + 1e-9)
    return _logsumexp(shifted, -1) - shifted[np.arange(len(y)), y]


def ref_regularizer(z, y, counts, remine_lambda):
    num_examples, num_classes = z.shape
    prior = counts / counts.sum()
    members = y[None, :] == np.arange(num_classes)[:, None]  # C x B
    per_class = z.T * members
    spread = (z - np.log(prior + 1e-9) + np.log(1.0 / num_classes + 1e-9)).T  # C x B
    batch_counts = members.sum(-1).astype(np.float64)
    first = per_class.sum(-1) / (batch_counts + 1e-8)
    second = _logsumexp(spread, -1) - np.log(num_examples)
    estimate = first - second - remine_lambda * second**2
    return -np.sum(estimate * prior)


def ref_total(z, y, counts, alpha, remine_lambda):
    return np.mean(ref_lade_ce(z, y, counts)) + alpha * ref_regularizer(z, y, counts, remine_lambda)


CASES = [(0, 1, 3), (1, 7, 10), (2, 64, 10), (3, 64, 100), (4, 7, 100)]
HYPER = [(0.1, 0.01), (0.05, 0.5), (1.0, 0.0), (0.0, 0.1)]

# --- values ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, batch, num_classes", CASES)
@pytest.mark.parametrize("alpha, remine_lambda", HYPER)
def test_values_match_the_float64_reference(seed, batch, num_classes, alpha, remine_lambda):
    z, y, counts = longtail_case(seed, batch, num_classes)
    with jax.enable_x64(True):
        zj, yj = jnp.asarray(z), jnp.asarray(y)
        ce = lade_ce_loss(zj, yj, class_counts=counts)
        reg = lade_regularizer(zj, yj, class_counts=counts, remine_lambda=remine_lambda)
        shares = lade_regularizer_per_example(zj, yj, class_counts=counts, remine_lambda=remine_lambda)
        total = lade_loss(zj, yj, class_counts=counts, alpha=alpha, remine_lambda=remine_lambda)
        assert ce.dtype == reg.dtype == shares.dtype == total.dtype == jnp.float64
        # NumPy copies: `np.mean` of a jax array calls its `.mean`, which would run in float32 outside this context.
        ce, reg, shares, total = (np.asarray(value) for value in (ce, reg, shares, total))
    expected_reg = ref_regularizer(z, y, counts, remine_lambda)
    np.testing.assert_allclose(ce, ref_lade_ce(z, y, counts), rtol=1e-12)
    assert_close_to_scale(reg, expected_reg, rtol=1e-12, scale=max(abs(expected_reg), 1.0))
    # The shares: their mean is R (every term is O(|z|), so the scale is that of the shares).
    assert_close_to_scale(np.mean(shares), expected_reg, rtol=1e-12, scale=np.max(np.abs(shares)))
    expected_total = ref_total(z, y, counts, alpha, remine_lambda)
    assert_close_to_scale(np.mean(total), expected_total, rtol=1e-12, scale=np.max(np.abs(total)))


def test_values_in_float32_match_the_reference():
    z, y, counts = longtail_case(5, 64, 100)
    got = lade_regularizer(jnp.asarray(z, jnp.float32), y, class_counts=counts)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref_regularizer(z.astype(np.float32).astype(np.float64), y, counts, 0.01),
                               rtol=2e-5)
    total = lade_loss(jnp.asarray(z, jnp.float32), y, class_counts=counts)
    np.testing.assert_allclose(np.mean(np.asarray(total, np.float64)),
                               ref_total(z.astype(np.float32).astype(np.float64), y, counts, 0.1, 0.01), rtol=2e-5)


def test_absent_classes_are_not_masked_out_of_the_regulariser():
    """A class absent from the batch contributes p_s(c) (s_c + lambda s_c^2): dropping it changes R."""
    z, y, counts = longtail_case(6, 4, 10)
    absent = np.setdiff1d(np.arange(10), y)
    assert absent.size > 0
    with jax.enable_x64(True):
        full = float(lade_regularizer(jnp.asarray(z), jnp.asarray(y), class_counts=counts))
    prior = counts / counts.sum()
    second = _logsumexp(z - np.log(prior + 1e-9) + np.log(0.1 + 1e-9), 0) - np.log(4)
    absent_part = np.sum(prior[absent] * (second[absent] + 0.01 * second[absent] ** 2))
    present = np.setdiff1d(np.arange(10), absent)
    first = np.array([z[y == c, c].sum() / ((y == c).sum() + 1e-8) for c in present])
    present_part = -np.sum(prior[present] * (first - second[present] - 0.01 * second[present] ** 2))
    np.testing.assert_allclose(full, absent_part + present_part, rtol=1e-12)


def test_the_class_order_does_not_matter():
    z, y, counts = longtail_case(7, 16, 10)
    order = np.random.default_rng(0).permutation(10)
    relabel = np.argsort(order)  # new index of each old class
    with jax.enable_x64(True):
        for fn in (lade_regularizer, lade_regularizer_per_example, lade_loss, lade_ce_loss):
            before = fn(jnp.asarray(z), jnp.asarray(y), class_counts=counts)
            after = fn(jnp.asarray(z[:, order]), jnp.asarray(relabel[y]), class_counts=counts[order])
            np.testing.assert_allclose(after, before, rtol=1e-12, atol=1e-12)


def test_the_batch_is_axis_minus_two_and_leading_axes_are_separate_batches():
    z, y, counts = longtail_case(8, 12, 5)
    nested_z, nested_y = z.reshape(3, 4, 5), y.reshape(3, 4)
    with jax.enable_x64(True):
        for fn in (lade_loss, lade_regularizer):
            nested = fn(jnp.asarray(nested_z), jnp.asarray(nested_y), class_counts=counts)
            assert nested.shape == nested_y.shape[: nested.ndim]
            one_by_one = jnp.stack([fn(jnp.asarray(nested_z[k]), jnp.asarray(nested_y[k]), class_counts=counts)
                                    for k in range(3)])
            np.testing.assert_allclose(nested, one_by_one, rtol=1e-13)
            mapped = jax.vmap(functools.partial(fn, class_counts=counts))(jnp.asarray(nested_z), jnp.asarray(nested_y))
            np.testing.assert_allclose(mapped, nested, rtol=1e-13)
        np.testing.assert_allclose(lade_regularizer(jnp.asarray(nested_z), jnp.asarray(nested_y), class_counts=counts),
                                   [ref_regularizer(nested_z[k], nested_y[k], counts, 0.01) for k in range(3)],
                                   rtol=1e-12)


# --- equivalences ---------------------------------------------------------------------------------------------


def test_lade_ce_is_logit_adjustment_with_the_codes_epsilon():
    z, y, counts = longtail_case(9, 32, 10)
    prior = counts / counts.sum()
    with jax.enable_x64(True):
        ce = lade_ce_loss(jnp.asarray(z), jnp.asarray(y), class_counts=counts)
        # logit_adjusted_loss adds 1e-12 inside its log: shift the prior so both logs are log(p + 1e-9).
        la = losses.logit_adjusted_loss(jnp.asarray(z), jnp.asarray(y), class_priors=prior + 1e-9 - 1e-12, tau=1.0)
        np.testing.assert_allclose(ce, la, rtol=1e-12)
        # Balanced softmax drops the epsilon: equal up to it (1e-9 / p_s of the rarest class).
        bs = losses.balanced_softmax_loss(jnp.asarray(z), jnp.asarray(y), class_counts=counts)
        np.testing.assert_allclose(ce, bs, rtol=1e-9 / prior.min() * 10)


def test_alpha_zero_is_lade_ce_and_the_shares_average_to_the_regulariser():
    z, y, counts = longtail_case(10, 16, 10)
    zj, yj = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    np.testing.assert_allclose(lade_loss(zj, yj, class_counts=counts, alpha=0.0), lade_ce_loss(zj, yj,
                               class_counts=counts), rtol=1e-6)
    for remine_lambda in (0.0, 0.1, 0.5):
        np.testing.assert_allclose(
            jnp.mean(lade_regularizer_per_example(zj, yj, class_counts=counts, remine_lambda=remine_lambda)),
            lade_regularizer(zj, yj, class_counts=counts, remine_lambda=remine_lambda), rtol=1e-5, atol=1e-5)


# --- gradients ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, batch, num_classes, order", [(11, 1, 3, 1), (12, 9, 5, 2)])
def test_check_grads_in_float64(seed, batch, num_classes, order):
    z, y, counts = longtail_case(seed, batch, num_classes, scale=1.5)
    with jax.enable_x64(True):
        zj, yj = jnp.asarray(z), jnp.asarray(y)
        check_grads(jax.jit(lambda v: lade_regularizer(v, yj, class_counts=counts, remine_lambda=0.1)), (zj,),
                    order=order, modes=("fwd", "rev"))
        check_grads(jax.jit(lambda v: jnp.sum(lade_loss(v, yj, class_counts=counts, alpha=0.5, remine_lambda=0.1))),
                    (zj,), order=1, modes=("fwd", "rev"))
        check_grads(jax.jit(lambda v: jnp.sum(lade_ce_loss(v, yj, class_counts=counts))), (zj,), order=1,
                    modes=("fwd", "rev"))


def test_the_shares_have_the_gradient_of_the_regulariser():
    z, y, counts = longtail_case(13, 16, 10)
    with jax.enable_x64(True):
        zj, yj = jnp.asarray(z), jnp.asarray(y)
        scalar = jax.grad(lambda v: lade_regularizer(v, yj, class_counts=counts))(zj)
        shared = jax.grad(lambda v: jnp.mean(lade_regularizer_per_example(v, yj, class_counts=counts)))(zj)
        np.testing.assert_allclose(shared, scalar, rtol=1e-12, atol=1e-15)
        # d s_c / d z_ic is a softmax over the batch: the log-partition part's gradient sums to p_s(c)(1 + 2 lambda
        # s_c) per class, the class-mean part's to -p_s(c) n_c / (n_c + 1e-8).
        prior = counts / counts.sum()
        second = _logsumexp(z - np.log(prior + 1e-9) + np.log(0.1 + 1e-9), 0) - np.log(16)
        batch_counts = np.bincount(y, minlength=10)
        expected = prior * (1 + 2 * 0.01 * second) - prior * batch_counts / (batch_counts + 1e-8)
        np.testing.assert_allclose(np.sum(scalar, axis=0), expected, rtol=1e-10, atol=1e-15)


# --- the global batch under data parallelism --------------------------------------------------------------------


def _split(x, shards):
    return x.reshape(shards, x.shape[0] // shards, *x.shape[1:])


@pytest.mark.parametrize("shards", [2, 4])
def test_vmapped_shards_give_the_value_and_gradient_of_the_whole_batch(shards):
    z, y, counts = longtail_case(14, 24, 10)
    mask = np.ones(24, bool)
    mask[-7:] = False  # padding: with 4 shards, the last one holds none of the batch
    real = int(mask.sum())

    def whole(v, alpha):
        """LADE-CE's mean + alpha R on the real examples, computed in one piece."""
        zz, yy = v[:real], jnp.asarray(y[:real])
        reg = lade_regularizer(zz, yy, class_counts=counts, remine_lambda=0.1)
        return jnp.mean(lade_ce_loss(zz, yy, class_counts=counts)) + alpha * reg, reg

    def sharded(v, alpha):
        """The same from shards that see their own slice and combine over the axis "shards"."""
        pieces = _split(v, shards), _split(jnp.asarray(y), shards)
        regs = jax.vmap(functools.partial(lade_regularizer, class_counts=counts, remine_lambda=0.1,
                                          axis_name="shards"), axis_name="shards")(*pieces, mask=_split(mask, shards))
        values = jax.vmap(functools.partial(lade_loss, class_counts=counts, alpha=alpha, remine_lambda=0.1,
                                            axis_name="shards"), axis_name="shards")(*pieces,
                                                                                    mask=_split(mask, shards))
        return jnp.sum(values) / real, regs

    @jax.jit
    def both(v):
        (total, reg), grad_total = jax.value_and_grad(whole, has_aux=True)(v, 0.5)
        grad_reg = jax.grad(lambda u: whole(u, 0.5)[1])(v)
        (shared_total, regs), grad_shared = jax.value_and_grad(sharded, has_aux=True)(v, 0.5)
        grad_first_shard = jax.grad(lambda u: sharded(u, 0.5)[1][0])(v)  # one shard's R, all logits
        return total, reg, grad_total, grad_reg, shared_total, regs, grad_shared, grad_first_shard

    with jax.enable_x64(True):
        total, reg, grad_total, grad_reg, shared_total, regs, grad_shared, grad_first_shard = both(jnp.asarray(z))
        np.testing.assert_allclose(regs, np.full(shards, reg), rtol=1e-13)  # every shard has the global R
        np.testing.assert_allclose(reg, ref_regularizer(z[:real], y[:real], counts, 0.1), rtol=1e-12)
        np.testing.assert_allclose(grad_first_shard, grad_reg, rtol=1e-12, atol=1e-15)
        assert np.all(grad_reg[real:] == 0.0)
        # The per-example form: the sum over every shard divided by the global number of real examples.
        np.testing.assert_allclose(shared_total, total, rtol=1e-12)
        np.testing.assert_allclose(grad_shared, grad_total, rtol=1e-12, atol=1e-15)


def test_a_per_device_mean_is_a_different_loss():
    """Without axis_name each shard sees its own batch: the average of the shards' R is not the global R."""
    z, y, counts = longtail_case(15, 16, 10)
    with jax.enable_x64(True):
        whole = lade_regularizer(jnp.asarray(z), jnp.asarray(y), class_counts=counts)
        local = jax.vmap(functools.partial(lade_regularizer, class_counts=counts))(_split(jnp.asarray(z), 4),
                                                                                   _split(jnp.asarray(y), 4))
        assert abs(float(jnp.mean(local)) - float(whole)) > 1e-3


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_a_data_parallel_train_step_gets_the_gradient_of_the_global_batch(mode):
    """The reduction of `ltjax.train.step`: each device sums its per-example losses (padding left out), the loss is
    `D * local_sum / psum(real examples)`, the parameter gradients are `pmean`ned. That equals the gradient of LADE
    on the global batch."""
    num_devices = 4
    if len(jax.devices()) < num_devices:
        pytest.skip("needs 4 devices (tests/conftest.py gives the session 8 CPU devices)")
    rng = np.random.default_rng(16)
    batch, dim, num_classes = 16, 6, 10
    _, y, counts = longtail_case(16, batch, num_classes)
    x = rng.standard_normal((batch, dim))
    weights = rng.standard_normal((dim, num_classes))
    mask = np.ones(batch, bool)
    mask[-3:] = False

    def per_device(w, xs, ys, ms):
        def loss_fn(w):
            values = lade_loss(xs @ w, ys, class_counts=counts, alpha=0.3, remine_lambda=0.1, mask=ms,
                               axis_name="batch")
            total = jnp.sum(jnp.where(ms, values, 0.0))
            normalizer = jax.lax.psum(jnp.sum(ms).astype(total.dtype), "batch")
            return total * jax.lax.psum(1, "batch") / normalizer, total / normalizer

        grads, share = jax.grad(loss_fn, has_aux=True)(w)
        return jax.lax.pmean(grads, "batch"), jax.lax.psum(share, "batch")

    with jax.enable_x64(True):
        args = (jnp.asarray(weights), jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask))
        if mode == "shard_map":
            mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:num_devices]), ("batch",))
            split, replicated = PartitionSpec("batch"), PartitionSpec()
            step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(replicated, split, split, split),
                                         out_specs=(replicated, replicated), check_vma=False))
            grads, value = step(*args)
        else:
            step = jax.pmap(per_device, axis_name="batch", in_axes=(None, 0, 0, 0),
                            devices=jax.devices()[:num_devices])
            grads, value = step(args[0], *(_split(a, num_devices) for a in args[1:]))
            grads, value = grads[0], value[0]

        def global_loss(w):
            z = jnp.asarray(x[mask]) @ w
            yy = jnp.asarray(y[mask])
            return (jnp.mean(lade_ce_loss(z, yy, class_counts=counts))
                    + 0.3 * lade_regularizer(z, yy, class_counts=counts, remine_lambda=0.1))

        np.testing.assert_allclose(value, global_loss(args[0]), rtol=1e-12)
        np.testing.assert_allclose(grads, jax.grad(global_loss)(args[0]), rtol=1e-10, atol=1e-14)


# --- masks, out-of-range labels, an empty batch ----------------------------------------------------------------


def test_a_masked_example_is_left_out_of_the_batch():
    z, y, counts = longtail_case(17, 10, 5)
    mask = np.array([True] * 7 + [False] * 3)
    with jax.enable_x64(True):
        zj, yj = jnp.asarray(z), jnp.asarray(y)
        kept = lade_loss(zj[:7], yj[:7], class_counts=counts)
        masked = lade_loss(zj, yj, class_counts=counts, mask=jnp.asarray(mask))
        np.testing.assert_allclose(masked[:7], kept, rtol=1e-13)
        np.testing.assert_array_equal(masked[7:], 0.0)
        np.testing.assert_allclose(lade_regularizer(zj, yj, class_counts=counts, mask=mask),
                                   lade_regularizer(zj[:7], yj[:7], class_counts=counts), rtol=1e-13)
        grad = jax.grad(lambda v: jnp.sum(lade_loss(v, yj, class_counts=counts, mask=mask)))(zj)
        np.testing.assert_array_equal(grad[7:], 0.0)
        # Padding with non-finite logits stays out of the value and the gradient.
        padded = zj.at[8].set(jnp.inf).at[9].set(jnp.nan)
        np.testing.assert_allclose(lade_regularizer(padded, yj, class_counts=counts, mask=mask),
                                   lade_regularizer(zj[:7], yj[:7], class_counts=counts), rtol=1e-13)
        assert np.all(np.isfinite(jax.grad(lambda v: lade_regularizer(v, yj, class_counts=counts,
                                                                      mask=mask))(padded)))


@pytest.mark.parametrize("fn", [lade_loss, lade_regularizer_per_example, lade_ce_loss])
def test_an_out_of_range_label_gives_nan_for_that_example_only(fn):
    z, y, counts = longtail_case(18, 6, 5)
    keep = np.arange(6) != 2

    @jax.jit
    def outputs(v, labels):
        out = fn(v, labels, class_counts=counts)
        grad = jax.grad(lambda u: jnp.sum(jnp.where(keep, fn(u, labels, class_counts=counts), 0.0)))(v)
        return out, grad

    with jax.enable_x64(True):
        zj = jnp.asarray(z)
        without = fn(zj[keep], jnp.asarray(y[keep]), class_counts=counts)
        for bad in (-1, 5):
            out, grad = outputs(zj, jnp.asarray(y).at[2].set(bad))
            assert np.isnan(out[2]) and np.all(np.isfinite(out[keep]))
            # The others are those of the batch without that example.
            np.testing.assert_allclose(out[keep], without, rtol=1e-13)
            assert np.all(np.isfinite(grad)) and np.all(grad[2] == 0.0)


def test_an_out_of_range_label_makes_the_scalar_regulariser_nan_unless_masked():
    z, y, counts = longtail_case(18, 6, 5)
    keep = np.arange(6) != 2

    @jax.jit
    def outputs(v, labels):
        value, grad = jax.value_and_grad(lambda u: lade_regularizer(u, labels, class_counts=counts))(v)
        return value, grad, lade_regularizer(v, labels, class_counts=counts, mask=keep)

    with jax.enable_x64(True):
        zj = jnp.asarray(z)
        for bad in (-1, 5):
            value, grad, masked = outputs(zj, jnp.asarray(y).at[2].set(bad))
            assert np.isnan(value) and np.all(np.isfinite(grad))
            # A masked example's label is not looked at.
            np.testing.assert_allclose(masked, ref_regularizer(z[keep], y[keep], counts, 0.01), rtol=1e-12)


def test_an_empty_batch_is_zero_with_a_finite_gradient():
    z, y, counts = longtail_case(19, 4, 5)
    mask = np.zeros(4, bool)
    assert float(lade_regularizer(z.astype(np.float32), y, class_counts=counts, mask=mask)) == 0.0
    np.testing.assert_array_equal(lade_loss(z.astype(np.float32), y, class_counts=counts, mask=mask), 0.0)
    grad = jax.grad(lambda v: lade_regularizer(v, y, class_counts=counts, mask=mask))(jnp.asarray(z, jnp.float32))
    np.testing.assert_array_equal(grad, 0.0)


# --- dtypes, jit and vmap over the hyper-parameters ------------------------------------------------------------


def test_bf16_logits_compute_in_float32():
    z, y, counts = longtail_case(20, 8, 10)
    low = jnp.asarray(z, jnp.bfloat16)
    as_f32 = low.astype(jnp.float32)
    for fn in (lade_loss, lade_regularizer_per_example, lade_ce_loss, lade_regularizer):
        out = fn(low, y, class_counts=counts)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, fn(as_f32, y, class_counts=counts), rtol=1e-6, atol=1e-6)
    assert lade_logits(low).dtype == jnp.float32


@pytest.mark.parametrize("name, values", [("alpha", (0.0, 0.1, 0.5)), ("remine_lambda", (0.0, 0.01, 0.5))])
def test_jit_and_vmap_over_a_hyper_parameter(name, values):
    z, y, counts = longtail_case(21, 8, 10)
    zj = jnp.asarray(z, jnp.float32)

    def loss(value):
        return lade_loss(zj, y, class_counts=counts, **{name: value})

    swept = jax.jit(jax.vmap(loss))(jnp.asarray(values, jnp.float32))
    for index, value in enumerate(values):
        np.testing.assert_allclose(swept[index], loss(value), rtol=2e-6, atol=2e-6 * np.max(np.abs(swept[index])))
    assert np.all(np.isfinite(jax.vmap(jax.grad(lambda v: jnp.sum(loss(v))))(jnp.asarray(values, jnp.float32))))
    if name == "remine_lambda":
        regs = jax.jit(jax.vmap(lambda v: lade_regularizer(zj, y, class_counts=counts, remine_lambda=v)))(
            jnp.asarray(values, jnp.float32))
        np.testing.assert_allclose(regs, [ref_regularizer(z.astype(np.float32).astype(np.float64), y, counts, v)
                                          for v in values], rtol=2e-5)


def test_traced_counts_work_under_jit():
    z, y, counts = longtail_case(22, 8, 10)
    fn = jax.jit(lambda v, c: lade_regularizer(v, y, class_counts=c))
    np.testing.assert_allclose(fn(jnp.asarray(z, jnp.float32), jnp.asarray(counts, jnp.float32)),
                               lade_regularizer(jnp.asarray(z, jnp.float32), y, class_counts=counts), rtol=1e-6)


# --- the test-time rule ---------------------------------------------------------------------------------------


def test_lade_logits_add_the_log_target_prior():
    z, _, counts = longtail_case(23, 50, 10)
    target = np.random.default_rng(1).integers(1, 50, size=10)
    target[3] = 0  # a class the split does not hold: never predicted
    with jax.enable_x64(True):
        adjusted = lade_logits(jnp.asarray(z), target_priors=target)
        with np.errstate(divide="ignore"):
            expected = z + np.log(target / target.sum())
        np.testing.assert_allclose(adjusted, expected, rtol=1e-13)
        assert np.all(np.asarray(adjusted)[:, 3] == -np.inf)
        assert not np.any(np.argmax(adjusted, -1) == 3)
        # Counts and the distribution they give are the same rule.
        np.testing.assert_allclose(lade_logits(jnp.asarray(z), target_priors=target / target.sum()), adjusted,
                                   rtol=1e-13)
        # Reported probabilities: softmax(z + log p_t).
        probs = jax.nn.softmax(adjusted, axis=-1)
        np.testing.assert_allclose(np.sum(probs, -1), 1.0, rtol=1e-13)
        # A uniform split (the default) predicts with argmax z.
        np.testing.assert_array_equal(np.argmax(lade_logits(jnp.asarray(z)), -1), np.argmax(z, -1))
        np.testing.assert_allclose(lade_logits(jnp.asarray(z)), z - np.log(10), rtol=1e-13)


# --- bad inputs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda z, y: lade_loss(z, y, class_counts=np.ones(4)), r"class_counts must have shape \[5\]"),
        (lambda z, y: lade_regularizer(z, y, class_counts=np.array([3, 0, 2, 1, 1])), "finite and positive"),
        (lambda z, y: lade_ce_loss(z, y, class_counts=np.array([3, 1, np.inf, 1, 1])), "finite and positive"),
        (lambda z, y: lade_loss(z, y, class_counts=np.ones(5), alpha=-0.1), r"alpha must lie in \[0, inf\]"),
        (lambda z, y: lade_regularizer(z, y, class_counts=np.ones(5), remine_lambda=-1.0), "remine_lambda"),
        (lambda z, y: lade_regularizer(z, y[:3], class_counts=np.ones(5)), r"labels shape \(3,\) must equal"),
        (lambda z, y: lade_regularizer(z, y.astype(jnp.float32), class_counts=np.ones(5)), "integer class"),
        (lambda z, y: lade_loss(z, y, class_counts=np.ones(5), mask=np.ones(3, bool)), "mask must have the labels'"),
        (lambda z, y: lade_regularizer(z[0, 0], y, class_counts=np.ones(5)), "class axis"),
        (lambda z, y: lade_loss(z[0], y[0], class_counts=np.ones(5)), r"logits must be \[\.\.\., B, C\]"),
        (lambda z, y: lade_logits(z, target_priors=np.ones(4)), r"target_priors must have shape \[5\]"),
        (lambda z, y: lade_logits(z, target_priors=np.array([1.0, -1.0, 1.0, 1.0, 1.0])), "finite and >= 0"),
        (lambda z, y: lade_logits(z, target_priors=np.zeros(5)), "positive sum"),
        (lambda z, y: lade_logits(z[0, 0]), "class axis"),
    ],
)
def test_bad_inputs_raise_a_clear_value_error(call, message):
    z, y, _ = longtail_case(24, 4, 5)
    with pytest.raises(ValueError, match=message):
        call(jnp.asarray(z, jnp.float32), jnp.asarray(y))


def test_a_zero_count_is_an_error_also_when_traced():
    z, y, _ = longtail_case(25, 4, 5)
    fn = jax.jit(lambda c: lade_regularizer(jnp.asarray(z, jnp.float32), y, class_counts=c))
    with pytest.raises(Exception, match="finite and positive"):
        jax.block_until_ready(fn(jnp.array([3.0, 0.0, 2.0, 1.0, 1.0])))
