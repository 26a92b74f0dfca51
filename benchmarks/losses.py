"""Times value-and-gradient of every loss against softmax cross-entropy on the default device.

For each number of classes C in {10, 100, 1000} and a batch of 512, every case of `ltjax.testing.ALL` is jitted as
`value_and_grad(sum(loss))` with respect to the logits and warmed up. One sample is the mean time of `--calls`
back-to-back calls (dispatch is asynchronous, so this measures the computation rather than Python overhead); the
cases are interleaved within each of `--repeats` rounds so that drift in the machine's load hits them all alike.
The table gives each case's median time and its ratio to `softmax_cross_entropy` at the same C: the median over
rounds of the two's times in that round, so that the machine's drift between rounds cancels. The per-class vectors
(weights, margins, ...) are computed inside the timed function from NumPy counts, as ltjax's train step derives them
from its constant counts (counts that are traced, e.g. a `jax.Array` closed over by a jitted function, add a run-time
check on the device: about 35 us per call on the 2-core development CPU).

With PyTorch installed (`pip install -e .[bench]`), a last row times `torch.nn.functional.cross_entropy` forward and
backward at the same shape, on the same CPU threads (on `cuda` when JAX's default backend is a GPU), in the same
rounds; its ratio is to ltjax's cross-entropy.

    python benchmarks/losses.py [--repeats 15] [--calls 20] [--batch 512] [--no-torch]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.testing import ALL, make_problem

TORCH_ROW = "PyTorch cross_entropy"


def numpy_counts(problem):
    return dataclasses.replace(problem, counts=np.asarray(problem.counts))


def compiled_step(case, problem):
    """`() -> result` of one value-and-grad call, and `wait(result)`."""
    step = jax.jit(jax.value_and_grad(lambda z, y: jnp.sum(case(z, y, problem))))
    for _ in range(2):  # compile, then warm up
        jax.block_until_ready(step(problem.logits, problem.labels))
    return (lambda: step(problem.logits, problem.labels)), jax.block_until_ready


def torch_step(problem):
    import torch

    device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    logits = torch.from_numpy(np.array(problem.logits, np.float32)).to(device).requires_grad_()
    labels = torch.from_numpy(np.array(problem.labels, np.int64)).to(device)

    def call():
        logits.grad = None
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        loss.backward()
        return loss

    return call, (lambda result: torch.cuda.synchronize()) if device == "cuda" else (lambda result: None)


def seconds_per_call(step, calls: int) -> float:
    call, wait = step
    start = time.perf_counter()
    for _ in range(calls):
        out = call()
    wait(out)
    return (time.perf_counter() - start) / calls


def median_times_and_ratios(problem, repeats: int, calls: int, with_torch: bool):
    """Each case's median time, and the median over rounds of its time divided by cross-entropy's in that round."""
    steps = {name: compiled_step(case, problem) for name, case in ALL.items()}
    if with_torch:
        steps[TORCH_ROW] = torch_step(problem)
    samples = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            samples[name].append(seconds_per_call(step, calls))
    baseline = samples["softmax_cross_entropy"]
    return {name: (statistics.median(times), statistics.median(t / b for t, b in zip(times, baseline)))
            for name, times in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    with_torch = not args.no_torch and importlib.util.find_spec("torch") is not None

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"batch {args.batch}, median of {args.repeats} rounds of {args.calls} calls")
    results = {
        c: median_times_and_ratios(numpy_counts(make_problem(seed=0, batch=args.batch, num_classes=c)), args.repeats,
                                   args.calls, with_torch)
        for c in args.classes
    }

    header = f"| {'loss':32} |" + "".join(f" C={c} ms | ratio |" for c in args.classes)
    print(header)
    print("|" + "-" * 34 + "|" + "---------:|------:|" * len(args.classes))
    for name in results[args.classes[0]]:
        cells = "".join(f" {1e3 * results[c][name][0]:8.3f} | {results[c][name][1]:5.2f} |" for c in args.classes)
        print(f"| {name:32} |{cells}")
    worst, (_, ratio) = max(((name, result) for name, result in results[args.classes[-1]].items()
                             if name != TORCH_ROW), key=lambda item: item[1][1])
    print(f"slowest at C={args.classes[-1]}: {worst} at {ratio:.2f}x cross-entropy")


if __name__ == "__main__":
    main()
