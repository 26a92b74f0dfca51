"""Classifier heads shared by the ResNets, and the `(logits, features)` output they all return.

Every head maps float32 features `[B, D]` to float32 logits `[B, C]`. Heads always compute in float32, whatever
the backbone's compute dtype, and their matrix products run at `Precision.HIGHEST` (TPUs and recent GPUs otherwise
round float32 matmul inputs to bfloat16 or TF32), because the losses downstream (LDAM/KPS margins on cosines, IIF's
cosine classifier) are sensitive to rounding of the logits; a `[B, D] x [D, C]` product costs nothing next to the
backbone.

Kernels are stored `[D, C]` (Flax's layout; PyTorch's `nn.Linear` stores `[C, D]`). A class's weight vector is
therefore the column `kernel[:, c]`.
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from ltjax.losses import disalign_logits, moving_feature_direction, tde_logits

HEAD_NAMES = ("linear", "normed", "cosine", "scaled_linear", "disalign")

# PyTorch's `nn.Linear` default weight init, kaiming_uniform(a=sqrt(5)), is uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
pytorch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

_exact_matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)

# F.normalize's default floor on the norm; only an all-zero feature vector ever reaches it.
NORM_EPSILON = 1e-12


class ModelOutput(NamedTuple):
    """What every ltjax model returns from `__call__`.

    Attributes:
      logits: `[B, C]` float32 class scores (cosines in [-1, 1] for the `normed` head).
      features: `[B, D]` float32 penultimate features (after the last ReLU and global average pooling), the input
        of the head: IB takes their L1 norm, SWRM averages them into class prototypes.
    """

    logits: jax.Array
    features: jax.Array


class BranchedOutput(NamedTuple):
    """What a network with branches returns (`ltjax.models.branched`): `ModelOutput`'s fields and the branches'.

    Attributes:
      logits: `[B, C]` the network's prediction logits (its branches combined as its reference predicts).
      features: `[B, D]` float32 penultimate features (the network's docstring says which).
      branches: `[B, K, C]` each branch's (or expert's) own logits, which the method's loss combines.
    """

    logits: jax.Array
    features: jax.Array
    branches: jax.Array


def safe_l2_norm(x: jax.Array, axis: int, epsilon: float = NORM_EPSILON) -> jax.Array:
    """`max(||x||_2, epsilon)` along `axis` (kept), with a finite gradient at `x = 0`.

    `jnp.linalg.norm` has a NaN gradient at zero (sqrt'(0) = inf times 0); clamping the squared norm before the
    square root sends the gradient of the clamped branch to the constant instead.
    """
    squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return jnp.sqrt(jnp.maximum(squared, epsilon**2))


def safe_l2_normalize(x: jax.Array, axis: int, epsilon: float = NORM_EPSILON) -> jax.Array:
    """`x / max(||x||_2, epsilon)` along `axis`: PyTorch's `F.normalize`, with a finite gradient at `x = 0`."""
    return x / safe_l2_norm(x, axis, epsilon)


def pytorch_linear_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's `nn.Linear` default bias init, uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def unit_column_uniform_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """uniform(-1, 1) with every column rescaled to unit L2 norm.

    This is what LDAM's `NormedLinear` does with `uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)` on its `[D, C]`
    weight (kaidic/LDAM-DRW `models/resnet_cifar.py`).
    """
    kernel = jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
    return safe_l2_normalize(kernel, axis=0).astype(dtype)


def _affine(module: nn.Module, features: jax.Array, num_classes: int, kernel_init: nn.initializers.Initializer,
            param_dtype: Any) -> jax.Array:
    """`x @ W + b` in float32 with `module`'s parameters `kernel` `[D, C]` and `bias` `[C]` (PyTorch's init)."""
    features = features.astype(jnp.float32)
    fan_in = features.shape[-1]
    kernel = module.param("kernel", kernel_init, (fan_in, num_classes), param_dtype)
    bias = module.param("bias", pytorch_linear_bias_init(fan_in), (num_classes,), param_dtype)
    return _exact_matmul(features, kernel.astype(jnp.float32)) + bias.astype(jnp.float32)


class LinearHead(nn.Module):
    """A plain affine classifier, `x @ W + b` (PyTorch `nn.Linear`), optionally with a learnable scale per class.

    The bias is always initialised as PyTorch does, uniform(-1/sqrt(D), 1/sqrt(D)); the kernel init is chosen by
    the backbone (kaiming-normal in the CIFAR ResNets, PyTorch's default uniform in the torchvision ResNets).

    With `learnable_scales` (the head named "scaled_linear") the logits are `(x @ W + b) * scales`, the scales
    starting at 1: learnable weight scaling (LWS, Kang et al., ICLR 2020; `classifier-balancing/models/
    TauNormClassifier.py`), whose second stage trains only the scales of a first stage's linear head, loading its
    `kernel` and `bias` under the same names.

    Attributes:
      num_classes: C.
      kernel_init: initialiser of the `[D, C]` kernel.
      param_dtype: dtype of the parameters.
      learnable_scales: multiply each class's logit by a learned scale.
    """

    num_classes: int
    kernel_init: nn.initializers.Initializer = pytorch_linear_kernel_init
    param_dtype: Any = jnp.float32
    learnable_scales: bool = False

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        logits = _affine(self, features, self.num_classes, self.kernel_init, self.param_dtype)
        if self.learnable_scales:
            logits = logits * self.param("scales", nn.initializers.ones, (self.num_classes,), self.param_dtype)
        return logits


class DisAlignHead(nn.Module):
    """A linear classifier with DisAlign's adaptive calibration (Zhang et al., CVPR 2021; cvpods' `DisAlignLinear`):
    `(1 + sigma alpha) (x @ W + b) + sigma beta` with `sigma = sigmoid(x @ v + v0)` (`losses.disalign_logits`).

    `kernel` and `bias` are named as in `LinearHead`, so a first stage's linear head loads into them; DisAlign's
    second stage trains only `logit_scale` (alpha, starting at ones), `logit_bias` (beta, zeros) and the confidence
    layer (`confidence_kernel`, the constant 0.1 as the reference; `confidence_bias`, PyTorch's default uniform).

    Attributes:
      num_classes: C.
      kernel_init: initialiser of the `[D, C]` kernel.
      param_dtype: dtype of the parameters.
    """

    num_classes: int
    kernel_init: nn.initializers.Initializer = pytorch_linear_kernel_init
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        logits = _affine(self, features, self.num_classes, self.kernel_init, self.param_dtype)
        fan_in = features.shape[-1]
        confidence_kernel = self.param("confidence_kernel", nn.initializers.constant(0.1), (fan_in, 1),
                                       self.param_dtype)
        confidence_bias = self.param("confidence_bias", pytorch_linear_bias_init(fan_in), (1,), self.param_dtype)
        confidence = (_exact_matmul(features.astype(jnp.float32), confidence_kernel.astype(jnp.float32))
                      + confidence_bias.astype(jnp.float32))[..., 0]
        return disalign_logits(
            logits, confidence,
            logit_scale=self.param("logit_scale", nn.initializers.ones, (self.num_classes,), self.param_dtype),
            logit_bias=self.param("logit_bias", nn.initializers.zeros, (self.num_classes,), self.param_dtype))


class NormedLinearHead(nn.Module):
    """Cosine similarities between the features and the class weights: `normalize(x) @ normalize(W, axis=0)`.

    LDAM's and KPS's `NormedLinear` (kaidic/LDAM-DRW `models/resnet_cifar.py`, Keke921/KPSLoss): no bias, no scale;
    the output lies in [-1, 1] and the loss applies its own scale `s`. The kernel starts as uniform(-1, 1) with unit
    columns, as in the reference; only its directions matter.

    A zero feature vector gives zero cosines; its gradient is finite but of order 1/epsilon (as with PyTorch's
    `F.normalize`, whose epsilon this is).

    Attributes:
      num_classes: C.
      epsilon: floor on the norms.
      param_dtype: dtype of the parameters.
    """

    num_classes: int
    epsilon: float = NORM_EPSILON
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        features = features.astype(jnp.float32)
        kernel = self.param(
            "kernel", unit_column_uniform_init, (features.shape[-1], self.num_classes), self.param_dtype
        ).astype(jnp.float32)
        unit_features = safe_l2_normalize(features, axis=-1, epsilon=self.epsilon)
        unit_kernel = safe_l2_normalize(kernel, axis=0, epsilon=self.epsilon)
        return _exact_matmul(unit_features, unit_kernel)


class CosineClassifierHead(nn.Module):
    """IIF's cosine classifier: `z_c = s * ||x|| / (1 + ||x||) * <x / ||x||, w_c / ||w_c||>`.

    `CosNorm_Classifier` in kostas1515/iif `classification/resnet_cifar.py` (model flag `--classif_norm cosine`),
    after Liu et al., "Large-Scale Long-Tailed Recognition in an Open World" (OLTR, CVPR 2019). The squashing factor
    `||x|| / (1 + ||x||)` keeps small features from producing confident logits. The product simplifies to
    `s * <x, w_c / ||w_c||> / (1 + ||x||)`, which is how it is computed: smooth and NaN-free at `x = 0`, where the
    gradient is `s * w_c / ||w_c||`.

    Scale: a fixed `scale` (16, the reference default) or, with `learnable_scale`, a scalar parameter `a` initialised
    to `initial_root_scale` and used as `s = a**2` (the reference's `lr_cosine`: `a` starts at 5, so s = 25).

    The kernel starts uniform(-1/sqrt(D), 1/sqrt(D)), the reference's `reset_parameters`.

    Attributes:
      num_classes: C.
      scale: the fixed scale s (unused when `learnable_scale`).
      learnable_scale: learn `a` with `s = a**2`.
      initial_root_scale: the initial `a` when `learnable_scale`.
      epsilon: floor on the class weights' norms.
      param_dtype: dtype of the parameters.
    """

    num_classes: int
    scale: float = 16.0
    learnable_scale: bool = False
    initial_root_scale: float = 5.0
    epsilon: float = NORM_EPSILON
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        features = features.astype(jnp.float32)
        kernel = self.param(
            "kernel", pytorch_linear_kernel_init, (features.shape[-1], self.num_classes), self.param_dtype
        ).astype(jnp.float32)
        if self.learnable_scale:
            root_scale = self.param(
                "root_scale", nn.initializers.constant(self.initial_root_scale), (), self.param_dtype
            ).astype(jnp.float32)
            scale = jnp.square(root_scale)
        else:
            scale = self.scale
        unit_kernel = safe_l2_normalize(kernel, axis=0, epsilon=self.epsilon)
        feature_norm = safe_l2_norm(features, axis=-1, epsilon=self.epsilon)
        return scale * _exact_matmul(features, unit_kernel) / (1.0 + feature_norm)


class CausalNormHead(nn.Module):
    """The de-confounded classifier of TDE (Tang et al., NeurIPS 2020; `losses.tde_logits`), with its moving feature
    sum kept beside BatchNorm's running statistics.

    In training the logits are the multi-head causal-norm scores, and `batch_stats/feature_direction` (`[D]`, zeros
    at the start) takes the batch's mean feature (`losses.moving_feature_direction`, over the examples `mask` marks,
    summed over the device axis); in evaluation the counterfactual along that direction is subtracted with strength
    `alpha`: TDE inference, the method's prediction. The kernel starts uniform(-1/sqrt(D), 1/sqrt(D)), no bias.

    Attributes:
      num_classes: C.
      num_heads, tau, gamma, alpha: see `losses.tde_logits`.
      momentum: the moving sum's decay (`losses.moving_feature_direction`).
      axis_name: the data-parallel device axis (None on one device and at `init`).
      param_dtype: dtype of the kernel.
    """

    num_classes: int
    num_heads: int = 2
    tau: float = 16.0
    gamma: float = 0.03125
    alpha: float = 1.5
    momentum: float = 0.9
    axis_name: str | None = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        features = features.astype(jnp.float32)
        kernel = self.param("kernel", pytorch_linear_kernel_init, (features.shape[-1], self.num_classes),
                            self.param_dtype)
        direction = self.variable("batch_stats", "feature_direction", jnp.zeros, features.shape[-1:], jnp.float32)
        options = {"num_heads": self.num_heads, "tau": self.tau, "gamma": self.gamma}
        if train:
            if not self.is_initializing():
                direction.value = moving_feature_direction(direction.value, features, momentum=self.momentum,
                                                           mask=mask, axis_name=self.axis_name)
            return tde_logits(features, kernel, **options, alpha=0.0)
        return tde_logits(features, kernel, direction.value, alpha=self.alpha, **options)


def make_head(
    head: str,
    num_classes: int,
    *,
    linear_kernel_init: nn.initializers.Initializer,
    cosine_learnable_scale: bool,
    param_dtype: Any,
    name: str = "head",
) -> nn.Module:
    """The head named `head` (one of `HEAD_NAMES`), as submodule `name`; raises `ValueError` for any other name."""
    if cosine_learnable_scale and head != "cosine":
        raise ValueError(f"cosine_learnable_scale=True needs head='cosine', got head={head!r}")
    if head == "linear":
        return LinearHead(num_classes, kernel_init=linear_kernel_init, param_dtype=param_dtype, name=name)
    if head == "normed":
        return NormedLinearHead(num_classes, param_dtype=param_dtype, name=name)
    if head == "disalign":
        return DisAlignHead(num_classes, kernel_init=linear_kernel_init, param_dtype=param_dtype, name=name)
    if head == "scaled_linear":
        return LinearHead(num_classes, kernel_init=linear_kernel_init, param_dtype=param_dtype, learnable_scales=True,
                          name=name)
    if head == "cosine":
        return CosineClassifierHead(
            num_classes, learnable_scale=cosine_learnable_scale, param_dtype=param_dtype, name=name
        )
    raise ValueError(f"head must be one of {HEAD_NAMES}, got {head!r}")
