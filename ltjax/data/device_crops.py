"""Random-resized crops and the evaluation resize on the device: pure, jit-able JAX functions of a uint8 batch.

Why: at 224 px the host's random-resized crop (Pillow, one image at a time) makes about 3k images/s on 2 cores
(benchmarks/README.md), too slow to feed a GPU. Here the host ships the stored uint8 images (one size per batch)
and the device crops, resizes and flips them inside the jitted step, before `augment.normalize`:

    key = device_augment.step_key(seed, epoch, step)
    crops = device_crops.random_resized_crop_flip(images, key, size=224)   # uint8 [B, H, W, C] -> float32
    inputs = augment.normalize(crops, normalization)

and evaluation resizes and centre-crops likewise (`resize_center_crop`).

Semantics are torchvision's on tensors: `RandomResizedCrop(size)` (its `get_params` draws, then `resized_crop` with
bilinear interpolation and `antialias=True`, the default since torchvision 0.17) followed by
`RandomHorizontalFlip(0.5)`; `Resize(resize_to)` (shorter side) followed by `CenterCrop(size)` for evaluation.
Bilinear with antialiasing is PyTorch's `interpolate(mode="bilinear", antialias=True)`: an output pixel is the
normalised triangle-weighted mean of the input pixels within `max(1, scale)` of its centre, `scale` being input
pixels per output pixel, so it reduces to plain bilinear interpolation (edge pixels repeated) when enlarging; the
weights only ever reach pixels inside the crop box, as when the box is cut out first.

Differences from torchvision: the crops are float32 pixel values in [0, 255], not rounded back to uint8 (PyTorch
resizes a uint8 tensor in fixed point and rounds; the normalisation that follows takes floats anyway); the box draws
are in float32 on a JAX key (the same distribution; a box whose width or height lands within float32 rounding of a
half-integer may round the other way); and the batch has one image size, the stored cache's.

Keys, as `ltjax.data.device_augment`: each example draws from `fold_in(key, position)`, its position in the global
batch, so one function serves the global batch under `jax.jit` (`index_offset=0`) and one device's shard inside
`shard_map` (`index_offset = lax.axis_index(axis) * shard_size`), and the draws depend only on (key, position).

How: a resize is separable, and every output column (then row) is a weighted sum of a fixed number of input
columns (rows) gathered at its own offsets: a few taps per output pixel rather than a product with a dense [size, H]
weight matrix. The number of taps is static, `ceil(2 * max(1, H / size))` (2 when enlarging).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# torchvision's `RandomResizedCrop.get_params`: boxes drawn before falling back to the centre crop.
_ATTEMPTS = 10
# One draw of uniforms per example (a single threefry call, which keeps the program small): the attempts' areas,
# then their aspect ratios, the box's top and left, and the flip.
_DRAWS = 2 * _ATTEMPTS + 3


def _check_images(images: jax.Array) -> None:
    if images.dtype != jnp.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [B, H, W, C], got {images.dtype} {images.shape}")


def _check_side(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive Python int (it sets a shape), got {value!r}")


def _check_range(name: str, bounds: tuple[float, float], *, positive: bool) -> tuple[float, float]:
    floor = "0 < min" if positive else "0 <= min"
    message = f"{name} must be a (min, max) pair of finite Python numbers with {floor} <= max, max > 0; got {bounds!r}"
    try:
        low, high = (float(bound) for bound in bounds)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not (math.isfinite(low) and math.isfinite(high) and (low > 0 if positive else low >= 0) and low <= high
            and high > 0):
        raise ValueError(message)
    return low, high


def _uniforms(key: jax.Array, batch_size: int, index_offset: int | jax.Array) -> jax.Array:
    """float32 [batch_size, _DRAWS] uniforms in [0, 1), each example's from its global position's key."""
    return jax.vmap(lambda position: jax.random.uniform(jax.random.fold_in(key, position), (_DRAWS,)))(
        index_offset + jnp.arange(batch_size)
    )


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's box after `_ATTEMPTS` misses: the whole image narrowed to the nearest allowed aspect, centred."""
    if width / height < ratio[0]:
        box_height, box_width = round(width / ratio[0]), width
    elif width / height > ratio[1]:
        box_height, box_width = height, round(height * ratio[1])
    else:
        box_height, box_width = height, width
    return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width


