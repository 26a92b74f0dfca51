"""Tests of `ltjax.models.pretrained` (torchvision weights into ltjax's ResNets) and of the two architectures added
for it, ResNet-152 and ResNeXt-50 32x4d.

The first part needs no torch (CI has none): checkpoints in torchvision's naming are built from ltjax's own parameter
tree, with random values, and written by the small safetensors writer below; the names are checked against
torchvision's ResNet-18 layout written out by hand. The second part, where torch and torchvision are installed,
loads randomly initialised torchvision networks saved as `.pth` and `.safetensors` and compares their outputs.

Speed: the networks are only traced (`jax.eval_shape`) where their shapes suffice; values are drawn by NumPy.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util
from tolerance import assert_close_to_scale

from ltjax.models import ResNet, create_model
from ltjax.models.convolution import Conv
from ltjax.models.pretrained import (
    TORCHVISION_MODELS_DOCS,
    PretrainedWeightsError,
    load_torchvision_weights,
    read_safetensors,
)
from ltjax.models.resnet import BasicBlock

CLASSES = 5
_SAFETENSORS_NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                      np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}
_BATCH_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def write_safetensors(path: pathlib.Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """The safetensors format as published: u64 little-endian header length, JSON header (padded with spaces to 8
    bytes), the tensors' little-endian bytes back to back."""
    assert sys.byteorder == "little", "this writer copies native bytes"
    header, chunks, offset = ({"__metadata__": metadata} if metadata else {}), [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": _SAFETENSORS_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + b"".join(chunks))


def abstract_variables(name: str, num_classes: int = CLASSES, **kwargs):
    model = create_model(name, num_classes, **kwargs)
    return jax.eval_shape(lambda key: model.init(key, jnp.zeros((1, 64, 64, 3)), train=False), jax.random.key(0))


def random_variables(name: str, seed: int, num_classes: int = CLASSES, **kwargs) -> dict:
    """`{"params", "batch_stats"}` of the model `name`, drawn by NumPy (positive variances)."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(abstract_variables(name, num_classes, **kwargs))
    values = {key: rng.standard_normal(leaf.shape, np.float32) for key, leaf in flat.items()}
    values = {key: np.abs(value) + 0.5 if key[-1] == "var" else value for key, value in values.items()}
    return traverse_util.unflatten_dict(values)


def torchvision_name(key: tuple[str, ...]) -> str:
    """torchvision's name of an ltjax variable, by rewriting its path (an independent statement of the mapping)."""
    dotted = ".".join(key[1:])
    for pattern, replacement in ((r"^stem_conv\.", "conv1."), (r"^stem_bn\.", "bn1."), (r"^head\.", "fc."),
                                 (r"downsample_conv", "downsample.0"), (r"downsample_bn", "downsample.1"),
                                 (r"\.(kernel|scale)$", ".weight"), (r"\.mean$", ".running_mean"),
                                 (r"\.var$", ".running_var")):
        dotted = re.sub(pattern, replacement, dotted)
    return re.sub(r"stage(\d)_block(\d)", lambda match: f"layer{match[1]}.{int(match[2]) - 1}", dotted)


def torchvision_state_dict(variables: dict) -> dict[str, np.ndarray]:
    """`variables` as torchvision stores them: OIHW convolutions, `[C, D]` classifier, `num_batches_tracked`."""
    state = {}
    for key, value in traverse_util.flatten_dict(variables).items():
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        elif value.ndim == 2:
            value = value.T
        state[torchvision_name(key)] = np.ascontiguousarray(value)
    for name in [name for name in state if name.endswith(".running_mean")]:
        state[name.replace("running_mean", "num_batches_tracked")] = np.array(7, np.int64)
    return state


def resnet18_names() -> list[str]:
    """torchvision's `resnet18().state_dict()` keys, written from its layout."""
    names = ["conv1.weight", *(f"bn1.{buffer}" for buffer in _BATCH_NORM)]
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            for index in (1, 2):
                names += [f"{prefix}.conv{index}.weight", *(f"{prefix}.bn{index}.{b}" for b in _BATCH_NORM)]
            if layer > 1 and block == 0:
                names += [f"{prefix}.downsample.0.weight", *(f"{prefix}.downsample.1.{b}" for b in _BATCH_NORM)]
    return names + ["fc.weight", "fc.bias"]


def assert_trees_equal(actual, expected) -> None:
    actual, expected = traverse_util.flatten_dict(actual), traverse_util.flatten_dict(expected)
    assert set(actual) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.asarray(actual[key]), np.asarray(value), err_msg="/".join(key))


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    """(path, torchvision state dict, the ltjax variables it holds, other variables to load into)."""
    source = random_variables("resnet18", seed=1)
    state = torchvision_state_dict(source)
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    write_safetensors(path, state, metadata={"format": "pt"})
    return path, state, source, random_variables("resnet18", seed=2)


