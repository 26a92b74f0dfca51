"""torchvision's ImageNet weights in ltjax's torchvision-layout ResNets (`ltjax.models.resnet`).

`load_torchvision_weights` reads a state dict of torchvision's `resnet18`, `resnet50`, `resnet152` or
`resnext50_32x4d` (or `resnet10`, a layout torchvision builds but publishes no weights for) and returns the
model's `{"params", "batch_stats"}` with every backbone tensor replaced. ltjax names its layers after torchvision's
modules, so the correspondence is read off ltjax's own parameter tree:

- `stem_conv`, `stem_bn` are `conv1`, `bn1`; `stage{s}_block{i}` is `layer{s}.{i - 1}`, its `conv{k}`, `bn{k}` are
  `conv{k}`, `bn{k}` and its `downsample_conv`, `downsample_bn` are `downsample.0`, `downsample.1`; `head` is `fc`;
- a convolution's `kernel` `[kh, kw, in, out]` is the transposed `weight` `[out, in, kh, kw]` (OIHW -> HWIO; a
  grouped one's `in` is its channels per group in both); the head's `kernel` `[D, C]` is `fc.weight` `[C, D]`
  transposed; BatchNorm's `scale`, `bias` are `weight`, `bias` and its `batch_stats` `mean`, `var` are
  `running_mean`, `running_var`; `num_batches_tracked` has no counterpart (ltjax's momentum is fixed) and is ignored.

The classifier is re-initialised (the given variables' head is kept) unless `keep_classifier=True`, which loads
`fc` into a linear head of the same number of classes. Any weights of these layouts load (torchvision's
`IMAGENET1K_V1` and `IMAGENET1K_V2` alike); `TORCHVISION_WEIGHTS` names the enum the error for a missing file
points to.

Formats: `.safetensors` is read by `read_safetensors`, with NumPy alone; `.pth` / `.pt` (torchvision's own files)
are PyTorch pickles and need torch, read with `torch.load(weights_only=True)`, which refuses any pickle that would
run code. A state dict saved under a `"state_dict"` or `"model"` key, or with DataParallel's `module.` prefix, loads
too.

The converted network computes what torchvision's does on the same images: NHWC instead of NCHW, normalised as
torchvision's weights expect (RGB in [0, 1], minus ImageNet's mean, over its standard deviation). In training,
ltjax's BatchNorm updates the running variance with the biased batch variance, PyTorch with the unbiased one
(`ltjax.models.normalization`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from ltjax.errors import UserError

# Where torchvision lists its weights enums and the address of each one's file.
TORCHVISION_MODELS_DOCS = "https://docs.pytorch.org/vision/stable/models.html"
# The torchvision weights enum of each architecture ltjax builds and torchvision publishes weights for.
TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet152": "ResNet152_Weights.IMAGENET1K_V1",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights.IMAGENET1K_V1",
}
TORCH_INSTALL = "pip install 'ltjax[bench]'"
SAFETENSORS_SUFFIX = ".safetensors"
PYTORCH_SUFFIXES = (".pth", ".pt")

# safetensors dtype -> little-endian NumPy dtype of its bytes (BF16 is read as uint16 and viewed as bfloat16).
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8"}
_HEADER_LENGTH_BYTES = 8
_PARENT_KEYS = ("state_dict", "model")
_DATA_PARALLEL_PREFIX = "module."
_IGNORED_SUFFIX = ".num_batches_tracked"
_CLASSIFIER = "head"
_CLASSIFIER_PREFIX = "fc."
_MAX_NAMES_LISTED = 8


class PretrainedWeightsError(UserError, ValueError):
    """A checkpoint that cannot be read, or does not fit the model it is loaded into."""


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What tells torchvision's ResNets apart.

    Attributes:
      block: "BasicBlock" or "Bottleneck".
      stage_sizes: blocks per stage.
      width: channels of the first block's 3x3 convolutions (None where no such tensor says).
      groups: groups of those convolutions (None where no such tensor says).
    """

    block: str
    stage_sizes: tuple[int, ...]
    width: int | None
    groups: int | None

    @property
    def name(self) -> str | None:
        """torchvision's name of this layout, or None for a layout torchvision does not build."""
        return _TORCHVISION_LAYOUTS.get(self)

    def describe(self) -> str:
        """Its name and layout, for error messages."""
        layout = f"{self.block}s {list(self.stage_sizes)}"
        if self.width is not None:
            layout += f", first 3x3 convolution {self.width} channels in {self.groups} group(s)"
        return f"{self.name} ({layout})" if self.name else f"an unknown ResNet ({layout})"