def _draw_box(uniforms: jax.Array, height: int, width: int, scale: tuple[float, float],
              ratio: tuple[float, float]) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One example's box from its uniforms [_DRAWS]."""
    area_draws, aspect_draws = uniforms[:_ATTEMPTS], uniforms[_ATTEMPTS: 2 * _ATTEMPTS]
    top_draw, left_draw = uniforms[2 * _ATTEMPTS], uniforms[2 * _ATTEMPTS + 1]
    # All attempts at once; the first that fits is the one torchvision's loop would stop at.
    areas = height * width * (scale[0] + (scale[1] - scale[0]) * area_draws)
    low, high = math.log(ratio[0]), math.log(ratio[1])
    aspects = jnp.exp(low + (high - low) * aspect_draws)
    # jnp.round rounds half to even, as Python's round does.
    box_widths = jnp.round(jnp.sqrt(areas * aspects)).astype(jnp.int32)
    box_heights = jnp.round(jnp.sqrt(areas / aspects)).astype(jnp.int32)
    fits = (box_widths > 0) & (box_widths <= width) & (box_heights > 0) & (box_heights <= height)
    first = jnp.argmax(fits)
    found = fits[first]
    fallback_top, fallback_left, fallback_height, fallback_width = _fallback_box(height, width, ratio)
    box_height = jnp.where(found, box_heights[first], fallback_height)
    box_width = jnp.where(found, box_widths[first], fallback_width)

    def uniform_integer(draw, count):
        # floor(u * count) is uniform on [0, count); the minimum guards float32 rounding u * count up to count.
        return jnp.minimum(jnp.floor(draw * count).astype(jnp.int32), count - 1)

    top = jnp.where(found, uniform_integer(top_draw, height - box_height + 1), fallback_top)
    left = jnp.where(found, uniform_integer(left_draw, width - box_width + 1), fallback_left)
    return top, left, box_height, box_width


