"""The dtype rule (float64 in, float64 math), gradients checked at their default tolerances in float64, every numeric
hyper-parameter traced and vmapped, and the float32 precision of the forms chosen for speed: the influence-balanced
loss as p_y -> 1, the class-balanced sigmoid and focal losses, and their `log1p` polynomial; FFDS where its clamp
binds.

x64 is switched on only inside these tests (`jax.enable_x64(True)` is a context manager), so no other test sees it.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from jax.test_util import check_grads

from ltjax import losses
from ltjax.losses import _math
from ltjax.testing import ALL, DIFFERENTIABLE, WITH_STOP_GRADIENT, make_problem


def _problem64():
    return make_problem(seed=0, batch=6, num_classes=5, dtype=jnp.float64)


@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_check_grads_in_float64_at_default_tolerances(name):
    with jax.enable_x64(True):
        p = _problem64()
        case = DIFFERENTIABLE[name]
        check_grads(lambda z: jnp.sum(case(z, p.labels, p)), (p.logits,), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", sorted(WITH_STOP_GRADIENT))
def test_losses_with_a_stop_gradient_are_checked_through_their_frozen_form_in_float64(name):
    """The frozen form holds the stop-gradient factors at `at`; its derivative there is the loss's gradient."""
    with jax.enable_x64(True):
        p = _problem64()
        case = WITH_STOP_GRADIENT[name]
        at = p.logits

        def frozen(z):
            return jnp.sum(case.frozen(z, p.labels, p, at))

        np.testing.assert_allclose(frozen(at), jnp.sum(case(at, p.labels, p)), rtol=1e-12)
        check_grads(frozen, (at,), order=1, modes=("fwd", "rev"))
        np.testing.assert_allclose(jax.grad(lambda z: jnp.sum(case(z, p.labels, p)))(at), jax.grad(frozen)(at),
                                   rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ALL))
def test_the_dtype_rule(name):
    """Math and output in promote(float32, logits dtype): bf16 and float32 -> float32, float64 -> float64."""
    case = ALL[name]
    p = make_problem(seed=1)
    for dtype in (jnp.bfloat16, jnp.float32):
        assert case(p.logits.astype(dtype), p.labels, p).dtype == jnp.float32, dtype
    with jax.enable_x64(True):
        p64 = _problem64()
        out = case(p64.logits, p64.labels, p64)
        assert out.dtype == jnp.float64
        # Only float64 math resolves a 1e-9 change of the logits: the change of the loss matches the directional
        # derivative to 1e-4, where float32 (eps 1.2e-7) would return zero or rounding noise.
        direction = jnp.asarray(np.random.default_rng(2).standard_normal(p64.logits.shape))
        step = 1e-9
        moved = case(p64.logits + step * direction, p64.labels, p64)
        # A loss with a stop-gradient changes by its total derivative, that of its frozen form plus its factors'.
        exact = (lambda z: case(z, p64.labels, p64)) if case.frozen is None else (
            lambda z: case.frozen(z, p64.labels, p64, z))
        _, derivative = jax.jvp(exact, (p64.logits,), (direction,))
        np.testing.assert_allclose((moved - out) / step, derivative, rtol=1e-4, atol=1e-4 * np.max(np.abs(derivative)))


def _sweeps():
    return [(name, number) for name, case in sorted(ALL.items()) for number in sorted(case.numbers)]


@pytest.mark.parametrize("name, number", _sweeps())
def test_every_numeric_hyper_parameter_vmaps(name, number):
    """One compiled program sweeps a hyper-parameter: vmap over its values equals one call per value."""
    case = ALL[name]
    p = make_problem(seed=3)
    values = jnp.asarray(case.numbers[number], jnp.float32)
    swept = jax.jit(jax.vmap(lambda value: case(p.logits, p.labels, p, **{number: value})))(values)
    for index, value in enumerate(case.numbers[number]):
        np.testing.assert_allclose(swept[index], case(p.logits, p.labels, p, **{number: value}), rtol=2e-5,
                                   atol=2e-6 * np.max(np.abs(swept[index])), err_msg=f"{number}={value}")
    grads = jax.vmap(jax.grad(lambda value: jnp.sum(case(p.logits, p.labels, p, **{number: value}))))(values)
    assert np.all(np.isfinite(grads))


def test_every_loss_declares_a_sweep_for_each_of_its_numeric_hyper_parameters():
    declared = {name: set(case.numbers) for name, case in ALL.items()}
    assert declared["ffds"] == {"beta", "gamma_min", "gamma_max", "label_smoothing", "smoothing_strength"}
    assert declared["class_balanced_focal"] == {"beta", "gamma"}
    assert declared["ib_focal"] == {"alpha", "epsilon", "gamma"}
    assert declared["kps_ga"] == {"max_margin", "scale", "max_scale"}


def test_influence_balanced_keeps_its_precision_as_the_true_class_probability_nears_one():
    logits, labels = np.array([[-14.084, 8.704, -4.500]]), np.array([1])
    norms, counts = np.array([22.732]), np.array([215, 1, 4])
    in_float32 = losses.influence_balanced_loss(jnp.asarray(logits, jnp.float32), labels,
                                                jnp.asarray(norms, jnp.float32), class_counts=counts)
    with jax.enable_x64(True):
        in_float64 = losses.influence_balanced_loss(jnp.asarray(logits), labels, jnp.asarray(norms),
                                                    class_counts=counts)
        assert in_float64.dtype == jnp.float64
        np.testing.assert_allclose(float(in_float64[0]), 4.0668, rtol=1e-4)  # the value the issue reports
    np.testing.assert_allclose(float(in_float32[0]), float(in_float64[0]), rtol=1e-5)


