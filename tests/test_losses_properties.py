"""Properties every loss must have: checked gradients, jit/vmap/grad agreement, bf16 and extreme logits, class
order invariance, and NaN (never a wrong finite value) for out-of-range labels."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from ltjax import losses
from ltjax.testing import ALL, DIFFERENTIABLE, WITH_STOP_GRADIENT, make_problem

PROBLEM = make_problem(seed=0, batch=6, num_classes=5)


def _total(case, problem=PROBLEM):
    return lambda z: jnp.sum(case(z, problem.labels, problem))


def test_every_exported_loss_has_a_property_case(monkeypatch):
    """A loss (`ltjax.losses.*_loss`, `softmax_cross_entropy`) gets this file's tests only through a `Case` of
    `ltjax.testing`: every one must be called by some case."""
    exported = [name for name in losses.__all__ if name.endswith("_loss") or name == "softmax_cross_entropy"]
    called = set()
    for name in exported:
        function = getattr(losses, name)
        monkeypatch.setattr(losses, name, lambda *args, _name=name, _function=function, **kwargs: (
            called.add(_name), _function(*args, **kwargs))[1])
    for case in ALL.values():
        case(PROBLEM.logits, PROBLEM.labels, PROBLEM)
    missing = sorted(set(exported) - called)
    assert not missing, f"add a Case for {missing} to ltjax/testing.py (DIFFERENTIABLE or WITH_STOP_GRADIENT)"


@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_check_grads(name):
    check_grads(_total(DIFFERENTIABLE[name]), (PROBLEM.logits,), order=1, modes=("fwd", "rev"), eps=1e-3)


@pytest.mark.parametrize("variant", ["ib", "ib_cb", "ib_focal"])
def test_influence_balanced_gradient_flows_into_feature_norms(variant):
    def total(norms):
        return jnp.sum(losses.influence_balanced_loss(
            PROBLEM.logits, PROBLEM.labels, norms, class_counts=PROBLEM.counts, variant=variant))

    check_grads(total, (PROBLEM.feature_norms,), order=1, modes=("fwd", "rev"), eps=1e-3)
    assert np.all(np.asarray(jax.grad(total)(PROBLEM.feature_norms)) != 0)


def test_ffds_gradient_is_the_constant_modulator_times_the_smoothed_ce_gradient():
    """FFDS differentiates only its label-smoothed CE; the focusing factor is a constant (reference: no_grad)."""
    p = PROBLEM
    gammas = losses.freqfocus_gammas(p.counts)[p.labels]
    weights = losses.class_balanced_weights(p.counts, normalization="inverse_num_classes")[p.labels]
    true_probs = jnp.exp(-losses.softmax_cross_entropy(p.logits, p.labels))
    smoothed = losses.dynasmooth_probs(true_probs, p.class_means[p.labels])
    constant = weights * (1.0 - smoothed) ** gammas

    def smoothed_ce(z):  # FFDS with gamma = 0 and unit weights is its smoothed CE
        return losses.ffds_loss(z, p.labels, class_counts=p.counts, class_mean_probs=p.class_means,
                                gamma_min=0.0, gamma_max=0.0, beta=0.0, weight_normalization="num_classes")

    check_grads(lambda z: jnp.sum(smoothed_ce(z)), (p.logits,), order=1, modes=("fwd", "rev"), eps=1e-3)
    expected = jax.grad(lambda z: jnp.sum(constant * smoothed_ce(z)))(p.logits)
    actual = jax.grad(_total(WITH_STOP_GRADIENT["ffds"]))(p.logits)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-7)


def test_detached_focal_gradient_is_the_constant_modulator_times_the_ce_gradient():
    p = PROBLEM
    modulator = (1.0 - jnp.exp(-losses.softmax_cross_entropy(p.logits, p.labels))) ** 2
    expected = jax.grad(lambda z: jnp.sum(modulator * losses.softmax_cross_entropy(z, p.labels)))(p.logits)
    actual = jax.grad(_total(WITH_STOP_GRADIENT["focal_detached"]))(p.logits)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)


def test_dyswrm_margins_are_differentiable_in_the_coordinates():
    p = PROBLEM

    def total(coordinates):
        margins = losses.swm_margins(coordinates, window_size=3)
        weights = losses.swr_weights(p.counts, coordinates, window_size=3)
        return jnp.sum(losses.swrm_loss(p.logits, p.labels, class_weights=weights, margins=margins))

    check_grads(total, (p.coordinates,), order=1, modes=("fwd", "rev"), eps=1e-3)
    assert np.any(np.asarray(jax.grad(total)(p.coordinates)) != 0)


@pytest.mark.parametrize("name", sorted(ALL))
def test_jit_vmap_and_grad_agree_with_eager(name):
    case = ALL[name]
    p = PROBLEM
    eager = case(p.logits, p.labels, p)
    assert eager.shape == p.labels.shape and eager.dtype == jnp.float32
    np.testing.assert_allclose(jax.jit(lambda z, y: case(z, y, p))(p.logits, p.labels), eager, rtol=1e-6, atol=1e-6)
    # vmap over a leading axis equals calling on the stacked [2, B, C] input directly.
    stacked_z, stacked_y = jnp.stack([p.logits, -p.logits]), jnp.stack([p.labels, p.labels[::-1]])
    stacked_norms = jnp.stack([p.feature_norms, p.feature_norms[::-1]])

    def call(z, y, norms):
        return case(z, y, dataclasses.replace(p, feature_norms=norms))

    vmapped = jax.vmap(call)(stacked_z, stacked_y, stacked_norms)
    np.testing.assert_allclose(vmapped, call(stacked_z, stacked_y, stacked_norms), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vmapped[0], eager, rtol=1e-6, atol=1e-6)
    grad = jax.grad(_total(case))
    np.testing.assert_allclose(jax.jit(grad)(p.logits), grad(p.logits), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(ALL))
def test_bfloat16_logits_give_finite_float32_losses(name):
    case = ALL[name]
    p = PROBLEM
    low = case(p.logits.astype(jnp.bfloat16), p.labels, p)
    assert low.dtype == jnp.float32 and np.all(np.isfinite(low))
    rounded = p.logits.astype(jnp.bfloat16).astype(jnp.float32)
    np.testing.assert_allclose(low, case(rounded, p.labels, p), rtol=1e-5, atol=1e-6)
    grads = jax.grad(_total(case))(p.logits.astype(jnp.bfloat16))
    assert grads.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grads, np.float32)))


@pytest.mark.parametrize("name", sorted(ALL))
def test_extreme_logits_give_finite_losses_and_gradients(name):
    case = ALL[name]
    p = PROBLEM
    signs = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(0), shape=p.logits.shape), 1.0, -1.0)
    for logits in (1e4 * signs, 1e4 * jax.nn.one_hot(p.labels, 5), -1e4 * jax.nn.one_hot(p.labels, 5)):
        assert np.all(np.isfinite(case(logits, p.labels, p))), logits
        assert np.all(np.isfinite(jax.grad(_total(case))(logits))), logits


@pytest.mark.parametrize("name", sorted(ALL))
def test_permuting_the_class_order_permutes_nothing_else(name):
    case = ALL[name]
    p = PROBLEM
    perm = jnp.array([3, 0, 4, 1, 2])  # new class k is old class perm[k]
    inverse = jnp.argsort(perm)
    permuted = dataclasses.replace(
        p,
        logits=p.logits[:, perm],
        labels=inverse[p.labels].astype(jnp.int32),
        counts=p.counts[perm],
        class_means=p.class_means[perm],
        coordinates=p.coordinates[perm],
    )
    np.testing.assert_allclose(
        case(permuted.logits, permuted.labels, permuted), case(p.logits, p.labels, p), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", sorted(ALL))
def test_out_of_range_labels_give_nan_for_that_example_only(name):
    case = ALL[name]
    p = PROBLEM
    bad = p.labels.at[1].set(5).at[4].set(-1)
    out = case(p.logits, bad, p)
    assert np.isnan(out[1]) and np.isnan(out[4])
    keep = np.array([0, 2, 3, 5])
    unchanged = case(p.logits[keep], p.labels[keep], p) if case.batch_coupled else case(p.logits, p.labels, p)[keep]
    np.testing.assert_allclose(out[keep], unchanged, rtol=1e-6)
    grads = jax.grad(lambda z: jnp.sum(case(z, bad, p)[keep]))(p.logits)
    assert np.all(np.isfinite(grads))
