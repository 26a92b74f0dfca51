"""ResNet-10/18/50/152 and ResNeXt-50 (32x4d) for larger images, laid out as torchvision builds them.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 1, in torchvision's form
(`torchvision/models/resnet.py`), which is what the long-tail references use: FFDS trains torchvision's ResNet-18
on Tiny ImageNet and ICText (nwjun/FFDS-Loss), IIF uses its copy `classification/resnet_pytorch.py`
(kostas1515/iif), and ResNet-10 ([1, 1, 1, 1] BasicBlocks) is the ImageNet-LT backbone of Liu et al. (OLTR, CVPR
2019). Specifically:

- stem: 7x7 stride-2 convolution (padding 3) with 64 channels, BatchNorm, ReLU, 3x3 stride-2 max-pool (padding 1);
- four stages with 64/128/256/512 channels at strides 1/2/2/2; BasicBlock (expansion 1) for ResNet-10/18,
  Bottleneck (1x1-3x3-1x1, expansion 4) for ResNet-50/152, with the stride on the 3x3 convolution ("ResNet v1.5");
- ResNeXt (Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017) as torchvision's
  `resnext50_32x4d`: ResNet-50's Bottlenecks with the 3x3 convolution split into 32 groups of 4 channels per group
  at the first stage, the bottleneck width being `int(channels * width_per_group / 64) * groups` (128, 256, 512,
  1024 by stage, twice ResNet-50's), the block's output still `4 * channels`;
- projection shortcuts (1x1 convolution + BatchNorm, "option B") where the shape changes;
- init as torchvision: convolutions kaiming-normal with fan_out and gain sqrt(2); BatchNorm scale 1, bias 0; the
  linear head PyTorch's default, kernel and bias uniform(-1/sqrt(D), 1/sqrt(D)).

Parameter counts with the linear head and 1000 classes match torchvision: ResNet-18 11,689,512, ResNet-50
25,557,032, ResNet-152 60,192,808, ResNeXt-50 32x4d 25,028,904 (ResNet-10: 5,418,792). The parameter names follow
torchvision's module by module (`ltjax.models.pretrained` loads its ImageNet weights).

`small_input=True` replaces the stem by a 3x3 stride-1 convolution (padding 1) and drops the max-pool, so 32-64 px
images (CIFAR, ICText at 32 px, Tiny ImageNet at 64 px trained from scratch) are not downsampled 4x before the
first stage; the stages are unchanged. This is the usual CIFAR adaptation of the ImageNet ResNets (e.g.
kuangliu/pytorch-cifar `models/resnet.py`). It changes the stem's parameter count (3x3x3x64 instead of 7x7x3x64).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ltjax.models.convolution import Conv
from ltjax.models.heads import ModelOutput, pytorch_linear_kernel_init
from ltjax.models.normalization import BatchNorm
from ltjax.models.resnet_cifar import batch_norm, residual_relu, stages_and_head

# torchvision ResNet: `nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")` on every conv.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


# torchvision's default: one group, 64 channels per group (the plain Bottleneck's width equals its `channels`).
DEFAULT_WIDTH_PER_GROUP = 64


class _ResidualBlock(nn.Module):
    """Shared attributes and layer factories of the two torchvision blocks."""

    channels: int
    strides: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None
    groups: int = 1
    width_per_group: int = DEFAULT_WIDTH_PER_GROUP

    expansion = 1

    @nn.nowrap
    def conv(self, features: int, kernel: int, strides: int = 1, *, name: str, groups: int = 1) -> Conv:
        padding = (kernel - 1) // 2
        return Conv(
            features,
            (kernel, kernel),
            strides=strides,
            padding=((padding, padding), (padding, padding)),
            kernel_init=kaiming_normal_fan_out,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            feature_group_count=groups,
            name=name,
        )

    @nn.nowrap
    def norm(self, train: bool, *, name: str) -> BatchNorm:
        return batch_norm(train, self.batch_norm_axis_name, self.param_dtype, name=name)

    @nn.nowrap
    def shortcut(self, x: jax.Array, train: bool, mask: jax.Array | None) -> jax.Array:
        """Identity, or a 1x1 projection + BatchNorm where the stride or the channels change."""
        out_channels = self.channels * self.expansion
        if self.strides == 1 and x.shape[-1] == out_channels:
            return x
        projected = self.conv(out_channels, 1, self.strides, name="downsample_conv")(x)
        return self.norm(train, name="downsample_bn")(projected, mask)


class BasicBlock(_ResidualBlock):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU (torchvision `BasicBlock`, expansion 1).

    Attributes:
      channels: output channels.
      strides: stride of the first convolution and of the projection.
      dtype: compute dtype of the convolutions; BatchNorm always computes in float32.
      param_dtype: dtype of the parameters.
      groups, width_per_group: must stay 1 and 64: as in torchvision, only the Bottleneck has a grouped form.
    """

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        if self.groups != 1 or self.width_per_group != DEFAULT_WIDTH_PER_GROUP:
            raise ValueError(f"BasicBlock has no grouped form (got groups={self.groups}, width_per_group="
                             f"{self.width_per_group}); use block=Bottleneck for ResNeXt, or groups=1 and "
                             f"width_per_group={DEFAULT_WIDTH_PER_GROUP}")
        y = self.conv(self.channels, 3, self.strides, name="conv1")(x)
        y = nn.relu(self.norm(train, name="bn1")(y, mask))
        y = self.conv(self.channels, 3, name="conv2")(y)
        y = self.norm(train, name="bn2")(y, mask)
        return residual_relu(y, self.shortcut(x, train, mask))


