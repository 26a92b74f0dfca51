"""Tests of `ltjax.models`: parameter counts, shapes, the option-A shortcut, BatchNorm state, the fast formulations
against the plain ones, heads, bf16.

Speed: on CPU, compiling random-number kernels dominates `init`, so the models are initialised once per module, as
one compiled program with the `rbg` PRNG (several times faster to compile than threefry), then run eagerly; inputs are
drawn by NumPy; the ResNet-50 and the 224 px networks are only traced, with `jax.eval_shape`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from tolerance import assert_close_to_scale

from ltjax.models import (
    MODEL_NAMES,
    BatchNorm,
    CifarResNet,
    Conv,
    CosineClassifierHead,
    LinearHead,
    ModelOutput,
    NormedLinearHead,
    create_model,
    option_a_shortcut,
    residual_relu,
    resnet_cifar,
)
from ltjax.models.convolution import convolve


def make_key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """Standard-normal float32 inputs drawn by NumPy: no random-number kernel to compile per shape."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def uniform(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def initialise(model: nn.Module, images: jax.Array, seed: int = 0):
    """`model.init` compiled as one program, which on CPU takes about half the time of initialising op by op."""
    return jax.jit(lambda key: model.init(key, images, train=False))(make_key(seed))


def num_params(params) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def abstract_variables(model: nn.Module, image_shape: tuple[int, ...]):
    return jax.eval_shape(lambda key: model.init(key, jnp.zeros(image_shape), train=False), make_key(0))


# Parameter counts from the layer shapes, counting what PyTorch counts: conv kernels, BatchNorm scale and bias (the
# running statistics are buffers in PyTorch and `batch_stats` in Flax), the linear head's kernel and bias.
def conv_params(kernel: int, in_channels: int, out_channels: int) -> int:
    return kernel * kernel * in_channels * out_channels


def bn_params(channels: int) -> int:
    return 2 * channels


def linear_params(in_features: int, num_classes: int) -> int:
    return in_features * num_classes + num_classes


def basic_block_params(in_channels: int, channels: int, projection: bool) -> int:
    count = conv_params(3, in_channels, channels) + bn_params(channels)
    count += conv_params(3, channels, channels) + bn_params(channels)
    if projection and in_channels != channels:
        count += conv_params(1, in_channels, channels) + bn_params(channels)
    return count


def cifar_resnet_param_count(num_classes: int, blocks_per_stage: int = 5) -> int:
    count = conv_params(3, 3, 16) + bn_params(16)
    in_channels = 16
    for channels in (16, 32, 64):
        for _ in range(blocks_per_stage):
            count += basic_block_params(in_channels, channels, projection=False)  # option A has no parameters
            in_channels = channels
    return count + linear_params(in_channels, num_classes)


def resnet10_param_count(num_classes: int) -> int:
    count = conv_params(7, 3, 64) + bn_params(64)
    in_channels = 64
    for channels in (64, 128, 256, 512):
        count += basic_block_params(in_channels, channels, projection=True)
        in_channels = channels
    return count + linear_params(512, num_classes)


@pytest.fixture(scope="module")
def resnet32():
    model = create_model("resnet32", num_classes=10)
    images = normal(1, (2, 32, 32, 3))
    variables = initialise(model, images)
    return model, images, variables


@pytest.fixture(scope="module")
def tiny_cifar_resnet():
    """ResNet-8 (one block per stage): the ResNet-32 code path at a quarter of the cost."""
    model = CifarResNet(num_classes=5, blocks_per_stage=(1, 1, 1))
    images = normal(2, (2, 16, 16, 3))
    variables = initialise(model, images)
    return model, images, variables


# --- parameter counts and shapes -------------------------------------------------------------------------------


def test_resnet32_param_count_matches_reference():
    variables = abstract_variables(create_model("resnet32", num_classes=10), (1, 32, 32, 3))
    assert cifar_resnet_param_count(10) == 464_154  # the 0.46M of LDAM-DRW's table, counted from the layers
    assert num_params(variables["params"]) == cifar_resnet_param_count(10)
    variables = abstract_variables(create_model("resnet32", num_classes=100), (1, 32, 32, 3))
    assert num_params(variables["params"]) == cifar_resnet_param_count(100)


