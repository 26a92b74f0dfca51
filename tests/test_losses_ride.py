"""RIDE (methods-structures.md §2): the stage-1 loss `RIDELoss` as per-example shares, against a float64 NumPy
restatement of the reference code (K = 1, 2, 3 experts, both phases, several diversity factors including 0, permuted
class order with a class of one image); its gradient against the closed form with the ensemble detached, `check_grads`
on the loss (first order) and through a frozen form (second order, which sees the stop-gradient); reductions to LDAM
and LDAM-DRW; the global batch under `mask` and
`axis_name`; the class vectors; dtypes, sweeps and errors; and the `ltjax.testing.Case` entries proposed for it.

x64 is switched on only inside the tests that need it (`jax.enable_x64(True)` is a context manager).
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from numpy_reference import longtail_case
from tolerance import assert_close_to_scale

from ltjax import losses
from ltjax.losses.ride import ride_class_vectors, ride_loss
from ltjax.testing import Case, make_problem

# --- float64 NumPy reference, written from the spec -----------------------------------------------------------

DEFAULTS = dict(diversity_factor=-0.45, base_temperature=1.0, scale=30.0, max_margin=0.5, drw_beta=0.9999,
                diversity_prior_weight=0.05)


def _log_softmax(x):
    top = np.max(x, axis=-1, keepdims=True)
    return x - top - np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True))


def ref_vectors(counts, max_margin=0.5, drw_beta=0.9999, diversity_prior_weight=0.05):
    n = counts.astype(np.float64)
    num_classes = len(n)
    margins = 1.0 / np.sqrt(np.sqrt(n))
    margins = margins * (max_margin / np.max(margins))
    drw = (1.0 - drw_beta) / (1.0 - np.power(drw_beta, n))
    drw = drw / np.sum(drw) * num_classes
    prior = n / np.sum(n)
    temperature = num_classes * prior * diversity_prior_weight + 1 - diversity_prior_weight
    return margins, drw, temperature / np.max(temperature)


def _terms(experts, y, counts, reweight, hp):
    """Per expert: the margin CE of each example, the KL of each example, the class weights of the batch, T-bar."""
    hp = {**DEFAULTS, **hp}
    batch, num_experts, num_classes = experts.shape
    margins, drw, temperature_weights = ref_vectors(counts, hp["max_margin"], hp["drw_beta"],
                                                    hp["diversity_prior_weight"])
    ensemble = experts.mean(axis=1)
    rows = np.arange(batch)
    if reweight:
        temperature = hp["base_temperature"] * temperature_weights[None, :]
        temperature_mean = temperature.mean()
    else:
        temperature = temperature_mean = hp["base_temperature"]
    target = np.exp(_log_softmax(ensemble / temperature))  # the reference's no_grad softmax
    ces, kls = [], []
    for k in range(num_experts):
        logits = ensemble if hp["diversity_factor"] == 0 else experts[:, k]
        final = logits.copy()
        final[rows, y] -= hp["scale"] * margins[y]
        ces.append(-_log_softmax(final)[rows, y])
        output = _log_softmax(experts[:, k] / temperature)
        # F.kl_div(input, target): target * (log target - input), 0 where the target is 0.
        safe = np.where(target > 0, target, 1.0)
        kls.append(np.sum(np.where(target > 0, target * (np.log(safe) - output), 0.0), axis=-1))
    weights = drw[y] if reweight else np.ones(batch)
    return np.array(ces), np.array(kls), weights, temperature_mean, hp


def ref_ride_loss(experts, y, counts, reweight, **hp):
    """The reference's scalar: sum over experts of the (weighted) batch mean CE plus factor T^2 KL batchmean."""
    ces, kls, weights, temperature_mean, hp = _terms(experts, y, counts, reweight, hp)
    total = 0.0
    for ce, kl in zip(ces, kls):
        total += np.sum(weights * ce) / np.sum(weights)  # the plain mean when not reweighting (unit weights)
        total += hp["diversity_factor"] * temperature_mean**2 * np.sum(kl) / len(y)
    return total


def ref_ride_shares(experts, y, counts, reweight, **hp):
    """share_i = (B / sum_j w_j) w_i sum_k ce_ik + factor T^2 sum_k kl_ik."""
    ces, kls, weights, temperature_mean, hp = _terms(experts, y, counts, reweight, hp)
    return (len(y) / np.sum(weights) * weights * ces.sum(0)
            + hp["diversity_factor"] * temperature_mean**2 * kls.sum(0))


