"""Where the train step's time goes: forward, forward + backward, the SGD update, and the whole step, ltjax against
PyTorch, and optionally XLA's per-operation profile of the ltjax step.

Parts, for ResNet-32 (linear head, 10 classes) at batch 128 with cross-entropy, each timed on its own:
- `forward`: normalisation of the uint8 batch, the network in training mode (batch statistics), the loss;
- `forward+backward`: the same and the gradients of every parameter;
- `update`: the SGD step alone (L2 weight decay, momentum 0.9) on given gradients: for ltjax the optax chain of
  `ltjax.train.optim` as the step runs it, the same chain under `optax.flatten` (one concatenated vector instead of
  a tree of 94 small arrays), and the chain with the old parameters and momenta donated to the new ones;
- `step`: the whole train step (`train_throughput.py`'s contestants).
The remainder `step - (forward+backward) - update` is what the step adds around them (metrics, collectives,
placement, dispatch).

    python benchmarks/step_breakdown.py [--threads 2] [--windows 7] [--steps 5] [--dtype float32]
        [--xla-flags FLAGS] [--xla-profile]

`--xla-profile` traces ltjax's step with `jax.profiler` and prints its time by XLA operation kind and by part of
the program (forward / backward / update, from the HLO metadata), then exits.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import sys
import tempfile

# The sibling modules, and the ltjax of this checkout (not another installed copy).
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent), str(pathlib.Path(__file__).resolve().parents[1])]

import interleave  # noqa: E402
import train_throughput  # noqa: E402

LTJAX_PARTS = ("forward", "forward+backward", "update", "update (optax.flatten)", "update (donated)", "step")
TORCH_PARTS = ("forward", "forward+backward", "update", "step")


def ltjax_part(part: str, dtype: str, batch_size: int):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from ltjax import losses
    from ltjax.data.augment import CIFAR_NORMALIZATION, normalize
    from ltjax.models import create_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, train_throughput.NUM_CLASSES, batch_size).astype(np.int32)
    if part == "step":
        trainer = train_throughput.build_ltjax_trainer("ce", dtype, batch_size)
        holder = {"state": trainer.init_state()}

        def step():
            holder["state"] = trainer.train_step(holder["state"], images, labels, trainer.epoch_inputs(0))
            return holder["state"]

        return step

    model = create_model("resnet32", train_throughput.NUM_CLASSES, dtype=jnp.dtype(dtype))
    variables = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))()
    params, batch_stats = variables["params"], variables["batch_stats"]

    def loss(params):
        outputs, updates = model.apply({"params": params, "batch_stats": batch_stats},
                                       normalize(images, CIFAR_NORMALIZATION), train=True, mutable=["batch_stats"])
        return jnp.mean(losses.softmax_cross_entropy(outputs.logits, labels)), updates

    if part == "forward":
        forward = jax.jit(loss)
        return lambda: forward(params)
    if part == "forward+backward":
        gradients = jax.jit(jax.grad(loss, has_aux=True))
        return lambda: gradients(params)

    optimizer = train_throughput.build_ltjax_trainer("ce", dtype, batch_size).optimizer  # the train step's SGD
    if part == "update (optax.flatten)":
        optimizer = optax.flatten(optimizer)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

    def update(params, opt_state):
        updates, opt_state = optimizer.update(grads, opt_state, params, learning_rate=0.1)
        return optax.apply_updates(params, updates), opt_state

    update = jax.jit(update, donate_argnums=(0, 1) if part == "update (donated)" else ())
    holder = {"params": params, "opt_state": optimizer.init(params)}

    def step():
        holder["params"], holder["opt_state"] = update(holder["params"], holder["opt_state"])
        return holder["params"]

    return step


def torch_part(part: str, dtype: str, batch_size: int, threads: int):
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torch_resnet

    torch.set_num_threads(threads)
    counts = np.asarray(train_throughput.CLASS_COUNTS)
    model, full_step = torch_resnet.make_step("ce", counts, np.zeros(len(counts), int), bf16=dtype == "bfloat16")
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (batch_size, 3, 32, 32), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, train_throughput.NUM_CLASSES, batch_size))
    if part == "step":
        return lambda: full_step(images, labels)
    mean = torch.tensor(torch_resnet.CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(torch_resnet.CIFAR_STD).view(1, 3, 1, 1)

    def loss():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            return F.cross_entropy(model((images.float() / 255.0 - mean) / std), labels)

    def backward():
        model.zero_grad(set_to_none=True)
        loss().backward()

    if part == "forward":
        return loss
    if part == "forward+backward":
        return backward
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    backward()
    return optimizer.step


def worker_main(spec: dict) -> None:
    interleave.pin_to_cpus(spec["threads"])
    if spec["framework"] == "torch":
        def build():
            step = torch_part(spec["part"], spec["dtype"], spec["batch"], spec["threads"])
            for _ in range(3):
                step()
            return {}, step, lambda handle: None
    else:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")

        def build():
            import jax

            step = ltjax_part(spec["part"], spec["dtype"], spec["batch"])
            for _ in range(3):
                jax.block_until_ready(step())
            return {}, step, jax.block_until_ready
    interleave.serve(build)


def xla_profile(dtype: str, batch_size: int, steps: int = 8) -> None:
    """Traces `steps` ltjax train steps and prints XLA's time per operation kind and per part of the program."""
    import glob

    dump = tempfile.mkdtemp(prefix="ltjax-hlo-")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, train_throughput.NUM_CLASSES, batch_size).astype(np.int32)
    trainer = train_throughput.build_ltjax_trainer("ce", dtype, batch_size)
    state = trainer.init_state()
    for _ in range(3):
        state = trainer.train_step(state, images, labels, trainer.epoch_inputs(0))
    jax.block_until_ready(state)
    trace = tempfile.mkdtemp(prefix="ltjax-trace-")
    with jax.profiler.trace(trace):
        for _ in range(steps):
            state = trainer.train_step(state, images, labels, trainer.epoch_inputs(0))
        jax.block_until_ready(state)
    (hlo_file,) = glob.glob(f"{dump}/*jit_train_step*cpu_after_optimizations.txt")
    parts = hlo_parts(pathlib.Path(hlo_file).read_text())
    by_kind, by_part = collections.Counter(), collections.Counter()
    profile = jax.profiler.ProfileData.from_file(glob.glob(f"{trace}/**/*.xplane.pb", recursive=True)[0])
    for plane in profile.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:  # the threads that run XLA's compiled operations
                continue
            for event in line.events:
                if event.name not in parts:
                    continue
                by_kind[(parts[event.name], re.sub(r"\.\d+$", "", event.name))] += event.duration_ns
                by_part[parts[event.name]] += event.duration_ns
    total = sum(by_part.values())
    print(f"XLA operations of the ltjax step, {dtype}, batch {batch_size}: {total / steps / 1e6:.1f} ms per step "
          f"(sum of the operations' durations; asynchronous Eigen convolutions end early and their wait is billed "
          f"to the next operation)")
    print("| part | ms per step | share |\n|---|---:|---:|")
    for part, ns in by_part.most_common():
        print(f"| {part} | {ns / steps / 1e6:.1f} | {ns / total:.0%} |")
    print("\n| part | operation kind | ms per step |\n|---|---|---:|")
    for (part, kind), ns in by_kind.most_common(20):
        print(f"| {part} | {kind} | {ns / steps / 1e6:.1f} |")