@pytest.mark.parametrize("name, blocks_per_stage, feature_dim", [("resnet8", 1, 64), ("resnet2", 0, 16)])
def test_small_cifar_resnets_count_their_layers(name, blocks_per_stage, feature_dim):
    model = create_model(name, num_classes=10)
    variables = abstract_variables(model, (1, 8, 8, 3))
    assert num_params(variables["params"]) == cifar_resnet_param_count(10, blocks_per_stage)
    logits, features = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 8, 8, 3)), train=False), variables)
    assert logits.shape == (1, 10) and features.shape == (1, feature_dim)


@pytest.mark.parametrize(
    "name, expected",
    [("resnet10", resnet10_param_count(1000)), ("resnet18", 11_689_512), ("resnet50", 25_557_032)],
)
def test_imagenet_resnet_param_counts_match_torchvision(name, expected):
    variables = abstract_variables(create_model(name, num_classes=1000), (1, 64, 64, 3))
    assert num_params(variables["params"]) == expected


def test_normed_and_cosine_heads_have_no_bias():
    for head in ("normed", "cosine"):
        variables = abstract_variables(create_model("resnet32", num_classes=10, head=head), (1, 32, 32, 3))
        assert set(variables["params"]["head"]) == {"kernel"}
        assert num_params(variables["params"]) == cifar_resnet_param_count(10) - 10
    variables = abstract_variables(
        create_model("resnet32", num_classes=10, head="cosine", cosine_learnable_scale=True), (1, 32, 32, 3)
    )
    assert set(variables["params"]["head"]) == {"kernel", "root_scale"}


@pytest.mark.parametrize(
    "name, image_shape, small_input, feature_dim, last_stage_size",
    [
        ("resnet18", (1, 224, 224, 3), False, 512, 7),
        ("resnet50", (1, 224, 224, 3), False, 2048, 7),
        ("resnet50", (1, 64, 64, 3), True, 2048, 8),
        ("resnet10", (1, 32, 32, 3), True, 512, 4),
    ],
)
def test_imagenet_resnet_shapes(name, image_shape, small_input, feature_dim, last_stage_size):
    model = create_model(name, num_classes=7, small_input=small_input)
    variables = abstract_variables(model, image_shape)
    (logits, features), intermediates = jax.eval_shape(
        lambda v: model.apply(
            v, jnp.zeros(image_shape), train=False, capture_intermediates=True, mutable=["intermediates"]
        ),
        variables,
    )
    assert logits.shape == (1, 7) and logits.dtype == jnp.float32
    assert features.shape == (1, feature_dim) and features.dtype == jnp.float32
    # The 7x7/2 stem and the max-pool divide 224 by 4, the stages by 8 more; the small-input stem keeps the size.
    last_stage = [k for k in intermediates["intermediates"] if k.startswith("stage4")][-1]
    (last_map,) = intermediates["intermediates"][last_stage]["__call__"]
    assert last_map.shape[1:3] == (last_stage_size, last_stage_size)


def test_resnet32_outputs(resnet32):
    model, images, variables = resnet32
    output = model.apply(variables, images, train=False)
    assert isinstance(output, ModelOutput)
    assert output.logits.shape == (2, 10) and output.logits.dtype == jnp.float32
    assert output.features.shape == (2, 64) and output.features.dtype == jnp.float32
    assert np.all(np.isfinite(output.logits))
    # The features follow a ReLU and an average pool; the head is the model's last step.
    assert np.all(output.features >= 0)
    head = variables["params"]["head"]
    assert_close_to_scale(output.logits, output.features @ head["kernel"] + head["bias"], rtol=1e-5)


def test_resnet10_small_input_forward():
    model = create_model("resnet10", num_classes=3, small_input=True)
    images = normal(3, (1, 32, 32, 3))
    # Under jit: one compilation is cheaper than the op-by-op compilations of an eager run of this size.
    variables = initialise(model, images)
    (logits, features), updates = jax.jit(
        lambda variables: model.apply(variables, images, train=True, mutable=["batch_stats"])
    )(variables)
    assert logits.shape == (1, 3) and features.shape == (1, 512)
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(features))
    assert set(updates) == {"batch_stats"}


def test_create_model_rejects_unknown_names():
    with pytest.raises(ValueError, match="resnet2, resnet8, resnet32, resnet10, resnet18, resnet50"):
        create_model("resnet34", num_classes=10)
    with pytest.raises(ValueError, match="linear, normed, cosine"):
        create_model("resnet32", num_classes=10, head="arcface")
    assert MODEL_NAMES == ("resnet2", "resnet8", "resnet32", "resnet10", "resnet18", "resnet50", "resnet152",
                           "resnext50_32x4d")


