"""Input pipeline: epoch coverage, the padded last batch (or its drop), host-local batch shapes, resumption,
multi-host shares, eval padding, files named when their shapes disagree, process workers."""
import numpy as np
import pytest
from test_data_prepare import write_images

from ltjax.data import augment, samplers
from ltjax.data.pipeline import TrainPipeline, eval_batches
from ltjax.data.source import ArraySource, FileSource

NUM_EXAMPLES = 100
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def source() -> ArraySource:
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, size=(NUM_EXAMPLES, 8, 8, 3), dtype=np.uint8)
    labels = generator.integers(0, NUM_CLASSES, size=NUM_EXAMPLES)
    return ArraySource(images, labels, NUM_CLASSES, tuple(f"class{c}" for c in range(NUM_CLASSES)))


def test_the_last_partial_batch_is_padded_and_masked_as_the_reference_keeps_it(source):
    """100 examples in batches of 16: 7 steps, as PyTorch's DataLoader gives, the last with 4 real examples."""
    pipeline = TrainPipeline(source, global_batch_size=16, seed=3)
    assert pipeline.steps_per_epoch() == 7
    batches = list(pipeline.batches(end_epoch=1))
    assert [int(b.mask.sum()) for b in batches] == [16] * 6 + [4]
    last, order = batches[-1], pipeline.epoch_order(0)
    np.testing.assert_array_equal(last.indices[:4], order[96:])
    assert (last.indices[4:] == order[-1]).all() and last.images.shape == (16, 8, 8, 3)
    seen = np.concatenate([b.indices[b.mask] for b in batches])
    assert np.array_equal(np.sort(seen), np.arange(NUM_EXAMPLES))  # every example exactly once


def test_instance_uniform_epoch_covers_each_index_once_and_drops_the_remainder(source):
    pipeline = TrainPipeline(source, global_batch_size=16, seed=3, drop_remainder=True)
    assert pipeline.steps_per_epoch() == NUM_EXAMPLES // 16
    for epoch in range(2):
        batches = list(pipeline.batches(start_epoch=epoch, end_epoch=epoch + 1))
        assert [b.step for b in batches] == list(range(6)) and {b.epoch for b in batches} == {epoch}
        seen = np.concatenate([b.indices for b in batches])
        assert len(seen) == 96 and len(np.unique(seen)) == 96
        # The 4 dropped indices are the tail of that epoch's order.
        dropped = np.setdiff1d(np.arange(NUM_EXAMPLES), seen)
        np.testing.assert_array_equal(dropped, np.sort(pipeline.epoch_order(epoch)[96:]))


def test_batches_are_global_and_follow_the_epoch_order(source):
    pipeline = TrainPipeline(source, global_batch_size=16, seed=0, drop_remainder=True)
    order = pipeline.epoch_order(0)
    for batch in pipeline.batches(end_epoch=1):
        assert batch.images.shape == (16, 8, 8, 3) and batch.images.dtype == np.uint8
        assert batch.labels.shape == batch.mask.shape == batch.indices.shape == (16,)
        assert batch.labels.dtype == np.int32 and batch.mask.all()
        expected = order[batch.step * 16: (batch.step + 1) * 16]
        np.testing.assert_array_equal(batch.indices, expected)
        # Without a transform the source's uint8 images are shipped as they are, for augmentation on the device.
        np.testing.assert_array_equal(batch.images, source.images[expected])
        np.testing.assert_array_equal(batch.labels, source.labels[expected])


def test_resume_reproduces_the_remaining_batches(source):
    pipeline = TrainPipeline(
        source, global_batch_size=16, sampler=samplers.make_sampler("class_balanced"),
        transform=augment.PadCropFlip(2), seed=5,
    )
    uninterrupted = list(pipeline.batches(end_epoch=3))
    resumed = list(pipeline.batches(start_epoch=1, start_step=4, end_epoch=3))
    assert len(resumed) == len(uninterrupted) - 7 - 4
    for expected, got in zip(uninterrupted[11:], resumed):
        assert (expected.epoch, expected.step) == (got.epoch, got.step)
        np.testing.assert_array_equal(expected.indices, got.indices)
        np.testing.assert_array_equal(expected.images, got.images)
    # A position at the end of an epoch is the start of the next one.
    at_end = next(iter(pipeline.batches(start_epoch=1, start_step=7)))
    assert (at_end.epoch, at_end.step) == (2, 0)