def ref_ride_gradient(experts, y, counts, reweight, **hp):
    """d(reference loss)/d(expert logits), by hand: the ensemble distribution is a constant of the KL."""
    hp = {**DEFAULTS, **hp}
    batch, num_experts, num_classes = experts.shape
    margins, drw, temperature_weights = ref_vectors(counts, hp["max_margin"], hp["drw_beta"],
                                                    hp["diversity_prior_weight"])
    ensemble = experts.mean(axis=1)
    onehot = np.eye(num_classes)[y]
    weights = drw[y] if reweight else np.ones(batch)
    base_scale = (weights / np.sum(weights))[:, None]
    if reweight:
        temperature = hp["base_temperature"] * temperature_weights[None, :]
        temperature_mean = temperature.mean()
    else:
        temperature = temperature_mean = hp["base_temperature"]
    target = np.exp(_log_softmax(ensemble / temperature))
    grad = np.zeros_like(experts)
    for k in range(num_experts):
        if hp["diversity_factor"] == 0:
            # Each of the K base terms takes the ensemble: its gradient reaches every expert divided by K.
            final = ensemble - hp["scale"] * margins[y][:, None] * onehot
            grad += (base_scale * (np.exp(_log_softmax(final)) - onehot))[:, None, :] / num_experts
        else:
            final = experts[:, k] - hp["scale"] * margins[y][:, None] * onehot
            grad[:, k] += base_scale * (np.exp(_log_softmax(final)) - onehot)
        expert_probs = np.exp(_log_softmax(experts[:, k] / temperature))
        grad[:, k] += hp["diversity_factor"] * temperature_mean**2 * (expert_probs - target) / temperature / batch
    return grad


def ride_case(seed, batch, num_experts, num_classes, spread=1.0):
    """Labels and CIFAR-like counts (shuffled class order, the rarest class with one image) from `longtail_case`,
    and expert logits `s * cos`: a shared cosine plus each expert's own deviation, clipped to [-1, 1]."""
    _, y, counts = longtail_case(seed, batch, num_classes)
    rng = np.random.default_rng(seed + 1000)
    shared = rng.uniform(-0.6, 0.6, (batch, 1, num_classes))
    cosines = np.clip(shared + spread * rng.uniform(-0.4, 0.4, (batch, num_experts, num_classes)), -1.0, 1.0)
    return 30.0 * cosines, y, counts


# --- values ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_experts", [1, 2, 3])
@pytest.mark.parametrize("reweight", [False, True])
@pytest.mark.parametrize("diversity_factor", [-0.45, 0.0, 0.3])
def test_values_match_the_float64_reference(num_experts, reweight, diversity_factor):
    experts, y, counts = ride_case(num_experts, 16, num_experts, 10)
    assert 1 in counts  # a class of one image
    with jax.enable_x64(True):
        shares = ride_loss(jnp.asarray(experts), jnp.asarray(y), class_counts=counts, reweight=reweight,
                           diversity_factor=diversity_factor)
        assert shares.dtype == jnp.float64 and shares.shape == (16,)
        shares = np.asarray(shares)
    expected = ref_ride_loss(experts, y, counts, reweight, diversity_factor=diversity_factor)
    np.testing.assert_allclose(np.mean(ref_ride_shares(experts, y, counts, reweight,
                                                       diversity_factor=diversity_factor)), expected, rtol=1e-12)
    assert_close_to_scale(shares, ref_ride_shares(experts, y, counts, reweight, diversity_factor=diversity_factor),
                          rtol=1e-12)
    assert_close_to_scale(np.mean(shares), expected, rtol=1e-12, scale=np.max(np.abs(shares)))


@pytest.mark.parametrize(
    "hp",
    [
        dict(base_temperature=2.0),
        dict(base_temperature=0.5, diversity_prior_weight=0.5),
        dict(scale=10.0, max_margin=0.3),
        dict(drw_beta=0.999, diversity_prior_weight=0.0),
        dict(drw_beta=0.0, diversity_factor=-1.0, base_temperature=1.5),
    ],
)
@pytest.mark.parametrize("reweight", [False, True])
def test_values_for_other_hyper_parameters(hp, reweight):
    experts, y, counts = ride_case(7, 16, 3, 10)
    with jax.enable_x64(True):
        shares = np.asarray(ride_loss(jnp.asarray(experts), jnp.asarray(y), class_counts=counts, reweight=reweight,
                                      **hp))
    assert_close_to_scale(shares, ref_ride_shares(experts, y, counts, reweight, **hp), rtol=1e-12)
    assert_close_to_scale(np.mean(shares), ref_ride_loss(experts, y, counts, reweight, **hp), rtol=1e-12,
                          scale=np.max(np.abs(shares)))


@pytest.mark.parametrize("reweight", [False, True])
def test_float32_matches_the_reference(reweight):
    experts, y, counts = ride_case(8, 16, 3, 10)
    shares = ride_loss(jnp.asarray(experts, jnp.float32), y, class_counts=counts, reweight=reweight)
    assert shares.dtype == jnp.float32
    rounded = experts.astype(np.float32).astype(np.float64)
    assert_close_to_scale(shares, ref_ride_shares(rounded, y, counts, reweight), rtol=2e-6)
    assert_close_to_scale(np.mean(np.asarray(shares, np.float64)), ref_ride_loss(rounded, y, counts, reweight),
                          rtol=2e-6, scale=float(np.max(np.abs(shares))))


