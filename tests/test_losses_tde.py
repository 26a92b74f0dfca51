"""TDE (methods-structures.md §3): the causal-norm logits, TDE inference and the moving feature sum, against float64
NumPy restatements of `CausalNormClassifier.py` and `run_networks.py`; alpha = 0 is the training rule; `check_grads`;
the head in the network (state update in training, counterfactual in evaluation); input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from ltjax import losses
from ltjax.models import create_model
from ltjax.models.heads import CausalNormHead

RNG = np.random.default_rng(3)
FEATURES = np.abs(RNG.standard_normal((6, 8)))  # post-ReLU pooled features
KERNEL = RNG.uniform(-0.3, 0.3, (8, 5))
DIRECTION = np.abs(RNG.standard_normal(8)) * 4.0


def ref_tde(x, w, d, alpha, num_heads, tau, gamma):
    """The reference's per-head loop, in float64: causal-norm scores, minus alpha times the projection on d."""
    scale = tau / num_heads
    logits = np.zeros((x.shape[0], w.shape[1]))
    size = x.shape[1] // num_heads
    for h in range(num_heads):
        xh, wh = x[:, h * size:(h + 1) * size], w[h * size:(h + 1) * size]
        xh = xh / np.linalg.norm(xh, axis=1, keepdims=True)
        wh = wh / (np.linalg.norm(wh, axis=0, keepdims=True) + gamma)
        if d is not None:
            dh = d[h * size:(h + 1) * size] / np.linalg.norm(d[h * size:(h + 1) * size])
            cos = (xh @ dh) / (np.linalg.norm(xh, axis=1) * np.linalg.norm(dh))
            xh = xh - alpha * cos[:, None] * dh[None]
        logits += scale * xh @ wh
    return logits


@pytest.mark.parametrize("num_heads, tau, gamma", [(2, 16.0, 1 / 32), (1, 16.0, 1 / 32), (4, 10.0, 0.1)])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5, 3.0])
def test_tde_logits_match_the_reference(num_heads, tau, gamma, alpha):
    with jax.enable_x64(True):
        actual = losses.tde_logits(jnp.asarray(FEATURES), jnp.asarray(KERNEL), jnp.asarray(DIRECTION), alpha=alpha,
                                   num_heads=num_heads, tau=tau, gamma=gamma)
        np.testing.assert_allclose(actual, ref_tde(FEATURES, KERNEL, DIRECTION, alpha, num_heads, tau, gamma),
                                   rtol=1e-12, atol=1e-12 * tau)


def test_training_logits_are_alpha_zero_and_ignore_the_scale_of_the_direction():
    with jax.enable_x64(True):
        x, w, d = jnp.asarray(FEATURES), jnp.asarray(KERNEL), jnp.asarray(DIRECTION)
        plain = losses.tde_logits(x, w, alpha=1.5)
        np.testing.assert_allclose(plain, ref_tde(FEATURES, KERNEL, None, 0.0, 2, 16.0, 1 / 32), rtol=1e-12)
        np.testing.assert_allclose(losses.tde_logits(x, w, d, alpha=0.0), plain, rtol=1e-12)
        # Only each head's direction of d matters (why the reference's missing (1 - mu) is harmless on CIFAR).
        np.testing.assert_allclose(losses.tde_logits(x, w, 7.0 * d), losses.tde_logits(x, w, d), rtol=1e-12)
        # A zero direction (before the first update) removes nothing.
        np.testing.assert_allclose(losses.tde_logits(x, w, jnp.zeros(8)), plain, rtol=1e-12)


def test_tde_logits_gradients():
    with jax.enable_x64(True):
        x, w, d = jnp.asarray(FEATURES), jnp.asarray(KERNEL), jnp.asarray(DIRECTION)
        check_grads(lambda x, w: losses.tde_logits(x, w, d, alpha=1.5), (x, w), order=2, modes=("fwd", "rev"))
        check_grads(lambda d, a: losses.tde_logits(x, w, d, alpha=a), (d, jnp.asarray(1.5)), order=1,
                    modes=("fwd", "rev"))


