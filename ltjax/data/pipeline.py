"""Host input pipeline: deterministic, resumable, prefetched host-local batches of uint8 images.

Every batch is `images` uint8 [B, H, W, C], `labels` int32 [B], `mask` bool [B] and the source `indices` int64 [B],
B being this host's share of the global batch (all of it on one host). The pipeline does not split batches over
devices: the train step is jitted with its batch sharded over a 1-D device mesh and takes the global array, which
`ltjax.data.device_prefetch` puts on the devices ahead of the step.

Order and resumption. Epoch e's order is `sampler(labels, e, seed)`: one global order, cut into global batches of
`global_batch_size`; each host takes its contiguous share (`samplers.process_share`). Host augmentation of step s
of epoch e draws from `np.random.default_rng([seed, e, s, process_index])`. So a batch is a pure function of (seed,
epoch, step): a run resumed at `start_epoch=e, start_step=s` sees exactly the batches an uninterrupted run would
have seen from there, and the batches do not depend on the number of devices.

Where augmentation runs. With a `transform` the host augments each batch (`ltjax.data.augment`); with
`transform=None` the pipeline ships the source's uint8 images unchanged, for augmentation on the device
(`ltjax.data.device_augment`), which is the fast path from an array source or the decoded cache.

Remainders. Training keeps the last partial batch of every epoch, as the reference scripts (PyTorch's DataLoader)
do: an epoch has `ceil(len(order) / global_batch_size)` steps, and the last batch is padded to the full size with
copies of its last example, `mask` False on the padding, so every step has the same shape and compiles once (the
train step averages the loss and takes BatchNorm's statistics over the real examples only). `drop_remainder=True`
drops it instead (`len(order) // global_batch_size` steps). Evaluation keeps every example exactly once, the last
batch padded the same way, so metrics must be weighted by `mask`.

Concurrency. One batch is one job (read or decode its images, augment) run by a pool of workers; up to
`num_workers + prefetch` jobs run ahead of the consumer and their results are taken in order, so the in-flight
futures are the bounded prefetch queue. Workers are threads by default: array-backed sources (`ArraySource`, the
decoded cache) are a NumPy gather, and Pillow releases the GIL while it decodes and resizes, so large images scale
with threads. Small JPEGs do not: most of the ~220 us per 64x64 Tiny ImageNet image is Python-side work in Pillow
(opening, header parsing) under the GIL, and two threads decode only 1.3x as fast as one (4.5k -> 6.0k img/s), a cap
that more cores do not lift. For file sources of small images on many-core hosts pass `worker_processes=True`:
workers are then processes (forkserver, so JAX's threads are never forked), each holding one pickled copy of the
source and transform, and each batch comes back pickled through a pipe. On a 2-core machine that trip costs about
what it gains; the decoded cache (`prepare_split`) is the faster fix wherever the decoded split fits on disk.
Scripts using processes need the usual `if __name__ == "__main__":` guard.

Why plain NumPy and a worker pool, not grain or a tfds data source: ltjax's sources are already random-access
(`tfds.data_source` offers nothing more for our files), the samplers need a different index order per epoch
(progressive, re-drawn over-sampling), which is one line here and a custom sampler in grain, and neither adds a
dependency beyond NumPy and Pillow. Across processes (what `ltjax.train.loop` does): pass
`process_index=jax.process_index()` and `process_count=jax.process_count()`, so each process reads and decodes only
its share of every global batch, and build global arrays from the shares with `device_prefetch`. Host augmentation
draws per process (its rng takes the process index), so with a `transform` the batches depend on the process count;
the device augmentation the loop uses draws per example of the global batch, and does not.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ltjax.data import samplers
from ltjax.data.augment import Transform
from ltjax.data.source import ImageSource
from ltjax.data.verify import format_shape, image_name
from ltjax.keys import ConfigError


@dataclasses.dataclass(frozen=True)
class Batch:
    """One step's host-local batch (the global batch on one host).

    Attributes:
      images: uint8 [B, H, W, C] (a `jax.Array` once `device_prefetch` has placed it).
      labels: int32 [B] (likewise).
      mask: bool [B]; False only on evaluation padding (likewise).
      indices: int64 [B] source indices of the examples (stays a NumPy array).
      epoch: the epoch this batch belongs to (0 for evaluation).
      step: the step within the epoch.
    """

    images: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    indices: np.ndarray
    epoch: int
    step: int


def _check_batch_size(global_batch_size: int, process_count: int) -> None:
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} does not divide by the process count {process_count}; "
            f"use a multiple of {process_count}"
        )


def _check_workers(loader: _BatchLoader, num_workers: int, prefetch: int, worker_processes: bool) -> None:
    if num_workers <= 0 or prefetch < 0:
        raise ValueError(f"need num_workers >= 1 and prefetch >= 0, got {num_workers} and {prefetch}")
    if worker_processes and loader.images is not None:
        raise ValueError(
            "worker_processes=True is for file sources; an array-backed source would be copied into every "
            "process and needs no decoding: use the default thread workers"
        )


class _BatchLoader:
    """Turns the global indices of one step into a `Batch` (runs in a worker thread or process)."""

    def __init__(
        self, source: ImageSource, transform: Transform | None, seed: int, process_index: int, process_count: int
    ):
        self.source = source
        self.transform = transform
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        # Array-backed sources (ArraySource, a decoded cache) are read with one gather instead of N item calls.
        images = getattr(source, "images", None)
        self.images = images if isinstance(images, np.ndarray) else None

    def __call__(self, global_indices: np.ndarray, global_mask: np.ndarray, epoch: int, step: int) -> Batch:
        indices = samplers.process_share(global_indices, self.process_index, self.process_count)
        mask = samplers.process_share(global_mask, self.process_index, self.process_count)
        if self.images is not None:
            images = np.asarray(self.images[indices])
        else:
            images = [self.source[int(i)][0] for i in indices]
        rng = np.random.default_rng([self.seed, epoch, step, self.process_index])
        if self.transform is not None:
            try:
                images = self.transform(images, rng)
            except ValueError as error:
                # A transform for images of one size fails inside np.stack, naming no file: name them.
                odd = self._odd_shapes(images, indices)
                if odd is None:
                    raise
                raise odd from error
        elif not isinstance(images, np.ndarray):
            odd = self._odd_shapes(images, indices)
            if odd is not None:
                raise odd
            images = np.stack(images)
        return Batch(images, self.source.labels[indices], mask, indices, epoch, step)

    def _odd_shapes(self, images: Sequence[np.ndarray], indices: np.ndarray) -> ValueError | None:
        """An error naming the files whose shape differs from most of the batch's, or None if all agree."""
        shapes = [image.shape for image in images]
        common = collections.Counter(shapes).most_common(1)[0][0]
        odd = [f"{image_name(self.source, int(index))} is {format_shape(shape)}"
               for index, shape in zip(indices, shapes) if shape != common]
        if not odd:
            return None
        needs = (f"the transform {self.transform!r} needs" if self.transform is not None
                 else "without a transform, batching needs")
        return ValueError(
            f"images differ in shape within a batch (height x width x channels): {'; '.join(odd)}, while the rest "
            f"of the batch is {format_shape(common)}; {needs} images of one size. Replace the files, pass a "
            "transform that outputs one size (e.g. augment.ResizeCenterCrop), or check the whole split before "
            "training with ltjax.data.prepare_split"
        )