def test_the_class_order_does_not_matter():
    experts, y, counts = ride_case(9, 16, 3, 10)
    order = np.random.default_rng(0).permutation(10)
    relabel = np.argsort(order)  # new index of each old class
    with jax.enable_x64(True):
        for reweight in (False, True):
            before = ride_loss(jnp.asarray(experts), jnp.asarray(y), class_counts=counts, reweight=reweight)
            after = ride_loss(jnp.asarray(experts[..., order]), jnp.asarray(relabel[y]), class_counts=counts[order],
                              reweight=reweight)
            np.testing.assert_allclose(after, before, rtol=1e-12)


def test_leading_axes_are_separate_batches():
    experts, y, counts = ride_case(10, 16, 3, 10)
    nested_z, nested_y = experts.reshape(2, 8, 3, 10), y.reshape(2, 8)
    with jax.enable_x64(True):
        call = functools.partial(ride_loss, class_counts=counts, reweight=True)
        nested = call(jnp.asarray(nested_z), jnp.asarray(nested_y))
        assert nested.shape == (2, 8)
        one_by_one = [call(jnp.asarray(nested_z[b]), jnp.asarray(nested_y[b])) for b in range(2)]
        np.testing.assert_allclose(nested, np.stack(one_by_one), rtol=1e-13)
        np.testing.assert_allclose(jax.vmap(call)(jnp.asarray(nested_z), jnp.asarray(nested_y)), nested, rtol=1e-13)
        for b in range(2):
            np.testing.assert_allclose(np.mean(nested[b]), ref_ride_loss(nested_z[b], nested_y[b], counts, True),
                                       rtol=1e-11)


# --- the class vectors ----------------------------------------------------------------------------------------


def test_class_vectors_match_the_reference_and_the_ldam_and_cb_helpers():
    _, _, counts = longtail_case(11, 4, 10)
    for hp in (dict(), dict(max_margin=0.3, drw_beta=0.999, diversity_prior_weight=0.3)):
        with jax.enable_x64(True):
            vectors = ride_class_vectors(counts.astype(np.float64), **hp)
            for got, expected in zip(vectors, ref_vectors(counts, **hp)):
                np.testing.assert_allclose(got, expected, rtol=1e-12)
        vectors = ride_class_vectors(counts, **hp)
        assert all(vector.dtype == jnp.float32 and vector.shape == (10,) for vector in vectors)
        np.testing.assert_allclose(vectors.margins, losses.ldam_margins(counts, max_margin=hp.get("max_margin", 0.5)),
                                   rtol=1e-6)
        np.testing.assert_allclose(vectors.drw_weights, losses.class_balanced_weights(
            counts, beta=hp.get("drw_beta", 0.9999)), rtol=1e-6)
    unit = ride_class_vectors(counts, drw_beta=0.0, diversity_prior_weight=0.0)
    np.testing.assert_allclose(unit.drw_weights, 1.0, rtol=1e-6)
    np.testing.assert_allclose(unit.temperature_weights, 1.0, rtol=1e-6)


def test_class_vectors_on_cifar100_if100():
    """The spec's anchor: the head class's temperature weight is 1, the rarest about 0.81; the rarest class gets the
    largest margin and DRW weight."""
    counts = np.array([int(500.0 * 0.01 ** (c / 99)) for c in range(100)])
    assert counts.sum() == 10847 and counts[0] == 500 and counts[-1] == 5
    vectors = ride_class_vectors(counts)
    assert float(vectors.temperature_weights[0]) == 1.0
    np.testing.assert_allclose(vectors.temperature_weights[-1], (100 * 0.05 * 5 / 10847 + 0.95)
                               / (100 * 0.05 * 500 / 10847 + 0.95), rtol=1e-6)
    assert abs(float(vectors.temperature_weights[-1]) - 0.81) < 0.005
    assert float(vectors.margins[-1]) == pytest.approx(0.5)
    assert float(vectors.drw_weights[-1]) == pytest.approx(float(np.max(vectors.drw_weights)))
    np.testing.assert_allclose(np.sum(vectors.drw_weights), 100.0, rtol=1e-5)


# --- reductions to LDAM and LDAM-DRW ---------------------------------------------------------------------------


