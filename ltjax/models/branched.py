"""CIFAR ResNets with branches, as the long-tail methods that change the network build them.

Each is the CIFAR ResNet of `resnet_cifar` (same stem, blocks, initialisation and parameter names for the parts
they share) split where its reference splits it:

- `BilateralCifarResNet` (BBN, Zhou et al., CVPR 2020; TDE's CIFAR backbone): the last block duplicated, one copy per
  branch, both pooled and concatenated. With BBN's head (`"bilateral"`) the branches are the two halves of one linear
  classifier; with TDE's (`"causal_norm"`) the concatenation feeds the de-confounded classifier.
- `MultiExpertCifarResNet` (RIDE, Wang et al., ICLR 2021): the stem and the first stage shared, every later stage
  and the head one per expert; the experts' mean is the prediction.
- `ResLTCifarResNet` (ResLT, Cui et al., TPAMI 2022): the whole trunk shared, three BatchNorms on its last map give
  the head, medium and tail branches, one linear classifier scores all three; their sum is the prediction.

They return `BranchedOutput(logits, features, branches)` (TDE's, which has one classifier, a `ModelOutput`), with the
`__call__(x, train, mask=None)` of every ltjax model, so the train and eval steps run them unchanged; the method's
loss reads `branches`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ltjax.models.heads import (
    BranchedOutput,
    CausalNormHead,
    ModelOutput,
    pytorch_linear_bias_init,
    pytorch_linear_kernel_init,
)
from ltjax.models.resnet_cifar import (
    CifarBasicBlock,
    CifarNetwork,
    batch_norm,
    cifar_head,
    cifar_stem,
    global_average_pool,
    kaiming_normal_fan_in,
    residual_blocks,
    stage_plan,
)

BILATERAL_HEADS = ("bilateral", "causal_norm")


class BilateralCifarResNet(CifarNetwork):
    """BBN's bilateral ResNet (`lib/backbone/resnet_cifar.py`): the stem, the first two stages and the last stage's
    blocks but one are shared; the last block exists twice (`branch1_block`: BBN's conventional branch,
    `branch2_block`: its re-balancing branch), each pooled to `D = 64` features. `features` is their concatenation
    `[B, 128]`.

    Heads:
      "bilateral" (BBN): one linear classifier `[128, C]` with one bias, written per branch:
        `branches[:, k] = f_k @ W_k + b / 2`, `logits = branches.sum(1)` (BBN's test rule, `W_1 f_1 + W_2 f_2 + b`).
        BBN's training mixes the branches of two different batches, `2 alpha branches_u[:, 0] + 2 (1 - alpha)
        branches_r[:, 1]`, which is its reference's `2 alpha W_1 f_1 + 2 (1 - alpha) W_2 f_2 + b` exactly.
        The kernel and bias start as PyTorch's `nn.Linear` default, as BBN's classifier.
      "causal_norm" (TDE): `CausalNormHead` on the concatenation (returns a `ModelOutput`); its
        `num_heads`, `tau`, `gamma`, `alpha` and `momentum` are this network's attributes of the same names.

    ResNet-2, which has no block to duplicate, gives both branches its pooled stem (for smoke runs).
    """

    num_heads: int = 2
    tau: float = 16.0
    gamma: float = 0.03125
    alpha: float = 1.5
    momentum: float = 0.9

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> BranchedOutput | ModelOutput:
        if self.head not in BILATERAL_HEADS:
            raise ValueError(f"the bilateral network takes head 'bilateral' (BBN) or 'causal_norm' (TDE), got "
                             f"{self.head!r}")
        plan = stage_plan(self.blocks_per_stage, self.stage_channels, self.stage_strides)
        shared, last = (plan[:-1], plan[-1:]) if self.blocks_per_stage[-1] else (plan, [])
        x = residual_blocks(self, cifar_stem(self, x, train, mask), train, CifarBasicBlock, shared, mask)
        branch_features = [
            global_average_pool(residual_blocks(self, x, train, CifarBasicBlock,
                                                [(f"branch{k}_block", channels, strides)
                                                 for _, channels, strides in last], mask))
            for k in (1, 2)
        ]
        features = jnp.concatenate(branch_features, axis=-1)
        if self.head == "causal_norm":
            head = CausalNormHead(self.num_classes, num_heads=self.num_heads, tau=self.tau, gamma=self.gamma,
                                  alpha=self.alpha, momentum=self.momentum, axis_name=self.batch_norm_axis_name,
                                  param_dtype=self.param_dtype, name="head")
            return ModelOutput(head(features, train, mask), features)
        branches = _BilateralLinear(self.num_classes, self.param_dtype, name="head")(branch_features)
        return BranchedOutput(jnp.sum(branches, axis=1), features, branches)


class _BilateralLinear(nn.Module):
    """`nn.Linear(2D, C)` over `[f_1 | f_2]`, returned per branch: `[B, 2, C]` with `f_k @ W_k + b / 2`."""

    num_classes: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, branch_features: Sequence[jax.Array]) -> jax.Array:
        width = branch_features[0].shape[-1]
        fan_in = len(branch_features) * width
        kernel = self.param("kernel", pytorch_linear_kernel_init, (fan_in, self.num_classes), self.param_dtype)
        bias = self.param("bias", pytorch_linear_bias_init(fan_in), (self.num_classes,), self.param_dtype)
        kernel, half_bias = kernel.astype(jnp.float32), bias.astype(jnp.float32) / 2
        return jnp.stack([
            jnp.matmul(features.astype(jnp.float32), kernel[k * width:(k + 1) * width],
                       precision=jax.lax.Precision.HIGHEST) + half_bias
            for k, features in enumerate(branch_features)
        ], axis=1)


class MultiExpertCifarResNet(CifarNetwork):
    """RIDE's multi-expert ResNet-32 (`model/ldam_drw_resnets/ride_resnet_cifar.py`, `reduce_dimension` on): the stem
    and stage 1 shared; expert k has its own stages 2 and 3 (`expert{k}_stage{s}_block{i}`, 24 and 48 channels
    instead of 32 and 64 with `reduce_dimension`) and its own head (`expert{k}_head`; RIDE trains "normed" heads,
    whose cosines the loss scales by s = 30).

    `branches [B, K, C]` are the experts' logits, `logits` their mean (the prediction without the router), `features`
    the experts' pooled features concatenated, `[B, K * 48]`.
    """

    num_experts: int = 3
    reduce_dimension: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> BranchedOutput:
        shared_plan = stage_plan(self.blocks_per_stage[:1], self.stage_channels[:1], self.stage_strides[:1])
        x = residual_blocks(self, cifar_stem(self, x, train, mask), train, CifarBasicBlock, shared_plan, mask)
        channels = (24, 48) if self.reduce_dimension else self.stage_channels[1:]
        expert_features, expert_logits = [], []
        for expert in range(1, self.num_experts + 1):
            plan = stage_plan(self.blocks_per_stage[1:], channels, self.stage_strides[1:], first_stage=2,
                              prefix=f"expert{expert}_")
            features = global_average_pool(residual_blocks(self, x, train, CifarBasicBlock, plan, mask))
            expert_features.append(features)
            expert_logits.append(cifar_head(self, kaiming_normal_fan_in, name=f"expert{expert}_head")(features))
        branches = jnp.stack(expert_logits, axis=1)
        return BranchedOutput(jnp.mean(branches, axis=1), jnp.concatenate(expert_features, axis=-1), branches)


class ResLTCifarResNet(CifarNetwork):
    """ResLT's CIFAR network (`CIFAR/networks/resnet_cifar.py`): the whole ResNet trunk, then three BatchNorms
    (`branch1_bn` head, `branch2_bn` medium, `branch3_bn` tail; affine, own running statistics, no ReLU) on its last
    map, each pooled and scored by ONE shared classifier (`head`, linear with bias, kaiming-normal kernel as the
    LDAM-DRW ResNet's).

    `branches [B, 3, C]`, `logits` their sum (ResLT's prediction), `features` the trunk's pooled map `[B, 64]`.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> BranchedOutput:
        plan = stage_plan(self.blocks_per_stage, self.stage_channels, self.stage_strides)
        trunk = residual_blocks(self, cifar_stem(self, x, train, mask), train, CifarBasicBlock, plan, mask)
        head = cifar_head(self, kaiming_normal_fan_in)
        branches = jnp.stack([
            head(global_average_pool(batch_norm(train, self.batch_norm_axis_name, self.param_dtype,
                                                name=f"branch{k}_bn")(trunk, mask)))
            for k in (1, 2, 3)
        ], axis=1)
        return BranchedOutput(jnp.sum(branches, axis=1), global_average_pool(trunk), branches)


NETWORKS = {
    "bilateral": BilateralCifarResNet,
    "experts": MultiExpertCifarResNet,
    "reslt": ResLTCifarResNet,
}
