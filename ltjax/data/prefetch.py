"""`device_prefetch`: put the next batches on the devices while the current step runs.

`jax.device_put` (and `jax.make_array_from_process_local_data`, built on it) returns at once and copies in the
background, so placing a few batches ahead of the consumer overlaps their host-to-device transfer with the steps
before them; a plain loop would start each transfer only when the step wants its batch. No thread is needed.
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator

import jax

from ltjax.data.pipeline import Batch


def _place(batch: Batch, sharding: jax.sharding.Sharding) -> Batch:
    """The batch with images, labels and mask as global `jax.Array`s; indices, epoch and step stay on the host."""
    try:
        # One process: a device_put. Several: each contributes its host-local rows of the global array.
        images, labels, mask = (
            jax.make_array_from_process_local_data(sharding, array)
            for array in (batch.images, batch.labels, batch.mask)
        )
    except ValueError as error:
        raise ValueError(
            f"cannot place a batch of {len(batch.images)} examples with {sharding}: {error}. The batch must divide "
            f"over the {len(sharding.device_set)} devices it is sharded over: use a global batch size that is a "
            "multiple of the device count"
        ) from error
    return dataclasses.replace(batch, images=images, labels=labels, mask=mask)


def device_prefetch(batches: Iterable[Batch], sharding: jax.sharding.Sharding, size: int = 2) -> Iterator[Batch]:
    """Yields the batches in order with their arrays on the devices, `size` batches placed ahead of the consumer.

    Args:
      batches: host batches, e.g. `TrainPipeline.batches(...)` or `eval_batches(...)` (any `Batch` iterable).
      sharding: where the arrays go, e.g. `NamedSharding(mesh, PartitionSpec("batch"))` over a 1-D mesh of the
        devices: the batch axis is split over them, as the jitted train step expects its inputs. Multi-host: each
        process passes its host-local batches and gets the global arrays.
      size: batches placed beyond the one the consumer holds; 2 keeps a transfer in flight during each step.

    Returns:
      An iterator of `Batch`es whose `images`, `labels` and `mask` are `jax.Array`s with `sharding` (`indices`
      stays a NumPy array, `epoch` and `step` ints). Closing it closes `batches`, which stops a pipeline's
      workers; Python also closes it when it is garbage-collected, e.g. after a `break` out of a `for` loop.

    Raises:
      ValueError: `size < 1`, or a batch that does not divide over the devices of `sharding`.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1 batch, got {size}")
    source = iter(batches)
    placed: collections.deque[Batch] = collections.deque()
    try:
        for batch in source:
            placed.append(_place(batch, sharding))
            if len(placed) > size:
                yield placed.popleft()
        while placed:
            yield placed.popleft()
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
