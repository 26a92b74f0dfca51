"""Training throughput of the data-parallel train step: images/second of ResNet-32 on CIFAR-sized batches.

Times `ltjax.train.step` (the jitted shard_map step over every local device: forward, loss, backward, pmean,
SGD update) on random uint8 32x32 batches already on the device, so the input pipeline is not measured
(`data_pipeline.py` measures that). Compile time is reported separately; the rate is the median over windows of
back-to-back steps after warm-up.

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
from ltjax.models import create_model
from ltjax.stats import ClassStats
from ltjax.train import objective as objectives
from ltjax.train.optim import make_optimizer
from ltjax.train.state import create_train_state
from ltjax.train.step import AXIS, data_parallel, make_train_step


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

    devices = jax.local_devices()
    stats = ClassStats.from_counts(np.linspace(500, 5, args.classes).astype(int), num_groups=10)
    loss_config = ml_collections.ConfigDict({"name": args.loss})
    model = create_model(args.model, args.classes, head=objectives.reference_head(loss_config),
                         dtype=jnp.dtype(args.dtype))
    optimizer = make_optimizer(ml_collections.ConfigDict({"learning_rate": 0.1, "warmup_epochs": 5}), 100)
    state = create_train_state(model, optimizer, objectives.init_loss_params(loss_config, args.classes, 0),
                               objectives.init_loss_state(stats), (32, 32, 3), seed=0)
    step = data_parallel(
        make_train_step(model.clone(batch_norm_axis_name=AXIS), optimizer,
                        objectives.make_objective(loss_config, stats, 200), CIFAR_NORMALIZATION, args.classes, None),
        args.parallel, devices, sharded_args=(False, True, True, False), sharded_outputs=(False, False),
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, args.classes, args.batch).astype(np.int32)
    epoch = jnp.int32(0)

    started = time.perf_counter()
    state, _ = step(state, images, labels, epoch)
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - started
    for _ in range(3):
        state, _ = step(state, images, labels, epoch)
    jax.block_until_ready(state)
    rates = []
    for _ in range(args.windows):
        started = time.perf_counter()
        for _ in range(args.steps):
            state, _ = step(state, images, labels, epoch)
        jax.block_until_ready(state)
        rates.append(args.batch * args.steps / (time.perf_counter() - started))
    device = devices[0]
    print(f"| device | model | loss | dtype | batch | compile + first step (s) | images/s (median) | min - max |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    print(f"| {len(devices)} x {device.device_kind} ({jax.default_backend()}) | {args.model} | {args.loss} | "
          f"{args.dtype} | {args.batch} | {compile_seconds:.1f} | {statistics.median(rates):,.0f} | "
          f"{min(rates):,.0f} - {max(rates):,.0f} |")


if __name__ == "__main__":
    main()