@pytest.mark.parametrize("diversity_factor", [-0.45, 0.0, 0.7])
def test_one_expert_is_ldam_on_cosines(diversity_factor):
    """K = 1: the ensemble is the expert, its KL is 0 (in value and gradient), so the share is LDAM with s = scale
    on the cosines z / s; while re-weighting, B / sum w times LDAM-DRW's weighted loss, whose mean is PyTorch's
    weighted mean."""
    experts, y, counts = ride_case(12, 16, 1, 10)
    with jax.enable_x64(True):
        zj, yj = jnp.asarray(experts), jnp.asarray(y)
        cosines = zj[:, 0] / 30.0
        plain = ride_loss(zj, yj, class_counts=counts, diversity_factor=diversity_factor)
        ldam = losses.ldam_loss(cosines, yj, class_counts=counts, scale=30.0)
        np.testing.assert_allclose(plain, ldam, rtol=1e-12)
        weights = losses.class_balanced_weights(counts.astype(np.float64))
        drw = ride_loss(zj, yj, class_counts=counts, reweight=True, diversity_factor=diversity_factor)
        ldam_drw = losses.ldam_loss(cosines, yj, class_counts=counts, scale=30.0, class_weights=weights)
        np.testing.assert_allclose(drw, 16 / np.sum(weights[y]) * ldam_drw, rtol=1e-12)
        np.testing.assert_allclose(jnp.mean(drw), losses.weighted_mean(ldam_drw, weights[y]), rtol=1e-12)
        for reweight, reference in ((False, lambda c: jnp.mean(losses.ldam_loss(c, yj, class_counts=counts))),
                                    (True, lambda c: losses.weighted_mean(losses.ldam_loss(
                                        c, yj, class_counts=counts, class_weights=weights), weights[y]))):
            got = jax.grad(lambda v, reweight=reweight: jnp.mean(ride_loss(
                v, yj, class_counts=counts, reweight=reweight, diversity_factor=diversity_factor)))(zj)
            np.testing.assert_allclose(got[:, 0], jax.grad(reference)(cosines) / 30.0, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("reweight", [False, True])
def test_identical_experts_are_k_times_ldam_and_factor_zero_is_k_times_ldam_of_the_ensemble(reweight):
    experts, y, counts = ride_case(13, 16, 3, 10)
    with jax.enable_x64(True):
        yj = jnp.asarray(y)
        weights = losses.class_balanced_weights(counts.astype(np.float64)) if reweight else None
        normalizer = 16 / np.sum(weights[y]) if reweight else 1.0

        def ldam(z):
            return normalizer * losses.ldam_loss(z / 30.0, yj, class_counts=counts, class_weights=weights)

        same = jnp.repeat(jnp.asarray(experts[:, :1]), 3, axis=1)
        np.testing.assert_allclose(ride_loss(same, yj, class_counts=counts, reweight=reweight),
                                   3 * ldam(same[:, 0]), rtol=1e-12)
        ensemble = jnp.mean(jnp.asarray(experts), axis=1)
        np.testing.assert_allclose(ride_loss(jnp.asarray(experts), yj, class_counts=counts, reweight=reweight,
                                             diversity_factor=0.0), 3 * ldam(ensemble), rtol=1e-12)


def test_max_margin_zero_and_factor_zero_is_k_times_cross_entropy_of_the_ensemble():
    experts, y, counts = ride_case(14, 16, 3, 10)
    ensemble = experts.mean(axis=1)
    np.testing.assert_allclose(
        ride_loss(jnp.asarray(experts, jnp.float32), y, class_counts=counts, max_margin=0.0, diversity_factor=0.0),
        3 * losses.softmax_cross_entropy(jnp.asarray(ensemble, jnp.float32), y), rtol=2e-6)


def test_the_diversity_term_rewards_experts_that_differ_from_the_ensemble():
    """With the default negative factor, spreading the experts apart lowers the loss below K times LDAM."""
    experts, y, counts = ride_case(15, 16, 3, 10)
    zj = jnp.asarray(experts, jnp.float32)
    with_diversity = ride_loss(zj, y, class_counts=counts)
    without = ride_loss(zj, y, class_counts=counts, diversity_factor=1e-30)  # nonzero: the experts' own CE
    assert np.all(np.asarray(with_diversity) < np.asarray(without))


# --- gradients: the closed form, and check_grads through the frozen form --------------------------------------


@pytest.mark.parametrize("num_experts", [1, 3])
@pytest.mark.parametrize("reweight", [False, True])
@pytest.mark.parametrize("diversity_factor", [-0.45, 0.0])
def test_the_gradient_is_the_references_with_the_ensemble_detached(num_experts, reweight, diversity_factor):
    experts, y, counts = ride_case(16, 16, num_experts, 10)
    hp = dict(diversity_factor=diversity_factor, base_temperature=1.5)
    with jax.enable_x64(True):
        grad = jax.grad(lambda v: jnp.mean(ride_loss(v, jnp.asarray(y), class_counts=counts, reweight=reweight,
                                                     **hp)))(jnp.asarray(experts))
    expected = ref_ride_gradient(experts, y, counts, reweight, **hp)
    assert_close_to_scale(grad, expected, rtol=1e-12)


def _frozen(z, y, counts, at, reweight, **hp):
    """The loss with its detached ensemble distribution computed from the expert logits `at`, written from the spec
    in JAX without a stop-gradient: its derivatives at `at` are the loss's autodiff derivatives there."""
    hp = {**DEFAULTS, **hp}
    margins, drw, temperature_weights = (jnp.asarray(v) for v in ref_vectors(
        counts, hp["max_margin"], hp["drw_beta"], hp["diversity_prior_weight"]))
    onehot = jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)[:, None, :]
    base_logits = jnp.mean(z, axis=1, keepdims=True) if hp["diversity_factor"] == 0 else z
    final = base_logits - hp["scale"] * margins[y][:, None, None] * onehot
    ce = -jnp.sum(jax.nn.log_softmax(final, axis=-1) * onehot, axis=-1) * jnp.ones(z.shape[:2])
    weights = drw[y] if reweight else jnp.ones(len(y))
    temperature = hp["base_temperature"] * (temperature_weights if reweight else 1.0)
    target = jax.nn.softmax(jnp.mean(at, axis=1) / temperature, axis=-1)[:, None, :]
    kl = jnp.sum(target * (jnp.log(target) - jax.nn.log_softmax(z / temperature, axis=-1)), axis=-1)
    return (len(y) / jnp.sum(weights) * weights * ce.sum(-1)
            + hp["diversity_factor"] * jnp.mean(temperature)**2 * kl.sum(-1))