_TORCHVISION_LAYOUTS = {
    Architecture("BasicBlock", (1, 1, 1, 1), 64, 1): "resnet10",
    Architecture("BasicBlock", (2, 2, 2, 2), 64, 1): "resnet18",
    Architecture("BasicBlock", (3, 4, 6, 3), 64, 1): "resnet34",
    Architecture("Bottleneck", (3, 4, 6, 3), 64, 1): "resnet50",
    Architecture("Bottleneck", (3, 4, 23, 3), 64, 1): "resnet101",
    Architecture("Bottleneck", (3, 8, 36, 3), 64, 1): "resnet152",
    Architecture("Bottleneck", (3, 4, 6, 3), 128, 32): "resnext50_32x4d",
    Architecture("Bottleneck", (3, 4, 23, 3), 256, 32): "resnext101_32x8d",
    Architecture("Bottleneck", (3, 4, 23, 3), 256, 64): "resnext101_64x4d",
    Architecture("Bottleneck", (3, 4, 6, 3), 128, 1): "wide_resnet50_2",
    Architecture("Bottleneck", (3, 4, 23, 3), 128, 1): "wide_resnet101_2",
}


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a model's starting weights came from (JSON-ready with `dataclasses.asdict`).

    Attributes:
      path: the checkpoint's absolute path.
      sha256: the SHA-256 of its bytes, hex.
      format: "safetensors" or "pytorch".
      architecture: torchvision's name of the checkpoint's network.
      loaded: torchvision tensor name -> the ltjax variable it was loaded into (`collection/module/.../leaf`).
      reinitialised: the ltjax variables kept from the given `variables` (the classifier, unless kept).
      ignored: the checkpoint's tensors not loaded (`num_batches_tracked`; `fc.*` when the classifier is
        re-initialised).
    """

    path: str
    sha256: str
    format: str
    architecture: str
    loaded: dict[str, str]
    reinitialised: tuple[str, ...]
    ignored: tuple[str, ...]


def load_torchvision_weights(
    path: str | pathlib.Path, variables: Mapping[str, Any], *, keep_classifier: bool = False
) -> tuple[dict[str, Any], Provenance]:
    """The model's variables with the backbone (and, if asked, the classifier) of a torchvision checkpoint.

    Args:
      path: a torchvision ResNet state dict, `.safetensors`, or `.pth` / `.pt` (needs torch).
      variables: `{"params", "batch_stats"}` of the ltjax model to load into (`model.init`'s), a torchvision-layout
        ResNet built with `small_input=False`; they give the tree, the shapes and the dtypes, and the classifier
        that is kept.
      keep_classifier: also load `fc.weight` / `fc.bias` into the linear head's `kernel` / `bias` (the model must
        have the checkpoint's number of classes); otherwise the given head is kept.

    Returns:
      `(variables, provenance)`: the same tree with every loaded tensor converted to ltjax's layout and the leaf's
      dtype (other collections and kept leaves unchanged), and the checkpoint's `Provenance`.

    Raises:
      FileNotFoundError: no file at `path` (the message says where torchvision publishes the model's weights).
      ImportError: a `.pth` / `.pt` checkpoint without torch installed.
      PretrainedWeightsError: an unreadable or refused checkpoint; `variables` not of a torchvision-layout ResNet;
        a checkpoint of another architecture; a tensor missing, unexpected, of another shape or not floating;
        `keep_classifier` with another number of classes or a head that is not linear.
    """
    path = pathlib.Path(path).expanduser().resolve()
    flat = traverse_util.flatten_dict(dict(variables))
    model_architecture = _architecture_of_model(flat)
    if not path.is_file():
        raise FileNotFoundError(_missing_checkpoint_message(path, model_architecture))
    file_format, state = _read_state_dict(path)
    state = _unwrap(state, path)
    checkpoint_architecture = _architecture_of_state_dict(state)
    if not _same_architecture(checkpoint_architecture, model_architecture):
        raise PretrainedWeightsError(_architecture_mismatch_message(path, checkpoint_architecture,
                                                                    model_architecture))
    if keep_classifier:
        _check_classifier(flat, state, path)

    converted, loaded, reinitialised, missing = {}, {}, [], []
    for key, leaf in flat.items():
        if key[0] not in ("params", "batch_stats"):
            converted[key] = leaf
            continue
        if key[1] == _CLASSIFIER and not (keep_classifier and key[0] == "params" and key[-1] in ("kernel", "bias")):
            converted[key] = leaf
            reinitialised.append("/".join(key))
            continue
        name = _torchvision_name(key)
        if name not in state:
            missing.append(f"{name} (for {'/'.join(key)} {tuple(leaf.shape)})")
            continue
        converted[key] = _convert(state[name], name, key, leaf)
        loaded[name] = "/".join(key)
    if missing:
        raise PretrainedWeightsError(f"{path} lacks {len(missing)} tensor(s) the model needs: "
                                     f"{_listed(missing)}")
    ignored = {name for name in state if name.endswith(_IGNORED_SUFFIX)
               or (not keep_classifier and name.startswith(_CLASSIFIER_PREFIX))}
    placed = loaded.keys() | ignored
    unexpected = [f"{name} {tuple(state[name].shape)}" for name in state if name not in placed]
    if unexpected:
        raise PretrainedWeightsError(f"{path} holds {len(unexpected)} tensor(s) the model has no place for: "
                                     f"{_listed(unexpected)}")
    provenance = Provenance(path=str(path), sha256=_sha256(path), format=file_format,
                            architecture=checkpoint_architecture.name or checkpoint_architecture.describe(),
                            loaded=loaded, reinitialised=tuple(reinitialised), ignored=tuple(sorted(ignored)))
    return traverse_util.unflatten_dict(converted), provenance


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` file, read with NumPy (no torch, no `safetensors` package).

    The format: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor's name to its `dtype`,
    `shape` and `data_offsets` `[begin, end)` (byte offsets into the data that follows the header; an optional
    `__metadata__` entry holds strings), then the tensors' little-endian bytes, row-major.

    Args:
      path: the file.

    Returns:
      name -> array, for the dtypes F64, F32, F16, BF16 (`ml_dtypes.bfloat16`) and I64.

    Raises:
      PretrainedWeightsError: a truncated or malformed file, naming the tensor where one is at fault, or a dtype
        outside those five.
    """
    data = pathlib.Path(path).read_bytes()
    if len(data) < _HEADER_LENGTH_BYTES:
        raise PretrainedWeightsError(f"{path} is not a safetensors file: {len(data)} bytes, shorter than the "
                                     f"{_HEADER_LENGTH_BYTES}-byte header length")
    header_length = int.from_bytes(data[:_HEADER_LENGTH_BYTES], "little")
    body_start = _HEADER_LENGTH_BYTES + header_length
    if body_start > len(data):
        raise PretrainedWeightsError(f"{path} is not a safetensors file, or is truncated: its header length says "
                                     f"{header_length} bytes, the file has {len(data) - _HEADER_LENGTH_BYTES} after "
                                     "the length")
    try:
        header = json.loads(data[_HEADER_LENGTH_BYTES:body_start])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PretrainedWeightsError(f"{path} is not a safetensors file: its header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise PretrainedWeightsError(f"{path} is not a safetensors file: its header is not a JSON object")
    body = memoryview(data)[body_start:]
    return {name: _safetensors_tensor(body, name, entry, path)
            for name, entry in header.items() if name != "__metadata__"}


def _safetensors_tensor(body: memoryview, name: str, entry: Any, path) -> np.ndarray:
    try:
        dtype_name, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
    except (TypeError, KeyError, ValueError) as error:
        raise PretrainedWeightsError(f"{path}: the header entry of tensor {name!r} needs dtype, shape and "
                                     f"data_offsets [begin, end], got {entry!r}") from error
    if dtype_name not in _SAFETENSORS_DTYPES:
        raise PretrainedWeightsError(f"{path}: tensor {name!r} has dtype {dtype_name}; ltjax reads "
                                     f"{', '.join(_SAFETENSORS_DTYPES)}")
    dtype = np.dtype(_SAFETENSORS_DTYPES[dtype_name])
    if not all(isinstance(n, int) and n >= 0 for n in (*shape, begin, end)) or not begin <= end <= len(body):
        raise PretrainedWeightsError(f"{path}: tensor {name!r} has shape {list(shape)} and data_offsets "
                                     f"[{begin}, {end}], outside the file's {len(body)} bytes of data")
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
        raise PretrainedWeightsError(f"{path}: tensor {name!r} ({dtype_name}, shape {list(shape)}) needs "
                                     f"{int(np.prod(shape)) * dtype.itemsize} bytes, its data_offsets span "
                                     f"{end - begin}")
    array = np.frombuffer(body[begin:end], dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return array.view(ml_dtypes.bfloat16) if dtype_name == "BF16" else array


def _read_state_dict(path: pathlib.Path) -> tuple[str, Mapping[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return "safetensors", read_safetensors(path)
    if suffix in PYTORCH_SUFFIXES:
        return "pytorch", _read_pytorch(path)
    raise PretrainedWeightsError(f"{path}: unknown checkpoint format {suffix!r}; ltjax reads "
                                 f"{SAFETENSORS_SUFFIX} and PyTorch's {', '.join(PYTORCH_SUFFIXES)}")


def _read_pytorch(path: pathlib.Path) -> Any:
    """The object a PyTorch checkpoint holds, its tensors as NumPy arrays; a pickle that would run code is refused."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"{path} is a PyTorch checkpoint, and reading it needs torch, which is not installed: "
                          f"{TORCH_INSTALL} (or load a {SAFETENSORS_SUFFIX} copy of it, which needs no torch)"
                          ) from error
    import pickle

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise PretrainedWeightsError(
            f"refused {path}: it is not a plain checkpoint of tensors, and torch.load(weights_only=True) does not "
            f"run the code its pickle asks for ({_refusal_reason(error)}). Load checkpoints of tensors only: from a "
            "trusted session, save the state dict alone with torch.save(model.state_dict(), path)") from error
    except (RuntimeError, EOFError) as error:
        raise PretrainedWeightsError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    return _tensors_to_numpy(loaded, torch)


def _refusal_reason(error: Exception) -> str:
    """What torch's weights-only unpickler found (e.g. "unsupported GLOBAL posix.system"), without its advice to
    retry with `weights_only=False`, which would run that code."""
    paragraphs = [paragraph.strip() for paragraph in re.split(r"\n\s*\n", str(error)) if paragraph.strip()]
    found = [paragraph for paragraph in paragraphs
             if not paragraph.startswith(("Weights only load failed", "Check the documentation"))]
    return " ".join(found[0].split()) if found else type(error).__name__


def _tensors_to_numpy(value: Any, torch) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # NumPy has no bfloat16: reinterpret the bits
            return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return value.numpy()
    if isinstance(value, Mapping):
        return {key: _tensors_to_numpy(item, torch) for key, item in value.items()}
    return value


def _unwrap(state: Any, path: pathlib.Path) -> dict[str, np.ndarray]:
    """The state dict itself: out of a `"state_dict"` / `"model"` entry, without DataParallel's `module.`."""
    while isinstance(state, Mapping):
        parents = [key for key in _PARENT_KEYS if isinstance(state.get(key), Mapping)]
        if not parents:
            break
        state = state[parents[0]]
    if not isinstance(state, Mapping):
        raise PretrainedWeightsError(f"{path} holds a {type(state).__name__}, not a state dict (a mapping of "
                                     "tensor names to tensors)")
    if state and all(str(name).startswith(_DATA_PARALLEL_PREFIX) for name in state):
        state = {name[len(_DATA_PARALLEL_PREFIX):]: tensor for name, tensor in state.items()}
    not_tensors = [f"{name!r} ({type(value).__name__})" for name, value in state.items()
                   if not isinstance(value, np.ndarray)]
    if not_tensors:
        raise PretrainedWeightsError(f"{path}: the state dict holds entries that are not tensors: "
                                     f"{_listed(not_tensors)}")
    return dict(state)


def _architecture_of_model(flat: Mapping[tuple[str, ...], Any]) -> Architecture:
    params = {key[1:]: leaf for key, leaf in flat.items() if key[0] == "params"}
    blocks = {}
    for key in params:
        match = re.fullmatch(r"stage(\d+)_block(\d+)", key[0])
        if match:
            stage, index = int(match[1]), int(match[2])
            blocks[stage] = max(blocks.get(stage, 0), index)
    stage_sizes = tuple(blocks.get(stage, 0) for stage in range(1, 5))
    conv2 = params.get(("stage1_block1", "conv2", "kernel"))
    block = "Bottleneck" if ("stage1_block1", "conv3", "kernel") in params else "BasicBlock"
    architecture = Architecture(block, stage_sizes, *_width_and_groups(conv2, out_axis=3, in_axis=2))
    if ("stem_conv", "kernel") not in params or set(blocks) != {1, 2, 3, 4} or architecture.name is None:
        raise PretrainedWeightsError(
            f"the variables are not those of a torchvision-layout ResNet ({', '.join(TORCHVISION_WEIGHTS)}, "
            f"resnet10 of ltjax.models.resnet) but of {architecture.describe()} with top-level modules "
            f"{_listed(sorted({key[0] for key in params}))}: torchvision's weights load into those only")
    return architecture


def _architecture_of_state_dict(state: Mapping[str, np.ndarray]) -> Architecture:
    blocks, bottleneck = {}, False
    for name in state:
        match = re.match(r"layer(\d+)\.(\d+)\.([^.]+)", name)
        if match:
            stage, index = int(match[1]), int(match[2])
            blocks[stage] = max(blocks.get(stage, 0), index + 1)
            bottleneck = bottleneck or match[3] == "conv3"
    stage_sizes = tuple(blocks.get(stage, 0) for stage in range(1, max(blocks, default=4) + 1))
    width, groups = _width_and_groups(state.get("layer1.0.conv2.weight"), out_axis=0, in_axis=1)
    return Architecture("Bottleneck" if bottleneck else "BasicBlock", stage_sizes, width, groups)


def _width_and_groups(kernel: Any, *, out_axis: int, in_axis: int) -> tuple[int | None, int | None]:
    """(channels, groups) of a 3x3 convolution whose input and output have the same channels."""
    if kernel is None or len(kernel.shape) != 4 or kernel.shape[in_axis] == 0:
        return None, None
    width = kernel.shape[out_axis]
    return width, width // kernel.shape[in_axis]


def _same_architecture(checkpoint: Architecture, model: Architecture) -> bool:
    """Equal layouts; a width or groups the checkpoint does not show is left to the tensor-by-tensor checks."""
    if checkpoint.width is None:
        return (checkpoint.block, checkpoint.stage_sizes) == (model.block, model.stage_sizes)
    return checkpoint == model


def _architecture_mismatch_message(path: pathlib.Path, checkpoint: Architecture, model: Architecture) -> str:
    from ltjax.models import MODEL_NAMES

    message = f"{path} holds {checkpoint.describe()}, but the model is {model.describe()}"
    if checkpoint.name in MODEL_NAMES:
        return f"{message}: build the model it holds (--config.model.name={checkpoint.name})"
    return f"{message}, and ltjax builds no {checkpoint.name or 'such network'}: use one of {', '.join(MODEL_NAMES)}"


def _missing_checkpoint_message(path: pathlib.Path, model: Architecture) -> str:
    weights = TORCHVISION_WEIGHTS.get(model.name)
    if weights is None:
        source = (f"torchvision publishes no {model.name} weights (those of "
                  f"{', '.join(TORCHVISION_WEIGHTS)} are listed at {TORCHVISION_MODELS_DOCS})")
    else:
        source = (f"torchvision publishes {model.name}'s ImageNet weights as {weights}: {TORCHVISION_MODELS_DOCS} "
                  f"gives its file's address; torchvision.models.{model.name}(weights=\"{weights.split('.')[1]}\") "
                  "also downloads it, to ~/.cache/torch/hub/checkpoints/")
    return f"no checkpoint at {path}. {source}. Pass the file's path with --config.model.pretrained=PATH"


def _check_classifier(flat: Mapping[tuple[str, ...], Any], state: Mapping[str, np.ndarray],
                      path: pathlib.Path) -> None:
    head = {key[2:]: leaf for key, leaf in flat.items() if key[:2] == ("params", _CLASSIFIER)}
    if ("kernel",) not in head or ("bias",) not in head:
        raise PretrainedWeightsError(
            f"keep_classifier=True loads fc.weight and fc.bias into a linear head's kernel and bias, and this "
            f"model's head has {_listed(['/'.join(key) for key in head]) or 'no parameters'}: build it with "
            "head='linear', or re-initialise the classifier (--config.model.keep_classifier=false)")
    fc = state.get(f"{_CLASSIFIER_PREFIX}weight")
    if fc is None:
        raise PretrainedWeightsError(f"keep_classifier=True, but {path} holds no fc.weight to keep")
    classes = head[("kernel",)].shape[-1]
    if fc.ndim != 2 or fc.shape[0] != classes:
        raise PretrainedWeightsError(
            f"keep_classifier=True needs the checkpoint's classes to be the model's: fc.weight is "
            f"{tuple(fc.shape)} ({fc.shape[0] if fc.ndim else '?'} classes), the model's head/kernel "
            f"{tuple(head[('kernel',)].shape)} ({classes} classes). Build the model with that many classes, or "
            "re-initialise the classifier (--config.model.keep_classifier=false)")


def _torchvision_name(key: tuple[str, ...]) -> str:
    """torchvision's name of the ltjax variable `key` (`(collection, module, ..., leaf)`)."""
    collection, *modules, leaf = key
    parts = []
    for module in modules:
        block = re.fullmatch(r"stage(\d+)_block(\d+)", module)
        if block:
            parts.append(f"layer{block[1]}.{int(block[2]) - 1}")
        elif module in _MODULE_NAMES:
            parts.append(_MODULE_NAMES[module])
        elif re.fullmatch(r"(conv|bn)\d+", module):
            parts.append(module)
        else:
            raise PretrainedWeightsError(f"the model's {'/'.join(key)} has no torchvision counterpart: "
                                         "torchvision's weights load into the torchvision-layout ResNets only")
    if (collection, leaf) not in _LEAF_NAMES:
        raise PretrainedWeightsError(f"the model's {'/'.join(key)} has no torchvision counterpart")
    return ".".join([*parts, _LEAF_NAMES[collection, leaf]])


_MODULE_NAMES = {"stem_conv": "conv1", "stem_bn": "bn1", "downsample_conv": "downsample.0",
                 "downsample_bn": "downsample.1", _CLASSIFIER: "fc"}
_LEAF_NAMES = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def _convert(tensor: np.ndarray, name: str, key: tuple[str, ...], leaf: Any) -> jnp.ndarray:
    """`tensor` in ltjax's layout and `leaf`'s dtype: OIHW -> HWIO for convolutions, `[C, D]` -> `[D, C]` for the
    classifier, vectors unchanged."""
    shape = tuple(leaf.shape)
    if len(shape) == 4:
        axes = (2, 3, 1, 0)  # HWIO from OIHW; its inverse gives the shape torchvision stores
        expected = (shape[3], shape[2], shape[0], shape[1])
    elif len(shape) == 2:
        axes = (1, 0)
        expected = shape[::-1]
    else:
        axes, expected = None, shape
    if tuple(tensor.shape) != expected:
        hint = ""
        if key[1:] == ("stem_conv", "kernel"):
            hint = " (a model built with small_input=True has a 3x3 stem, torchvision's is 7x7: use small_input=False)"
        raise PretrainedWeightsError(f"tensor {name} has shape {tuple(tensor.shape)}, but the model's "
                                     f"{'/'.join(key)} {shape} needs {expected} in torchvision's layout{hint}")
    if not jnp.issubdtype(tensor.dtype, jnp.floating):
        raise PretrainedWeightsError(f"tensor {name} has dtype {tensor.dtype}; the model's {'/'.join(key)} needs a "
                                     "floating-point tensor")
    converted = tensor if axes is None else np.transpose(tensor, axes)
    return jnp.asarray(np.asarray(converted).astype(leaf.dtype))


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_LISTED])
    return shown if len(names) <= _MAX_NAMES_LISTED else f"{shown} and {len(names) - _MAX_NAMES_LISTED} more"


__all__ = [
    "TORCHVISION_MODELS_DOCS",
    "TORCHVISION_WEIGHTS",
    "Architecture",
    "PretrainedWeightsError",
    "Provenance",
    "load_torchvision_weights",
    "read_safetensors",
]
