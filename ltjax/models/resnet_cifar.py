"""ResNet-32 for CIFAR, as the long-tail references build it (LDAM-DRW, IB, FFDS, KPS, IIF).

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), §4.2: a 3x3 stem with 16 channels, three
stages of n BasicBlocks with 16/32/64 channels at strides 1/2/2 (depth 6n + 2; n = 5 gives ResNet-32), global
average pooling and a classifier. The code follows `ResNet_s(BasicBlock, [5, 5, 5])` in kaidic/LDAM-DRW
`models/resnet_cifar.py` (copied unchanged into pseulki/IB-Loss, nwjun/FFDS-Loss, Keke921/KPSLoss and
kostas1515/iif `classification/resnet_cifar.py`):

- convolutions without bias, each followed by BatchNorm;
- the parameter-free option-A shortcut where the shape changes (see `option_a_shortcut`);
- kaiming-normal init (`init.kaiming_normal_`: fan_in, gain sqrt(2), untruncated) of every convolution and of the
  linear head's kernel; the linear head's bias keeps PyTorch's default, uniform(-1/sqrt(64), 1/sqrt(64)), since the
  reference re-initialises only weights; BatchNorm scale 1 and bias 0.

With the linear head and C classes it has 463,504 + 65 C parameters (464,154 for CIFAR-10, 0.46M in the reference's
table). BatchNorm uses PyTorch's momentum 0.1 (Flax `momentum=0.9`) and epsilon 1e-5.

Difference from PyTorch: BatchNorm updates the running variance with the biased batch variance (as Flax does),
PyTorch with the unbiased one, a factor n / (n - 1) with n = batch x height x width (>= 4096 for batch 64 on CIFAR,
so under 0.03 %).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ltjax.models.convolution import Conv
from ltjax.models.heads import ModelOutput, make_head
from ltjax.models.normalization import BatchNorm

# PyTorch `init.kaiming_normal_` defaults: mode fan_in, ReLU gain sqrt(2), a plain (untruncated) normal.
kaiming_normal_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# Every convolution of the CIFAR ResNet: 3x3, padding 1, no bias (BatchNorm follows), kaiming-normal.
conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)), kernel_init=kaiming_normal_fan_in)

BATCH_NORM_MOMENTUM = 0.9  # Flax's decay of the running average; PyTorch's momentum 0.1
BATCH_NORM_EPSILON = 1e-5  # PyTorch's default


def batch_norm(train: bool, axis_name: str | None, param_dtype: Any, name: str) -> BatchNorm:
    """PyTorch-equivalent BatchNorm computed in float32 (see `ltjax.models.normalization`).

    `axis_name` names the data-parallel device axis: the batch statistics are then averaged over all devices
    (synchronised BatchNorm), so a step on D devices normalises exactly as one device would on the global batch.
    """
    return BatchNorm(
        use_running_average=not train,
        axis_name=axis_name if train else None,
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        param_dtype=param_dtype,
        name=name,
    )


def residual_relu(y: jax.Array, shortcut: jax.Array) -> jax.Array:
    """`relu(y + shortcut)`, the output of a residual block, written as `max(y, -shortcut) + shortcut`.

    Equal values and gradients: where `y > -shortcut` both are the rounded sum (gradient 1 to both inputs),
    elsewhere both are 0 (a rounded sum is <= 0 exactly when the exact one is; gradient 0, ReLU's at 0).

    Why: XLA's CPU fusion treats `relu(add)` as an elementwise chain that is free to recompute, so each consumer
    of a block's output (the next block's convolution and addition, the layout copies of the backward pass)
    re-derived it from every earlier block's convolution output, at a cost growing with the square of the depth:
    about a third of ResNet-32's train step. An addition of two activation-sized arrays as the last operation is
    kept in memory once instead.
    """
    return jnp.where(y > -shortcut, y, -shortcut) + shortcut


def option_a_shortcut(x: jax.Array, out_channels: int, strides: int) -> jax.Array:
    """The parameter-free shortcut ("option A", He et al. §4.2) for a block that changes shape.

    Keeps every `strides`-th row and column (`x[:, ::2, ::2, :]` in NHWC for the reference's stride 2) and pads
    `(out_channels - C_in) / 2` zero channels on each side, so the input channels land in the middle. Where the
    channels double that is LDAM-DRW's `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))`; RIDE's
    narrower experts (16 -> 24 -> 48 channels) pad `(planes - in_planes) // 2`, the same rule.

    Args:
      x: `[B, H, W, C_in]` with `out_channels - C_in` even and non-negative.
      out_channels: the block's output channels.
      strides: the block's spatial stride.

    Returns:
      `[B, ceil(H / strides), ceil(W / strides), out_channels]`.
    """
    pad, odd = divmod(out_channels - x.shape[-1], 2)
    if pad < 0 or odd:
        raise ValueError(
            f"option-A shortcut pads (out_channels - in_channels) / 2 zero channels on each side, which cannot take "
            f"{x.shape[-1]} input channels to out_channels={out_channels}"
        )
    subsampled = x[:, ::strides, ::strides, :]
    return jnp.pad(subsampled, ((0, 0), (0, 0), (0, 0), (pad, pad)))


def stage_plan(blocks_per_stage: Sequence[int], stage_channels: Sequence[int], stage_strides: Sequence[int],
               *, first_stage: int = 1, prefix: str = "") -> list[tuple[str, int, int]]:
    """`(name, channels, strides)` of every residual block of the stages, in order; a stage's first block carries its
    stride. Names are `{prefix}stage{s}_block{i}` (1-indexed), the parameter paths of the models' checkpoints."""
    return [
        (f"{prefix}stage{stage}_block{index + 1}", channels, stride if index == 0 else 1)
        for stage, (num_blocks, channels, stride) in enumerate(
            zip(blocks_per_stage, stage_channels, stage_strides), start=first_stage)
        for index in range(num_blocks)
    ]


def residual_blocks(module: nn.Module, x: jax.Array, train: bool, block: type[nn.Module],
                    plan: Sequence[tuple[str, int, int]], mask: jax.Array | None = None) -> jax.Array:
    """The blocks of `plan` (`stage_plan`) applied in order, as submodules of `module` (called from a compact
    `__call__`; `module` supplies `dtype`, `param_dtype` and `batch_norm_axis_name`)."""
    for name, channels, strides in plan:
        x = block(channels, strides=strides, dtype=module.dtype, param_dtype=module.param_dtype,
                  batch_norm_axis_name=module.batch_norm_axis_name, name=name)(x, train, mask)
    return x


def global_average_pool(x: jax.Array) -> jax.Array:
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def stages_and_head(
    module: nn.Module, x: jax.Array, train: bool, block: type[nn.Module], blocks_per_stage: Sequence[int],
    *, linear_kernel_init, mask: jax.Array | None = None,
) -> ModelOutput:
    """The residual stages, global average pooling and the head that every ResNet here ends with.

    Called from a compact `__call__`, so the blocks and the head are submodules of `module`, which supplies
    `stage_channels`, `stage_strides`, `dtype`, `param_dtype`, `batch_norm_axis_name`, `head`, `num_classes` and
    `cosine_learnable_scale`.
    """
    plan = stage_plan(blocks_per_stage, module.stage_channels, module.stage_strides)
    features = global_average_pool(residual_blocks(module, x, train, block, plan, mask))
    return ModelOutput(logits=cifar_head(module, linear_kernel_init)(features), features=features)


def cifar_head(module: nn.Module, linear_kernel_init, name: str = "head") -> nn.Module:
    """`module`'s head (its `head`, `num_classes`, `cosine_learnable_scale`, `param_dtype`), as submodule `name`."""
    return make_head(module.head, module.num_classes, linear_kernel_init=linear_kernel_init,
                     cosine_learnable_scale=module.cosine_learnable_scale, param_dtype=module.param_dtype, name=name)


def cifar_stem(module: nn.Module, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
    """conv3x3 with `module.stage_channels[0]` channels, BatchNorm, ReLU."""
    x = conv3x3(module.stage_channels[0], dtype=module.dtype, param_dtype=module.param_dtype, name="stem_conv")(x)
    x = batch_norm(train, module.batch_norm_axis_name, module.param_dtype, name="stem_bn")(x, mask)
    return nn.relu(x)


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the identity or option-A shortcut, then ReLU (LDAM-DRW `BasicBlock`).

    Attributes:
      channels: output channels.
      strides: stride of the first convolution.
      dtype: compute dtype of the convolutions; BatchNorm always computes in float32.
      param_dtype: dtype of the parameters.
      batch_norm_axis_name: device axis to synchronise BatchNorm statistics over (see `batch_norm`).
    """

    channels: int
    strides: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        conv = functools.partial(conv3x3, self.channels, dtype=self.dtype, param_dtype=self.param_dtype)
        norm = functools.partial(batch_norm, train, self.batch_norm_axis_name, self.param_dtype)
        y = conv(strides=self.strides, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y, mask))
        y = conv(name="conv2")(y)
        y = norm(name="bn2")(y, mask)
        if self.strides != 1 or x.shape[-1] != self.channels:
            shortcut = option_a_shortcut(x, self.channels, self.strides)
        else:
            shortcut = x
        return residual_relu(y, shortcut)


class CifarNetwork(nn.Module):
    """The attributes of the CIFAR ResNet and of the networks with branches built from it (`ltjax.models.branched`);
    `CifarResNet` documents them."""

    num_classes: int
    blocks_per_stage: Sequence[int] = (5, 5, 5)
    head: str = "linear"
    cosine_learnable_scale: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None

    stage_channels = (16, 32, 64)
    stage_strides = (1, 2, 2)


class CifarResNet(CifarNetwork):
    """The CIFAR ResNet of He et al. §4.2; the defaults make ResNet-32 with a linear head.

    `__call__(x, train, mask=None)` takes `[B, H, W, 3]` images (32x32 on CIFAR) and returns `ModelOutput(logits
    [B, C], features [B, 64])`, both float32. With `train=True` BatchNorm uses batch statistics (over the examples
    `mask [B]` marks, if given) and updates `batch_stats` (apply with `mutable=["batch_stats"]`); with `train=False`
    it uses the running averages.

    Attributes:
      num_classes: C.
      blocks_per_stage: BasicBlocks in each of the three stages; (5, 5, 5) is ResNet-32.
      head: "linear" (LDAM-DRW, IB, FFDS), "normed" (LDAM, KPS) or "cosine" (IIF); see `ltjax.models.heads`.
      cosine_learnable_scale: with head="cosine", learn the scale (IIF's `lr_cosine`).
      dtype: compute dtype of the convolutions (e.g. `jnp.bfloat16`); BatchNorm, pooling and the head compute in
        float32.
      param_dtype: dtype of the parameters.
      batch_norm_axis_name: in a data-parallel step, the device axis over which BatchNorm averages its batch
        statistics (synchronised BatchNorm); None on one device and for `init`.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> ModelOutput:
        return stages_and_head(
            self, cifar_stem(self, x, train, mask), train, CifarBasicBlock, self.blocks_per_stage,
            linear_kernel_init=kaiming_normal_fan_in, mask=mask,
        )