@pytest.mark.parametrize("reweight, diversity_factor", [(False, 0.0), (True, -0.45)])
def test_check_grads_in_float64(reweight, diversity_factor):
    """First derivatives: finite differences move the detached ensemble too, yet agree with the gradient, because
    the derivative of sum_k KL(p || q_k) through p is zero (the ensemble is the mean of the experts' logits, so
    sum_k log q_k - K log p is the same for every class, and the softmax Jacobian of p annihilates a constant). So
    `check_grads` applies to the loss itself at order 1: its gradient is both the closed form with p detached
    (test_the_gradient_is_the_references_with_the_ensemble_detached) and the total derivative. Second derivatives
    do see the stop-gradient (the gradient contains p): they are checked through the frozen form, whose derivatives
    at `at` are the loss's autodiff derivatives."""
    experts, y, counts = ride_case(17, 5, 3, 4)
    experts = experts / 10.0  # moderate logits, so second differences resolve
    hp = dict(diversity_factor=diversity_factor, base_temperature=0.8)
    with jax.enable_x64(True):
        at, yj = jnp.asarray(experts), jnp.asarray(y)

        def loss(v):
            return jnp.sum(ride_loss(v, yj, class_counts=counts, reweight=reweight, **hp))

        def frozen(v):
            return jnp.sum(_frozen(v, yj, counts, at, reweight, **hp))

        check_grads(loss, (at,), order=1, modes=("fwd", "rev"))
        np.testing.assert_allclose(frozen(at), loss(at), rtol=1e-12)
        check_grads(frozen, (at,), order=2, modes=("fwd", "rev"))
        direction = jnp.asarray(np.random.default_rng(0).standard_normal(at.shape))
        np.testing.assert_allclose(jax.jvp(jax.grad(loss), (at,), (direction,))[1],
                                   jax.jvp(jax.grad(frozen), (at,), (direction,))[1], rtol=1e-10, atol=1e-13)


# --- the global batch: mask and axis_name ----------------------------------------------------------------------


@pytest.mark.parametrize("reweight", [False, True])
def test_a_masked_example_is_left_out_of_the_batch(reweight):
    experts, y, counts = ride_case(18, 16, 3, 10)
    mask = np.array([True] * 12 + [False] * 4)
    with jax.enable_x64(True):
        zj, yj = jnp.asarray(experts), jnp.asarray(y)
        kept = ride_loss(zj[:12], yj[:12], class_counts=counts, reweight=reweight)
        masked = ride_loss(zj, yj, class_counts=counts, reweight=reweight, mask=jnp.asarray(mask))
        np.testing.assert_allclose(masked[:12], kept, rtol=1e-13)
        np.testing.assert_array_equal(masked[12:], 0.0)
        # The mean over the real examples is the loss of the unpadded batch.
        np.testing.assert_allclose(jnp.sum(masked) / 12, ref_ride_loss(experts[:12], y[:12], counts, reweight),
                                   rtol=1e-12)
        # Padding with non-finite logits stays out of the value and the gradient.
        padded = zj.at[13].set(jnp.inf).at[14].set(jnp.nan)

        def total(v):
            return jnp.sum(ride_loss(v, yj, class_counts=counts, reweight=reweight, mask=mask))

        np.testing.assert_allclose(total(padded), jnp.sum(kept), rtol=1e-13)
        grad = jax.grad(total)(padded)
        assert np.all(np.isfinite(grad)) and np.all(grad[12:] == 0.0)
        np.testing.assert_allclose(grad[:12], jax.grad(lambda v: jnp.sum(ride_loss(
            v, yj[:12], class_counts=counts, reweight=reweight)))(zj[:12]), rtol=1e-12, atol=1e-15)


