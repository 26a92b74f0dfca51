"""Input-pipeline throughput on the real Tiny-ImageNet-LT (imbalance 100) training split: images per second.

    .venv/bin/python benchmarks/data_pipeline.py [--data ../shared/data] [--workers 2] [--batch 128] [--quick]
        [--synthetic]

Host rows: `TrainPipeline` (instance-uniform order, batch 128, the FFDS batch) reading
  - files: the JPEGs, decoded by Pillow in thread or process workers (page cache warm: the split is ~50 MB, so
    these rows measure decoding, not the disk);
  - cache: the decoded uint8 cache that `prepare_split` builds (memory-mapped), in thread workers;
with the augmentation on the host:
  - raw uint8: none, the batch shipped as stored for augmentation on the device;
  - pad-crop-flip 64: zero-pad 8, random 64x64 crop, flip (the Tiny ImageNet recipe from scratch);
  - rrc-flip 64 / 224: random-resized crop (0.08-1, 3/4-4/3) to 64 or 224 px and flip (224: the FFDS recipe for an
    ImageNet-pretrained ResNet-18).
Device rows, on the default JAX device (the header names it), each on a batch already on the device and along the
whole raw path (cache -> raw uint8 batches -> `device_prefetch` -> device augmentation):
  - pad-crop-flip 64: the jitted `device_augment.pad_crop_flip` (padding 8);
  - rrc-flip-norm 224: the jitted `device_crops.random_resized_crop_flip` (torchvision's defaults, 224 px, float32)
    followed by `augment.normalize`, the device's counterpart of the host rows' rrc-flip 224.
`--quick` runs only the 224-px rows (host rrc-flip 224 from the cache, and the device's); `--synthetic` reads no data
and times the cache and device rows on random 64x64 images in memory, for a machine without the data (a lent GPU).
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

from ltjax.data import augment, device_augment, device_crops
from ltjax.data.pipeline import TrainPipeline
from ltjax.data.prefetch import device_prefetch
from ltjax.data.prepare import prepare_split
from ltjax.data.source import ArraySource, ImageSource
from ltjax.data.tiny_imagenet import load_tiny_imagenet

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
PADDING = 8
CROP_SIZE = 224
# The synthetic split: Tiny-ImageNet-LT's image shape and class count, about its size (9,770 images at imbalance 100).
SYNTHETIC_IMAGES, SYNTHETIC_CLASSES = 10_000, 200


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


def pad_crop_flip_on_device(images: jax.Array, step: int | jax.Array) -> jax.Array:
    return device_augment.pad_crop_flip(images, device_augment.step_key(0, 0, step), padding=PADDING)


def crop_flip_normalize_on_device(images: jax.Array, step: int | jax.Array) -> jax.Array:
    crops = device_crops.random_resized_crop_flip(images, device_augment.step_key(0, 0, step), size=CROP_SIZE)
    return augment.normalize(crops, augment.TINY_IMAGENET_NORMALIZATION)


def device_rates(
    source: ImageSource, augmentation: Callable[[jax.Array, int | jax.Array], jax.Array], args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """(the augmentation alone on a batch on the device, cache -> device_prefetch -> the augmentation)."""
    augment_on_device = jax.jit(augmentation)
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


def synthetic_source() -> ArraySource:
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, size=(SYNTHETIC_IMAGES, 64, 64, 3), dtype=np.uint8)
    labels = generator.integers(0, SYNTHETIC_CLASSES, size=SYNTHETIC_IMAGES)
    return ArraySource(images, labels, SYNTHETIC_CLASSES, tuple(f"class {c}" for c in range(SYNTHETIC_CLASSES)))


def row(name: str, augmentation: str, rates: list[float]) -> str:
    return (f"| {name:<38} | {augmentation:<17} | {statistics.median(rates):>14,.0f} | "
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
    parser.add_argument("--quick", action="store_true",
                        help="only the 224-px rows: host rrc-flip 224 from the cache, and the device's")
    parser.add_argument("--synthetic", action="store_true",
                        help="random 64x64 images in memory instead of the data: no file rows, no cache build")
    args = parser.parse_args()

    device = jax.devices()[0]
    setting = (f"{os.cpu_count()} CPU cores; jax {jax.__version__} on {jax.local_device_count()} x {device.platform} "
               f"({device.device_kind}); batch {args.batch}, {args.workers} workers, prefetch {args.prefetch}; "
               f"median of {args.repeats} x {args.steps} batches")
    with tempfile.TemporaryDirectory(prefix="ltjax-benchmark-cache-") as cache_dir:
        if args.synthetic:
            files, cached = None, synthetic_source()
            print(f"synthetic: {len(cached)} random 64x64 images in memory; {setting}\n")
        else:
            files = load_tiny_imagenet(args.data / "tiny-imagenet-200", "train", imbalance_factor=100)
            start = time.perf_counter()
            cached = prepare_split(files, cache_dir=cache_dir, name="tiny_imagenet_lt-train",
                                   num_workers=args.workers)
            build_seconds = time.perf_counter() - start
            start = time.perf_counter()
            prepare_split(files, cache_dir=cache_dir, name="tiny_imagenet_lt-train")
            reuse_seconds = time.perf_counter() - start
            print(f"Tiny-ImageNet-LT train: {len(files)} images; {setting}")
            print(f"prepare_split, first run (stat, decode and check all, write {cached.images.nbytes / 2**20:.0f} "
                  f"MiB): {build_seconds:.1f} s = {len(files) / build_seconds:,.0f} img/s; second run (stat, "
                  f"manifest, memory-map): {reuse_seconds:.2f} s\n")
        print(f"| {'where, source, workers':<38} | {'augmentation':<17} | {'img/s (median)':>14} | {'min - max':>17} |")
        print(f"|{'-' * 40}|{'-' * 19}|{'-' * 15}:|{'-' * 18}:|")
        transforms = {
            "raw uint8": None,
            "pad-crop-flip 64": augment.PadCropFlip(padding=PADDING),
            "rrc-flip 64": augment.RandomResizedCropFlip(size=64),
            "rrc-flip 224": augment.RandomResizedCropFlip(size=CROP_SIZE),
        }
        runs = [("host, files, threads", files, False), ("host, files, processes", files, True),
                ("host, cache, threads", cached, False)]
        if args.synthetic:
            runs = runs[2:]
        if args.quick:
            transforms, runs = {"rrc-flip 224": transforms["rrc-flip 224"]}, runs[-1:]
        for source_name, source, worker_processes in runs:
            for transform_name, transform in transforms.items():
                rates = host_rates(source, transform, worker_processes, args)
                print(row(source_name, transform_name, rates), flush=True)
        device_augmentations = {"pad-crop-flip 64": pad_crop_flip_on_device,
                                "rrc-flip-norm 224": crop_flip_normalize_on_device}
        if args.quick:
            del device_augmentations["pad-crop-flip 64"]
        for name, augmentation in device_augmentations.items():
            alone, whole = device_rates(cached, augmentation, args)
            print(row("device, batch on device", name, alone))
            print(row("cache -> device_prefetch -> device", name, whole), flush=True)


if __name__ == "__main__":
    main()