def test_epochs_differ_and_close_early(source):
    pipeline = TrainPipeline(source, global_batch_size=16, seed=0)
    batches = pipeline.batches()
    first = next(batches)
    for batch in batches:
        if batch.epoch == 1:
            assert not np.array_equal(batch.indices, first.indices)
            break
    batches.close()


def test_process_shares_assemble_the_global_batch(source):
    single = list(TrainPipeline(source, global_batch_size=32, seed=2).batches(end_epoch=1))
    per_process = [
        list(TrainPipeline(source, global_batch_size=32, seed=2, process_index=p, process_count=4)
             .batches(end_epoch=1))
        for p in range(4)
    ]
    for step, batch in enumerate(single):
        shares = np.concatenate([per_process[p][step].indices for p in range(4)])
        np.testing.assert_array_equal(shares, batch.indices)
        assert per_process[0][step].images.shape == (8, 8, 8, 3)


def test_eval_counts_every_example_once_and_masks_padding(source):
    batches = list(eval_batches(source, global_batch_size=32))
    assert len(batches) == 4 and batches[-1].images.shape == (32, 8, 8, 3)
    indices = np.concatenate([b.indices for b in batches])
    mask = np.concatenate([b.mask for b in batches])
    assert mask.sum() == NUM_EXAMPLES
    np.testing.assert_array_equal(indices[mask], np.arange(NUM_EXAMPLES))
    assert not mask[NUM_EXAMPLES:].any()
    labels = np.concatenate([b.labels for b in batches])
    np.testing.assert_array_equal(labels[mask], source.labels)


def test_file_source_with_mixed_sizes(tmp_path):
    paths = write_images(tmp_path, [(20, 30), (32, 32), (40, 24), (24, 24)])
    files = FileSource(tuple(paths), np.array([0, 1, 0, 1]), 2, ("a", "b"))
    pipeline = TrainPipeline(files, global_batch_size=4, transform=augment.RandomResizedCropFlip(16))
    assert next(iter(pipeline.batches())).images.shape == (4, 16, 16, 3)
    evaluated = list(eval_batches(files, global_batch_size=4, transform=augment.ResizeCenterCrop(16)))
    assert evaluated[0].images.shape == (4, 16, 16, 3)


def test_an_odd_sized_file_is_named(tmp_path):
    paths = write_images(tmp_path, [(16, 16), (16, 16), (16, 12), (16, 16)])
    files = FileSource(tuple(paths), np.array([0, 1, 0, 1]), 2, ("a", "b"))
    named = rf"{paths[2]} is 16x12x3, while the rest of the batch is 16x16x3"
    with pytest.raises(ValueError, match=named + ".*without a transform, batching needs images of one size"):
        list(eval_batches(files, global_batch_size=4))
    # A transform for images of one size fails inside np.stack; the pipeline names the file instead.
    pipeline = TrainPipeline(files, global_batch_size=4, transform=augment.PadCropFlip(2))
    with pytest.raises(ValueError, match=named + r".*the transform PadCropFlip\(padding=2\) needs") as error:
        next(iter(pipeline.batches()))
    assert "prepare_split" in str(error.value)


def test_clear_errors(source):
    with pytest.raises(ValueError, match="does not divide by the process count 3"):
        TrainPipeline(source, global_batch_size=20, process_count=3)
    with pytest.raises(ValueError, match="lower the batch size"):
        TrainPipeline(source, global_batch_size=128).steps_per_epoch()
    with pytest.raises(ValueError, match="start_step must lie in"):
        TrainPipeline(source, global_batch_size=16).batches(start_step=8)


def test_process_workers_give_the_same_batches_as_threads(tmp_path, source):
    paths = write_images(tmp_path, [(10, 12)] * 8)
    files = FileSource(tuple(paths), np.arange(8) % 2, 2, ("a", "b"))

    def run(worker_processes):
        pipeline = TrainPipeline(
            files, global_batch_size=4, transform=augment.RandomResizedCropFlip(8), seed=4,
            worker_processes=worker_processes,
        )
        return list(pipeline.batches(end_epoch=2))

    for threaded, in_process in zip(run(False), run(True)):
        np.testing.assert_array_equal(threaded.images, in_process.images)
        np.testing.assert_array_equal(threaded.indices, in_process.indices)
    with pytest.raises(ValueError, match="for file sources"):
        TrainPipeline(source, global_batch_size=16, worker_processes=True)