def _split(x, shards):
    return x.reshape(shards, x.shape[0] // shards, *x.shape[1:])


@pytest.mark.parametrize("shards, reweight", [(2, False), (4, True)])
def test_vmapped_shards_give_the_value_and_gradient_of_the_whole_batch(shards, reweight):
    experts, y, counts = ride_case(19, 16, 3, 10)
    mask = np.ones(16, bool)
    mask[-5:] = False  # padding: with 4 shards, the last one holds none of the batch
    real = int(mask.sum())

    def whole(v):
        return jnp.mean(ride_loss(v[:real], jnp.asarray(y[:real]), class_counts=counts, reweight=reweight))

    def sharded(v, axis_name="shards"):
        values = jax.vmap(functools.partial(ride_loss, class_counts=counts, reweight=reweight, axis_name=axis_name),
                          axis_name="shards")(_split(v, shards), _split(jnp.asarray(y), shards),
                                              mask=_split(mask, shards))
        return jnp.sum(values) / real

    with jax.enable_x64(True):
        zj = jnp.asarray(experts)
        value, grad = jax.jit(jax.value_and_grad(whole))(zj)
        shared_value, shared_grad = jax.jit(jax.value_and_grad(sharded))(zj)
        np.testing.assert_allclose(value, ref_ride_loss(experts[:real], y[:real], counts, reweight), rtol=1e-12)
        np.testing.assert_allclose(shared_value, value, rtol=1e-12)
        np.testing.assert_allclose(shared_grad, grad, rtol=1e-12, atol=1e-15)
        assert np.all(shared_grad[real:] == 0.0)
        if reweight:
            # Without the axis each shard normalises its weighted mean by its own weights: a different loss.
            local = jax.jit(lambda v: sharded(v, axis_name=None))(zj)
            assert abs(float(local) - float(value)) > 1e-6 * abs(float(value))


# --- out-of-range labels --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reweight", [False, True])
def test_an_out_of_range_label_gives_nan_for_that_example_only(reweight):
    experts, y, counts = ride_case(20, 16, 3, 10)
    keep = np.arange(16) != 2

    @jax.jit
    def outputs(v, labels):
        def call(u):
            return ride_loss(u, labels, class_counts=counts, reweight=reweight)

        return call(v), jax.grad(lambda u: jnp.sum(jnp.where(keep, call(u), 0.0)))(v)

    with jax.enable_x64(True):
        zj = jnp.asarray(experts)
        without = ride_loss(zj[keep], jnp.asarray(y[keep]), class_counts=counts, reweight=reweight)
        for bad in (-1, 10):
            out, grad = outputs(zj, jnp.asarray(y).at[2].set(bad))
            assert np.isnan(out[2]) and np.all(np.isfinite(out[keep]))
            np.testing.assert_allclose(out[keep], without, rtol=1e-13)  # the batch without that example
            assert np.all(np.isfinite(grad)) and np.all(grad[2] == 0.0)


# --- dtypes, jit and vmap over the hyper-parameters ------------------------------------------------------------


def test_bf16_logits_compute_in_float32():
    experts, y, counts = ride_case(21, 16, 3, 10)
    low = jnp.asarray(experts, jnp.bfloat16)
    for reweight in (False, True):
        out = ride_loss(low, y, class_counts=counts, reweight=reweight)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, ride_loss(low.astype(jnp.float32), y, class_counts=counts,
                                                  reweight=reweight), rtol=1e-6, atol=1e-6)
        grad = jax.grad(lambda v, reweight=reweight: jnp.sum(ride_loss(v, y, class_counts=counts,
                                                                       reweight=reweight)))(low)
        assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


# Each row changes one hyper-parameter from its default (drw_beta = 0: see test_values_for_other_hyper_parameters;
# its derivative in beta is not finite there).
_SWEEP = [{}, {"diversity_factor": 0.0}, {"diversity_factor": 0.3}, {"base_temperature": 0.5},
          {"base_temperature": 2.0}, {"scale": 10.0}, {"max_margin": 0.0}, {"drw_beta": 0.9}, {"drw_beta": 0.999},
          {"diversity_prior_weight": 0.0}, {"diversity_prior_weight": 0.5}]