# --- initialisation --------------------------------------------------------------------------------------------


def test_init_is_deterministic_given_a_key(resnet32):
    model, images, variables = resnet32
    again = initialise(model, images)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, again)
    other = initialise(model, images, seed=1)
    assert not np.array_equal(other["params"]["stem_conv"]["kernel"], variables["params"]["stem_conv"]["kernel"])
    np.testing.assert_array_equal(
        model.apply(variables, images, train=False).logits, model.apply(again, images, train=False).logits
    )


def test_resnet32_init_follows_reference(resnet32):
    _, _, variables = resnet32
    params = variables["params"]
    # kaiming_normal_ (fan_in, gain sqrt(2)): std sqrt(2 / (9 * 64)) for the 3x3 64->64 convolutions.
    kernels = np.concatenate(
        [np.ravel(params[f"stage3_block{b}"][conv]["kernel"]) for b in range(2, 6) for conv in ("conv1", "conv2")]
    )
    assert np.std(kernels) == pytest.approx(np.sqrt(2 / (9 * 64)), rel=0.03)
    assert np.abs(kernels).max() > 2.5 * np.sqrt(2 / (9 * 64))  # an untruncated normal reaches past 2 std
    # PyTorch's default bias init, uniform(-1/8, 1/8) for 64 features.
    assert np.all(np.abs(params["head"]["bias"]) <= 1 / 8)
    np.testing.assert_array_equal(params["stem_bn"]["scale"], 1.0)
    np.testing.assert_array_equal(params["stem_bn"]["bias"], 0.0)


# --- option-A shortcut -----------------------------------------------------------------------------------------


def test_option_a_shortcut_subsamples_and_pads_channels():
    x = jnp.arange(1 * 4 * 4 * 2, dtype=jnp.float32).reshape(1, 4, 4, 2)
    out = option_a_shortcut(x, out_channels=4, strides=2)
    assert out.shape == (1, 2, 2, 4)
    # Rows and columns 0 and 2 survive; one zero channel on each side, the input channels in the middle.
    expected = np.zeros((1, 2, 2, 4), np.float32)
    for i, row in enumerate((0, 2)):
        for j, col in enumerate((0, 2)):
            expected[0, i, j, 1:3] = np.asarray(x[0, row, col])
    np.testing.assert_array_equal(out, expected)
    assert expected[0, 1, 1, 1] == x[0, 2, 2, 0] == 20.0


def test_option_a_shortcut_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="out_channels=5"):
        option_a_shortcut(jnp.zeros((1, 4, 4, 2)), out_channels=5, strides=2)
    with pytest.raises(ValueError, match="out_channels=1"):
        option_a_shortcut(jnp.zeros((1, 4, 4, 2)), out_channels=1, strides=2)


def test_resnet32_stage_transitions_use_option_a():
    variables = abstract_variables(create_model("resnet32", num_classes=10), (1, 32, 32, 3))
    for stage in (2, 3):
        assert set(variables["params"][f"stage{stage}_block1"]) == {"conv1", "bn1", "conv2", "bn2"}


# --- BatchNorm state -------------------------------------------------------------------------------------------