def rewritten(tmp_path: pathlib.Path, state: dict, name: str = "edited.safetensors", **changes) -> pathlib.Path:
    """`state` with `changes` (name -> array, or None to drop it), written to `tmp_path / name`."""
    edited = {key: value for key, value in state.items() if changes.get(key, value) is not None}
    edited.update({key: value for key, value in changes.items() if value is not None})
    write_safetensors(tmp_path / name, edited)
    return tmp_path / name


# --- the architectures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [("resnet152", 60_192_808), ("resnext50_32x4d", 25_028_904),
                                            ("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_param_counts_match_torchvision(name, expected):
    params = abstract_variables(name, num_classes=1000)["params"]
    assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params)) == expected


def test_resnext_convolutions_are_grouped_and_twice_as_wide():
    params = abstract_variables("resnext50_32x4d")["params"]
    # 32 groups of 4 channels at the first stage, 32 x 32 at the last; the block outputs stay ResNet-50's.
    assert params["stage1_block1"]["conv2"]["kernel"].shape == (3, 3, 4, 128)
    assert params["stage4_block1"]["conv2"]["kernel"].shape == (3, 3, 32, 1024)
    assert params["stage4_block3"]["conv3"]["kernel"].shape == (1, 1, 1024, 2048)
    assert len([key for key in abstract_variables("resnet152")["params"] if key.startswith("stage3_")]) == 36


def test_basic_block_has_no_grouped_form():
    model = ResNet(num_classes=2, stage_sizes=(1, 1, 1, 1), block=BasicBlock, groups=32, width_per_group=4)
    with pytest.raises(ValueError, match="BasicBlock has no grouped form"):
        jax.eval_shape(lambda key: model.init(key, jnp.zeros((1, 32, 32, 3)), train=False), jax.random.key(0))