@pytest.mark.parametrize("reweight", [False, True])
def test_jit_and_vmap_over_the_hyper_parameters(reweight):
    """One compiled program sweeps every numeric hyper-parameter at once (a zero diversity factor among them, which
    then switches the cross-entropy's logits with a traced `where`)."""
    experts, y, counts = ride_case(22, 16, 3, 10)
    zj = jnp.asarray(experts, jnp.float32)
    rows = [{**DEFAULTS, **change} for change in _SWEEP]
    table = {name: jnp.asarray([row[name] for row in rows], jnp.float32) for name in DEFAULTS}

    def loss(numbers):
        return ride_loss(zj, y, class_counts=counts, reweight=reweight, **numbers)

    swept = jax.jit(jax.vmap(loss))(table)
    for index, row in enumerate(rows):
        np.testing.assert_allclose(swept[index], loss(row), rtol=2e-5, atol=2e-6 * np.max(np.abs(swept[index])),
                                   err_msg=str(_SWEEP[index]))
        expected = ref_ride_shares(experts.astype(np.float32).astype(np.float64), y, counts, reweight, **row)
        assert_close_to_scale(swept[index], expected, rtol=1e-5)
    grads = jax.jit(jax.vmap(jax.grad(lambda numbers: jnp.sum(loss(numbers)))))(table)
    assert all(np.all(np.isfinite(value)) for value in grads.values())


def test_traced_counts_work_under_jit_and_zero_counts_are_an_error_also_when_traced():
    experts, y, counts = ride_case(23, 16, 3, 10)
    zj = jnp.asarray(experts, jnp.float32)
    fn = jax.jit(lambda c: ride_loss(zj, y, class_counts=c, reweight=True))
    assert_close_to_scale(fn(jnp.asarray(counts, jnp.float32)), ride_loss(zj, y, class_counts=counts, reweight=True),
                          rtol=1e-6)
    with pytest.raises(Exception, match="finite and positive"):
        jax.block_until_ready(fn(jnp.asarray(counts, jnp.float32).at[3].set(0.0)))


def test_an_empty_batch_is_zero_with_a_finite_gradient():
    experts, y, counts = ride_case(24, 16, 3, 10)
    mask = np.zeros(16, bool)
    zj = jnp.asarray(experts, jnp.float32)
    for reweight in (False, True):
        np.testing.assert_array_equal(ride_loss(zj, y, class_counts=counts, reweight=reweight, mask=mask), 0.0)
        grad = jax.grad(lambda v, reweight=reweight: jnp.sum(ride_loss(v, y, class_counts=counts, reweight=reweight,
                                                                       mask=mask)))(zj)
        np.testing.assert_array_equal(grad, 0.0)


# --- bad inputs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda z, y: ride_loss(z[:, 0], y, class_counts=np.ones(5)), r"expert_logits must be \[\.\.\., B, K, C\]"),
        (lambda z, y: ride_loss(z[:, :0], y, class_counts=np.ones(5)), "at least one expert"),
        (lambda z, y: ride_loss(z, y[:3], class_counts=np.ones(5)), r"labels shape \(3,\) must equal expert_logits"),
        (lambda z, y: ride_loss(z, y.astype(jnp.float32), class_counts=np.ones(5)), "integer class"),
        (lambda z, y: ride_loss(z.astype(jnp.int32), y, class_counts=np.ones(5)), "expert_logits must be floating"),
        (lambda z, y: ride_loss(z, y, class_counts=np.ones(4)), r"class_counts must have shape \[5\]"),
        (lambda z, y: ride_loss(z, y, class_counts=np.array([3, 0, 2, 1, 1])), "finite and positive"),
        (lambda z, y: ride_loss(z, y, class_counts=np.array([3, 1, np.nan, 1, 1])), "finite and positive"),
        (lambda z, y: ride_loss(z, y, class_counts=np.ones(5), reweight="yes"), "reweight must be a Python bool"),
        (lambda z, y: ride_loss(z, y, class_counts=np.ones(5), reweight=jnp.array(True)), "reweight must be"),
        (lambda z, y: ride_loss(z, y, class_counts=np.ones(5), base_temperature=0.0), "base_temperature must be"),
        (lambda z, y: ride_loss(z, y, class_counts=np.ones(5), scale=-1.0), r"scale must lie in \[0, inf\]"),
        (lambda z, y: ride_loss(z, y, class_counts=np.ones(5), max_margin=-0.1), "max_margin must lie"),
        (lambda z, y: ride_loss(z, y, class_counts=np.ones(5), drw_beta=1.0), r"drw_beta must lie in \[0, 1\)"),
        (lambda z, y: ride_loss(z, y, class_counts=np.ones(5), diversity_prior_weight=1.5),
         r"diversity_prior_weight must lie in \[0, 1\]"),
        (lambda z, y: ride_loss(z, y, class_counts=np.ones(5), mask=np.ones(3, bool)), "mask must have the labels'"),
        (lambda z, y: ride_class_vectors(np.ones((2, 5))), r"class_counts must be a non-empty 1-D vector"),
        (lambda z, y: ride_class_vectors(np.array([2, -1])), "finite and positive"),
        (lambda z, y: ride_class_vectors(np.ones(5), drw_beta=-0.5), "drw_beta must lie"),
    ],
)
def test_bad_inputs_raise_a_clear_value_error(call, message):
    experts, y, _ = ride_case(25, 4, 2, 5)
    with pytest.raises(ValueError, match=message):
        call(jnp.asarray(experts, jnp.float32), jnp.asarray(y))