Job = tuple[np.ndarray, np.ndarray, int, int]  # (global indices, global mask, epoch, step)
_PARTNER_STREAM = 0x70617274  # "part": partner draws independent of the epoch order's


def with_partners(indices: np.ndarray, partners: np.ndarray, mask: np.ndarray, device_blocks: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A global batch of examples and their partners, `[2B]`, as the devices take it: the batch is cut into
    `device_blocks` contiguous blocks (one per device, in order), and each block holds its `B / device_blocks`
    examples followed by their partners. A padded example's partner is padding too.

    Example:
      >>> with_partners(np.array([0, 1, 2, 3]), np.array([7, 8, 9, 6]), np.ones(4, bool), 2)[0].tolist()
      [0, 1, 7, 8, 2, 3, 9, 6]
    """
    def interleaved(first, second):
        return np.concatenate([first.reshape(device_blocks, -1), second.reshape(device_blocks, -1)], axis=1).ravel()

    return interleaved(indices, partners), interleaved(mask, mask)



def _padded_batch(step: int, size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """`(positions, mask)` of global batch `step` of `size` over `length` examples: positions past the last one repeat
    it, and `mask` is False on them."""
    positions = np.arange(step * size, (step + 1) * size)
    return np.minimum(positions, length - 1), positions < length


# The loader of a worker process, set once by the pool's initializer so that jobs carry only indices.
_process_loader: _BatchLoader | None = None


def _set_process_loader(loader: _BatchLoader) -> None:
    global _process_loader
    _process_loader = loader


def _load_in_process(*job: object) -> Batch:
    return _process_loader(*job)


def _make_executor(
    loader: _BatchLoader, num_workers: int, worker_processes: bool
) -> tuple[concurrent.futures.Executor, Callable[..., Batch]]:
    if not worker_processes:
        return concurrent.futures.ThreadPoolExecutor(num_workers, thread_name_prefix="ltjax-data"), loader
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    executor = concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=context, initializer=_set_process_loader, initargs=(loader,)
    )
    return executor, _load_in_process


def _prefetched(
    jobs: Iterator[Job], loader: _BatchLoader, num_workers: int, prefetch: int, worker_processes: bool
) -> Iterator[Batch]:
    """Runs the loader on each job in a worker pool, `num_workers + prefetch` jobs ahead, yielding in job order."""
    executor, load = _make_executor(loader, num_workers, worker_processes)
    in_flight: collections.deque[concurrent.futures.Future] = collections.deque()
    try:
        for job in jobs:
            in_flight.append(executor.submit(load, *job))
            if len(in_flight) > num_workers + prefetch:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    finally:
        # Reached when the consumer stops early too (generator closed): drop the work it will never take.
        for future in in_flight:
            future.cancel()
        executor.shutdown(wait=False, cancel_futures=True)


class TrainPipeline:
    """Training batches over epochs: sampled order, optional host augmentation, the partial last batch, prefetch.

    Example (raw uint8 to the devices, augmented there):
      >>> pipeline = TrainPipeline(source, global_batch_size=128, seed=0)  # doctest: +SKIP
      >>> batches = pipeline.batches(start_epoch=epoch, start_step=step, end_epoch=200)  # doctest: +SKIP
      >>> for batch in device_prefetch(batches, sharding):  # doctest: +SKIP
      ...     state = train_step(state, batch.images, batch.labels, epoch_inputs(batch.epoch))
    """

    def __init__(
        self,
        source: ImageSource,
        *,
        global_batch_size: int,
        sampler: samplers.Sampler = samplers.instance_uniform_order,
        transform: Transform | None = None,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        num_workers: int = 2,
        prefetch: int = 2,
        worker_processes: bool = False,
        drop_remainder: bool = False,
        partners: samplers.PartnerDraws | None = None,
        device_blocks: int = 1,
    ):
        """Builds the pipeline; nothing is read until `batches` is iterated.

        Args:
          source: the training split.
          global_batch_size: the batch over all processes; must divide by `process_count` (each process yields
            `global_batch_size // process_count` examples per batch).
          sampler: the epoch order, e.g. `samplers.make_sampler("class_balanced")`.
          transform: host augmentation (e.g. `augment.PadCropFlip()`); None ships the source's uint8 images
            unchanged, to be augmented on the device (`ltjax.data.device_augment`).
          seed: run seed; with (epoch, step) it fixes every batch.
          process_index: this host's index (`jax.process_index()`).
          process_count: number of hosts (`jax.process_count()`).
          num_workers: workers decoding and augmenting batches.
          prefetch: batches kept ready beyond those being worked on.
          worker_processes: workers are processes instead of threads (for file sources of small images).
          drop_remainder: drop each epoch's last partial batch instead of padding it (see the module docstring).
          partners: draw a partner for every example (`samplers.PARTNER_SAMPLERS`, BBN's reversed sampler) from
            `(seed, epoch, step)`: a batch then holds `2 * global_batch_size` examples, laid out for `device_blocks`
            devices (`with_partners`).
          device_blocks: the number of devices the global batch is split over, with `partners`.
        """
        _check_batch_size(global_batch_size, process_count)
        self.source = source
        self.drop_remainder = drop_remainder
        self.global_batch_size = global_batch_size
        self.sampler = sampler
        self.seed = seed
        self.num_workers = num_workers
        self.prefetch = prefetch
        self.worker_processes = worker_processes
        self.partners = partners
        self.device_blocks = device_blocks
        if partners is not None and global_batch_size % device_blocks:
            raise ValueError(f"global_batch_size {global_batch_size} must divide by device_blocks={device_blocks}")
        self._load = _BatchLoader(source, transform, seed, process_index, process_count)
        _check_workers(self._load, num_workers, prefetch, worker_processes)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global index order of `epoch` (before dropping the remainder)."""
        return np.asarray(self.sampler(self.source.labels, epoch, self.seed), dtype=np.int64)

    def steps_per_epoch(self, epoch: int = 0) -> int:
        """Global batches in `epoch`, the partial last one included unless dropped; constant unless the sampler's
        length varies."""
        return self._steps(len(self.epoch_order(epoch)), epoch)

    def _steps(self, length: int, epoch: int) -> int:
        if length < self.global_batch_size:
            raise ConfigError(
                f"epoch {epoch} has {length} training examples, fewer than the global batch of "
                f"{self.global_batch_size}: lower the batch size (batch_size <= {length})"
            )
        return length // self.global_batch_size if self.drop_remainder else -(-length // self.global_batch_size)

    def _jobs(self, start_epoch: int, start_step: int, end_epoch: int | None) -> Iterator[Job]:
        epoch, first_step = start_epoch, start_step
        while end_epoch is None or epoch < end_epoch:
            order = self.epoch_order(epoch)
            for step in range(first_step, self._steps(len(order), epoch)):
                positions, mask = _padded_batch(step, self.global_batch_size, len(order))
                indices = order[positions]
                if self.partners is not None:
                    rng = np.random.default_rng([self.seed, epoch, step, _PARTNER_STREAM])
                    drawn = np.asarray(self.partners(self.source.labels, len(indices), rng), np.int64)
                    indices, mask = with_partners(indices, drawn, mask, self.device_blocks)
                yield indices, mask, epoch, step
            epoch, first_step = epoch + 1, 0

    def batches(self, *, start_epoch: int = 0, start_step: int = 0, end_epoch: int | None = None) -> Iterator[Batch]:
        """Batches from (start_epoch, start_step) on, across epoch boundaries, prefetched in the background.

        Args:
          start_epoch: first epoch, 0-indexed.
          start_step: first step within `start_epoch` (resume position); `steps_per_epoch` means the epoch is done.
          end_epoch: stop before this epoch; None runs forever.

        Returns:
          An iterator of `Batch`; closing it early stops the workers.
        """
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        steps = self.steps_per_epoch(start_epoch)
        if not 0 <= start_step <= steps:
            raise ValueError(
                f"start_step must lie in [0, {steps}] (the steps of epoch {start_epoch}), got {start_step}"
            )
        return _prefetched(
            self._jobs(start_epoch, start_step, end_epoch), self._load, self.num_workers, self.prefetch,
            self.worker_processes,
        )


def eval_batches(
    source: ImageSource,
    *,
    global_batch_size: int,
    transform: Transform | None = None,
    process_index: int = 0,
    process_count: int = 1,
    num_workers: int = 2,
    prefetch: int = 2,
    worker_processes: bool = False,
) -> Iterator[Batch]:
    """Every example of `source` exactly once, in order, the last batch padded and masked.

    Args:
      source: the evaluation split.
      global_batch_size: the batch over all processes; must divide by `process_count`.
      transform: e.g. `augment.ResizeCenterCrop(224)`; None ships the images as stored.
      process_index: this host's index (`jax.process_index()`).
      process_count: number of hosts (`jax.process_count()`).
      num_workers: workers decoding batches.
      prefetch: batches kept ready beyond those being worked on.
      worker_processes: workers are processes instead of threads (for file sources of small images).

    Returns:
      An iterator of ceil(N / B) `Batch`es (epoch 0); `mask` is False on padding, which repeats the last example.
    """
    _check_batch_size(global_batch_size, process_count)
    size = len(source)
    if size == 0:
        raise ValueError("the evaluation source is empty")
    steps = -(-size // global_batch_size)
    jobs = ((*_padded_batch(step, global_batch_size, size), 0, step) for step in range(steps))
    load = _BatchLoader(source, transform, 0, process_index, process_count)
    _check_workers(load, num_workers, prefetch, worker_processes)
    return _prefetched(jobs, load, num_workers, prefetch, worker_processes)