def random_resized_crop_params(
    key: jax.Array,
    batch_size: int,
    image_height: int,
    image_width: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    index_offset: int | jax.Array = 0,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The crop boxes of `batch_size` examples at global positions `index_offset + [0, batch_size)`.

    Drawn as torchvision's `RandomResizedCrop.get_params`: up to 10 attempts of an area `uniform(scale) * H * W` and
    an aspect ratio `exp(uniform(log ratio))`, width `round(sqrt(area * aspect))` and height
    `round(sqrt(area / aspect))`; the first box that fits in the image is placed uniformly (top in [0, H - height],
    left in [0, W - width]); if none fits, the centre crop of the whole image narrowed to the nearest aspect ratio in
    `ratio`. The 10 attempts are drawn at once, each example from its own key.

    Args:
      key: the step's key (`ltjax.data.device_augment.step_key`).
      batch_size: examples to draw for (static).
      image_height: H, the images' height (static).
      image_width: W, the images' width (static).
      scale: range of the box's area as a fraction of the image's, (min, max) with 0 <= min <= max.
      ratio: range of the box's aspect ratio, width / height, (min, max) with 0 < min <= max.
      index_offset: global position of the first example (0 for a global batch; inside `shard_map`,
        `lax.axis_index(axis) * batch_size`).

    Returns:
      `(tops, lefts, heights, widths)`, int32 [batch_size] each: the box `image[top: top + height, left: left + width]`.

    Raises:
      ValueError: a side or the batch size is not a Python int of the right sign, or `scale` or `ratio` is not an
        ordered range of the allowed values.
    """
    _check_side("image_height", image_height)
    _check_side("image_width", image_width)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative Python int, got {batch_size!r}")
    scale = _check_range("scale", scale, positive=False)
    ratio = _check_range("ratio", ratio, positive=True)
    uniforms = _uniforms(key, batch_size, index_offset)
    return jax.vmap(lambda draws: _draw_box(draws, image_height, image_width, scale, ratio))(uniforms)


def _taps(
    starts: jax.Array, lengths: jax.Array, *, in_size: int, resized: int, first: int, count: int, antialias: bool
) -> tuple[jax.Array, jax.Array]:
    """Where and how much each output pixel of one axis reads from the input, for a batch of boxes.

    The box `[start, start + length)` of an axis of `in_size` pixels is resized to `resized` pixels, of which
    the `count` from `first` on are produced.

    Returns:
      `(indices, weights)`, [B, count, taps]: int32 input pixels and their float32 weights (summing to 1).
    """
    lengths = lengths.astype(jnp.float32)
    pixel_scale = lengths / resized  # input pixels per output pixel
    # Antialiasing widens the triangle to the output pixel's footprint when shrinking; 1 is plain bilinear.
    widest = max(1.0, in_size / resized) if antialias else 1.0
    kernel_width = jnp.maximum(pixel_scale, 1.0) if antialias else jnp.ones_like(pixel_scale)
    # Centres in box coordinates, where pixel j covers [j, j + 1).
    centers = (first + jnp.arange(count, dtype=jnp.float32) + 0.5) * pixel_scale[:, None]
    # The first pixel whose centre lies within the kernel; an open interval of 2 * width holds at most
    # ceil(2 * width) pixels.
    lowest = jnp.floor(centers - kernel_width[:, None] - 0.5).astype(jnp.int32) + 1
    offsets = lowest[..., None] + jnp.arange(math.ceil(2 * widest), dtype=jnp.int32)
    distances = jnp.abs(offsets + 0.5 - centers[..., None]) / kernel_width[:, None, None]
    inside = (offsets >= 0) & (offsets < lengths[:, None, None])
    weights = jnp.where(inside, jnp.maximum(0.0, 1.0 - distances), 0.0)
    # Every centre lies inside its box, so some pixel within half a pixel of it has a weight of at least 1/2.
    weights = weights / weights.sum(axis=-1, keepdims=True)
    indices = jnp.clip(starts[:, None, None] + offsets, 0, in_size - 1)
    return indices, weights


def _gather_rows(rows: jax.Array, indices: jax.Array, weights: jax.Array) -> jax.Array:
    """float32 [B, S, F]: `sum over k of weights[b, s, k] * rows[b, indices[b, s, k]]`, for rows [B, R, F]."""
    out = jnp.zeros((), jnp.float32)
    # A sum of one gather per tap, rather than one gather of all the taps and a reduction over them: XLA fuses the
    # taps into one pass that writes only the output.
    for tap in range(indices.shape[-1]):
        picked = jax.vmap(lambda image_rows, index: image_rows[index])(rows, indices[:, :, tap])
        out = out + picked.astype(jnp.float32) * weights[:, :, tap, None]
    return out


def _resample(images: jax.Array, rows: tuple[jax.Array, jax.Array], columns: tuple[jax.Array, jax.Array]):
    """float32 [B, S, T, C] from uint8 [B, H, W, C], rows [B, S, K] and columns [B, T, L] (indices, weights).

    Separable: the columns of the transposed image first, then the rows, so that both passes gather whole
    contiguous rows of pixels (a gather of single pixels along W is several times slower on XLA:CPU).
    """
    batch, height, width, channels = images.shape
    out_width = columns[0].shape[1]
    transposed = images.transpose(0, 2, 1, 3).reshape(batch, width, height * channels)
    by_columns = _gather_rows(transposed, *columns).reshape(batch, out_width, height, channels)
    by_columns = by_columns.transpose(0, 2, 1, 3).reshape(batch, height, out_width * channels)
    return _gather_rows(by_columns, *rows).reshape(batch, -1, out_width, channels)


def resized_crop_flip_with(
    images: jax.Array,
    tops: jax.Array,
    lefts: jax.Array,
    heights: jax.Array,
    widths: jax.Array,
    flips: jax.Array,
    *,
    size: int,
    antialias: bool = True,
) -> jax.Array:
    """Resizes the box `image[top: top + height, left: left + width]` of every image to `size` x `size`, then
    mirrors it where `flips`.

    Args:
      images: uint8 [B, H, W, C].
      tops: int [B] box rows, in [0, H - height].
      lefts: int [B] box columns, in [0, W - width].
      heights: int [B] box heights, in [1, H].
      widths: int [B] box widths, in [1, W].
      flips: bool [B]: mirror the crop left to right.
      size: output height and width (static).
      antialias: widen the bilinear kernel when shrinking, as torchvision's default; False: plain bilinear
        interpolation (PyTorch's `antialias=False`).

    Returns:
      float32 [B, size, size, C] pixel values in [0, 255].

    Raises:
      ValueError: `images` is not uint8 [B, H, W, C], or `size` is not a positive Python int.
    """
    _check_images(images)
    _check_side("size", size)
    _, height, width, _ = images.shape
    rows = _taps(jnp.asarray(tops), jnp.asarray(heights), in_size=height, resized=size, first=0, count=size,
                 antialias=antialias)
    column_indices, column_weights = _taps(jnp.asarray(lefts), jnp.asarray(widths), in_size=width, resized=size,
                                           first=0, count=size, antialias=antialias)
    # Mirroring the crop is reading its columns in reverse order.
    mirror = jnp.asarray(flips)[:, None, None]
    columns = (jnp.where(mirror, column_indices[:, ::-1], column_indices),
               jnp.where(mirror, column_weights[:, ::-1], column_weights))
    return _resample(images, rows, columns)


def random_resized_crop_flip(
    images: jax.Array,
    key: jax.Array,
    *,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    antialias: bool = True,
    index_offset: int | jax.Array = 0,
) -> jax.Array:
    """Random-resized crop to `size` x `size` and horizontal flip (probability 1/2) of every image.

    torchvision's `RandomResizedCrop(size, scale, ratio)` then `RandomHorizontalFlip()`, each example drawn from its
    own position's key: the boxes of `random_resized_crop_params`, resized by `resized_crop_flip_with`.

    Args:
      images: uint8 [B, H, W, C], the global batch (or one device's shard, with `index_offset`).
      key: the step's key (`ltjax.data.device_augment.step_key`).
      size: output height and width (static).
      scale: range of the box's area as a fraction of the image's (torchvision's default (0.08, 1)).
      ratio: range of the box's aspect ratio, width / height (torchvision's default (3/4, 4/3)).
      antialias: see `resized_crop_flip_with`.
      index_offset: global position of `images[0]` (see `random_resized_crop_params`).

    Returns:
      float32 [B, size, size, C] pixel values in [0, 255], for `augment.normalize`.

    Raises:
      ValueError: `images` is not uint8 [B, H, W, C], or a bad `size`, `scale` or `ratio` (see
        `random_resized_crop_params`).
    """
    _check_images(images)
    _check_side("size", size)
    batch_size, height, width, _ = images.shape
    tops, lefts, heights, widths = random_resized_crop_params(key, batch_size, height, width, scale=scale,
                                                              ratio=ratio, index_offset=index_offset)
    flips = _uniforms(key, batch_size, index_offset)[:, -1] < 0.5
    return resized_crop_flip_with(images, tops, lefts, heights, widths, flips, size=size, antialias=antialias)


def resize_center_crop(images: jax.Array, *, size: int, resize_to: int, antialias: bool = True) -> jax.Array:
    """Evaluation's resize of the shorter side to `resize_to`, then the centred `size` x `size` crop.

    torchvision's `Resize(resize_to)` then `CenterCrop(size)`: the longer side becomes
    `int(resize_to * long / short)` (truncated), and the crop starts at `round((side - size) / 2)` (half to even).
    Only the cropped pixels are computed.

    Args:
      images: uint8 [B, H, W, C].
      size: output height and width (static).
      resize_to: the shorter side after resizing (static), at least `size` (ImageNet's convention: 256 for 224; the
        image's own shorter side to centre-crop without resizing).
      antialias: see `resized_crop_flip_with`.

    Returns:
      float32 [B, size, size, C] pixel values in [0, 255].

    Raises:
      ValueError: `images` is not uint8 [B, H, W, C], `size` or `resize_to` is not a positive Python int, or
        `resize_to < size`.
    """
    _check_images(images)
    _check_side("size", size)
    _check_side("resize_to", resize_to)
    if resize_to < size:
        raise ValueError(f"resize_to ({resize_to}) must be at least size ({size}): the crop must lie inside the "
                         "resized image")
    batch_size, height, width, _ = images.shape
    if height <= width:
        resized_height, resized_width = resize_to, int(resize_to * width / height)
    else:
        resized_height, resized_width = int(resize_to * height / width), resize_to

    def taps(in_size: int, resized: int) -> tuple[jax.Array, jax.Array]:
        starts = jnp.zeros((batch_size,), jnp.int32)
        lengths = jnp.full((batch_size,), in_size, jnp.int32)
        return _taps(starts, lengths, in_size=in_size, resized=resized, first=round((resized - size) / 2),
                     count=size, antialias=antialias)

    return _resample(images, taps(height, resized_height), taps(width, resized_width))