# --- the Case entries proposed for ltjax.testing (a copy of the proposal, checked here) ------------------------


def _ride_experts(z):
    """Two fixed experts `[..., B, 2, C]` from the problem's logits: z and z / 2 (exact in every dtype, so bf16 logits
    give the experts of their float32 values). Two, not the recipe's three: the sum of three experts' margin losses
    (s m_y up to 15) is large enough that float32 finite differences at eps 1e-3 lose the gradient's digits."""
    return jnp.stack([z, 0.5 * z], axis=-2)


_RIDE_NUMBERS = {"diversity_factor": (-0.45, 0.0, 0.3), "base_temperature": (0.5, 1.0, 2.0), "scale": (10.0, 30.0),
                 "max_margin": (0.2, 0.5)}
PROPOSED = {
    # The ensemble distribution is detached, as in the reference, but that changes no first derivative (see
    # test_check_grads_in_float64): DIFFERENTIABLE, no frozen form.
    "ride": Case(lambda z, y, a, **n: ride_loss(_ride_experts(z), y, class_counts=a.counts, **n), _RIDE_NUMBERS),
    "ride_drw": Case(
        lambda z, y, a, **n: ride_loss(_ride_experts(z), y, class_counts=a.counts, reweight=True, **n),
        {**_RIDE_NUMBERS, "drw_beta": (0.9, 0.9999), "diversity_prior_weight": (0.05, 0.5)},
        batch_coupled=True,  # the weighted mean's normaliser is that of the batch
    ),
}


@pytest.mark.parametrize("name", sorted(PROPOSED))
def test_the_proposed_cases_have_the_properties_every_loss_has(name):
    """The main checks tests/test_losses_properties.py makes of every case, on the proposed ones (one sweep: the
    diversity factor's, whose 0 switches the cross-entropy's logits)."""
    case = PROPOSED[name]
    p = make_problem(seed=0, batch=6, num_classes=5)

    def total(z):
        return jnp.sum(case(z, p.labels, p))

    eager = case(p.logits, p.labels, p)
    assert eager.shape == p.labels.shape and eager.dtype == jnp.float32
    stacked_z, stacked_y = jnp.stack([p.logits, -p.logits]), jnp.stack([p.labels, p.labels[::-1]])
    vmapped = jax.jit(jax.vmap(lambda z, y: case(z, y, p)))(stacked_z, stacked_y)
    np.testing.assert_allclose(vmapped, case(stacked_z, stacked_y, p), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vmapped[0], eager, rtol=1e-6, atol=1e-6)
    check_grads(total, (p.logits,), order=1, modes=("fwd", "rev"), eps=1e-3)
    signs = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(0), shape=p.logits.shape), 1.0, -1.0)
    for logits in (1e4 * signs, 1e4 * jax.nn.one_hot(p.labels, 5), -1e4 * jax.nn.one_hot(p.labels, 5)):
        assert np.all(np.isfinite(case(logits, p.labels, p))) and np.all(np.isfinite(jax.grad(total)(logits)))
    perm = jnp.array([3, 0, 4, 1, 2])
    permuted = dataclasses.replace(p, logits=p.logits[:, perm], labels=jnp.argsort(perm)[p.labels].astype(jnp.int32),
                                   counts=p.counts[perm], coordinates=p.coordinates[perm])
    np.testing.assert_allclose(case(permuted.logits, permuted.labels, permuted), eager, rtol=1e-5, atol=1e-6)
    bad = p.labels.at[1].set(5).at[4].set(-1)
    out = case(p.logits, bad, p)
    keep = np.array([0, 2, 3, 5])
    unchanged = case(p.logits[keep], p.labels[keep], p) if case.batch_coupled else eager[keep]
    assert np.isnan(out[1]) and np.isnan(out[4])
    np.testing.assert_allclose(out[keep], unchanged, rtol=1e-6)
    values = case.numbers["diversity_factor"]
    swept = jax.jit(jax.vmap(lambda v: case(p.logits, p.labels, p, diversity_factor=v)))(jnp.asarray(values))
    for index, value in enumerate(values):
        np.testing.assert_allclose(swept[index], case(p.logits, p.labels, p, diversity_factor=value), rtol=2e-5,
                                   atol=2e-6 * np.max(np.abs(swept[index])))