def hlo_parts(hlo_text: str) -> dict[str, str]:
    """Each top-level operation of an optimised HLO module -> the part of the step it belongs to, from the JAX op
    names in its metadata or, for fusions, in the metadata of the instructions it fuses (autodiff names the forward
    `jvp(...)` and the backward `transpose(...)`)."""
    computation_ops, current = collections.defaultdict(list), None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
        if header:
            current = header.group(1)
        elif current:
            computation_ops[current] += re.findall(r'op_name="([^"]+)"', line)
    parts = {}
    for line in hlo_text.splitlines():
        instruction = re.match(r"^\s+(?:ROOT )?%(\S+) = ", line)
        if not instruction:
            continue
        names = re.findall(r'op_name="([^"]+)"', line)
        called = re.search(r"calls=%([\w.\-]+)", line)
        if called:
            names += computation_ops[called.group(1)]
        if any("transpose(" in name for name in names):
            parts[instruction.group(1)] = "backward"
        elif any("jvp(" in name for name in names):
            parts[instruction.group(1)] = "forward"
        elif names:
            parts[instruction.group(1)] = "update, metrics"
        else:
            parts[instruction.group(1)] = "no JAX name (XLA's layout copies, weight-gradient convolutions)"
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="calls per timing window")
    parser.add_argument("--xla-flags", default="", help="XLA_FLAGS of the ltjax contestants")
    parser.add_argument("--xla-profile", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    if args.xla_profile:
        if args.xla_flags:
            os.environ["XLA_FLAGS"] = args.xla_flags
        interleave.pin_to_cpus(args.threads)
        xla_profile(args.dtype, args.batch)
        return

    ltjax_env = {"XLA_FLAGS": args.xla_flags} if args.xla_flags else {}
    print(f"{args.dtype}, batch {args.batch}, {args.threads} threads per contestant, median of {args.windows} "
          f"windows of {args.steps} calls; ltjax XLA_FLAGS={args.xla_flags or '(none)'}; load average at start "
          f"{interleave.load_average():.2f}")
    print("| part | ltjax ms | PyTorch ms | ltjax / PyTorch time |\n|---|---:|---:|---:|")
    for part in LTJAX_PARTS:
        contestants = [interleave.Contestant("ltjax", [__file__, "--worker", json.dumps(
            {"framework": "ltjax", "part": part, "dtype": args.dtype, "batch": args.batch, "threads": args.threads})],
            ltjax_env)]
        torch_part_name = part.split(" (")[0]
        if part in TORCH_PARTS:
            contestants.append(interleave.Contestant("PyTorch", [__file__, "--worker", json.dumps(
                {"framework": "torch", "part": torch_part_name, "dtype": args.dtype, "batch": args.batch,
                 "threads": args.threads})]))
        interleave.run(contestants, windows=args.windows, steps=args.steps)
        milliseconds = [1e3 * c.median_step_seconds() for c in contestants]
        if len(milliseconds) == 2:
            print(f"| {part} | {milliseconds[0]:.1f} | {milliseconds[1]:.1f} | "
                  f"{milliseconds[0] / milliseconds[1]:.2f} |", flush=True)
        else:
            print(f"| {part} | {milliseconds[0]:.1f} | | |", flush=True)
    print(f"load average at end {interleave.load_average():.2f}")


if __name__ == "__main__":
    main()
