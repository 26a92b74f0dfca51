"""BatchNorm as one per-channel affine map, `x * a + b`, with PyTorch's semantics.

In training mode BatchNorm normalises with the batch's statistics; `flax.linen.BatchNorm` writes that as
`(x - mean) * (scale * rsqrt(var + eps)) + bias`. Under autodiff the centred input `x - mean` is then a residual of
the backward pass, so XLA writes one extra activation-sized array per layer in the forward pass and reads it back
in the backward pass. Folding the statistics into a per-channel multiplier and shift,

    a = scale * rsqrt(var + eps),   b = bias - mean * a,   y = x * a + b,

keeps the convolution's output as the only activation-sized residual (`a` and `b` are `[C]` vectors). It is also
how PyTorch's CPU kernel computes BatchNorm (`batch_norm_cpu_transform_input`: `alpha = invstd * weight`,
`beta = bias - mean * alpha`). The gradient is the usual BatchNorm gradient; only the float rounding of the two
forms differs.

Parameters and state carry Flax's names and layout (`params`: `scale`, `bias`; `batch_stats`: `mean`, `var`), so
checkpoints and parameter trees are those of `flax.linen.BatchNorm`.

A `mask` over the batch (an epoch's last, padded batch) takes the statistics over its real examples alone, as
PyTorch takes them over a smaller last batch, however the padding falls across the devices.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


class BatchNorm(nn.Module):
    """BatchNorm over the last axis, computed in float32 whatever the input dtype.

    Statistics: mean and mean of squares in one pass (Flax's `use_fast_variance`), variance
    `max(0, E[x^2] - E[x]^2)`; with `axis_name`, both are averaged over that device axis (synchronised BatchNorm),
    so a data-parallel step normalises as one device would on the global batch. The running averages decay by
    `momentum` (Flax's convention: 0.9 is PyTorch's momentum 0.1) and are updated with the biased batch variance,
    as Flax does.

    Attributes:
      use_running_average: normalise with the running statistics (evaluation) instead of the batch's (training).
      axis_name: device axis to average the batch statistics over; ignored at `init`.
      momentum: decay of the running averages.
      epsilon: added to the variance.
      param_dtype: dtype of `scale` and `bias`.
    """

    use_running_average: bool
    axis_name: str | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Normalises `x [B, ..., C]`; in training, `mask [B]` marks the examples the statistics are taken over."""
        x = x.astype(jnp.float32)
        channels = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones, channels, self.param_dtype).astype(jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, channels, self.param_dtype).astype(jnp.float32)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, channels, jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, channels, jnp.float32)
        if self.use_running_average:
            mean, var = running_mean.value, running_var.value
        else:
            mean, var = self._batch_statistics(x) if mask is None else self._masked_statistics(x, mask)
            if not self.is_initializing():
                running_mean.value = self.momentum * running_mean.value + (1.0 - self.momentum) * mean
                running_var.value = self.momentum * running_var.value + (1.0 - self.momentum) * var
        multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
        return x * multiplier + (bias - mean * multiplier)

    def _batch_statistics(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        axes = tuple(range(x.ndim - 1))
        moments = jnp.stack([jnp.mean(x, axes), jnp.mean(jnp.square(x), axes)])
        if self.axis_name is not None and not self.is_initializing():
            moments = jax.lax.pmean(moments, self.axis_name)
        return _mean_and_variance(moments)

    def _masked_statistics(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and variance over the examples `mask` marks: sums and counts are summed over the devices, since the
        padding (and so each device's count) may fall unevenly on them."""
        axes = tuple(range(x.ndim - 1))
        weights = mask.astype(jnp.float32).reshape(mask.shape + (1,) * (x.ndim - 1))
        sums = jnp.stack([jnp.sum(x * weights, axes), jnp.sum(jnp.square(x) * weights, axes)])
        count = jnp.sum(weights) * (x.size // (x.shape[0] * x.shape[-1]))
        if self.axis_name is not None and not self.is_initializing():
            sums, count = jax.lax.psum((sums, count), self.axis_name)
        return _mean_and_variance(sums / count)


def _mean_and_variance(moments: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(E[x], E[x^2] - E[x]^2)` from the stacked moments; the variance can round below zero, so it is clipped."""
    mean, mean_of_squares = moments
    return mean, jnp.maximum(0.0, mean_of_squares - jnp.square(mean))
