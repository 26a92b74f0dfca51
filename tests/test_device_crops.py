"""`ltjax.data.device_crops` against NumPy restatements of torchvision: the crop boxes' distribution
(`RandomResizedCrop.get_params`), the resize of a box (PyTorch's bilinear `interpolate`, antialiased or not), flips,
and evaluation's `Resize` + `CenterCrop`; keys and device layouts; errors."""
import functools
import math

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image
from tolerance import assert_close_to_scale

from ltjax.data import device_augment, device_crops

AXIS = "batch"
DRAWS = 4000
# Two-sample Kolmogorov-Smirnov statistic of DRAWS against DRAWS: its asymptotic critical value at level 0.001,
# 1.95 * sqrt(2 / DRAWS) = 0.044. (The draws are seeded, so the test is deterministic; the level says how unlikely
# a pass of a correct implementation is to have been a fail with other seeds.)
KS_THRESHOLD = 1.95 * math.sqrt(2 / DRAWS)
# float32 resampling of pixels up to 255 against float64: a few ulps of 255.
PIXEL_RTOL = 1e-6


def random_images(count: int, height: int, width: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (count, height, height if width is None else width, 3)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def torchvision_box(rng: np.random.Generator, height: int, width: int, scale, ratio) -> tuple[int, int, int, int]:
    """`RandomResizedCrop.get_params`, step by step as torchvision writes it, on a NumPy generator."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w


def torch_bilinear_weights(in_size: int, out_size: int, antialias: bool) -> np.ndarray:
    """[out_size, in_size] float64 weights of PyTorch's `interpolate(mode="bilinear", align_corners=False)` along one
    axis: the antialiased kernel as `_upsample_bilinear2d_aa` computes it (PIL's bounds), or the plain one from
    `area_pixel_compute_source_index` (source clamped at 0, the upper neighbour clamped to the last pixel)."""
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        if antialias:
            support = scale if scale >= 1.0 else 1.0
            invscale = 1.0 / scale if scale >= 1.0 else 1.0
            center = scale * (i + 0.5)
            xmin = max(int(center - support + 0.5), 0)
            xmax = min(int(center + support + 0.5), in_size)
            for j in range(xmin, xmax):
                weights[i, j] = max(0.0, 1.0 - abs((j - center + 0.5) * invscale))
            weights[i] /= weights[i].sum()
        else:
            source = max(scale * (i + 0.5) - 0.5, 0.0)
            low = int(source)
            high = low + 1 if low < in_size - 1 else low
            weights[i, low] += 1.0 - (source - low)
            weights[i, high] += source - low
    return weights


def torch_resize(image: np.ndarray, height: int, width: int, antialias: bool) -> np.ndarray:
    rows = torch_bilinear_weights(image.shape[0], height, antialias)
    columns = torch_bilinear_weights(image.shape[1], width, antialias)
    return np.einsum("sh,tw,hwc->stc", rows, columns, image.astype(np.float64))


def ks_statistic(first: np.ndarray, second: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    values = np.union1d(first, second)
    gaps = (np.searchsorted(np.sort(first), values, side="right") / len(first)
            - np.searchsorted(np.sort(second), values, side="right") / len(second))
    return float(np.abs(gaps).max())


def box_statistics(boxes, height: int, width: int) -> dict[str, np.ndarray]:
    """Area fraction, log aspect and relative position (where the box can move) of each box."""
    tops, lefts, heights, widths = (np.asarray(part, np.float64) for part in boxes)
    stats = {"area fraction": heights * widths / (height * width), "log aspect": np.log(widths / heights)}
    rows, columns = heights < height, widths < width
    stats["relative top"] = tops[rows] / (height - heights[rows])
    stats["relative left"] = lefts[columns] / (width - widths[columns])
    return stats


def device_boxes(height: int, width: int, count: int = DRAWS, key=None, **ranges) -> np.ndarray:
    """[4, count] (tops, lefts, heights, widths) of `random_resized_crop_params`, by default from step (0, 0, 0)."""
    draw = jax.jit(functools.partial(device_crops.random_resized_crop_params, batch_size=count, image_height=height,
                                     image_width=width, **ranges))
    return np.stack([np.asarray(part) for part in draw(device_augment.step_key(0, 0, 0) if key is None else key)])


def reference_boxes(height: int, width: int, count: int = DRAWS, seed: int = 0, scale=(0.08, 1.0),
                    ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray([torchvision_box(rng, height, width, scale, ratio) for _ in range(count)]).T


@pytest.mark.parametrize("height, width, fallback", [(48, 64, (0, 0, 48, 64)), (16, 64, (0, 21, 16, 21))])
def test_boxes_are_distributed_as_torchvision_draws_them(height, width, fallback):
    # 48 x 64: nearly every example's first attempts fit. 16 x 64 (aspect 4): an attempt fits only with an area
    # below a third of the image, so about 5% of the examples miss 10 times and take the centre crop (height 16,
    # width round(16 * 4/3) = 21, left (64 - 21) // 2 = 21).
    ours, theirs = device_boxes(height, width), reference_boxes(height, width)
    assert ours.dtype == np.int32 and ours.shape == (4, DRAWS)
    tops, lefts, heights, widths = ours
    assert (heights >= 1).all() and (widths >= 1).all() and (tops >= 0).all() and (lefts >= 0).all()
    assert (tops + heights <= height).all() and (lefts + widths <= width).all()

    fallback = np.asarray(fallback)[:, None]
    our_fallbacks, their_fallbacks = (ours == fallback).all(0).mean(), (theirs == fallback).all(0).mean()
    # Binomial proportions of DRAWS each: within 4 standard deviations of their difference.
    spread = 4 * math.sqrt(2 * max(their_fallbacks, 1 / DRAWS) / DRAWS)
    assert abs(our_fallbacks - their_fallbacks) <= spread, (our_fallbacks, their_fallbacks)
    if height == 16:
        assert 0.02 < their_fallbacks < 0.1

    our_stats, their_stats = box_statistics(ours, height, width), box_statistics(theirs, height, width)
    for name in our_stats:
        statistic = ks_statistic(our_stats[name], their_stats[name])
        assert statistic < KS_THRESHOLD, (name, statistic)


def test_the_box_comparison_sees_a_wrong_scale():
    # The statistic of the test above has the power to fail: boxes drawn with scale (0.08, 1) against torchvision's
    # with (0.16, 1) (areas from 0.08 to 0.16 missing: 9% of the draws) are well past the threshold.
    ours = box_statistics(device_boxes(48, 64), 48, 64)["area fraction"]
    wrong = box_statistics(reference_boxes(48, 64, scale=(0.16, 1.0)), 48, 64)["area fraction"]
    assert ks_statistic(ours, wrong) > 1.5 * KS_THRESHOLD


@pytest.mark.parametrize("height, width, expected", [
    (5, 200, (0, 96, 5, 7)),  # too wide: height kept, width round(5 * 4/3) = round(6.67) = 7, centred
    (200, 5, (96, 0, 7, 5)),  # too tall: width kept, height round(5 / (3/4)) = 7
])
def test_every_attempt_misses_on_an_extreme_shape_and_the_centre_crop_is_taken(height, width, expected):
    boxes = device_boxes(height, width, count=64)
    np.testing.assert_array_equal(boxes, np.tile(np.asarray(expected)[:, None], (1, 64)))
    np.testing.assert_array_equal(reference_boxes(height, width, count=8)[:, 0], expected)


def test_areas_above_the_image_fall_back_to_the_whole_image():
    # scale above 1 never fits a square image; its aspect lies in the range, so the fallback is the whole image.
    boxes = device_boxes(20, 20, count=16, scale=(1.5, 2.0))
    np.testing.assert_array_equal(boxes, np.tile(np.asarray([0, 0, 20, 20])[:, None], (1, 16)))


def test_draws_are_a_pure_function_of_the_key_and_the_position():
    draw = jax.jit(functools.partial(device_crops.random_resized_crop_params, batch_size=16, image_height=32,
                                     image_width=32))
    key = device_augment.step_key(1, 2, 3)
    first = np.asarray(draw(key))
    np.testing.assert_array_equal(np.asarray(draw(device_augment.step_key(1, 2, 3))), first)
    for other in [(0, 2, 3), (1, 3, 3), (1, 2, 4)]:
        assert not np.array_equal(np.asarray(draw(device_augment.step_key(*other))), first)
    # An example's box does not depend on the batch it is drawn in, only on its global position.
    tail = jax.jit(device_crops.random_resized_crop_params, static_argnums=(1, 2, 3))(key, 6, 32, 32, index_offset=10)
    np.testing.assert_array_equal(np.asarray(tail), first[:, 10:])


def test_one_device_and_eight_devices_give_the_same_crops():
    images = random_images(16, 32)
    key = device_augment.step_key(5, 0, 9)
    crop = functools.partial(device_crops.random_resized_crop_flip, size=24)
    one_device = np.asarray(jax.jit(crop)(jax.device_put(images, jax.devices()[0]), key))
    mesh = Mesh(np.asarray(jax.devices()[:8]), (AXIS,))

    def per_device(shard, key):
        return crop(shard, key, index_offset=jax.lax.axis_index(AXIS) * shard.shape[0])

    mapped = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(PartitionSpec(AXIS), PartitionSpec()),
                                   out_specs=PartitionSpec(AXIS)))
    sharded = mapped(jax.device_put(images, NamedSharding(mesh, PartitionSpec(AXIS))), key)
    assert len(sharded.addressable_shards) == 8
    assert_close_to_scale(np.asarray(sharded), one_device, rtol=PIXEL_RTOL, scale=255)


def test_crops_are_the_boxes_resized_and_half_of_them_mirrored():
    images = random_images(64, 32, 40)
    key = device_augment.step_key(0, 1, 2)
    crops = np.asarray(jax.jit(functools.partial(device_crops.random_resized_crop_flip, size=16))(images, key))
    assert crops.dtype == np.float32 and crops.shape == (64, 16, 16, 3)
    assert crops.min() >= 0 and crops.max() <= 255
    flips = []
    for image, crop, (top, left, height, width) in zip(images, crops, device_boxes(32, 40, count=64, key=key).T):
        expected = torch_resize(image[top: top + height, left: left + width], 16, 16, antialias=True)
        mirrored = np.abs(crop - expected[:, ::-1]).max() <= PIXEL_RTOL * 255
        assert mirrored or np.abs(crop - expected).max() <= PIXEL_RTOL * 255
        flips.append(mirrored)
    # Probability 1/2: 32 of 64 expected, standard deviation 4.
    assert 16 < sum(flips) < 48


def boxes_of(*box) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray([part]) for part in box)


@pytest.mark.parametrize("antialias", [True, False])
def test_a_box_of_the_output_size_is_copied_and_a_flip_mirrors_it(antialias):
    images = random_images(1, 20, 24)
    crop = jax.jit(functools.partial(device_crops.resized_crop_flip_with, size=16, antialias=antialias))
    whole = crop(random_images(1, 16), *boxes_of(0, 0, 16, 16), np.asarray([False]))
    np.testing.assert_array_equal(np.asarray(whole), random_images(1, 16).astype(np.float32))
    inside = images[:, 3:19, 5:21].astype(np.float32)
    np.testing.assert_array_equal(np.asarray(crop(images, *boxes_of(3, 5, 16, 16), np.asarray([False]))), inside)
    np.testing.assert_array_equal(np.asarray(crop(images, *boxes_of(3, 5, 16, 16), np.asarray([True]))),
                                  inside[:, :, ::-1])


@pytest.mark.parametrize("box", [
    (3, 5, 10, 14),   # enlarged in both directions
    (0, 0, 40, 50),   # the whole image, shrunk: antialiasing changes it
    (2, 1, 37, 9),    # shrunk vertically, enlarged horizontally
    (39, 49, 1, 1),   # one pixel, in the corner: a constant
])
@pytest.mark.parametrize("antialias", [True, False])
def test_a_box_is_resized_as_pytorch_resizes_the_cut_out_box(box, antialias):
    images = random_images(1, 40, 50, seed=3)
    top, left, height, width = box
    cut = images[0, top: top + height, left: left + width]
    resize = jax.jit(functools.partial(device_crops.resized_crop_flip_with, size=16, antialias=antialias))
    crop = resize(images, *boxes_of(*box), np.asarray([False]))
    expected = torch_resize(cut, 16, 16, antialias)
    assert_close_to_scale(np.asarray(crop)[0], expected, rtol=PIXEL_RTOL, scale=255)
    if antialias:
        # Pillow's bilinear resize (torchvision's on PIL images) agrees to its uint8 rounding, twice (one per pass).
        pillow = np.asarray(Image.fromarray(cut).resize((16, 16), Image.Resampling.BILINEAR), np.float64)
        assert np.abs(np.asarray(crop)[0] - pillow).max() <= 1.0


def test_resize_center_crop_by_hand():
    # Pixels 16 x + y on an 8 x 12 image; the shorter side 8 -> 4, so the longer 12 -> int(4 * 12 / 8) = 6: both
    # halve. Halving with antialiasing takes weights 1/8, 3/8, 3/8, 1/8 (3/7, 3/7, 1/7 at an edge, renormalised):
    # rows 5/7, 2.5, 4.5, 44/7; columns 16 x (2.5, 4.5, 6.5, 8.5) after the crop's left round((6 - 4) / 2) = 1.
    y, x = np.mgrid[0:8, 0:12]
    images = np.broadcast_to((16 * x + y)[None, :, :, None], (2, 8, 12, 3)).astype(np.uint8)
    expected = np.asarray([5 / 7, 2.5, 4.5, 44 / 7])[:, None] + 16 * np.asarray([2.5, 4.5, 6.5, 8.5])[None, :]
    out = jax.jit(functools.partial(device_crops.resize_center_crop, size=4, resize_to=4))(images)
    assert out.dtype == np.float32 and out.shape == (2, 4, 4, 3)
    assert_close_to_scale(np.asarray(out), np.broadcast_to(expected[None, :, :, None], out.shape), rtol=PIXEL_RTOL,
                          scale=255)


@pytest.mark.parametrize("width, left", [(9, 2), (11, 4)])
def test_the_centre_crop_rounds_half_to_even(width, left):
    # resize_to is the shorter side: no resize. torchvision's int(round((9 - 4) / 2)) = 2, int(round(3.5)) = 4.
    images = random_images(2, 4, width)
    out = jax.jit(functools.partial(device_crops.resize_center_crop, size=4, resize_to=4))(images)
    np.testing.assert_array_equal(np.asarray(out), images[:, :, left: left + 4].astype(np.float32))


def test_resize_center_crop_of_a_tall_image_truncates_the_longer_side():
    # 9 x 4 -> shorter side 3: the longer int(3 * 9 / 4) = int(6.75) = 6; the crop's top round((6 - 3) / 2) = 2.
    images = random_images(1, 9, 4, seed=5)
    out = jax.jit(functools.partial(device_crops.resize_center_crop, size=3, resize_to=3))(images)
    expected = torch_resize(images[0], 6, 3, antialias=True)[2:5]
    assert_close_to_scale(np.asarray(out)[0], expected, rtol=PIXEL_RTOL, scale=255)


def test_device_crops_errors():
    key = device_augment.step_key(0, 0, 0)
    images = random_images(2, 8)
    with pytest.raises(ValueError, match="uint8"):
        device_crops.random_resized_crop_flip(images.astype(np.float32), key, size=4)
    with pytest.raises(ValueError, match="uint8"):
        device_crops.resize_center_crop(images[0], size=4, resize_to=4)
    for size in (0, 4.0, True):
        with pytest.raises(ValueError, match="size must be a positive Python int"):
            device_crops.random_resized_crop_flip(images, key, size=size)
    with pytest.raises(ValueError, match=r"resize_to \(3\) must be at least size \(4\)"):
        device_crops.resize_center_crop(images, size=4, resize_to=3)
    for scale in [(0.5, 0.1), (-0.1, 1.0), (0.1, float("inf")), (0.1,)]:
        with pytest.raises(ValueError, match="scale must be a"):
            device_crops.random_resized_crop_flip(images, key, size=4, scale=scale)
    for ratio in [(0.0, 1.0), (2.0, 1.0)]:
        with pytest.raises(ValueError, match="ratio must be a"):
            device_crops.random_resized_crop_params(key, 2, 8, 8, ratio=ratio)
    with pytest.raises(ValueError, match="batch_size"):
        device_crops.random_resized_crop_params(key, -1, 8, 8)
    with pytest.raises(ValueError, match="image_width"):
        device_crops.random_resized_crop_params(key, 2, 8, 0)
