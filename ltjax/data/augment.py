"""Batched training and evaluation augmentation on uint8 images, plus the float32 normalisation for the device.

Where it runs: the transforms here run on the host in NumPy (resizing through Pillow), inside the input pipeline's
worker threads, right after decoding, and ship fixed-size uint8 batches (4x fewer bytes than float32). From an array
source or the decoded cache the device is the faster place for both crops: pad-crop-flip in
`ltjax.data.device_augment.pad_crop_flip`, random-resized crops of full-size images (one size per batch) in
`ltjax.data.device_crops` (same semantics as torchvision's, other random draws). Normalisation belongs on the device:
`normalize` is written in `jax.numpy`, so call it at the start of the jitted train step on the uint8 batch.

Determinism: a transform draws all its random parameters for the batch from the `np.random.Generator` it is given,
before any per-image work, so its output depends only on the images and that generator's state (the pipeline
derives the generator from (seed, epoch, step)), never on thread scheduling.

Semantics follow torchvision: `RandomCrop(size, padding=4)` with zero padding, `RandomResizedCrop` (10 attempts, then
the centre-crop fallback, bilinear antialiased resize of the crop), `RandomHorizontalFlip(0.5)`, `Resize(short side)`
+ `CenterCrop` for evaluation.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

ImageBatch = np.ndarray | Sequence[np.ndarray]
"""uint8 images: one [B, H, W, C] array, or a sequence of [H_i, W_i, C] arrays whose sizes may differ."""


class Transform(Protocol):
    """A batched augmentation: `transform(images, rng)` returns a uint8 [B, H', W', C] array."""

    def __call__(self, images: ImageBatch, rng: np.random.Generator) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation of pixel values scaled to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


# The constants the LDAM-DRW / FFDS / IB CIFAR code normalises with (not the exact CIFAR-10 statistics).
CIFAR_NORMALIZATION = Normalization(mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))
IMAGENET_NORMALIZATION = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# Tiny ImageNet uses the ImageNet constants, as the FFDS reference code does (its ResNet-18 is ImageNet-pretrained,
# so inputs must match the pretraining statistics), not Tiny ImageNet's own (0.480, 0.448, 0.398) /
# (0.230, 0.227, 0.226).
TINY_IMAGENET_NORMALIZATION = IMAGENET_NORMALIZATION

NORMALIZATIONS: dict[str, Normalization] = {
    "cifar10": CIFAR_NORMALIZATION,
    "cifar100": CIFAR_NORMALIZATION,
    "imagenet": IMAGENET_NORMALIZATION,
    "tiny_imagenet": TINY_IMAGENET_NORMALIZATION,
}


def normalize(images: jax.Array | np.ndarray, normalization: Normalization) -> jax.Array:
    """Maps uint8 pixels to float32 `(x / 255 - mean) / std`, per channel (the last axis).

    Written in `jax.numpy` so that it runs inside the jitted train step: the host ships uint8 and the device does
    one fused multiply-add per pixel.

    Args:
      images: uint8, or float in [0, 255] (`ltjax.data.device_crops`' crops), [..., C] pixels,
        C = len(normalization.mean).
      normalization: the dataset's constants, e.g. `CIFAR_NORMALIZATION`.

    Returns:
      float32 [..., C] normalised pixels.
    """
    mean = np.asarray(normalization.mean, dtype=np.float64)
    std = np.asarray(normalization.std, dtype=np.float64)
    if images.shape[-1] != len(mean):
        raise ValueError(f"images have {images.shape[-1]} channels but the normalization has {len(mean)}")
    # Folding the constants on the host in float64 keeps the device work to x * scale - offset in float32.
    scale = jnp.asarray(1.0 / (255.0 * std), dtype=jnp.float32)
    offset = jnp.asarray(mean / std, dtype=jnp.float32)
    return jnp.asarray(images).astype(jnp.float32) * scale - offset


def _as_array(images: ImageBatch) -> np.ndarray:
    batch = images if isinstance(images, np.ndarray) else np.stack(images)
    if batch.dtype != np.uint8 or batch.ndim != 4:
        raise ValueError(f"expected uint8 images [B, H, W, C], got {batch.dtype} {batch.shape}")
    return batch


def _check_images(images: ImageBatch) -> None:
    for image in images:
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"expected uint8 [H, W, C] images, got {image.dtype} {image.shape}")


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with antialiasing (Pillow's, which torchvision uses on PIL images)."""
    if image.shape[:2] == (height, width):
        return image
    channels = image.shape[2]
    pil_image = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = np.asarray(pil_image.resize((width, height), Image.Resampling.BILINEAR))
    return resized[..., None] if channels == 1 else resized


def flip_horizontal(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Mirrors the images whose `flips` entry is True, left to right.

    Args:
      images: [B, H, W, C].
      flips: bool [B].

    Returns:
      [B, H, W, C], a new array.
    """
    out = np.array(images, order="C")
    # Viewing each pixel as one C-byte item makes the reversal a copy of whole pixels, ~3x faster than NumPy's
    # reversed-stride copy of single bytes.
    pixels = out.view(f"V{out.shape[-1] * out.itemsize}")
    pixels[flips] = pixels[flips][:, :, ::-1]
    return out


def pad_crop(images: np.ndarray, tops: np.ndarray, lefts: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pads every image by `padding` on each side, then crops the original size at (tops, lefts).

    Args:
      images: uint8 [B, H, W, C].
      tops: int [B] crop rows in the padded image, in [0, 2 * padding].
      lefts: int [B] crop columns in the padded image, in [0, 2 * padding].
      padding: zero border width.

    Returns:
      uint8 [B, H, W, C]: `padded[b, tops[b]: tops[b] + H, lefts[b]: lefts[b] + W]`.
    """
    count, height, width, _ = images.shape
    out = np.zeros_like(images)
    # Copy only the part of each window that overlaps the image: the rest is the zero border.
    for b in range(count):
        dy, dx = int(tops[b]) - padding, int(lefts[b]) - padding
        y0, y1 = max(0, -dy), min(height, height - dy)
        x0, x1 = max(0, -dx), min(width, width - dx)
        out[b, y0:y1, x0:x1] = images[b, y0 + dy: y1 + dy, x0 + dx: x1 + dx]
    return out


@dataclasses.dataclass(frozen=True)
class PadCropFlip:
    """CIFAR-style training augmentation: zero-pad, random crop back to the input size, random horizontal flip.

    Attributes:
      padding: zero border on each side (4 for CIFAR, as torchvision's `RandomCrop(32, padding=4)`).
    """

    padding: int = 4

    def __call__(self, images: ImageBatch, rng: np.random.Generator) -> np.ndarray:
        """Augments a batch.

        Args:
          images: uint8 [B, H, W, C] (or a sequence of equally sized [H, W, C]).
          rng: source of the crop offsets and flips.

        Returns:
          uint8 [B, H, W, C].
        """
        batch = _as_array(images)
        count = len(batch)
        tops = rng.integers(0, 2 * self.padding + 1, size=count)
        lefts = rng.integers(0, 2 * self.padding + 1, size=count)
        flips = rng.random(count) < 0.5
        return flip_horizontal(pad_crop(batch, tops, lefts, self.padding), flips)


def random_resized_crop_boxes(
    heights: np.ndarray,
    widths: np.ndarray,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Crop boxes with torchvision's `RandomResizedCrop.get_params` semantics, drawn for a whole batch at once.

    For each image: up to `attempts` draws of an area fraction uniform in `scale` and a log-uniform aspect ratio in
    `ratio`; the first whose rounded box fits is placed uniformly at random. If none fits, the centre crop of the
    largest box whose aspect ratio lies in `ratio` is used.

    Args:
      heights: int [B] image heights.
      widths: int [B] image widths.
      rng: source of the draws.
      scale: range of the crop area as a fraction of the image area.
      ratio: range of the crop aspect ratio (width / height).
      attempts: draws before the fallback.

    Returns:
      (tops, lefts, crop_heights, crop_widths), each int64 [B].
    """
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    count = len(heights)
    area = (heights * widths)[:, None].astype(np.float64)
    target_area = area * rng.uniform(scale[0], scale[1], size=(count, attempts))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(count, attempts)))
    crop_w = np.round(np.sqrt(target_area * aspect)).astype(np.int64)
    crop_h = np.round(np.sqrt(target_area / aspect)).astype(np.int64)
    fits = (crop_w > 0) & (crop_w <= widths[:, None]) & (crop_h > 0) & (crop_h <= heights[:, None])
    first_fit = np.argmax(fits, axis=1)
    found = fits.any(axis=1)
    rows = np.arange(count)
    crop_h, crop_w = crop_h[rows, first_fit], crop_w[rows, first_fit]

    # Fallback: the whole image, narrowed to the nearest allowed aspect ratio, centred.
    in_ratio = widths / heights
    fallback_w = np.where(in_ratio > ratio[1], np.round(heights * ratio[1]).astype(np.int64), widths)
    fallback_h = np.where(in_ratio < ratio[0], np.round(widths / ratio[0]).astype(np.int64), heights)
    crop_h = np.where(found, crop_h, fallback_h)
    crop_w = np.where(found, crop_w, fallback_w)
    random_tops = np.floor(rng.random(count) * (heights - crop_h + 1)).astype(np.int64)
    random_lefts = np.floor(rng.random(count) * (widths - crop_w + 1)).astype(np.int64)
    tops = np.where(found, random_tops, (heights - crop_h) // 2)
    lefts = np.where(found, random_lefts, (widths - crop_w) // 2)
    return tops, lefts, crop_h, crop_w


@dataclasses.dataclass(frozen=True)
class RandomResizedCropFlip:
    """ImageNet-style training augmentation: random-resized crop to `size` x `size`, random horizontal flip.

    Attributes:
      size: output height and width.
      scale: crop area range as a fraction of the image (torchvision default (0.08, 1)).
      ratio: crop aspect-ratio range, width / height (torchvision default (3/4, 4/3)).
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, images: ImageBatch, rng: np.random.Generator) -> np.ndarray:
        """Augments a batch.

        Args:
          images: uint8 [B, H, W, C], or a sequence of [H_i, W_i, C] of any sizes.
          rng: source of the crop boxes and flips.

        Returns:
          uint8 [B, size, size, C].
        """
        _check_images(images)
        heights = np.array([image.shape[0] for image in images])
        widths = np.array([image.shape[1] for image in images])
        tops, lefts, crop_h, crop_w = random_resized_crop_boxes(heights, widths, rng, self.scale, self.ratio)
        flips = rng.random(len(images)) < 0.5
        out = np.empty((len(images), self.size, self.size, images[0].shape[-1]), dtype=np.uint8)
        for b, (image, top, left, h, w) in enumerate(zip(images, tops, lefts, crop_h, crop_w)):
            out[b] = _resize(image[top: top + h, left: left + w], self.size, self.size)
        return flip_horizontal(out, flips)


@dataclasses.dataclass(frozen=True)
class ResizeCenterCrop:
    """Evaluation transform: resize the shorter side to `resize_size` (aspect kept), then centre-crop `size`.

    Attributes:
      size: output height and width.
      resize_size: shorter side after resizing; None gives round(size * 256 / 224), the ImageNet convention
        (256 for 224). Pass `resize_size=size` to evaluate square images at their native resolution uncropped.
    """

    size: int
    resize_size: int | None = None

    def __post_init__(self):
        if self.resize_size is not None and self.resize_size < self.size:
            raise ValueError(f"resize_size {self.resize_size} is smaller than the crop size {self.size}")

    def __call__(self, images: ImageBatch, rng: np.random.Generator | None = None) -> np.ndarray:
        """Transforms a batch (deterministic: `rng` is accepted for the `Transform` interface and unused).

        Args:
          images: uint8 [B, H, W, C], or a sequence of [H_i, W_i, C] of any sizes.
          rng: unused.

        Returns:
          uint8 [B, size, size, C].
        """
        _check_images(images)
        short = self.resize_size if self.resize_size is not None else round(self.size * 256 / 224)
        out = []
        for image in images:
            height, width = image.shape[:2]
            # torchvision's Resize(int): the long side is truncated, not rounded.
            if height <= width:
                new_h, new_w = short, int(short * width / height)
            else:
                new_h, new_w = int(short * height / width), short
            resized = _resize(image, new_h, new_w)
            top = round((new_h - self.size) / 2.0)
            left = round((new_w - self.size) / 2.0)
            out.append(resized[top: top + self.size, left: left + self.size])
        return np.stack(out)