def test_batch_stats_update_in_train_mode_only(resnet32):
    model, images, variables = resnet32
    _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    # PyTorch momentum 0.1 from a zero running mean: the new mean is 0.1 x the batch mean of the stem conv output.
    stem = nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)
    stem_out = stem.apply({"params": variables["params"]["stem_conv"]}, images)
    np.testing.assert_allclose(
        updates["batch_stats"]["stem_bn"]["mean"], 0.1 * stem_out.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6
    )
    changed = jax.tree_util.tree_map(
        lambda old, new: not np.allclose(old, new), variables["batch_stats"], updates["batch_stats"]
    )
    assert all(jax.tree_util.tree_leaves(changed))  # every BatchNorm's mean and variance moved

    _, eval_updates = model.apply(variables, images, train=False, mutable=["batch_stats"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables["batch_stats"], eval_updates["batch_stats"])


def test_eval_mode_is_per_example(resnet32):
    model, images, variables = resnet32
    _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    trained = {**variables, **updates}
    full = model.apply(trained, images, train=False).logits
    first = model.apply(trained, images[:1], train=False).logits
    # One example alone and within the batch: equal up to the accumulation order, relative to the logits' scale.
    assert_close_to_scale(first[0], full[0], rtol=1e-5)


# --- fast formulations against the plain ones ------------------------------------------------------------------
# `Conv`, `BatchNorm` and `residual_relu` exist for speed (see their docstrings); these tests hold them to what ltjax
# computed before: Flax's Conv and BatchNorm, and `relu(y + shortcut)`.


def flax_batch_norm(train: bool, axis_name, param_dtype, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, param_dtype=param_dtype,
        axis_name=axis_name if train else None, name=name,
    )


def relu_of_sum(y, shortcut):
    return nn.relu(y + shortcut)


def test_residual_relu_equals_relu_of_sum_exactly():
    # Ties (y = -shortcut), signed zeros, a sum one ulp above zero, and random values.
    y = jnp.concatenate([
        jnp.array([-2.0, -1.0, 0.0, -0.0, 0.5, 1e-30, 3.0, 1.0]),
        normal(7, (64,)),
    ])
    shortcut = jnp.concatenate([
        jnp.array([1.0, 1.0, 0.0, 0.0, -0.5, 0.0, -1.0, -1.0 + 2.0**-24]),
        jax.nn.relu(normal(8, (64,))),
    ])
    np.testing.assert_array_equal(residual_relu(y, shortcut), relu_of_sum(y, shortcut))
    weights = jnp.arange(1.0, y.size + 1.0)

    def gradients(fn):
        return jax.grad(lambda a, b: jnp.sum(weights * fn(a, b)), argnums=(0, 1))(y, shortcut)

    for fast, plain in zip(gradients(residual_relu), gradients(relu_of_sum)):
        np.testing.assert_array_equal(fast, plain)


def batch_norm_outputs_and_gradients(module, variables, x, cotangent, axis_name=None):
    """(y, batch_stats, d/dx, d/dparams) of `sum(cotangent * module(x))`, over a vmapped device axis if named."""

    def loss(params, x, cotangent):
        y, updates = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(cotangent * y), (y, updates["batch_stats"])

    def run(x, cotangent):
        (_, (y, stats)), (d_params, d_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            variables["params"], x, cotangent)
        return y, stats, d_x, d_params

    if axis_name is None:
        return run(x, cotangent)
    # Two "devices" with half the batch each; the gradients of the shared parameters are summed over them.
    halves = [a.reshape(2, -1, *a.shape[1:]) for a in (x, cotangent)]
    y, stats, d_x, d_params = jax.vmap(run, axis_name=axis_name)(*halves)
    return (y.reshape(x.shape), jax.tree.map(lambda s: s[0], stats), d_x.reshape(x.shape),
            jax.tree.map(lambda g: g.sum(0), d_params))


@pytest.mark.parametrize("train, axis_name", [(True, None), (True, "devices"), (False, None)])
def test_batch_norm_equals_flax_batch_norm(train, axis_name):
    # Channels with means of a few standard deviations, as convolution outputs have.
    x = 3.0 * normal(90, (8, 5, 5, 6)) + jnp.arange(6.0)
    cotangent = normal(91, x.shape)
    ours = BatchNorm(use_running_average=not train, axis_name=axis_name, momentum=0.9, epsilon=1e-5)
    theirs = flax_batch_norm(train, axis_name, jnp.float32, name=None)
    variables = {
        "params": {"scale": 1.0 + uniform(92, (6,)), "bias": normal(93, (6,))},
        "batch_stats": {"mean": normal(94, (6,)), "var": 1.0 + uniform(95, (6,))},
    }
    structure = jax.tree_util.tree_structure
    assert structure(ours.init(make_key(0), x)) == structure(theirs.init(make_key(0), x)) == structure(variables)
    fast = batch_norm_outputs_and_gradients(ours, variables, x, cotangent, axis_name)
    plain = batch_norm_outputs_and_gradients(theirs, variables, x, cotangent, axis_name)
    for fast_leaf, plain_leaf in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(plain)):
        assert_close_to_scale(fast_leaf, plain_leaf, rtol=1e-5)


def conv_outputs_and_gradients(module, variables, x, cotangent):
    def loss(params, x):
        y = module.apply({"params": params}, x)
        return jnp.sum(cotangent * y.astype(jnp.float32)), y

    (_, y), gradients = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], x)
    return y, gradients


