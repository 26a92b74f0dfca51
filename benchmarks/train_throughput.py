"""Train-step throughput, ltjax against the PyTorch reference, side by side: ResNet-32 on CIFAR-sized batches.

For each loss (cross-entropy, LDAM-DRW, FFDS) and compute dtype (float32, bfloat16) it times the ltjax train step
(forward, loss, backward, gradient pmean, SGD update; jitted `shard_map` over the local devices) and the PyTorch
reference step of `torch_resnet.py` (the LDAM-DRW code's ResNet-32 and SGD; eager; bf16 via CPU autocast), on the
same random uint8 batch already in memory (the input pipeline is measured by `data_pipeline.py`). Each contestant
is a child process pinned to the same CPUs with the same thread count; timing windows alternate between them
(`interleave.py`). Images/s is the median over windows; the ratio is ltjax / PyTorch.

The losses run in their active phase: LDAM-DRW with the class-balanced DRW weights (epoch 170), FFDS after its
trigger epoch with DynaSmooth group means present and accumulating (epoch 150). Class counts are CIFAR-10-LT's at
imbalance 100 (FFDS groups: classes [0, 3), [3, 6), [6, 10), its CIFAR-10 configuration).

Also printed: both networks' parameter counts and convolution + matrix-product FLOPs (forward, and forward +
backward of cross-entropy), ltjax's time to the end of the first train step and of the first eval step (compile
included), and how many XLA compilations a train step at every phase's epoch and an eval step trigger afterwards.

    python benchmarks/train_throughput.py [--losses ce ldam_drw ffds] [--dtypes float32 bfloat16]
        [--batch 128] [--threads 2] [--windows 7] [--steps 5] [--no-torch] [--xla-flags FLAGS] [--device gpu]

`--device gpu` runs both steps on the GPU instead (JAX's CUDA backend; PyTorch on `cuda`, bf16 through CUDA
autocast), each with its batch already on the device; the processes are still pinned to `--threads` CPUs.

`--xla-flags` adds an ltjax contestant compiled with those XLA flags (a prototype for a change to the step's
compilation; see `benchmarks/README.md`). Without PyTorch installed (`pip install -e .[bench]`), or with
`--no-torch`, only ltjax runs.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys

# The sibling modules, and the ltjax of this checkout (not another installed copy).
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent), str(pathlib.Path(__file__).resolve().parents[1])]

import interleave  # noqa: E402  (a sibling module of this script)

NUM_CLASSES = 10
# CIFAR-10-LT, imbalance 100: n_c = int(5000 * 100 ** (-c / 9)), the LDAM-DRW split.
CLASS_COUNTS = [int(5000 * 100 ** (-c / 9)) for c in range(NUM_CLASSES)]
FFDS_GROUP_ENDS = (3, 6, 10)
# An epoch in each loss's last phase, so its full criterion runs.
PHASE_EPOCH = {"ce": 0, "ldam_drw": 170, "ffds": 150}
# Epochs on both sides of every phase switch of the recipes (DRW at 160, D-FFDS at 130, learning-rate decay at
# 160 and 180): one compiled train step must serve them all.
SWITCH_EPOCHS = (0, 129, 130, 159, 160, 180, 199)


def build_ltjax_trainer(loss_name: str, dtype: str, batch_size: int):
    """ltjax's steps from `ltjax.train.build`, the same program `ltjax-train` runs: the 200-epoch CIFAR recipe
    (the default optimizer: SGD with momentum, warm-up 5, decay at 160/180) on CIFAR-10-LT's counts."""
    import ml_collections
    import numpy as np

    from ltjax.data.augment import CIFAR_NORMALIZATION
    from ltjax.train.build import DataSpec, build

    loss = {"name": loss_name, **({"group_ends": FFDS_GROUP_ENDS} if loss_name == "ffds" else {})}
    config = ml_collections.ConfigDict({
        "dataset": {"name": "cifar10", "imbalance_factor": 100.0}, "model": {"name": "resnet32", "dtype": dtype},
        "loss": loss, "num_epochs": 200, "batch_size": batch_size, "eval_batch_size": batch_size,
    })
    counts = np.asarray(CLASS_COUNTS)
    # No device augmentation: the reference step gets its batch already augmented, by its data loader.
    return build(config, DataSpec(counts, (32, 32, 3), CIFAR_NORMALIZATION, int(counts.sum()) // batch_size))


def ltjax_network_size(batch_size: int) -> dict:
    """Parameters, and convolution + matrix-product FLOPs of ResNet-32 with the linear head, counted from the
    forward and forward + cross-entropy-backward programs (2 per multiply-add, as PyTorch's counter)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ltjax import losses
    from ltjax.models import create_model

    model = create_model("resnet32", NUM_CLASSES)
    images = jnp.zeros((batch_size, 32, 32, 3))
    labels = jnp.zeros((batch_size,), jnp.int32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images[:1], train=False))

    def forward(params, batch_stats):
        variables = {"params": params, "batch_stats": batch_stats}
        return model.apply(variables, images, train=True, mutable=["batch_stats"])[0].logits

    def loss(params, batch_stats):
        return jnp.mean(losses.softmax_cross_entropy(forward(params, batch_stats), labels))

    arguments = (variables["params"], variables["batch_stats"])
    return {
        "parameters": int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(variables["params"]))),
        "forward_flops": matmul_flops(jax.make_jaxpr(forward)(*arguments).jaxpr),
        "step_flops": matmul_flops(jax.make_jaxpr(jax.grad(loss))(*arguments).jaxpr),
    }


def matmul_flops(jaxpr) -> int:
    """2 x multiply-adds of every convolution and dot product in `jaxpr`, nested programs included.

    A convolution with input dilation (the input gradient of a strided convolution) counts only the products with
    real inputs, 1 / prod(dilation) of its window positions, as PyTorch's counter does. Of the branches of a `cond`
    (e.g. `lax.platform_dependent`), only the costliest counts: one of them runs.
    """
    import numpy as np
    from jax.extend import core

    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            kernel_outputs = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            dilation = int(np.prod(eqn.params["lhs_dilation"]))
            total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod(kernel)) // kernel_outputs // dilation
        elif name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs[d] for d in contracting]))
        if name == "cond":
            total += max(matmul_flops(branch.jaxpr) for branch in eqn.params["branches"])
            continue
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, core.ClosedJaxpr):
                    total += matmul_flops(sub.jaxpr)
                elif isinstance(sub, core.Jaxpr):
                    total += matmul_flops(sub)
    return total


def ltjax_worker(loss_name: str, dtype: str, batch_size: int):
    import time

    import jax
    import numpy as np

    compilations = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compilations.append(seconds)
        if event == "/jax/core/compile/backend_compile_duration" else None
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
    mask = np.ones(batch_size, bool)
    trainer = build_ltjax_trainer(loss_name, dtype, batch_size)
    # The batch waits on the device, as the reference's does (the input pipeline is measured on its own).
    images, labels, mask = jax.device_put((images, labels, mask), trainer.batch_sharding)
    state = trainer.init_state()
    schedule = trainer.epoch_inputs(PHASE_EPOCH[loss_name])

    started = time.perf_counter()
    state = jax.block_until_ready(trainer.train_step(state, images, labels, schedule))
    first_train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    jax.block_until_ready(trainer.eval_step(state, images, labels, mask))
    first_eval_seconds = time.perf_counter() - started
    # As after an epoch of the active phase: DynaSmooth's group means present.
    state = trainer.end_epoch(state)
    compiled = len(compilations)
    for switch_epoch in SWITCH_EPOCHS:
        state = trainer.train_step(state, images, labels, trainer.epoch_inputs(switch_epoch))
    jax.block_until_ready(trainer.eval_step(state, images, labels, mask))
    jax.block_until_ready(state)
    recompilations = len(compilations) - compiled

    holder = {"state": state}

    def step():
        holder["state"] = trainer.train_step(holder["state"], images, labels, schedule)
        return holder["state"]

    info = {
        "framework": f"jax {jax.__version__}",
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "first_train_step_seconds": first_train_seconds,
        "first_eval_step_seconds": first_eval_seconds,
        "recompilations_across_phases": recompilations,
        **ltjax_network_size(batch_size),
    }
    return info, step, jax.block_until_ready


def torch_worker(loss_name: str, dtype: str, batch_size: int, threads: int, device: str):
    import numpy as np
    import torch
    import torch_resnet

    torch.set_num_threads(threads)
    torch_device = "cuda" if device == "gpu" else "cpu"
    counts = np.asarray(CLASS_COUNTS)
    group_of_class = np.searchsorted(np.asarray(FFDS_GROUP_ENDS), np.arange(NUM_CLASSES), side="right")
    model, step = torch_resnet.make_step(loss_name, counts, group_of_class, bf16=dtype == "bfloat16",
                                         device=torch_device)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (batch_size, 3, 32, 32), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, NUM_CLASSES, batch_size))
    forward_flops, step_flops = torch_resnet.matmul_flops(
        torch_resnet.ResNet32(NUM_CLASSES, normed_head=False), images, labels)
    images, labels = images.to(torch_device), labels.to(torch_device)
    wait = (lambda handle: torch.cuda.synchronize()) if torch_device == "cuda" else (lambda handle: None)
    for _ in range(3):
        step(images, labels)
    wait(None)
    info = {
        "framework": f"torch {torch.__version__}",
        "device": torch.cuda.get_device_name() if torch_device == "cuda" else "cpu",
        "parameters": torch_resnet.count_parameters(torch_resnet.ResNet32(NUM_CLASSES, normed_head=False)),
        "forward_flops": forward_flops,
        "step_flops": step_flops,
    }
    return info, lambda: step(images, labels), wait


def worker_main(spec: dict) -> None:
    interleave.pin_to_cpus(spec["threads"])
    if spec["framework"] == "torch":
        interleave.serve(lambda: torch_worker(spec["loss"], spec["dtype"], spec["batch"], spec["threads"],
                                              spec["device"]))
    else:
        # The step runs on the kind of device the reference it is compared with runs on.
        os.environ.setdefault("JAX_PLATFORMS", "cuda" if spec["device"] == "gpu" else "cpu")
        interleave.serve(lambda: ltjax_worker(spec["loss"], spec["dtype"], spec["batch"]))


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=["ce", "ldam_drw", "ffds"], choices=sorted(PHASE_EPOCH))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per timing window")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--xla-flags", default="", help="XLA_FLAGS of an extra ltjax contestant")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="where both steps run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return

    frameworks = {"ltjax": ("ltjax", {})}
    if args.xla_flags:
        frameworks["ltjax, XLA_FLAGS"] = ("ltjax", {"XLA_FLAGS": args.xla_flags})
    if not args.no_torch and torch_available():
        frameworks["PyTorch"] = ("torch", {})
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.threads} threads per "
          f"contestant; steps on the {args.device}; batch {args.batch}; median of {args.windows} windows of "
          f"{args.steps} steps; load average at start {interleave.load_average():.2f}")
    if args.xla_flags:
        print(f"'ltjax, XLA_FLAGS' runs with XLA_FLAGS={args.xla_flags}")
    names = list(frameworks)
    ratio_names = [n for n in names if n != "PyTorch"] if "PyTorch" in names else []
    header = ["loss", "dtype"] + [f"{n} img/s (min-max)" for n in names] + [f"{n} / PyTorch" for n in ratio_names]
    print("| " + " | ".join(header + ["load average after"]) + " |")
    print("|" + "---|" * (len(header) + 1))
    compile_rows, notes, busy_cores = [], {}, {}
    for dtype in args.dtypes:
        for loss_name in args.losses:
            contestants = [
                interleave.Contestant(
                    name,
                    [__file__, "--worker", json.dumps({"framework": framework, "loss": loss_name, "dtype": dtype,
                                                       "batch": args.batch, "threads": args.threads,
                                                       "device": args.device})],
                    env,
                )
                for name, (framework, env) in frameworks.items()
            ]
            interleave.run(contestants, windows=args.windows, steps=args.steps)
            rates = {c.name: args.batch / c.median_step_seconds() for c in contestants}
            cells = [loss_name, dtype] + [
                f"{rates[c.name]:,.0f} "
                f"({args.batch / max(c.wall_seconds):,.0f}-{args.batch / min(c.wall_seconds):,.0f})"
                for c in contestants
            ]
            cells += [f"{rates[n] / rates['PyTorch']:.2f}" for n in ratio_names]
            print("| " + " | ".join(cells + [f"{interleave.load_average():.2f}"]) + " |", flush=True)
            for c in contestants:
                busy_cores.setdefault(c.name, []).append(sum(c.cpu_seconds) / sum(c.wall_seconds))
                notes[c.name] = c.info
            compile_rows.append((loss_name, dtype, contestants[0].info))

    print()
    print("| loss | dtype | first train step (s, compile included) | first eval step (s) | compilations after |")
    print("|---|---|---:|---:|---:|")
    for loss_name, dtype, info in compile_rows:
        print(f"| {loss_name} | {dtype} | {info['first_train_step_seconds']:.1f} | "
              f"{info['first_eval_step_seconds']:.1f} | {info['recompilations_across_phases']} |")
    print()
    for name, info in notes.items():
        print(f"{name}: {info['framework']} on {info['device']}; ResNet-32 (linear head, C={NUM_CLASSES}) "
              f"{info['parameters']:,} parameters, conv+matmul GFLOP per batch: forward "
              f"{info['forward_flops'] / 1e9:.2f}, forward + backward {info['step_flops'] / 1e9:.2f}; busy cores "
              f"while stepping (CPU / wall time) {min(busy_cores[name]):.2f}-{max(busy_cores[name]):.2f}")
    print(f"load average at end {interleave.load_average():.2f}")


if __name__ == "__main__":
    main()
