"""DisAlign (methods-structures.md §4): the generalized re-weighting weights and loss and the adaptive calibration,
against float64 NumPy restatements of cvpods' `grw_loss.py` and `DisAlignLinear`, in a random class order with a class
of one image; rho = 0 is cross-entropy; `check_grads` in float64; the head at its initialisation; input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from ltjax import losses
from ltjax.models.heads import make_head, pytorch_linear_kernel_init

RNG = np.random.default_rng(7)
COUNTS = RNG.permutation(np.array([500, 120, 31, 9, 1]))
LOGITS = 3.0 * RNG.standard_normal((7, 5))
LABELS = np.r_[RNG.integers(0, 5, 6), np.flatnonzero(COUNTS == 1)]


def ref_weights(counts, rho):
    frequencies = np.asarray(counts, np.float64) / np.sum(counts)
    weights = frequencies ** -rho
    return weights / weights.sum() * len(counts)


def ref_cross_entropy(z, y):
    shifted = z - z.max(-1, keepdims=True)
    return -(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(len(y)), y]


@pytest.mark.parametrize("rho", [0.0, 0.5, 1.2, 2.0])
def test_grw_weights_and_loss_match_the_reference(rho):
    with jax.enable_x64(True):
        weights = losses.grw_class_weights(COUNTS.astype(np.float64), rho=rho)
        np.testing.assert_allclose(weights, ref_weights(COUNTS, rho), rtol=1e-12)
        per_example = losses.grw_loss(jnp.asarray(LOGITS), jnp.asarray(LABELS), class_counts=COUNTS, rho=rho)
        expected = ref_weights(COUNTS, rho)[LABELS] * ref_cross_entropy(LOGITS, LABELS)
        np.testing.assert_allclose(per_example, expected, rtol=1e-12)
        # The reference's weighted mean: the sum-to-C scale of the weights cancels.
        batch = losses.weighted_mean(per_example, weights[LABELS])
        np.testing.assert_allclose(batch, np.sum(expected) / np.sum(ref_weights(COUNTS, rho)[LABELS]), rtol=1e-12)


def test_grw_with_rho_zero_is_cross_entropy():
    np.testing.assert_allclose(losses.grw_loss(jnp.asarray(LOGITS, jnp.float32), jnp.asarray(LABELS),
                                               class_counts=COUNTS, rho=0.0),
                               losses.softmax_cross_entropy(jnp.asarray(LOGITS, jnp.float32), jnp.asarray(LABELS)),
                               rtol=1e-6)


def test_the_calibration_matches_the_reference_and_its_gradients_check():
    with jax.enable_x64(True):
        confidence = RNG.standard_normal(7)
        scale, bias = RNG.standard_normal(5), RNG.standard_normal(5)
        sigma = 1.0 / (1.0 + np.exp(-confidence))[:, None]
        expected = (1.0 + sigma * scale) * LOGITS + sigma * bias
        calibrated = losses.disalign_logits(jnp.asarray(LOGITS), jnp.asarray(confidence), logit_scale=scale,
                                            logit_bias=bias)
        np.testing.assert_allclose(calibrated, expected, rtol=1e-12)

        def total(z, c, s, b):
            calibrated = losses.disalign_logits(z, c, logit_scale=s, logit_bias=b)
            return jnp.sum(losses.grw_loss(calibrated, jnp.asarray(LABELS), class_counts=COUNTS))

        check_grads(total, (jnp.asarray(LOGITS), jnp.asarray(confidence), jnp.asarray(scale), jnp.asarray(bias)),
                    order=2, modes=("fwd", "rev"))


def test_the_head_starts_as_one_plus_sigma_times_the_linear_logits_and_loads_a_linear_head():
    head = make_head("disalign", 5, linear_kernel_init=pytorch_linear_kernel_init, cosine_learnable_scale=False,
                     param_dtype=jnp.float32)
    linear = make_head("linear", 5, linear_kernel_init=pytorch_linear_kernel_init, cosine_learnable_scale=False,
                       param_dtype=jnp.float32)
    features = jnp.abs(jax.random.normal(jax.random.key(0), (7, 16)))
    params = head.init(jax.random.key(1), features)["params"]
    linear_params = linear.init(jax.random.key(2), features)["params"]
    assert set(linear_params) <= set(params)
    params = {**params, **linear_params}  # a first stage's kernel and bias
    np.testing.assert_array_equal(params["confidence_kernel"], np.full((16, 1), 0.1, np.float32))
    sigma = jax.nn.sigmoid(features @ params["confidence_kernel"] + params["confidence_bias"])
    np.testing.assert_allclose(head.apply({"params": params}, features),
                               (1.0 + sigma) * linear.apply({"params": linear_params}, features), rtol=1e-6)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="rho"):
        losses.grw_class_weights(COUNTS, rho=-1.0)
    with pytest.raises(ValueError, match="class_counts"):
        losses.grw_loss(jnp.asarray(LOGITS), jnp.asarray(LABELS), class_counts=np.r_[COUNTS[:4], 0])
    with pytest.raises(ValueError, match="logit_scale"):
        losses.disalign_logits(jnp.asarray(LOGITS), jnp.zeros(7), logit_scale=jnp.ones(4), logit_bias=jnp.zeros(5))
    with pytest.raises(ValueError, match="confidence"):
        losses.disalign_logits(jnp.asarray(LOGITS), jnp.zeros(6), logit_scale=jnp.ones(5), logit_bias=jnp.zeros(5))