@pytest.mark.parametrize(
    "batch, strides, dtype",
    [(48, 1, jnp.float32), (48, 2, jnp.float32), (5, 1, jnp.float32), (32, 1, jnp.bfloat16)],
)
def test_conv_equals_flax_conv(batch, strides, dtype):
    # Batches of 48 and 32 take the chunked kernel gradient (16-example chunks); 5 does not divide and takes one.
    x = normal(110, (batch, 8, 8, 4))
    cotangent = normal(111, (batch, 8 // strides, 8 // strides, 6))
    padding = ((1, 1), (1, 1))
    ours = Conv(6, (3, 3), strides, padding, dtype=dtype)
    theirs = nn.Conv(6, (3, 3), strides, padding=padding, use_bias=False, dtype=dtype)
    variables = theirs.init(make_key(11), x)
    assert jax.tree_util.tree_structure(ours.init(make_key(11), x)) == jax.tree_util.tree_structure(variables)
    (fast_y, fast_gradients), (plain_y, plain_gradients) = (
        jax.jit(functools.partial(conv_outputs_and_gradients, module))(variables, x, cotangent)
        for module in (ours, theirs)
    )
    assert fast_y.dtype == plain_y.dtype == dtype
    np.testing.assert_array_equal(fast_y, plain_y)
    rtol = 1e-5 if dtype == jnp.float32 else 2e-2
    fast_leaves, plain_leaves = jax.tree_util.tree_leaves(fast_gradients), jax.tree_util.tree_leaves(plain_gradients)
    for fast_leaf, plain_leaf in zip(fast_leaves, plain_leaves):
        assert_close_to_scale(fast_leaf, plain_leaf, rtol=rtol)


@pytest.mark.parametrize("shared_input", [False, True])
def test_conv_under_vmap_equals_each_member(shared_input):
    # Ensembles vmap the convolution over kernels (and over inputs when training): on CPU it runs one convolution
    # per member; each member's output and gradients are those of its own single convolution.
    members = 3
    x = normal(130, (4, 8, 8, 4) if shared_input else (members, 4, 8, 8, 4))
    cotangent = normal(131, (members, 4, 8, 8, 6))
    kernels = normal(132, (members, 3, 3, 4, 6))
    padding = ((1, 1), (1, 1))

    def output_and_gradients(x, kernel, cotangent):
        y, vjp = jax.vjp(lambda x, kernel: convolve(x, kernel, (1, 1), padding), x, kernel)
        return y, vjp(cotangent)

    batched = jax.jit(jax.vmap(output_and_gradients, in_axes=(None if shared_input else 0, 0, 0)))(
        x, kernels, cotangent)
    for member in range(members):
        single = output_and_gradients(x if shared_input else x[member], kernels[member], cotangent[member])
        for batched_leaf, single_leaf in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single)):
            assert_close_to_scale(batched_leaf[member], single_leaf, rtol=1e-5)


def test_cifar_resnet_equals_plain_formulation(tiny_cifar_resnet, monkeypatch):
    model, _, variables = tiny_cifar_resnet
    images = normal(12, (32, 16, 16, 3))  # two chunks of the kernel gradient
    weights = normal(10, (32, 5))

    def outputs_and_gradients():
        def loss(params):
            (logits, features), updates = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True,
                mutable=["batch_stats"],
            )
            return jnp.sum(weights * logits) + jnp.sum(features), (logits, features, updates)

        # Traced afresh on each call, so the module functions patched below take effect.
        return jax.jit(jax.grad(loss, has_aux=True))(variables["params"])

    fast = outputs_and_gradients()
    monkeypatch.setattr(resnet_cifar, "conv3x3", functools.partial(
        nn.Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)), use_bias=False,
        kernel_init=resnet_cifar.kaiming_normal_fan_in))
    monkeypatch.setattr(resnet_cifar, "batch_norm", flax_batch_norm)
    monkeypatch.setattr(resnet_cifar, "residual_relu", relu_of_sum)
    plain = outputs_and_gradients()
    assert jax.tree_util.tree_structure(fast) == jax.tree_util.tree_structure(plain)
    for fast_leaf, plain_leaf in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(plain)):
        assert_close_to_scale(fast_leaf, plain_leaf, rtol=1e-4)


# --- heads -----------------------------------------------------------------------------------------------------