class Bottleneck(_ResidualBlock):
    """conv1x1-BN-ReLU-conv3x3(stride, groups)-BN-ReLU-conv1x1(4x channels)-BN + shortcut, ReLU (torchvision
    `Bottleneck`, expansion 4, stride on the 3x3 convolution).

    Attributes:
      channels: the block outputs `4 * channels`; with the default groups and width per group, also the width of
        the 1x1 and 3x3 convolutions.
      strides: stride of the 3x3 convolution and of the projection.
      dtype: compute dtype of the convolutions; BatchNorm always computes in float32.
      param_dtype: dtype of the parameters.
      groups: groups of the 3x3 convolution (ResNeXt's cardinality, 32 for 32x4d).
      width_per_group: channels per group at `channels` = 64 (4 for 32x4d); the 1x1 and 3x3 convolutions are
        `int(channels * width_per_group / 64) * groups` wide, torchvision's rule.
    """

    expansion = 4

    @property
    def width(self) -> int:
        return int(self.channels * self.width_per_group / DEFAULT_WIDTH_PER_GROUP) * self.groups

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        y = self.conv(self.width, 1, name="conv1")(x)
        y = nn.relu(self.norm(train, name="bn1")(y, mask))
        y = self.conv(self.width, 3, self.strides, name="conv2", groups=self.groups)(y)
        y = nn.relu(self.norm(train, name="bn2")(y, mask))
        y = self.conv(self.channels * self.expansion, 1, name="conv3")(y)
        y = self.norm(train, name="bn3")(y, mask)
        return residual_relu(y, self.shortcut(x, train, mask))


class ResNet(nn.Module):
    """torchvision's ResNet with an ltjax head.

    `__call__(x, train, mask=None)` takes `[B, H, W, 3]` images and returns `ModelOutput(logits [B, C], features
    [B, D])`, both float32, with D = 512 for BasicBlock and 2048 for Bottleneck networks. With `train=True` BatchNorm
    uses batch statistics (over the examples `mask [B]` marks, if given) and updates `batch_stats` (apply with
    `mutable=["batch_stats"]`).

    Attributes:
      num_classes: C.
      stage_sizes: blocks per stage: (1, 1, 1, 1) ResNet-10, (2, 2, 2, 2) ResNet-18, (3, 4, 6, 3) ResNet-50 and
        ResNeXt-50, (3, 8, 36, 3) ResNet-152.
      block: `BasicBlock` or `Bottleneck`.
      groups: groups of the Bottlenecks' 3x3 convolutions (32 for ResNeXt-50 32x4d; 1 otherwise).
      width_per_group: their channels per group at the first stage (4 for ResNeXt-50 32x4d; 64 otherwise).
      small_input: 3x3 stride-1 stem without max-pool, for 32-64 px images (see the module docstring).
      head: "linear", "normed" or "cosine"; see `ltjax.models.heads`.
      cosine_learnable_scale: with head="cosine", learn the scale (IIF's `lr_cosine`).
      dtype: compute dtype of the convolutions (e.g. `jnp.bfloat16`); BatchNorm, pooling and the head compute in
        float32.
      param_dtype: dtype of the parameters.
      batch_norm_axis_name: in a data-parallel step, the device axis over which BatchNorm averages its batch
        statistics (synchronised BatchNorm); None on one device and for `init`.
    """

    num_classes: int
    stage_sizes: Sequence[int]
    block: type[_ResidualBlock] = BasicBlock
    small_input: bool = False
    head: str = "linear"
    cosine_learnable_scale: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    batch_norm_axis_name: str | None = None
    groups: int = 1
    width_per_group: int = DEFAULT_WIDTH_PER_GROUP

    stage_channels = (64, 128, 256, 512)
    stage_strides = (1, 2, 2, 2)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> ModelOutput:
        stem_conv = functools.partial(
            Conv,
            self.stage_channels[0],
            kernel_init=kaiming_normal_fan_out,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="stem_conv",
        )
        if self.small_input:
            x = stem_conv((3, 3), padding=((1, 1), (1, 1)))(x)
        else:
            x = stem_conv((7, 7), strides=2, padding=((3, 3), (3, 3)))(x)
        x = batch_norm(train, self.batch_norm_axis_name, self.param_dtype, name="stem_bn")(x, mask)
        x = nn.relu(x)
        if not self.small_input:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        block = functools.partial(self.block, groups=self.groups, width_per_group=self.width_per_group)
        return stages_and_head(
            self, x, train, block, self.stage_sizes, linear_kernel_init=pytorch_linear_kernel_init, mask=mask
        )
