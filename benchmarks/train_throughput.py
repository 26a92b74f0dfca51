"""Training throughput of the data-parallel train step: images/second of ResNet-32 on CIFAR-sized batches.

Times the train step `ltjax.train.build` makes (the jitted shard_map step over every local device: forward, loss,
backward, pmean, SGD update) on random uint8 32x32 batches already on the device, so the input pipeline is not
measured (`data_pipeline.py` measures that). Compile time is reported separately; the rate is the median over windows
of back-to-back steps after warm-up.

    python benchmarks/train_throughput.py [--model resnet32] [--batch 128] [--loss ce] [--dtype float32]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax.data.augment import CIFAR_NORMALIZATION
from ltjax.train.build import DataSpec, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--loss", default="ce")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--parallel", default="shard_map")
    parser.add_argument("--steps", type=int, default=10, help="steps per timing window")
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()

    config = ml_collections.ConfigDict({
        "dataset": {"name": "cifar100"}, "model": {"name": args.model, "dtype": args.dtype},
        "loss": {"name": args.loss}, "batch_size": args.batch, "parallel": args.parallel,
    })
    counts = np.linspace(500, 5, args.classes).astype(int)
    trainer = build(config, DataSpec(counts, (32, 32, 3), CIFAR_NORMALIZATION, steps_per_epoch=100))
    state = trainer.init_state()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, args.classes, args.batch).astype(np.int32)
    epoch = jnp.int32(0)

    started = time.perf_counter()
    state = trainer.train_step(state, images, labels, epoch)
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - started
    for _ in range(3):
        state = trainer.train_step(state, images, labels, epoch)
    jax.block_until_ready(state)
    rates = []
    for _ in range(args.windows):
        started = time.perf_counter()
        for _ in range(args.steps):
            state = trainer.train_step(state, images, labels, epoch)
        jax.block_until_ready(state)
        rates.append(args.batch * args.steps / (time.perf_counter() - started))
    device = trainer.devices[0]
    print("| device | model | loss | dtype | batch | compile + first step (s) | images/s (median) | min - max |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    print(f"| {len(trainer.devices)} x {device.device_kind} ({jax.default_backend()}) | {args.model} | {args.loss} | "
          f"{args.dtype} | {args.batch} | {compile_seconds:.1f} | {statistics.median(rates):,.0f} | "
          f"{min(rates):,.0f} - {max(rates):,.0f} |")


if __name__ == "__main__":
    main()