def test_normed_head_gives_cosines():
    head = NormedLinearHead(num_classes=6)
    features = 50.0 * normal(4, (8, 5))
    params = head.init(make_key(0), features)
    cosines = head.apply(params, features)
    assert np.all(np.abs(cosines) <= 1.0 + 1e-6)
    kernel = np.asarray(params["params"]["kernel"])
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-6)  # unit columns at init
    unit_features = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(cosines, unit_features @ kernel, rtol=1e-5, atol=1e-6)
    # The kernel's scale does not matter.
    scaled = head.apply({"params": {"kernel": 7.0 * kernel}}, features)
    np.testing.assert_allclose(scaled, cosines, rtol=1e-5, atol=1e-6)


def test_cosine_head_matches_formula_and_ignores_weight_scale():
    head = CosineClassifierHead(num_classes=4)
    features = normal(5, (3, 6)) * jnp.array([[0.1], [1.0], [10.0]])
    params = head.init(make_key(0), features)
    kernel = np.asarray(params["params"]["kernel"])
    logits = head.apply(params, features)
    x = np.asarray(features, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    cosines = (x / norms) @ (kernel / np.linalg.norm(kernel, axis=0))
    np.testing.assert_allclose(logits, 16.0 * norms / (1 + norms) * cosines, rtol=1e-5, atol=1e-6)
    column_scales = np.array([0.01, 1.0, 3.0, 100.0], np.float32)
    rescaled = head.apply({"params": {"kernel": kernel * column_scales}}, features)
    np.testing.assert_allclose(rescaled, logits, rtol=1e-5, atol=1e-6)


def test_cosine_head_learnable_scale_starts_at_25():
    features = normal(6, (2, 6))
    fixed = CosineClassifierHead(num_classes=4)
    learnable = CosineClassifierHead(num_classes=4, learnable_scale=True)
    params = learnable.init(make_key(0), features)
    assert params["params"]["root_scale"] == 5.0
    kernel_only = {"params": {"kernel": params["params"]["kernel"]}}
    np.testing.assert_allclose(
        learnable.apply(params, features), 25.0 / 16.0 * fixed.apply(kernel_only, features), rtol=1e-6
    )


@pytest.mark.parametrize("head", [LinearHead(3), NormedLinearHead(3), CosineClassifierHead(3)])
def test_heads_have_finite_gradients_at_zero_features(head):
    zeros = jnp.zeros((2, 5))
    params = head.init(make_key(0), jnp.ones((2, 5)))

    def loss(params, features):
        return jnp.sum(head.apply(params, features) * jnp.arange(3.0))

    params_grad, features_grad = jax.grad(loss, argnums=(0, 1))(params, zeros)
    assert np.all(np.isfinite(head.apply(params, zeros)))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(params_grad))
    assert np.all(np.isfinite(features_grad))


def test_cosine_head_gradient_at_zero_is_scaled_unit_weights():
    head = CosineClassifierHead(num_classes=3)
    params = head.init(make_key(0), jnp.ones((1, 5)))
    kernel = np.asarray(params["params"]["kernel"])
    grad = jax.grad(lambda x: head.apply(params, x)[0, 1])(jnp.zeros((1, 5)))
    np.testing.assert_allclose(grad[0], 16.0 * kernel[:, 1] / np.linalg.norm(kernel[:, 1]), rtol=1e-5)


# --- mixed precision -------------------------------------------------------------------------------------------


def test_bfloat16_compute_keeps_float32_params_state_and_logits(tiny_cifar_resnet):
    model, images, variables = tiny_cifar_resnet
    bf16_model = model.clone(dtype=jnp.bfloat16)
    bf16_variables = abstract_variables(bf16_model, images.shape)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(bf16_variables)} == {jnp.dtype(jnp.float32)}
    assert jax.tree_util.tree_structure(bf16_variables) == jax.tree_util.tree_structure(variables)

    (logits, features), updates = bf16_model.apply(variables, images, train=True, mutable=["batch_stats"])
    assert logits.dtype == jnp.float32 and features.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(updates)} == {jnp.dtype(jnp.float32)}
    reference_logits = model.apply(variables, images, train=True, mutable=["batch_stats"])[0].logits
    np.testing.assert_allclose(logits, reference_logits, rtol=0.1, atol=0.1)
    _, intermediates = jax.eval_shape(
        lambda v: bf16_model.apply(v, images, train=False, capture_intermediates=True, mutable=["intermediates"]),
        variables,
    )
    (stem_conv_output,) = intermediates["intermediates"]["stem_conv"]["__call__"]
    assert stem_conv_output.dtype == jnp.bfloat16
