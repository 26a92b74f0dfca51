"""One 3x3 convolution of ResNet-32, XLA against PyTorch: is the convolution itself the floor of the train step?

For each stride-1 layer shape of ResNet-32 at batch 128 (32x32 with 16 channels, 16x16 with 32, 8x8 with 64), times
the three convolutions of a layer's train step separately, float32, padding 1, no bias: the forward convolution,
the input gradient and the kernel gradient for a given output gradient (also as the sum of 16-example chunks, what
`ltjax.models.convolution` computes on CPU). Last, the time these convolutions alone take in one ResNet-32 step:
when XLA's exceeds PyTorch's whole step, XLA:CPU's convolution is the floor of the train step. XLA:
`jax.lax.conv_general_dilated` in NHWC (what `flax.linen.Conv` emits) and its `jax.vjp`, under `jax.jit`; PyTorch:
`torch.nn.functional.conv2d` in NCHW (the reference's layout) and `torch.ops.aten.convolution_backward`, the kernel
autograd calls. Every contestant runs in its own process, on the same CPUs with the same thread count, in
interleaved windows (`benchmarks/interleave.py`).

    python benchmarks/conv_vs_torch.py [--threads 2] [--windows 9] [--steps 10]
        [--xla-flags --xla_cpu_experimental_ynn_fusion_type=-individual_convolution]

`--xla-flags` adds a second XLA contestant compiled with those flags (e.g. the convolution routing proposed for
the train step; see `benchmarks/README.md`).
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys

# The sibling modules, and the ltjax of this checkout (not another installed copy).
sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent), str(pathlib.Path(__file__).resolve().parents[1])]

import interleave  # noqa: E402  (a sibling module of this script)

BATCH = 128
LAYERS = ((32, 16), (16, 32), (8, 64))  # (height = width, channels) of ResNet-32's three stages
MODES = ("forward", "input gradient", "kernel gradient", "kernel gradient, batch chunks")
# Stride-1 3x3 convolutions of these shapes in one ResNet-32 (5 blocks of 2 per stage; the first convolution of
# stages 2 and 3 has stride 2 and is not counted).
LAYER_COUNTS = {(32, 16): 10, (16, 32): 9, (8, 64): 9}


def xla_calls() -> dict:
    """`{(size, channels, mode): call}` for every layer and pass, each a jitted XLA program on fixed inputs."""
    import jax
    import numpy as np

    from ltjax.models import convolution

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))

    programs = {
        "forward": lambda x, w, g: conv(x, w),
        "input gradient": lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g),
        "kernel gradient": lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g),
        # What `ltjax.models.convolution` computes on CPU.
        "kernel gradient, batch chunks": lambda x, w, g: convolution.chunked_kernel_gradient(
            x, w, g, (1, 1), ((1, 1), (1, 1))),
    }
    rng = np.random.default_rng(0)
    calls = {}
    for size, channels in LAYERS:
        x, g = (jax.numpy.asarray(rng.standard_normal((BATCH, size, size, channels), np.float32)) for _ in range(2))
        w = jax.numpy.asarray(rng.standard_normal((3, 3, channels, channels), np.float32))
        for mode, program in programs.items():
            calls[size, channels, mode] = functools.partial(jax.jit(program), x, w, g)
    return calls


def torch_calls() -> dict:
    """`{(size, channels, mode): call}` for every layer and pass: `conv2d` and the backward kernel autograd runs."""
    import torch

    generator = torch.Generator().manual_seed(0)
    # convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
    # output_padding, groups, output_mask over the (input, weight, bias) gradients)
    # PyTorch has one kernel-gradient formulation: both kernel-gradient passes time it.
    backward_mask = {"input gradient": [True, False, False], "kernel gradient": [False, True, False],
                     "kernel gradient, batch chunks": [False, True, False]}

    def layer_call(x, w, g, mode):
        def call():
            with torch.no_grad():
                if mode == "forward":
                    return torch.nn.functional.conv2d(x, w, padding=1)
                return torch.ops.aten.convolution_backward(
                    g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, backward_mask[mode])
        return call

    calls = {}
    for size, channels in LAYERS:
        x, g = (torch.randn(BATCH, channels, size, size, generator=generator) for _ in range(2))
        w = torch.randn(channels, channels, 3, 3, generator=generator)
        for mode in MODES:
            calls[size, channels, mode] = layer_call(x, w, g, mode)
    return calls


def build_worker(spec: dict):
    """The timed call of one (framework, layer, pass), after every layer and pass ran once: inside a train step the
    memory allocator has already served the largest activations, and a process that only ever ran one small layer
    would time its page faults instead (glibc adapts its mmap threshold to the largest blocks freed)."""
    if spec["framework"] == "torch":
        import torch

        torch.set_num_threads(spec["threads"])
        calls, wait, framework = torch_calls(), lambda handle: None, f"torch {torch.__version__}"
    else:
        import jax

        calls, wait, framework = xla_calls(), jax.block_until_ready, f"jax {jax.__version__}"
    for call in calls.values():
        wait(call())
    call = calls[spec["size"], spec["channels"], spec["mode"]]
    for _ in range(3):
        wait(call())
    return {"framework": framework}, call, wait


def worker_main(spec: dict) -> None:
    interleave.pin_to_cpus(spec["threads"])
    interleave.serve(lambda: build_worker(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10, help="calls per timing window")
    parser.add_argument("--xla-flags", default="", help="XLA_FLAGS of an extra XLA contestant")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return

    frameworks = {"XLA": ("jax", {}), "PyTorch": ("torch", {})}
    if args.xla_flags:
        frameworks[f"XLA {args.xla_flags}"] = ("jax", {"XLA_FLAGS": args.xla_flags})
    print(f"batch {BATCH}, float32, {args.threads} threads per contestant, median of {args.windows} windows of "
          f"{args.steps} calls; load average at start {interleave.load_average():.2f}")
    header = "| layer | pass | " + " | ".join(f"{name} ms" for name in frameworks) + " | XLA / PyTorch time |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    step_milliseconds = dict.fromkeys(frameworks, 0.0)
    for size, channels in LAYERS:
        layer = {}
        for mode in MODES:
            contestants = [
                interleave.Contestant(
                    name,
                    [__file__, "--worker", json.dumps({"framework": framework, "size": size, "channels": channels,
                                                       "mode": mode, "threads": args.threads})],
                    env,
                )
                for name, (framework, env) in frameworks.items()
            ]
            interleave.run(contestants, windows=args.windows, steps=args.steps)
            milliseconds = {c.name: 1e3 * c.median_step_seconds() for c in contestants}
            layer[mode] = milliseconds
            cells = " | ".join(f"{milliseconds[name]:.2f}" for name in frameworks)
            print(f"| {size}x{size}x{channels} | {mode} | {cells} | "
                  f"{milliseconds['XLA'] / milliseconds['PyTorch']:.2f} |", flush=True)
        for name in frameworks:
            passes = layer["forward"][name] + layer["input gradient"][name] + min(
                layer["kernel gradient"][name], layer["kernel gradient, batch chunks"][name])
            step_milliseconds[name] += LAYER_COUNTS[size, channels] * passes
    print()
    print("The stride-1 convolutions of one ResNet-32 train step (forward, input and fastest kernel gradient), alone:")
    for name, milliseconds in step_milliseconds.items():
        print(f"  {name}: {milliseconds:.0f} ms, at most {BATCH / milliseconds * 1e3:,.0f} img/s")
    print(f"load average at end {interleave.load_average():.2f}")


if __name__ == "__main__":
    main()
