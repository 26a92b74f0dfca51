"""Training augmentation on the device: pure, jit-able JAX functions of a uint8 batch and a key.

Why: from the decoded cache the host ships raw uint8 batches at the speed of a memory copy, and host pad-crop-flip
then becomes the pipeline's cost, about ten times the copy's (see benchmarks/README.md). On the device it is a pad
and a gather per batch, fused into the train step, and the host only gathers. Call it at the start of the jitted
step, before `augment.normalize`:

    key = device_augment.step_key(seed, epoch, step)
    images = device_augment.pad_crop_flip(images, key, padding=4)   # uint8 [B, H, W, C] -> same
    inputs = augment.normalize(images, normalization)

Semantics are those of the host `augment.PadCropFlip` (torchvision's `RandomCrop(size, padding)` with zero padding,
then `RandomHorizontalFlip(0.5)`): `pad_crop_flip_with` on the same offsets and flips gives exactly the host
functions' `augment.flip_horizontal(augment.pad_crop(...))`. The random draws differ from the host's (a JAX key
instead of a NumPy generator), so a run augmented on the device sees other crops than one augmented on the host.

Keys. `step_key(seed, epoch, step)` is a pure function of its arguments, so a run resumed at (epoch, step) draws
exactly what an uninterrupted run drew there. Each example draws from its own key, `fold_in(step_key, i)` with i its
position in the global batch, rather than from one draw for the whole batch sliced per device. Why: the same
function then serves both places a step may call it, on the global batch under `jax.jit` (`index_offset=0`) or on
one device's shard inside `shard_map` / `pmap` (`index_offset = lax.axis_index(axis) * per_device_batch`), and an
example's augmentation depends only on (seed, epoch, step, position), never on the number of devices, on how the
batch is sharded, or on the batch size.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Folded into the seed's key first, so augmentation draws from a stream of its own, apart from the other uses of
# the run's seed (parameter initialisation, dropout).
_AUGMENT_STREAM = 0x617567  # "aug"


def step_key(seed: int | jax.Array, epoch: int | jax.Array, step: int | jax.Array) -> jax.Array:
    """The augmentation key of one training step, a pure function of (seed, epoch, step).

    Args:
      seed: the run's seed.
      epoch: the epoch, 0-indexed (a Python int or a traced int32 inside the step).
      step: the step within the epoch (likewise; the global step works as well, if used consistently).

    Returns:
      A typed `jax.random` key.
    """
    key = jax.random.fold_in(jax.random.key(seed), _AUGMENT_STREAM)
    return jax.random.fold_in(jax.random.fold_in(key, epoch), step)


def _check_images(images: jax.Array) -> None:
    if images.dtype != jnp.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [B, H, W, C], got {images.dtype} {images.shape}")


def _check_padding(padding: int) -> None:
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative Python int, got {padding!r}")


def pad_crop_flip_params(
    key: jax.Array, batch_size: int, *, padding: int, index_offset: int | jax.Array = 0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The crop offsets and flips of `batch_size` examples at global positions `index_offset + [0, batch_size)`.

    Args:
      key: the step's key (`step_key`).
      batch_size: examples to draw for (static).
      padding: zero border of the crop (static); offsets lie in [0, 2 * padding].
      index_offset: global position of the first example (0 for a global batch; inside `shard_map`,
        `lax.axis_index(axis) * batch_size`).

    Returns:
      `(tops, lefts, flips)`: int32 [batch_size] crop rows and columns in the padded image, bool [batch_size].
    """
    _check_padding(padding)

    def draw(position):
        crop_key, flip_key = jax.random.split(jax.random.fold_in(key, position))
        top, left = jax.random.randint(crop_key, (2,), 0, 2 * padding + 1)
        return top, left, jax.random.bernoulli(flip_key)

    return jax.vmap(draw)(index_offset + jnp.arange(batch_size))


def pad_crop_flip_with(
    images: jax.Array, tops: jax.Array, lefts: jax.Array, flips: jax.Array, *, padding: int
) -> jax.Array:
    """Zero-pads every image by `padding`, crops the original size at (tops, lefts), then mirrors where `flips`.

    Args:
      images: uint8 [B, H, W, C].
      tops: int [B] crop rows in the padded image, in [0, 2 * padding].
      lefts: int [B] crop columns in the padded image, in [0, 2 * padding].
      flips: bool [B]: mirror the crop left to right.
      padding: zero border width (static).

    Returns:
      uint8 [B, H, W, C].
    """
    _check_images(images)
    _check_padding(padding)
    _, height, width, channels = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def crop(image, top, left):
        return jax.lax.dynamic_slice(image, (top, left, 0), (height, width, channels))

    crops = jax.vmap(crop)(padded, tops, lefts)
    return jnp.where(flips[:, None, None, None], crops[:, :, ::-1], crops)


def pad_crop_flip(images: jax.Array, key: jax.Array, *, padding: int, index_offset: int | jax.Array = 0) -> jax.Array:
    """Random zero-pad crop and horizontal flip of every image, each drawn from its own position's key.

    The CIFAR recipe is `padding=4` at 32 px; the Tiny ImageNet recipe from scratch `padding=8` at 64 px.

    Args:
      images: uint8 [B, H, W, C], the global batch (or one device's shard, with `index_offset`).
      key: the step's key (`step_key`).
      padding: zero border on each side (static).
      index_offset: global position of `images[0]` (see `pad_crop_flip_params`).

    Returns:
      uint8 [B, H, W, C].
    """
    _check_images(images)
    tops, lefts, flips = pad_crop_flip_params(key, images.shape[0], padding=padding, index_offset=index_offset)
    return pad_crop_flip_with(images, tops, lefts, flips, padding=padding)
