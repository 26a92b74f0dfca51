"""The networks with branches (methods-structures.md §1, 2, 5): BBN's bilateral ResNet-32 and its per-branch linear
classifier, RIDE's multi-expert ResNet-32 with 24/48-channel experts, ResLT's three BatchNorm branches on one trunk;
their sizes from the references' layouts, what they share, and the errors of a network that cannot be built."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerance import assert_close_to_scale

from ltjax.models import create_model, option_a_shortcut

IMAGES = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)), jnp.float32)
RESNET32_TRUNK = 463_504  # ResNet-32's parameters without its head


def _count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def _shapes(model, size=32):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))


def _block(in_channels, out_channels):
    """A CIFAR BasicBlock's parameters: two 3x3 convolutions without bias and two BatchNorms."""
    return 9 * in_channels * out_channels + 9 * out_channels * out_channels + 4 * out_channels


def test_bbn_network_duplicates_resnet32s_last_block_and_concatenates_the_branches():
    variables = _shapes(create_model("resnet32", 100, head="bilateral", network="bilateral"))
    params = variables["params"]
    assert _count(params) == RESNET32_TRUNK + _block(64, 64) + 128 * 100 + 100
    assert "stage3_block5" not in params and {"branch1_block", "branch2_block", "stage3_block4"} <= set(params)
    assert params["head"]["kernel"].shape == (128, 100)


def test_bbn_branches_are_the_halves_of_one_linear_classifier():
    model = create_model("resnet8", 6, head="bilateral", network="bilateral")
    variables = model.init(jax.random.key(1), IMAGES, train=False)
    out = model.apply(variables, IMAGES, train=False)
    assert out.branches.shape == (4, 2, 6) and out.features.shape == (4, 128)
    kernel, bias = (np.asarray(variables["params"]["head"][k], np.float64) for k in ("kernel", "bias"))
    features = np.asarray(out.features, np.float64)
    # The test rule: W_c f_c + W_r f_r + b.
    assert_close_to_scale(out.logits, features @ kernel + bias, rtol=1e-6)
    # Training mixes two batches' branches: 2 alpha W_c f_c(u) + 2 (1 - alpha) W_r f_r(r) + b, with one bias.
    other = model.apply(variables, IMAGES[::-1], train=False)
    alpha = 0.3
    mixed = 2 * alpha * out.branches[:, 0] + 2 * (1 - alpha) * other.branches[:, 1]
    reference = (2 * alpha * features[:, :64] @ kernel[:64] + 2 * (1 - alpha) * np.asarray(other.features)[:, 64:]
                 @ kernel[64:] + bias)
    assert_close_to_scale(mixed, reference, rtol=1e-6)


def test_ride_experts_share_the_stem_and_first_stage_and_narrow_the_later_stages():
    variables = _shapes(create_model("resnet32", 100, head="normed", network="experts", num_experts=3))
    params = variables["params"]
    shared = 9 * 3 * 16 + 2 * 16 + 5 * _block(16, 16)
    expert = _block(16, 24) + 4 * _block(24, 24) + _block(24, 48) + 4 * _block(48, 48) + 48 * 100
    assert _count(params) == shared + 3 * expert
    assert {"expert1_stage2_block1", "expert3_stage3_block5", "expert2_head", "stage1_block5"} <= set(params)
    assert "stage2_block1" not in params


def test_ride_output_is_the_mean_of_the_experts():
    model = create_model("resnet8", 5, head="normed", network="experts", num_experts=2)
    variables = model.init(jax.random.key(2), IMAGES, train=False)
    out = model.apply(variables, IMAGES, train=False)
    assert out.branches.shape == (4, 2, 5) and out.features.shape == (4, 96)
    assert np.all(np.abs(out.branches) <= 1 + 1e-6)  # cosines: the loss scales them
    assert_close_to_scale(out.logits, np.mean(np.asarray(out.branches), axis=1), rtol=1e-6)
    assert not np.allclose(out.branches[:, 0], out.branches[:, 1])  # experts initialised independently


def test_option_a_pads_half_the_new_channels_on_each_side_as_rides_narrow_stages():
    x = jnp.arange(2 * 2 * 16, dtype=jnp.float32).reshape(1, 2, 2, 16) + 1
    out = option_a_shortcut(x, out_channels=24, strides=2)
    assert out.shape == (1, 1, 1, 24)
    np.testing.assert_array_equal(out[0, 0, 0, :4], 0)
    np.testing.assert_array_equal(out[0, 0, 0, 4:20], x[0, 0, 0])
    np.testing.assert_array_equal(out[0, 0, 0, 20:], 0)


def test_reslt_branches_are_three_batchnorms_scored_by_one_classifier():
    model = create_model("resnet32", 100, head="linear", network="reslt")
    params = _shapes(model)["params"]
    assert _count(params) == RESNET32_TRUNK + 3 * 2 * 64 + 64 * 100 + 100
    small = create_model("resnet8", 5, head="linear", network="reslt")
    variables = small.init(jax.random.key(3), IMAGES, train=False)
    out = small.apply(variables, IMAGES, train=False)
    assert out.branches.shape == (4, 3, 5) and out.features.shape == (4, 64)
    # At initialisation the three BatchNorms are equal, so are the branches; the prediction is their sum.
    assert_close_to_scale(out.branches[:, 1], out.branches[:, 0], rtol=1e-6)
    assert_close_to_scale(out.branches[:, 2], out.branches[:, 0], rtol=1e-6)
    assert_close_to_scale(out.logits, 3 * np.asarray(out.branches[:, 0]), rtol=1e-6)
    # They diverge through their own BatchNorm parameters.
    params = jax.tree.map(lambda x: x, variables["params"])
    params["branch3_bn"]["bias"] = params["branch3_bn"]["bias"] + 0.5
    moved = small.apply({**variables, "params": params}, IMAGES, train=False)
    assert_close_to_scale(moved.branches[:, 0], out.branches[:, 0], rtol=1e-6)
    assert not np.allclose(moved.branches[:, 2], out.branches[:, 2])


def test_train_mode_updates_every_branch_and_takes_a_mask():
    model = create_model("resnet8", 5, head="linear", network="reslt")
    variables = model.init(jax.random.key(3), IMAGES, train=False)
    mask = jnp.array([True, True, True, False])
    out, updates = model.apply(variables, IMAGES, train=True, mask=mask, mutable=["batch_stats"])
    for k in (1, 2, 3):
        assert not np.allclose(updates["batch_stats"][f"branch{k}_bn"]["mean"], 0.0)
    unmasked, _ = model.apply(variables, IMAGES[:3], train=True, mutable=["batch_stats"])
    assert_close_to_scale(out.logits[:3], unmasked.logits, rtol=1e-5)


def test_networks_that_cannot_be_built_say_why():
    with pytest.raises(ValueError, match="CIFAR ResNets.*model.name=resnet32"):
        create_model("resnet18", 10, head="normed", network="experts")
    with pytest.raises(ValueError, match="unknown network 'twin'"):
        create_model("resnet32", 10, network="twin")
    model = create_model("resnet8", 10, head="linear", network="bilateral")
    with pytest.raises(ValueError, match="'bilateral' \\(BBN\\) or 'causal_norm'"):
        model.init(jax.random.key(0), IMAGES, train=False)


def test_bilateral_resnet2_gives_both_branches_the_pooled_stem():
    model = create_model("resnet2", 4, head="bilateral", network="bilateral")
    variables = model.init(jax.random.key(0), IMAGES, train=False)
    out = model.apply(variables, IMAGES, train=False)
    np.testing.assert_array_equal(out.features[:, :16], out.features[:, 16:])
