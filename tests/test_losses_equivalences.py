"""Limits in which one loss reduces to another."""
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import losses
from ltjax.testing import make_problem


@pytest.fixture
def problem():
    return make_problem(seed=1, batch=32, num_classes=10)


def close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def test_focal_with_gamma_zero_is_cross_entropy(problem):
    close(losses.focal_loss(problem.logits, problem.labels, gamma=0.0),
          losses.softmax_cross_entropy(problem.logits, problem.labels))


def test_class_balanced_with_beta_zero_is_cross_entropy(problem):
    close(losses.class_balanced_loss(problem.logits, problem.labels, class_counts=problem.counts, beta=0.0),
          losses.softmax_cross_entropy(problem.logits, problem.labels))


def test_class_balanced_focal_with_gamma_zero_is_class_balanced_sigmoid(problem):
    kwargs = dict(class_counts=problem.counts)
    close(losses.class_balanced_loss(problem.logits, problem.labels, loss_type="focal", gamma=0.0, **kwargs),
          losses.class_balanced_loss(problem.logits, problem.labels, loss_type="sigmoid", **kwargs))


def test_ldam_without_margin_and_unit_scale_is_cross_entropy_on_cosines(problem):
    cosines = jnp.tanh(problem.logits)
    close(losses.ldam_loss(cosines, problem.labels, class_counts=problem.counts, max_margin=0.0, scale=1.0),
          losses.softmax_cross_entropy(cosines, problem.labels))


def test_kps_on_balanced_counts_is_ldam(problem):
    """With equal counts the radii are 1 and every margin is max_margin, LDAM's margin on balanced data."""
    cosines = jnp.tanh(problem.logits)
    balanced = jnp.full((10,), 100)
    close(losses.kps_loss(cosines, problem.labels, class_counts=balanced, max_margin=0.3, scale=20.0,
                          gradient_adjustment=True),
          losses.ldam_loss(cosines, problem.labels, class_counts=balanced, max_margin=0.3, scale=20.0))


def test_logit_adjustment_with_tau_zero_is_cross_entropy(problem):
    priors = problem.counts / jnp.sum(problem.counts)
    close(losses.logit_adjusted_loss(problem.logits, problem.labels, class_priors=priors, tau=0.0),
          losses.softmax_cross_entropy(problem.logits, problem.labels))


def test_balanced_softmax_is_logit_adjustment_with_tau_one(problem):
    priors = problem.counts / jnp.sum(problem.counts)
    close(losses.balanced_softmax_loss(problem.logits, problem.labels, class_counts=problem.counts),
          losses.logit_adjusted_loss(problem.logits, problem.labels, class_priors=priors, tau=1.0), rtol=1e-5)


def test_posthoc_adjustment_undoes_the_training_offset(problem):
    priors = problem.counts / jnp.sum(problem.counts)
    adjusted = losses.posthoc_logit_adjustment(problem.logits, class_priors=priors, tau=1.0)
    close(losses.softmax_cross_entropy(adjusted + jnp.log(priors + 1e-12), problem.labels),
          losses.softmax_cross_entropy(problem.logits, problem.labels), rtol=1e-4)


def test_ffds_without_focusing_smoothing_or_weights_is_cross_entropy(problem):
    ffds = losses.ffds_loss(
        problem.logits, problem.labels, class_counts=problem.counts, class_mean_probs=problem.class_means,
        gamma_min=0.0, gamma_max=0.0, label_smoothing=0.0, beta=0.0, weight_normalization="num_classes",
    )
    close(ffds, losses.softmax_cross_entropy(problem.logits, problem.labels))


def test_swrm_with_unit_weights_and_zero_margins_is_cross_entropy(problem):
    close(losses.swrm_loss(problem.logits, problem.labels, class_weights=jnp.ones(10), margins=jnp.zeros(10)),
          losses.softmax_cross_entropy(problem.logits, problem.labels))


def test_iif_on_balanced_counts_scales_logits_by_log_num_classes(problem):
    balanced = jnp.full((10,), 7)
    close(losses.iif_loss(problem.logits, problem.labels, class_counts=balanced),
          losses.softmax_cross_entropy(problem.logits * jnp.log(10.0), problem.labels))


def test_ib_focal_with_gamma_zero_is_ib(problem):
    args = (problem.logits, problem.labels, problem.feature_norms)
    close(losses.influence_balanced_loss(*args, class_counts=problem.counts, variant="ib_focal", gamma=0.0),
          losses.influence_balanced_loss(*args, class_counts=problem.counts, variant="ib"))


def test_drw_weights_are_unit_before_the_switch_and_class_balanced_after(problem):
    from ltjax import schedules

    close(schedules.drw_class_weights(problem.counts, False), jnp.ones(10))
    close(schedules.drw_class_weights(problem.counts, True), losses.class_balanced_weights(problem.counts))
