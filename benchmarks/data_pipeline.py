"""Input-pipeline throughput on the real Tiny-ImageNet-LT (imbalance 100) training split: images per second.

    .venv/bin/python benchmarks/data_pipeline.py [--data ../shared/data] [--workers 2] [--batch 128]

Configurations, each read from the JPEG files (Pillow decode) by thread workers and by process workers, and from
the decoded uint8 cache (`ltjax.data.cache`, built once, memory-mapped) by thread workers:
  - none: decode and batch only;
  - pad-crop-flip 64: zero-pad 8, random 64x64 crop, flip (the CIFAR recipe scaled to 64 px);
  - rrc-flip 64: random-resized crop (0.08-1, 3/4-4/3) to 64x64 and flip;
  - rrc-flip 224: random-resized crop to 224x224 and flip, the FFDS reference recipe for Tiny-ImageNet-LT
    (`TF.RandomResizedCrop(size=224)`, ImageNet-pretrained ResNet-18).
The pipeline is `TrainPipeline` with instance-uniform order, one device, batch 128 (the FFDS batch). Each
configuration runs `--warmup` batches, then `--repeats` windows of `--steps` batches; the table gives the median
window's images/s and the slowest and fastest. Files are read from a warm page cache (the split is ~50 MB), so the
"files" rows measure decoding, not the disk. Normalisation is not included: it runs on the device.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import time

import numpy as np

from ltjax.data import augment, cache
from ltjax.data.pipeline import TrainPipeline
from ltjax.data.source import FileSource, ImageSource

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_imagenet_lt_train(data_dir: pathlib.Path) -> FileSource:
    """The training files present in the LT copy: classes in sorted wnid order, images by their index k."""
    train = data_dir / "tiny-imagenet-200" / "train"
    if not train.is_dir():
        raise SystemExit(f"no Tiny ImageNet training folder at {train}; pass --data pointing at shared/data")
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        files = sorted((train / wnid / "images").glob(f"{wnid}_*.JPEG"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        paths += files
        labels += [label] * len(files)
    return FileSource(tuple(paths), np.array(labels), len(wnids), tuple(wnids))


def images_per_second(
    source: ImageSource, transform: augment.Transform | None, worker_processes: bool, args: argparse.Namespace
) -> list[float]:
    """Throughput of each timed window, after the warm-up batches."""
    pipeline = TrainPipeline(
        source, global_batch_size=args.batch, transform=transform, seed=0, num_devices=1,
        num_workers=args.workers, prefetch=args.prefetch, worker_processes=worker_processes,
    )
    batches = pipeline.batches()
    for _ in range(args.warmup):
        next(batches)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            next(batches)
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
    batches.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA, help="the shared/data folder")
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path("runs/cache/tiny_imagenet_lt_train.npy"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    files = tiny_imagenet_lt_train(args.data)
    start = time.perf_counter()
    cached = cache.write_cache(files, args.cache, num_workers=args.workers)
    build_seconds = time.perf_counter() - start

    transforms = {
        "none": None,
        "pad-crop-flip 64": augment.PadCropFlip(padding=8),
        "rrc-flip 64": augment.RandomResizedCropFlip(size=64),
        "rrc-flip 224": augment.RandomResizedCropFlip(size=224),
    }
    print(f"Tiny-ImageNet-LT train: {len(files)} images; {os.cpu_count()} CPU cores; batch {args.batch}, "
          f"{args.workers} workers, prefetch {args.prefetch}; median of {args.repeats} x {args.steps} batches")
    print(f"cache build (decode all + write {cached.images.nbytes / 2**20:.0f} MiB): {build_seconds:.1f} s "
          f"= {len(files) / build_seconds:,.0f} img/s\n")
    print(f"| {'source, workers':<17} | {'augmentation':<16} | {'img/s (median)':>14} | {'min - max':>17} |")
    print(f"|{'-' * 19}|{'-' * 18}|{'-' * 15}:|{'-' * 18}:|")
    runs = (("files, threads", files, False), ("files, processes", files, True), ("cache, threads", cached, False))
    for source_name, source, worker_processes in runs:
        for transform_name, transform in transforms.items():
            rates = images_per_second(source, transform, worker_processes, args)
            print(f"| {source_name:<17} | {transform_name:<16} | {statistics.median(rates):>14,.0f} | "
                  f"{min(rates):>7,.0f} - {max(rates):>7,.0f} |", flush=True)


if __name__ == "__main__":
    main()