def test_the_log1p_polynomial_is_within_two_float32_ulp_and_float64_keeps_log1p():
    x = np.concatenate([[0.0], np.geomspace(1e-37, 1.0, 100_001), np.linspace(0.0, 1.0, 100_001)]).astype(np.float32)
    got = np.asarray(jax.jit(_math.log1p_of_fraction)(x), np.float64)
    exact = np.log1p(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert got[0] == 0.0
    assert np.max(np.abs(got - exact) / ulp) <= 2.0
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.linspace(0.0, 1.0, 101))
        np.testing.assert_array_equal(_math.log1p_of_fraction(x64), jnp.log1p(x64))


@pytest.mark.parametrize("loss_type, gamma", [("sigmoid", 0.0), ("focal", 1.0), ("focal", 2.0)])
def test_the_class_balanced_sigmoid_losses_keep_float32_precision_where_the_classes_saturate(loss_type, gamma):
    """The sigmoid loss takes the target logit out of a select-free row sum; the focal loss computes its BCE with
    the polynomial. Rows: every class confident (each term about 2e-9), one other class near 0, and moderate logits.
    The float32 losses and every gradient entry keep their digits against float64."""
    logits = np.full((3, 1000), -20.0)
    logits[:2, 3] = 20.0
    logits[1, 7] = 0.01
    logits[2] = np.random.default_rng(0).normal(0.0, 3.0, 1000)
    labels, counts = np.array([3, 3, 5]), np.arange(1, 1001)

    def value_and_gradient(z):
        def loss(z):
            return losses.class_balanced_loss(z, labels, class_counts=counts, beta=0.99, loss_type=loss_type,
                                              gamma=gamma)
        return loss(z), jax.grad(lambda z: jnp.sum(loss(z)))(z)

    value32, gradient32 = value_and_gradient(jnp.asarray(logits, jnp.float32))
    with jax.enable_x64(True):
        value64, gradient64 = value_and_gradient(jnp.asarray(logits))
    np.testing.assert_allclose(value32, value64, rtol=1e-5)
    np.testing.assert_allclose(gradient32, gradient64, rtol=1e-5, atol=0)


def test_ffds_where_the_reference_clamp_binds():
    """Rows where the clamp of the probabilities to [1e-6, 1 - 1e-6] binds: the true class above 1 - 1e-6, another
    class above it, all classes tied, and classes below 1e-6. ltjax takes the upper bound off the row's top term
    outside the row sum; the loss matches the reference, and its gradient passes `check_grads` in both modes. No
    focusing (gamma 0), so that the clamp's gradient is not scaled away."""
    logits = np.full((4, 6), -20.0)
    logits[0, 0] = 20.0
    logits[1, 4] = 20.0
    logits[2] = 0.0
    logits[3] = [5.0, 4.0, -12.0, 3.0, -15.0, 0.0]
    labels, counts, means = np.array([0, 1, 2, 3]), np.array([50, 20, 10, 5, 3, 2]), np.linspace(0.2, 0.7, 6)
    with jax.enable_x64(True):
        def ffds(z):
            return losses.ffds_loss(z, labels, class_counts=counts, class_mean_probs=means, gamma_max=0.0)

        expected = ref.ffds(logits, labels, counts, means, 0.9999, 0.0, 0.0, 0.1, 0.9, 1 / 6)
        np.testing.assert_allclose(ffds(jnp.asarray(logits)), expected, rtol=1e-12)
        check_grads(lambda z: jnp.sum(ffds(z)), (jnp.asarray(logits),), order=1, modes=("fwd", "rev"))


def test_traced_hyper_parameters_that_used_to_fail_under_jit():
    p = make_problem(seed=4)
    for call in (
        lambda v: losses.class_balanced_loss(p.logits, p.labels, class_counts=p.counts, loss_type="focal", gamma=v),
        lambda v: losses.softmax_cross_entropy(p.logits, p.labels, label_smoothing=v),
        lambda v: losses.ffds_loss(p.logits, p.labels, class_counts=p.counts, class_mean_probs=p.class_means,
                                   label_smoothing=v),
    ):
        np.testing.assert_allclose(jax.jit(call)(jnp.float32(0.2)), call(0.2), rtol=1e-5, atol=1e-7)


def test_a_traced_gamma_has_the_derivative_of_the_static_one():
    """The traced-gamma path of the sigmoid focal loss carries d/dgamma; it agrees with finite differences."""
    p = make_problem(seed=5)
    with jax.enable_x64(True):
        p64 = dataclasses.replace(p, logits=p.logits.astype(jnp.float64))

        def total(gamma):
            return jnp.sum(losses.class_balanced_loss(p64.logits, p64.labels, class_counts=p64.counts,
                                                      loss_type="focal", gamma=gamma))

        check_grads(total, (jnp.float64(1.5),), order=1, modes=("fwd", "rev"))