def test_moving_feature_direction_is_the_reference_sum_over_the_global_batch():
    with jax.enable_x64(True):
        d = np.zeros(8)
        for batch in (FEATURES[:3], FEATURES[3:]):
            d = np.asarray(losses.moving_feature_direction(jnp.asarray(d), jnp.asarray(batch), momentum=0.9))
        np.testing.assert_allclose(d, 0.9 * FEATURES[:3].mean(0) + FEATURES[3:].mean(0), rtol=1e-12)
        # Padding left out; two shards under a named axis give the global batch's mean.
        mask = np.array([True, True, False, True, False, True])
        masked = losses.moving_feature_direction(jnp.ones(8), jnp.asarray(FEATURES), mask=jnp.asarray(mask))
        np.testing.assert_allclose(masked, 0.9 + FEATURES[mask].mean(0), rtol=1e-12)
        sharded = jax.vmap(lambda f, m: losses.moving_feature_direction(jnp.ones(8), f, mask=m, axis_name="d"),
                           axis_name="d")(jnp.asarray(FEATURES).reshape(2, 3, 8), jnp.asarray(mask).reshape(2, 3))
        np.testing.assert_allclose(sharded[0], masked, rtol=1e-12)
        np.testing.assert_allclose(sharded[1], masked, rtol=1e-12)


def test_the_head_collects_in_training_and_removes_the_counterfactual_in_evaluation():
    head = CausalNormHead(5, alpha=1.5)
    x = jnp.asarray(FEATURES, jnp.float32)
    variables = head.init(jax.random.key(0), x, False)
    assert variables["params"]["kernel"].shape == (8, 5)
    np.testing.assert_array_equal(variables["batch_stats"]["feature_direction"], 0.0)
    bound = 1 / np.sqrt(8)  # uniform(-1/sqrt(D), 1/sqrt(D))
    assert np.all(np.abs(variables["params"]["kernel"]) <= bound)
    logits, updates = head.apply(variables, x, True, mutable=["batch_stats"])
    kernel = np.asarray(variables["params"]["kernel"], np.float64)
    np.testing.assert_allclose(logits, ref_tde(FEATURES, kernel, None, 0.0, 2, 16.0, 1 / 32), rtol=1e-5, atol=1e-5)
    direction = np.asarray(updates["batch_stats"]["feature_direction"])
    np.testing.assert_allclose(direction, FEATURES.mean(0), rtol=1e-6)
    evaluated = head.apply({**variables, **updates}, x, False)
    np.testing.assert_allclose(evaluated, ref_tde(FEATURES, kernel, direction, 1.5, 2, 16.0, 1 / 32),
                               rtol=1e-5, atol=1e-5)


def test_the_tde_network_is_bbns_bilateral_trunk_with_the_causal_norm_head():
    model = create_model("resnet32", 10, head="causal_norm", network="bilateral")
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    count = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    # ResNet-32 (463,504 without its head) plus a second copy of its last block (two 64x64 3x3 convolutions and two
    # BatchNorms), and a [128, C] kernel with no bias.
    assert count == 463_504 + 2 * (3 * 3 * 64 * 64 + 2 * 64) + 128 * 10
    assert variables["batch_stats"]["head"]["feature_direction"].shape == (128,)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="divide by num_heads=3"):
        losses.tde_logits(jnp.ones((2, 8)), jnp.ones((8, 4)), num_heads=3)
    with pytest.raises(ValueError, match="kernel"):
        losses.tde_logits(jnp.ones((2, 8)), jnp.ones((6, 4)))
    with pytest.raises(ValueError, match="direction"):
        losses.tde_logits(jnp.ones((2, 8)), jnp.ones((8, 4)), jnp.ones(6))
    with pytest.raises(ValueError, match="alpha"):
        losses.tde_logits(jnp.ones((2, 8)), jnp.ones((8, 4)), alpha=-1.0)
