"""Backbones and classifier heads for long-tailed recognition (Flax Linen, used functionally).

Return convention: every model's `__call__(x, train, mask=None)` takes NHWC images `[B, H, W, 3]` (in training,
`mask [B]` marks the examples BatchNorm takes its statistics over: a padded last batch's real ones) and returns
`ModelOutput(logits, features)`, a NamedTuple (so also a plain `(logits, features)` pair and a pytree):

- `logits`: `[B, C]` float32 (cosines in [-1, 1] for head="normed");
- `features`: `[B, D]` float32 penultimate features, after the last ReLU and global average pooling (D = 64 for
  ResNet-32, 512 for ResNet-10/18, 2048 for ResNet-50): IB uses their L1 norm, SWRM their class means.

Usage::

    model = create_model("resnet32", num_classes=10)
    variables = model.init(key, images, train=False)          # {"params", "batch_stats"}
    (logits, features), updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    logits, features = model.apply(variables, images, train=False)

Mixed precision: `create_model(..., dtype=jnp.bfloat16)` runs the convolutions in bfloat16 with float32
parameters (`param_dtype`, default float32); BatchNorm, pooling, the features and the head stay float32.
"""
from __future__ import annotations

from ltjax._extras import require_train_extra

require_train_extra(__name__)

import functools

from flax import linen as nn

from ltjax.models.branched import NETWORKS, BilateralCifarResNet, MultiExpertCifarResNet, ResLTCifarResNet
from ltjax.models.convolution import Conv
from ltjax.models.heads import (
    HEAD_NAMES,
    BranchedOutput,
    CausalNormHead,
    CosineClassifierHead,
    LinearHead,
    ModelOutput,
    NormedLinearHead,
    safe_l2_normalize,
)
from ltjax.models.normalization import BatchNorm
from ltjax.models.resnet import BasicBlock, Bottleneck, ResNet
from ltjax.models.resnet_cifar import CifarBasicBlock, CifarResNet, option_a_shortcut, residual_relu

_ARCHITECTURES = {
    # ResNet-2: the family's n = 0 member, the stem and the head with no residual block. Its step compiles in about a
    # third of ResNet-8's time, for smoke runs (and tests) that check a method's wiring rather than its accuracy.
    "resnet2": functools.partial(CifarResNet, blocks_per_stage=(0, 0, 0)),
    # ResNet-8: the CIFAR design with one block per stage, for quick runs on tiny images (the digits default).
    "resnet8": functools.partial(CifarResNet, blocks_per_stage=(1, 1, 1)),
    "resnet32": functools.partial(CifarResNet, blocks_per_stage=(5, 5, 5)),
    "resnet10": functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block=BasicBlock),
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck),
    "resnet152": functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=Bottleneck),
    # torchvision's resnext50_32x4d: 32 groups of 4 channels in the first stage's 3x3 convolutions.
    "resnext50_32x4d": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck, groups=32,
                                         width_per_group=4),
}
MODEL_NAMES = tuple(_ARCHITECTURES)
# The networks with branches (`ltjax.models.branched`) split the CIFAR ResNets.
_CIFAR_DEPTHS = {"resnet2": (0, 0, 0), "resnet8": (1, 1, 1), "resnet32": (5, 5, 5)}
NETWORK_NAMES = ("plain", *NETWORKS)


def create_model(name: str, num_classes: int, head: str = "linear", network: str = "plain", **kwargs) -> nn.Module:
    """The model called `name` with `num_classes` outputs and the given head, split into the branches of `network`.

    Args:
      name: one of `MODEL_NAMES`: "resnet32" (CIFAR), "resnet8" (its one-block-per-stage sibling), "resnet2" (the
        stem and head alone, for smoke runs), "resnet10", "resnet18", "resnet50", "resnet152", "resnext50_32x4d"
        (torchvision layout; `ltjax.models.pretrained` loads torchvision's weights into them).
      num_classes: C.
      head: one of `HEAD_NAMES`: "linear", "normed" (LDAM/KPS cosines), "cosine" (IIF's cosine classifier),
        "scaled_linear" (linear with per-class scales, LWS), "disalign"; for `network="bilateral"` "bilateral" (BBN)
        or "causal_norm" (TDE).
      network: "plain", or a network with branches of `ltjax.models.branched` built on the CIFAR ResNet `name`
        ("bilateral": BBN and TDE, "experts": RIDE, "reslt": ResLT); a method that needs one declares it.
      **kwargs: further attributes of the model class: `dtype`, `param_dtype`, `cosine_learnable_scale`,
        `batch_norm_axis_name`, for the torchvision ResNets `small_input`, and the branched networks' own
        (`num_experts`, `num_heads`, ...).

    Returns:
      An unbound Flax module; see the module docstring for how to call it.

    Raises:
      ValueError: for an unknown `name`, `head` or `network`, or a network with branches on a torchvision ResNet.
    """
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    if network == "plain":
        if head not in HEAD_NAMES:
            raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEAD_NAMES)}")
        return _ARCHITECTURES[name](num_classes=num_classes, head=head, **kwargs)
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; valid networks: {', '.join(NETWORK_NAMES)}")
    if name not in _CIFAR_DEPTHS:
        raise ValueError(f"the {network!r} network is built on the CIFAR ResNets ({', '.join(_CIFAR_DEPTHS)}); "
                         f"{name!r} has no such variant yet: set --config.model.name=resnet32")
    return NETWORKS[network](num_classes=num_classes, blocks_per_stage=_CIFAR_DEPTHS[name], head=head, **kwargs)


__all__ = [
    "HEAD_NAMES",
    "MODEL_NAMES",
    "NETWORK_NAMES",
    "BasicBlock",
    "BatchNorm",
    "BilateralCifarResNet",
    "Bottleneck",
    "BranchedOutput",
    "CausalNormHead",
    "CifarBasicBlock",
    "CifarResNet",
    "Conv",
    "CosineClassifierHead",
    "LinearHead",
    "ModelOutput",
    "MultiExpertCifarResNet",
    "NormedLinearHead",
    "ResLTCifarResNet",
    "ResNet",
    "create_model",
    "option_a_shortcut",
    "residual_relu",
    "safe_l2_normalize",
]
