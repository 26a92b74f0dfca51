"""Augmentation: shapes, determinism, crops are true sub-windows, flips, torchvision box semantics, normalisation."""
import jax
import numpy as np
import pytest

from ltjax.data import augment


def random_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, size=(count, height, width, 3), dtype=np.uint8)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_pad_crop_flip_shape_dtype_and_determinism():
    images = random_images(16, 32, 32)
    transform = augment.PadCropFlip(padding=4)
    out = transform(images, rng(1))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, transform(images, rng(1)))
    assert not np.array_equal(out, transform(images, rng(2)))


def test_pad_crop_flip_outputs_windows_of_the_padded_image():
    padding = 4
    images = random_images(24, 8, 8)
    out = augment.PadCropFlip(padding=padding)(images, rng(3))
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    flipped_count = 0
    for image, result in zip(padded, out):
        windows = [
            image[top: top + 8, left: left + 8]
            for top in range(2 * padding + 1) for left in range(2 * padding + 1)
        ]
        plain = any(np.array_equal(result, window) for window in windows)
        mirrored = any(np.array_equal(result[:, ::-1], window) for window in windows)
        assert plain or mirrored
        flipped_count += mirrored and not plain
    assert 0 < flipped_count < len(images)


def test_pad_crop_offsets():
    images = random_images(2, 6, 6)
    centred = augment.pad_crop(images, np.array([2, 2]), np.array([2, 2]), padding=2)
    np.testing.assert_array_equal(centred, images)
    corner = augment.pad_crop(images, np.array([0, 4]), np.array([0, 4]), padding=2)
    np.testing.assert_array_equal(corner[0, 2:, 2:], images[0, :4, :4])
    assert (corner[0, :2] == 0).all() and (corner[0, :, :2] == 0).all()
    np.testing.assert_array_equal(corner[1, :4, :4], images[1, 2:, 2:])


def test_flip_horizontal():
    images = random_images(3, 4, 5)
    out = augment.flip_horizontal(images, np.array([True, False, True]))
    np.testing.assert_array_equal(out[0], images[0, :, ::-1])
    np.testing.assert_array_equal(out[1], images[1])
    np.testing.assert_array_equal(out[2, :, 0], images[2, :, 4])


def test_random_resized_crop_boxes_fit_and_respect_scale_and_ratio():
    heights = np.full(2000, 300)
    widths = np.full(2000, 400)
    tops, lefts, crop_h, crop_w = augment.random_resized_crop_boxes(heights, widths, rng(0))
    assert (tops >= 0).all() and (lefts >= 0).all()
    assert (tops + crop_h <= heights).all() and (lefts + crop_w <= widths).all()
    # Rounding to whole pixels moves area and aspect a little past the nominal ranges.
    area_fraction = crop_h * crop_w / (300 * 400)
    assert area_fraction.min() > 0.07 and area_fraction.max() <= 1.0
    aspect = crop_w / crop_h
    assert aspect.min() > 0.73 and aspect.max() < 1.36


def test_random_resized_crop_fallback_is_the_centre_crop():
    # A scale that never fits forces the fallback; a 10 x 100 strip is narrowed to aspect 4/3.
    tops, lefts, crop_h, crop_w = augment.random_resized_crop_boxes(
        np.array([10, 60]), np.array([100, 40]), rng(0), scale=(2.0, 3.0)
    )
    np.testing.assert_array_equal(crop_h, [10, 53])
    np.testing.assert_array_equal(crop_w, [13, 40])
    np.testing.assert_array_equal(tops, [0, 3])
    np.testing.assert_array_equal(lefts, [43, 0])


def test_random_resized_crop_flip_sizes_and_determinism():
    images = [random_images(1, 40, 60)[0], random_images(1, 64, 64, seed=1)[0], random_images(1, 90, 30, seed=2)[0]]
    transform = augment.RandomResizedCropFlip(size=24)
    out = transform(images, rng(5))
    assert out.shape == (3, 24, 24, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, transform(images, rng(5)))
    assert not np.array_equal(out, transform(images, rng(6)))


def test_random_resized_crop_of_the_whole_image_is_the_image_or_its_mirror():
    images = random_images(8, 16, 16)
    out = augment.RandomResizedCropFlip(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0))(images, rng(0))
    for image, result in zip(images, out):
        assert np.array_equal(result, image) or np.array_equal(result, image[:, ::-1])


def test_resize_center_crop():
    images = random_images(2, 64, 64)
    out = augment.ResizeCenterCrop(size=56, resize_size=64)(images)
    np.testing.assert_array_equal(out, images[:, 4:60, 4:60])
    wide = random_images(1, 40, 80)
    np.testing.assert_array_equal(augment.ResizeCenterCrop(size=40, resize_size=40)(wide)[0], wide[0, :, 20:60])
    # Default: shorter side to round(size * 256 / 224), so 64 -> 73 before cropping 64.
    assert augment.ResizeCenterCrop(size=64)(images).shape == (2, 64, 64, 3)
    with pytest.raises(ValueError, match="smaller than the crop size"):
        augment.ResizeCenterCrop(size=64, resize_size=32)


def test_transforms_reject_float_images():
    with pytest.raises(ValueError, match="uint8"):
        augment.PadCropFlip()(np.zeros((2, 8, 8, 3), np.float32), rng(0))


@pytest.mark.parametrize("normalization", [augment.CIFAR_NORMALIZATION, augment.IMAGENET_NORMALIZATION])
def test_normalize_values(normalization):
    images = np.array([0, 128, 255], dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = jax.jit(augment.normalize, static_argnums=1)(images, normalization)
    assert out.dtype == np.float32
    mean, std = np.array(normalization.mean), np.array(normalization.std)
    expected = (images / 255.0 - mean) / std
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out)[0, 0, 0], -mean / std, rtol=1e-6)


def test_normalization_constants():
    assert augment.NORMALIZATIONS["cifar100"].std == (0.2023, 0.1994, 0.2010)
    assert augment.NORMALIZATIONS["tiny_imagenet"] == augment.IMAGENET_NORMALIZATION
    with pytest.raises(ValueError, match="channels"):
        augment.normalize(np.zeros((1, 2, 2, 1), np.uint8), augment.CIFAR_NORMALIZATION)
