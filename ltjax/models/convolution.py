"""The CIFAR ResNet's convolution: `flax.linen.Conv`'s computation and parameters, with a kernel gradient that
XLA:CPU computes in batch chunks.

The forward pass and the input gradient are those of `jax.lax.conv_general_dilated` (NHWC input, HWIO kernel, no
bias, optionally grouped as ResNeXt's), exactly what `flax.linen.Conv` emits. The kernel gradient is a sum over the
batch; on CPU it is formed as the sum of the kernel gradients of `KERNEL_GRADIENT_CHUNK`-example chunks. XLA:CPU
lowers a kernel gradient as one convolution reducing over batch x height x width, after copying both operands into
batch-minor layouts; on ResNet-32's shapes the chunked form is about 1.6x faster per layer and the chunks, being
independent, also run concurrently (the ResNet-32 train step: 1.4x; `benchmarks/README.md`). Other platforms keep
the single convolution (`jax.lax.platform_dependent`, resolved when the step is compiled). Only the order of the
float32 additions differs.

Under `jax.vmap` with a batched kernel (the members of an ensemble, `ltjax.train.build_ensemble`), XLA would lower
the convolutions to grouped convolutions, about 5x slower per member on CPU than the single convolution; on CPU the
batched forward pass and gradients run instead as one convolution per member (the same program a single run
compiles, N times), elsewhere as the grouped convolution.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.custom_batching import custom_vmap

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Examples per chunk of the kernel gradient on CPU.
KERNEL_GRADIENT_CHUNK = 16

Padding = tuple[tuple[int, int], tuple[int, int]]


def _convolve(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding,
              feature_group_count: int = 1) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DIMENSION_NUMBERS,
                                        feature_group_count=feature_group_count)


def _kernel_gradient(x, kernel, output_gradient, strides, padding, feature_group_count=1):
    transpose = jax.linear_transpose(lambda k: _convolve(x, k, strides, padding, feature_group_count), kernel)
    return transpose(output_gradient)[0]


def chunked_kernel_gradient(x, kernel, output_gradient, strides, padding, feature_group_count=1):
    """The kernel gradient as the float32 sum of the kernel gradients of `KERNEL_GRADIENT_CHUNK`-example chunks."""
    batch = x.shape[0]
    chunks = batch // KERNEL_GRADIENT_CHUNK if batch % KERNEL_GRADIENT_CHUNK == 0 else 1
    total = None
    for x_chunk, gradient_chunk in zip(jnp.split(x, chunks), jnp.split(output_gradient, chunks)):
        part = _kernel_gradient(x_chunk, kernel, gradient_chunk, strides, padding, feature_group_count)
        part = part.astype(jnp.float32)
        total = part if total is None else total + part
    return total.astype(kernel.dtype)


def _per_member_on_cpu(fn: Callable) -> Callable:
    """`fn` whose `jax.vmap` is, on CPU, one call of `fn` per index of the mapped axis, and elsewhere `fn`'s own
    vectorisation."""
    batched = custom_vmap(fn)

    @batched.def_vmap
    def rule(axis_size, in_batched, *args):
        def unrolled(*args):
            calls = [fn(*(a[i] if mapped else a for a, mapped in zip(args, in_batched))) for i in range(axis_size)]
            return jax.tree.map(lambda *outputs: jnp.stack(outputs), *calls)

        def vectorized(*args):
            return jax.vmap(fn, in_axes=tuple(0 if mapped else None for mapped in in_batched))(*args)

        outputs = jax.lax.platform_dependent(*args, cpu=unrolled, default=vectorized)
        return outputs, jax.tree.map(lambda _: True, outputs)

    return batched


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def convolve(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding,
             feature_group_count: int = 1) -> jax.Array:
    """`jax.lax.conv_general_dilated` in NHWC / HWIO, grouped when `feature_group_count > 1` (the kernel is then
    `[kh, kw, in / groups, out]`); on CPU its kernel gradient is summed over batch chunks and its `vmap` over kernels
    is one convolution per kernel."""
    convolution = functools.partial(_convolve, strides=strides, padding=padding,
                                    feature_group_count=feature_group_count)
    return _per_member_on_cpu(convolution)(x, kernel)


def _convolve_forward(x, kernel, strides, padding, feature_group_count):
    return convolve(x, kernel, strides, padding, feature_group_count), (x, kernel)


def _convolve_backward(strides, padding, feature_group_count, residuals, output_gradient):
    x, kernel = residuals
    gradients = functools.partial(_gradients, strides=strides, padding=padding,
                                  feature_group_count=feature_group_count)
    return _per_member_on_cpu(gradients)(x, kernel, output_gradient)


def _gradients(x, kernel, output_gradient, strides, padding, feature_group_count):
    input_transpose = jax.linear_transpose(
        lambda inputs: _convolve(inputs, kernel, strides, padding, feature_group_count), x)
    (input_gradient,) = input_transpose(output_gradient)
    options = {"strides": strides, "padding": padding, "feature_group_count": feature_group_count}
    kernel_gradient = jax.lax.platform_dependent(
        x, kernel, output_gradient,
        cpu=functools.partial(chunked_kernel_gradient, **options),
        default=functools.partial(_kernel_gradient, **options),
    )
    return input_gradient, kernel_gradient


convolve.defvjp(_convolve_forward, _convolve_backward)


class Conv(nn.Module):
    """A bias-free 2-D convolution over NHWC inputs with a `[kh, kw, in / groups, out]` parameter named `kernel`,
    computed as `flax.linen.Conv(features, kernel_size, strides, padding, use_bias=False, feature_group_count)`
    computes it (inputs and kernel cast to `dtype`), with the kernel gradient of `convolve`.

    Attributes:
      features: output channels.
      kernel_size: `(kh, kw)`.
      strides: `(sh, sw)`, or one int for both.
      padding: `((top, bottom), (left, right))`.
      kernel_init: initialiser of the kernel.
      dtype: compute dtype.
      param_dtype: dtype of the kernel.
      feature_group_count: groups of a grouped convolution (ResNeXt's): the input and output channels split into
        this many consecutive groups, output group g seeing input group g alone (PyTorch's `groups`).
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: Padding = ((0, 0), (0, 0))
    kernel_init: Callable = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    feature_group_count: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        groups = self.feature_group_count
        if x.shape[-1] % groups or self.features % groups:
            raise ValueError(f"feature_group_count={groups} must divide the input channels ({x.shape[-1]}) and the "
                             f"output channels ({self.features}) of convolution {self.name!r}")
        kernel = self.param(
            "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1] // groups, self.features), self.param_dtype
        )
        strides = (self.strides, self.strides) if isinstance(self.strides, int) else tuple(self.strides)
        padding = tuple(tuple(pair) for pair in self.padding)
        return convolve(x.astype(self.dtype), kernel.astype(self.dtype), strides, padding, groups)
