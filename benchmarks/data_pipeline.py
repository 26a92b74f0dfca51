"""Input-pipeline throughput on the real Tiny-ImageNet-LT (imbalance 100) training split: images per second.

    .venv/bin/python benchmarks/data_pipeline.py [--data ../shared/data] [--workers 2] [--batch 128]

Host rows: `TrainPipeline` (instance-uniform order, batch 128, the FFDS batch) reading
  - files: the JPEGs, decoded by Pillow in thread or process workers (page cache warm: the split is ~50 MB, so
    these rows measure decoding, not the disk);
  - cache: the decoded uint8 cache that `prepare_split` builds (memory-mapped), in thread workers;
with the augmentation on the host:
  - raw uint8: none, the batch shipped as stored for augmentation on the device;
  - pad-crop-flip 64: zero-pad 8, random 64x64 crop, flip (the Tiny ImageNet recipe from scratch);
  - rrc-flip 64 / 224: random-resized crop (0.08-1, 3/4-4/3) to 64 or 224 px and flip (224: the FFDS recipe for an
    ImageNet-pretrained ResNet-18).
Device rows, on the default JAX device: the jitted `device_augment.pad_crop_flip` (padding 8) on a batch already on
the device, and the whole raw path: cache -> raw uint8 batches -> `device_prefetch` -> device pad-crop-flip.
Each row runs `--warmup` batches, then `--repeats` windows of `--steps` batches; the table gives the median window's
images/s and the slowest and fastest. Normalisation is not included: it runs on the device in the train step.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ltjax.data import augment, device_augment
from ltjax.data.pipeline import TrainPipeline
from ltjax.data.prefetch import device_prefetch
from ltjax.data.prepare import prepare_split
from ltjax.data.source import ImageSource
from ltjax.data.tiny_imagenet import load_tiny_imagenet

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
PADDING = 8


def windows(next_batch: Callable[[], object], args: argparse.Namespace) -> list[float]:
    """Images/s of each timed window of `next_batch()` calls, after the warm-up calls."""
    for _ in range(args.warmup):
        next_batch()
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            next_batch()
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
    return rates


def host_rates(
    source: ImageSource, transform: augment.Transform | None, worker_processes: bool, args: argparse.Namespace
) -> list[float]:
    pipeline = TrainPipeline(
        source, global_batch_size=args.batch, transform=transform, seed=0, num_workers=args.workers,
        prefetch=args.prefetch, worker_processes=worker_processes,
    )
    batches = pipeline.batches()
    rates = windows(lambda: next(batches), args)
    batches.close()
    return rates


def device_rates(source: ImageSource, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """(device pad-crop-flip alone, cache -> device_prefetch -> device pad-crop-flip)."""
    augment_on_device = jax.jit(
        lambda images, step: device_augment.pad_crop_flip(images, device_augment.step_key(0, 0, step), padding=PADDING)
    )
    sharding = NamedSharding(Mesh(np.asarray(jax.local_devices()), ("batch",)), PartitionSpec("batch"))
    on_device = jax.device_put(np.asarray(source.images[: args.batch]), sharding)
    step = iter(range(10**9))
    alone = windows(lambda: augment_on_device(on_device, next(step)).block_until_ready(), args)

    pipeline = TrainPipeline(source, global_batch_size=args.batch, seed=0, num_workers=args.workers,
                             prefetch=args.prefetch)
    batches: Iterator = device_prefetch(pipeline.batches(), sharding)

    def next_augmented():
        batch = next(batches)
        return augment_on_device(batch.images, batch.step).block_until_ready()

    whole = windows(next_augmented, args)
    batches.close()
    return alone, whole


def row(name: str, augmentation: str, rates: list[float]) -> str:
    return (f"| {name:<38} | {augmentation:<16} | {statistics.median(rates):>14,.0f} | "
            f"{min(rates):>7,.0f} - {max(rates):>7,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA, help="the shared/data folder")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    files = load_tiny_imagenet(args.data / "tiny-imagenet-200", "train", imbalance_factor=100)
    with tempfile.TemporaryDirectory(prefix="ltjax-benchmark-cache-") as cache_dir:
        start = time.perf_counter()
        cached = prepare_split(files, cache_dir=cache_dir, name="tiny_imagenet_lt-train", num_workers=args.workers)
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        prepare_split(files, cache_dir=cache_dir, name="tiny_imagenet_lt-train")
        reuse_seconds = time.perf_counter() - start

        print(f"Tiny-ImageNet-LT train: {len(files)} images; {os.cpu_count()} CPU cores; jax {jax.__version__} on "
              f"{jax.local_device_count()} x {jax.devices()[0].platform}; batch {args.batch}, {args.workers} workers, "
              f"prefetch {args.prefetch}; median of {args.repeats} x {args.steps} batches")
        print(f"prepare_split, first run (stat, decode and check all, write {cached.images.nbytes / 2**20:.0f} MiB): "
              f"{build_seconds:.1f} s = {len(files) / build_seconds:,.0f} img/s; second run (stat, "
              f"manifest, memory-map): {reuse_seconds:.2f} s\n")
        print(f"| {'where, source, workers':<38} | {'augmentation':<16} | {'img/s (median)':>14} | {'min - max':>17} |")
        print(f"|{'-' * 40}|{'-' * 18}|{'-' * 15}:|{'-' * 18}:|")
        transforms = {
            "raw uint8": None,
            "pad-crop-flip 64": augment.PadCropFlip(padding=PADDING),
            "rrc-flip 64": augment.RandomResizedCropFlip(size=64),
            "rrc-flip 224": augment.RandomResizedCropFlip(size=224),
        }
        runs = (("host, files, threads", files, False), ("host, files, processes", files, True),
                ("host, cache, threads", cached, False))
        for source_name, source, worker_processes in runs:
            for transform_name, transform in transforms.items():
                rates = host_rates(source, transform, worker_processes, args)
                print(row(source_name, transform_name, rates), flush=True)
        alone, whole = device_rates(cached, args)
        print(row("device, batch on device", "pad-crop-flip 64", alone))
        print(row("cache -> device_prefetch -> device", "pad-crop-flip 64", whole), flush=True)


if __name__ == "__main__":
    main()