def test_grouped_convolution_is_a_convolution_per_group():
    groups, batch = 4, 32  # 32 examples: two chunks of the CPU kernel gradient
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((batch, 6, 6, 8), np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, 2, 12), np.float32))
    cotangent = jnp.asarray(rng.standard_normal((batch, 6, 6, 12), np.float32))
    conv = Conv(12, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=groups)

    def grouped(x, kernel):
        return conv.apply({"params": {"kernel": kernel}}, x)

    def per_group(x, kernel):
        outputs = [jax.lax.conv_general_dilated(x[..., 2 * g:2 * g + 2], kernel[..., 3 * g:3 * g + 3], (1, 1),
                                                ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
                   for g in range(groups)]
        return jnp.concatenate(outputs, axis=-1)

    actual, actual_vjp = jax.vjp(grouped, x, kernel)
    expected, expected_vjp = jax.vjp(per_group, x, kernel)
    assert_close_to_scale(actual, expected, rtol=1e-5)
    for actual_gradient, expected_gradient in zip(actual_vjp(cotangent), expected_vjp(cotangent)):
        assert_close_to_scale(actual_gradient, expected_gradient, rtol=1e-5)
    with pytest.raises(ValueError, match="feature_group_count=4 must divide the input channels"):
        conv.init(jax.random.key(0), jnp.zeros((1, 6, 6, 6)))


# --- the safetensors reader ----------------------------------------------------------------------------------------


def test_safetensors_reader_reads_every_dtype(tmp_path):
    rng = np.random.default_rng(4)
    tensors = {"f32": rng.standard_normal((2, 3), np.float32), "f64": rng.standard_normal((4,)),
               "f16": rng.standard_normal((3, 1, 2)).astype(np.float16),
               "bf16": rng.standard_normal((5,)).astype(ml_dtypes.bfloat16),
               "i64": np.array(-3, np.int64), "empty": np.zeros((0, 3), np.float32)}
    write_safetensors(tmp_path / "t.safetensors", tensors, metadata={"note": "metadata is skipped"})
    read = read_safetensors(tmp_path / "t.safetensors")
    assert set(read) == set(tensors)
    for name, tensor in tensors.items():
        assert read[name].dtype == tensor.dtype and read[name].shape == tensor.shape, name
        assert read[name].tobytes() == tensor.tobytes(), name


def test_safetensors_reader_names_what_is_wrong(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"a.weight": np.ones((2, 2), np.float32), "b.mask": np.ones(3, np.uint8)})
    with pytest.raises(PretrainedWeightsError, match=r"'b\.mask' has dtype U8; ltjax reads F64, F32, F16, BF16"):
        read_safetensors(path)
    write_safetensors(path, {"a.weight": np.ones((2, 2), np.float32), "b.bias": np.ones(3, np.float32)})
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:-2])
    with pytest.raises(PretrainedWeightsError, match=r"tensor 'b\.bias' has shape \[3\] and data_offsets \[16, 28\], "
                                                     "outside the file's 26 bytes"):
        read_safetensors(tmp_path / "cut.safetensors")
    header = {"a.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}
    encoded = json.dumps(header).encode()
    (tmp_path / "short.safetensors").write_bytes(len(encoded).to_bytes(8, "little") + encoded + bytes(16))
    with pytest.raises(PretrainedWeightsError, match=r"'a\.weight' \(F32, shape \[2, 3\]\) needs 24 bytes, its "
                                                     "data_offsets span 16"):
        read_safetensors(tmp_path / "short.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04\x95" + bytes(40))
    with pytest.raises(PretrainedWeightsError, match="not a safetensors file, or is truncated"):
        read_safetensors(tmp_path / "pickle.safetensors")


# --- loading: values ---------------------------------------------------------------------------------------------


def test_every_tensor_is_converted_and_the_classifier_reinitialised(resnet18_checkpoint):
    path, state, source, target = resnet18_checkpoint
    assert sorted(state) == sorted(resnet18_names())
    loaded, provenance = load_torchvision_weights(path, target)
    expected = {"params": {**source["params"], "head": target["params"]["head"]}, "batch_stats": source["batch_stats"]}
    assert_trees_equal(loaded, expected)
    # The layouts by hand: an OIHW weight at [o, i, h, w] is the HWIO kernel at [h, w, i, o] (h != w).
    kernel = np.asarray(loaded["params"]["stage2_block1"]["conv2"]["kernel"])
    assert kernel[0, 2, 5, 7] == state["layer2.0.conv2.weight"][7, 5, 0, 2]
    assert np.asarray(loaded["params"]["stem_conv"]["kernel"])[1, 6, 2, 9] == state["conv1.weight"][9, 2, 1, 6]
    assert np.asarray(loaded["params"]["stage3_block1"]["downsample_conv"]["kernel"]).shape == (1, 1, 128, 256)
    np.testing.assert_array_equal(loaded["params"]["stage4_block2"]["bn1"]["scale"], state["layer4.1.bn1.weight"])
    np.testing.assert_array_equal(loaded["batch_stats"]["stem_bn"]["mean"], state["bn1.running_mean"])
    np.testing.assert_array_equal(loaded["batch_stats"]["stage3_block1"]["downsample_bn"]["var"],
                                  state["layer3.0.downsample.1.running_var"])
    backbone = {key: leaf for key, leaf in loaded["params"].items() if key != "head"}
    assert all(isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(backbone))

    assert provenance.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (provenance.path, provenance.format, provenance.architecture) == (str(path), "safetensors", "resnet18")
    assert provenance.loaded["layer1.1.bn2.running_var"] == "batch_stats/stage1_block2/bn2/var"
    assert set(provenance.loaded) == {name for name in state if not name.startswith("fc.")
                                      and not name.endswith("num_batches_tracked")}
    assert provenance.reinitialised == ("params/head/bias", "params/head/kernel")
    assert set(provenance.ignored) == {"fc.weight", "fc.bias"} | {n for n in state if n.endswith("batches_tracked")}
    assert json.loads(json.dumps(dataclasses.asdict(provenance)))["loaded"] == provenance.loaded


def test_keep_classifier_loads_fc_transposed(resnet18_checkpoint):
    path, state, source, target = resnet18_checkpoint
    loaded, provenance = load_torchvision_weights(path, target, keep_classifier=True)
    assert_trees_equal(loaded, source)
    head = loaded["params"]["head"]
    assert head["kernel"].shape == (512, CLASSES) and float(head["kernel"][3, 1]) == state["fc.weight"][1, 3]
    np.testing.assert_array_equal(head["bias"], state["fc.bias"])
    assert provenance.reinitialised == ()
    assert provenance.loaded["fc.weight"] == "params/head/kernel"


def test_half_precision_checkpoints_and_data_parallel_names_load(resnet18_checkpoint, tmp_path):
    path, state, source, target = resnet18_checkpoint
    halved = {f"module.{name}": value.astype(ml_dtypes.bfloat16) if value.dtype == np.float32 else value
              for name, value in state.items()}
    write_safetensors(tmp_path / "bf16.safetensors", halved)
    loaded, provenance = load_torchvision_weights(tmp_path / "bf16.safetensors", target)
    kernel = loaded["params"]["stage1_block1"]["conv1"]["kernel"]
    assert kernel.dtype == jnp.float32
    np.testing.assert_array_equal(kernel, source["params"]["stage1_block1"]["conv1"]["kernel"]
                                  .astype(ml_dtypes.bfloat16).astype(np.float32))
    assert "layer1.0.conv1.weight" in provenance.loaded


# --- loading: errors -----------------------------------------------------------------------------------------------


def test_a_missing_file_says_where_torchvision_publishes_the_weights(tmp_path):
    for name, weights in (("resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
                          ("resnext50_32x4d", "ResNeXt50_32X4D_Weights.IMAGENET1K_V1")):
        with pytest.raises(FileNotFoundError) as error:
            load_torchvision_weights(tmp_path / "absent.pth", abstract_variables(name))
        message = str(error.value)
        assert str(tmp_path / "absent.pth") in message and weights in message
        assert TORCHVISION_MODELS_DOCS in message and "--config.model.pretrained=PATH" in message
    with pytest.raises(FileNotFoundError, match="torchvision publishes no resnet10 weights"):
        load_torchvision_weights(tmp_path / "absent.pth", abstract_variables("resnet10"))


def test_missing_unexpected_and_misshapen_tensors_are_named(resnet18_checkpoint, tmp_path):
    path, state, _, target = resnet18_checkpoint
    edited = rewritten(tmp_path, state, **{"layer3.1.bn2.running_var": None})
    with pytest.raises(PretrainedWeightsError, match=r"lacks 1 tensor\(s\) the model needs: "
                                                     r"layer3\.1\.bn2\.running_var "
                                                     r"\(for batch_stats/stage3_block2/bn2/var \(256,\)\)"):
        load_torchvision_weights(edited, target)
    edited = rewritten(tmp_path, state, **{"fc2.weight": np.ones((3, 4), np.float32)})
    with pytest.raises(PretrainedWeightsError, match=r"1 tensor\(s\) the model has no place for: fc2\.weight \(3, 4\)"):
        load_torchvision_weights(edited, target)
    edited = rewritten(tmp_path, state, **{"layer2.0.conv1.weight": np.ones((128, 64, 1, 1), np.float32)})
    with pytest.raises(PretrainedWeightsError, match=r"tensor layer2\.0\.conv1\.weight has shape \(128, 64, 1, 1\), "
                                                     r"but the model's params/stage2_block1/conv1/kernel "
                                                     r"\(3, 3, 64, 128\) needs \(128, 64, 3, 3\)"):
        load_torchvision_weights(edited, target)
    edited = rewritten(tmp_path, state, **{"layer1.0.bn1.bias": np.ones(64, np.int64)})
    with pytest.raises(PretrainedWeightsError, match=r"layer1\.0\.bn1\.bias has dtype int64"):
        load_torchvision_weights(edited, target)
    with pytest.raises(PretrainedWeightsError, match=r"small_input=True has a 3x3 stem"):
        load_torchvision_weights(path, abstract_variables("resnet18", small_input=True))


def test_another_architecture_is_named(resnet18_checkpoint, tmp_path):
    path, state, _, target = resnet18_checkpoint
    with pytest.raises(PretrainedWeightsError, match=r"holds resnet18 \(BasicBlocks \[2, 2, 2, 2\].*but the model is "
                                                     r"resnet10 \(BasicBlocks \[1, 1, 1, 1\].*model\.name=resnet18"):
        load_torchvision_weights(path, abstract_variables("resnet10"))
    # ResNet-50 and ResNeXt-50 differ only in their 3x3 convolutions' width and groups; other tensors do not matter.
    resnext = {torchvision_name(key): np.zeros(1, np.float32)
               for key in traverse_util.flatten_dict(abstract_variables("resnext50_32x4d"))}
    resnext["layer1.0.conv2.weight"] = np.zeros((128, 4, 3, 3), np.float32)
    edited = rewritten(tmp_path, resnext, name="resnext.safetensors")
    with pytest.raises(PretrainedWeightsError, match=r"holds resnext50_32x4d \(Bottlenecks \[3, 4, 6, 3\], first 3x3 "
                                                     r"convolution 128 channels in 32 group\(s\)\), but the model is "
                                                     r"resnet50 .*64 channels in 1 group"):
        load_torchvision_weights(edited, abstract_variables("resnet50"))
    extra_block = {"layer3.2.conv1.weight": state["layer3.1.conv1.weight"]}
    deeper = rewritten(tmp_path, state, name="deeper.safetensors", **extra_block)
    with pytest.raises(PretrainedWeightsError, match=r"an unknown ResNet \(BasicBlocks \[2, 2, 3, 2\].*ltjax builds no "
                                                     "such network"):
        load_torchvision_weights(deeper, target)
    with pytest.raises(PretrainedWeightsError, match="not those of a torchvision-layout ResNet"):
        load_torchvision_weights(path, abstract_variables("resnet8"))


def test_keep_classifier_needs_the_same_classes_and_a_linear_head(resnet18_checkpoint):
    path, _, _, _ = resnet18_checkpoint
    with pytest.raises(PretrainedWeightsError, match=r"fc\.weight is \(5, 512\) \(5 classes\), the model's "
                                                     r"head/kernel \(512, 7\) \(7 classes\).*keep_classifier=false"):
        load_torchvision_weights(path, abstract_variables("resnet18", num_classes=7), keep_classifier=True)
    with pytest.raises(PretrainedWeightsError, match="this model's head has kernel: build it with head='linear'"):
        load_torchvision_weights(path, abstract_variables("resnet18", head="normed"), keep_classifier=True)
    # Re-initialised, any head and any number of classes take the backbone.
    loaded, _ = load_torchvision_weights(path, random_variables("resnet18", seed=3, num_classes=7, head="normed"))
    assert loaded["params"]["head"]["kernel"].shape == (512, 7)


def test_an_unknown_format_is_named(resnet18_checkpoint, tmp_path):
    path, _, _, target = resnet18_checkpoint
    (tmp_path / "weights.npz").write_bytes(path.read_bytes())
    with pytest.raises(PretrainedWeightsError, match=r"unknown checkpoint format '\.npz'; ltjax reads \.safetensors "
                                                     r"and PyTorch's \.pth, \.pt"):
        load_torchvision_weights(tmp_path / "weights.npz", target)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed here")
def test_a_pytorch_checkpoint_without_torch_names_the_extra(resnet18_checkpoint, tmp_path):
    path, _, _, target = resnet18_checkpoint
    (tmp_path / "weights.pth").write_bytes(path.read_bytes())
    with pytest.raises(ImportError, match=r"needs torch, which is not installed: pip install 'ltjax\[bench\]'"):
        load_torchvision_weights(tmp_path / "weights.pth", target)


# --- against torchvision, where torch is installed ---------------------------------------------------------------

# ltjax's outputs (float32) agree with torchvision's in float64 to RTOL of their largest magnitude (measured: at most
# 2.4e-6 in evaluation), or to FLOAT32_FACTOR times PyTorch's own float32 error where that is larger: train-mode
# BatchNorm over the last stage's 8 values per channel (batch 2 at 64 px) amplifies rounding, in PyTorch itself to
# 2.1e-3 of ResNet-152's features (ltjax: 3.0e-3; at most 2.6 times PyTorch's error over the four networks).
RTOL = 2e-5
FLOAT32_FACTOR = 6


@pytest.fixture(scope="module")
def torchvision():
    pytest.importorskip("torch")
    return pytest.importorskip("torchvision")


def batch_norms(network) -> dict:
    import torch

    return {name: module for name, module in network.named_modules() if isinstance(module, torch.nn.BatchNorm2d)}


def randomise_batch_norm(network, images: np.ndarray, seed: int) -> None:
    """Random BatchNorm parameters, and running statistics near those of `images`' activations but not equal to them,
    so that evaluation depends on every one of them while its outputs keep the scale of the inputs."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    modules = batch_norms(network).values()
    with torch.no_grad():
        for module in modules:
            module.weight.copy_(0.5 + torch.rand(module.num_features, generator=generator))
            module.bias.copy_(0.2 * torch.randn(module.num_features, generator=generator))
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: after one batch, that batch's statistics
        torch_outputs(network.train(), images)
        for module in modules:
            module.momentum = 0.1
            spread = module.running_var.sqrt()
            module.running_mean.add_(0.3 * spread * torch.randn(module.num_features, generator=generator))
            module.running_var.mul_(0.5 + torch.rand(module.num_features, generator=generator))


def torch_outputs(network, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) of a torchvision ResNet on NHWC `images`, computed in the network's dtype, as float64."""
    import torch

    captured = {}
    hook = network.fc.register_forward_hook(lambda module, inputs, output: captured.update(features=inputs[0]))
    dtype = network.fc.weight.dtype
    with torch.no_grad():
        logits = network(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(dtype))
    hook.remove()
    return logits.double().numpy(), captured["features"].double().numpy()


def assert_as_close_as_float32_allows(actual, reference, float32) -> None:
    """`actual` (ltjax, float32) against the float64 `reference`, as close as PyTorch's `float32` result is."""
    reference = np.asarray(reference, np.float64)
    scale = float(np.max(np.abs(reference)))
    float32_error = float(np.max(np.abs(np.asarray(float32, np.float64) - reference))) / scale
    assert_close_to_scale(actual, reference, rtol=max(RTOL, FLOAT32_FACTOR * float32_error))


def test_resnet18_names_are_torchvisions(torchvision):
    assert list(torchvision.models.resnet18().state_dict()) == resnet18_names()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet152", "resnext50_32x4d"])
def test_torchvision_networks_compute_the_same_in_ltjax(name, torchvision, tmp_path):
    import torch

    rng = np.random.default_rng(5)
    images, calibration = (rng.standard_normal((2, 64, 64, 3), np.float32) for _ in range(2))
    torch.manual_seed(0)
    network = getattr(torchvision.models, name)(num_classes=CLASSES)
    randomise_batch_norm(network, calibration, seed=1)
    state = {key: value.clone() for key, value in network.state_dict().items()}  # a copy: training updates it
    torch.save(state, tmp_path / "weights.pth")
    write_safetensors(tmp_path / "weights.safetensors", {key: value.numpy() for key, value in state.items()})
    template = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract_variables(name))
    variables, provenance = load_torchvision_weights(tmp_path / "weights.pth", template, keep_classifier=True)
    from_safetensors, _ = load_torchvision_weights(tmp_path / "weights.safetensors", template, keep_classifier=True)
    assert_trees_equal(from_safetensors, variables)
    assert provenance.format == "pytorch" and provenance.architecture == name
    model = create_model(name, CLASSES)
    reference = copy.deepcopy(network).double()

    ltjax_outputs = jax.jit(lambda variables: model.apply(variables, images, train=False))(variables)
    for actual, expected, float32 in zip(ltjax_outputs, torch_outputs(reference.eval(), images),
                                         torch_outputs(network.eval(), images)):
        assert_as_close_as_float32_allows(actual, expected, float32)

    # One train-mode step: batch statistics, and the running averages they update.
    elements = {}
    for module_name, module in batch_norms(network).items():
        module.register_forward_hook(lambda module, inputs, output, module_name=module_name: elements.update(
            {module_name: inputs[0].numel() // inputs[0].shape[1]}))
    ltjax_outputs, updates = jax.jit(
        lambda variables: model.apply(variables, images, train=True, mutable=["batch_stats"]))(variables)
    for actual, expected, float32 in zip(ltjax_outputs, torch_outputs(reference.train(), images),
                                         torch_outputs(network.train(), images)):
        assert_as_close_as_float32_allows(actual, expected, float32)
    updated = traverse_util.flatten_dict(updates["batch_stats"])
    after, after_float32 = reference.state_dict(), network.state_dict()
    for torch_name, ltjax_name in provenance.loaded.items():
        if ltjax_name.startswith("batch_stats/"):
            old, new, new_float32 = (tensors[torch_name].numpy().astype(np.float64)
                                     for tensors in (state, after, after_float32))
            if torch_name.endswith("running_var"):
                # PyTorch adds 0.1 of the unbiased batch variance, ltjax 0.1 of the biased one, (n - 1) / n of it.
                n = elements[torch_name.rsplit(".", 1)[0]]
                new, new_float32 = (0.9 * old + (value - 0.9 * old) * (n - 1) / n for value in (new, new_float32))
            assert_as_close_as_float32_allows(updated[tuple(ltjax_name.split("/")[1:])], new, new_float32)


def test_nested_and_data_parallel_pytorch_checkpoints_load(resnet18_checkpoint, torchvision, tmp_path):
    import torch

    path, state, source, target = resnet18_checkpoint
    tensors = {name: torch.from_numpy(value) for name, value in state.items()}
    for wrapped in ({"state_dict": tensors, "epoch": 3}, {"model": {f"module.{k}": v for k, v in tensors.items()}}):
        torch.save(wrapped, tmp_path / "nested.pt")
        loaded, provenance = load_torchvision_weights(tmp_path / "nested.pt", target, keep_classifier=True)
        assert_trees_equal(loaded, source)
        assert provenance.format == "pytorch"


class _Hostile:
    """Pickles as a call of `os.system`: what `torch.load(weights_only=False)` would run."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(resnet18_checkpoint, torchvision, tmp_path):
    import torch

    _, _, _, target = resnet18_checkpoint
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Hostile(marker)}, tmp_path / "hostile.pth")
    assert not marker.exists()
    with pytest.raises(PretrainedWeightsError, match=r"refused .*hostile\.pth: it is not a plain checkpoint of "
                                                     r"tensors, and torch\.load\(weights_only=True\) does not run"
                       ) as error:
        load_torchvision_weights(tmp_path / "hostile.pth", target)
    assert "system" in str(error.value) and "weights_only=False" not in str(error.value)  # what, not how to run it
    assert not marker.exists()


# --- a run that starts from pretrained weights ----------------------------------------------------------------------


def test_a_run_starts_from_the_checkpoint_and_records_its_sha256(resnet18_checkpoint, tmp_path):
    """`--config.model.pretrained`: the backbone and BatchNorm statistics come from the file (the 7x7 stem kept on
    small images), the classifier is the run's own; the workdir's `pretrained.json` names the file's SHA-256."""
    from runs import digits_config

    from ltjax.data.augment import Normalization
    from ltjax.train.build import DataSpec, build
    from ltjax.train.loop import train_and_evaluate
    from ltjax.train.stages import start_from_pretrained

    path, _, source, _ = resnet18_checkpoint
    config = digits_config(("model.name", "resnet18"), ("model.pretrained", str(path)), ("num_epochs", "1"),
                           model="resnet18")
    trainer = build(config, DataSpec(np.ones(10, int) * 5, (8, 8, 3), Normalization((0.5,) * 3, (0.25,) * 3), 2))
    fresh = jax.device_get(trainer.init_state())
    state, records = start_from_pretrained(fresh, trainer, say=lambda _: None)
    loaded = {"params": {k: v for k, v in state.params["model"].items() if k != "head"},
              "batch_stats": state.batch_stats}
    assert_trees_equal(loaded, {"params": {k: v for k, v in source["params"].items() if k != "head"},
                                "batch_stats": source["batch_stats"]})
    assert_trees_equal(state.params["model"]["head"], fresh.params["model"]["head"])
    assert records[None]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    train_and_evaluate(config, tmp_path, say=lambda _: None)
    recorded = json.loads((tmp_path / "pretrained.json").read_text())
    assert recorded["sha256"] == records[None]["sha256"] and recorded["path"] == str(path)
    assert f"from {path}" in json.loads((tmp_path / "plan.json").read_text())["model"]


def test_the_pretrained_tiny_imagenet_recipe_trains_a_step_on_the_real_data(resnet18_checkpoint,
                                                                            tiny_imagenet_root):
    """FFDS's Tiny-ImageNet-LT row: the recipe's plan (224-px random-resized crops of the 64-px images, ResNet-18
    with torchvision's stem) trains one step of 8 real training images from a converted random-init checkpoint."""
    from ltjax import datasets
    from ltjax.configs import files, schema
    from ltjax.train.build import DataSpec, build
    from ltjax.train.stages import start_from_pretrained

    root = tiny_imagenet_root
    path, _, source, _ = resnet18_checkpoint
    recipe = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs" / "ffds.py"
    written = files.load_config_file(f"{recipe}:tiny_imagenet-if100-pretrained")
    config = schema.apply_overrides(written, [("dataset.data_dir", str(root)), ("model.pretrained", str(path)),
                                              ("batch_size", "8"), ("progress_bar", "false")])[0]
    data = datasets.get("tiny_imagenet").load(config.dataset)
    trainer = build(config, DataSpec.of(data, steps_per_epoch=1))
    assert trainer.plan["model"].startswith("resnet18, linear head") and "random-resized 224-px" in trainer.plan[
        "augmentation"]
    state, _ = start_from_pretrained(trainer.init_state(), trainer, say=lambda _: None)
    assert_trees_equal(state.params["model"]["stem_conv"], source["params"]["stem_conv"])  # the 7x7 stem, loaded
    picks = np.linspace(0, len(data.train.labels) - 1, 8).astype(int)
    images = np.stack([data.train[int(index)][0] for index in picks])
    labels = data.train.labels[picks].astype(np.int32)
    assert images.shape == (8, 64, 64, 3)
    new_state = jax.device_get(trainer.train_step(state, images, labels, trainer.epoch_inputs(0)))
    assert np.isfinite(float(new_state.totals.loss_sum)) and int(new_state.totals.class_count.sum()) == 8
    assert not np.allclose(new_state.params["model"]["stem_conv"]["kernel"], source["params"]["stem_conv"]["kernel"])
