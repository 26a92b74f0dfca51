"""On the devices: augmentation (`ltjax.data.device_augment`) against the host reference and across device
layouts, and `device_prefetch` on the 8 fake CPU devices of conftest."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ltjax.data import augment, device_augment
from ltjax.data.pipeline import TrainPipeline, eval_batches
from ltjax.data.prefetch import device_prefetch
from ltjax.data.source import ArraySource

AXIS = "batch"


def random_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, size=(count, size, size, 3), dtype=np.uint8)


def batch_sharding(num_devices: int = 8) -> NamedSharding:
    mesh = Mesh(np.asarray(jax.devices()[:num_devices]), (AXIS,))
    return NamedSharding(mesh, PartitionSpec(AXIS))


@pytest.mark.parametrize("size, padding", [(32, 4), (64, 8)])
def test_device_pad_crop_flip_equals_the_host_functions_on_the_same_draws(size, padding):
    images = random_images(64, size)
    key = device_augment.step_key(0, 3, 17)
    tops, lefts, flips = device_augment.pad_crop_flip_params(key, 64, padding=padding)
    augmented = jax.jit(functools.partial(device_augment.pad_crop_flip, padding=padding))(images, key)
    assert augmented.dtype == jnp.uint8 and augmented.shape == images.shape
    tops, lefts, flips = np.asarray(tops), np.asarray(lefts), np.asarray(flips)
    expected = augment.flip_horizontal(augment.pad_crop(images, tops, lefts, padding), flips)
    np.testing.assert_array_equal(np.asarray(augmented), expected)
    # The draws cover the offsets and both flips, so the comparison exercised every case.
    assert tops.min() == 0 and tops.max() == 2 * padding and 0 < flips.sum() < 64
    assert set(np.unique(lefts)) == set(range(2 * padding + 1))


def test_keys_are_a_pure_function_of_seed_epoch_and_step():
    images = random_images(16, 32)
    augment_step = jax.jit(
        lambda images, seed, epoch, step: device_augment.pad_crop_flip(
            images, device_augment.step_key(seed, epoch, step), padding=4
        )
    )
    first = np.asarray(augment_step(images, 1, 2, 3))
    # A resumed run calls with the same (seed, epoch, step), from Python ints or traced int32 alike.
    np.testing.assert_array_equal(first, np.asarray(augment_step(images, jnp.int32(1), jnp.int32(2), jnp.int32(3))))
    for other in [(0, 2, 3), (1, 3, 3), (1, 2, 4)]:
        assert not np.array_equal(first, np.asarray(augment_step(images, *other)))


def test_one_device_and_eight_devices_give_the_same_batch():
    images = random_images(32, 32)
    key = device_augment.step_key(5, 0, 9)
    pad_crop_flip = functools.partial(device_augment.pad_crop_flip, padding=4)
    one_device = np.asarray(jax.jit(pad_crop_flip)(jax.device_put(images, jax.devices()[0]), key))
    sharding = batch_sharding(8)
    sharded_input = jax.device_put(images, sharding)
    global_jit = jax.jit(pad_crop_flip, out_shardings=sharding)(sharded_input, key)
    assert global_jit.sharding.is_equivalent_to(sharding, 4)
    np.testing.assert_array_equal(np.asarray(global_jit), one_device)

    # Inside shard_map each device sees its 4 examples and passes their global position.
    def per_device(shard, key):
        offset = jax.lax.axis_index(AXIS) * shard.shape[0]
        return device_augment.pad_crop_flip(shard, key, padding=4, index_offset=offset)

    mapped = jax.jit(jax.shard_map(
        per_device, mesh=sharding.mesh, in_specs=(PartitionSpec(AXIS), PartitionSpec()), out_specs=PartitionSpec(AXIS)
    ))
    np.testing.assert_array_equal(np.asarray(mapped(sharded_input, key)), one_device)


def test_an_example_does_not_depend_on_the_batch_size():
    images = random_images(16, 32)
    key = device_augment.step_key(0, 0, 0)
    whole = device_augment.pad_crop_flip(images, key, padding=4)
    tail = device_augment.pad_crop_flip(images[10:], key, padding=4, index_offset=10)
    np.testing.assert_array_equal(np.asarray(whole[10:]), np.asarray(tail))


def test_device_augment_errors():
    key = device_augment.step_key(0, 0, 0)
    with pytest.raises(ValueError, match="uint8"):
        device_augment.pad_crop_flip(np.zeros((2, 8, 8, 3), np.float32), key, padding=2)
    with pytest.raises(ValueError, match="padding"):
        device_augment.pad_crop_flip(random_images(2, 8), key, padding=-1)


@pytest.fixture(scope="module")
def source() -> ArraySource:
    generator = np.random.default_rng(1)
    images = generator.integers(0, 256, size=(80, 8, 8, 3), dtype=np.uint8)
    return ArraySource(images, generator.integers(0, 4, size=80), 4, ("a", "b", "c", "d"))


def test_device_prefetch_places_batches_in_order_with_the_sharding(source):
    sharding = batch_sharding(8)
    pipeline = TrainPipeline(source, global_batch_size=16, seed=2)
    host_batches = list(pipeline.batches(end_epoch=2))
    placed = list(device_prefetch(pipeline.batches(end_epoch=2), sharding, size=2))
    assert [(b.epoch, b.step) for b in placed] == [(b.epoch, b.step) for b in host_batches]
    for on_host, on_device in zip(host_batches, placed):
        for name in ("images", "labels", "mask"):
            array = getattr(on_device, name)
            assert isinstance(array, jax.Array) and array.sharding.is_equivalent_to(sharding, array.ndim)
            assert len(array.addressable_shards) == 8 and array.addressable_shards[0].data.shape[0] == 2
            np.testing.assert_array_equal(np.asarray(array), getattr(on_host, name))
        assert isinstance(on_device.indices, np.ndarray)
        np.testing.assert_array_equal(on_device.indices, on_host.indices)
    evaluated = list(device_prefetch(eval_batches(source, global_batch_size=32), sharding))
    assert int(sum(np.asarray(b.mask).sum() for b in evaluated)) == len(source)


def test_closing_device_prefetch_stops_the_source(source):
    pulled, closed = [], []

    def host_batches():
        try:
            for batch in TrainPipeline(source, global_batch_size=8, seed=0).batches():
                pulled.append(batch.step)
                yield batch
        finally:
            closed.append(True)

    batches = device_prefetch(host_batches(), batch_sharding(8), size=2)
    assert [next(batches).step for _ in range(3)] == [0, 1, 2]
    # Placed ahead: the one handed out and `size` more, never the whole (endless) source.
    assert len(pulled) == 3 + 2
    batches.close()
    assert closed == [True]


def test_device_prefetch_errors(source):
    with pytest.raises(ValueError, match="size must be >= 1"):
        next(device_prefetch(iter([]), batch_sharding(8), size=0))
    batches = TrainPipeline(source, global_batch_size=12, seed=0).batches()
    with pytest.raises(ValueError, match="batch of 12 examples .* over the 8 devices"):
        next(device_prefetch(batches, batch_sharding(8)))
