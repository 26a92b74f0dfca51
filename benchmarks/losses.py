"""Times value-and-gradient of every loss against softmax cross-entropy on the default device.

For each number of classes C in {10, 100, 1000} and a batch of 512, every case of `ltjax.testing.ALL` is jitted as
`value_and_grad(sum(loss))` with respect to the logits and warmed up. One sample is the mean time of `--calls`
back-to-back calls (dispatch is asynchronous, so this measures the computation rather than Python overhead); the
cases are interleaved within each of `--repeats` rounds so that drift in the machine's load hits them all alike.
The table gives each case's median and its ratio to `softmax_cross_entropy` at the same C. The per-class vectors
(weights, margins, ...) are computed inside the timed function, as a train step that derives them from the counts
would.

    python benchmarks/losses.py [--repeats 15] [--calls 20] [--batch 512]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from ltjax.testing import ALL, make_problem


def compiled_step(case, problem):
    step = jax.jit(jax.value_and_grad(lambda z, y: jnp.sum(case(z, y, problem))))
    for _ in range(2):  # compile, then warm up
        jax.block_until_ready(step(problem.logits, problem.labels))
    return step


def seconds_per_call(step, problem, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        out = step(problem.logits, problem.labels)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def median_times(problem, repeats: int, calls: int) -> dict[str, float]:
    steps = {name: compiled_step(case, problem) for name, case in ALL.items()}
    samples = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            samples[name].append(seconds_per_call(step, problem, calls))
    return {name: statistics.median(times) for name, times in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"batch {args.batch}, median of {args.repeats} rounds of {args.calls} calls")
    results = {
        c: median_times(make_problem(seed=0, batch=args.batch, num_classes=c), args.repeats, args.calls)
        for c in args.classes
    }

    header = f"| {'loss':32} |" + "".join(f" C={c} ms | ratio |" for c in args.classes)
    print(header)
    print("|" + "-" * 34 + "|" + "---------:|------:|" * len(args.classes))
    for name in ALL:
        cells = ""
        for c in args.classes:
            seconds = results[c][name]
            cells += f" {1e3 * seconds:8.3f} | {seconds / results[c]['softmax_cross_entropy']:5.2f} |"
        print(f"| {name:32} |{cells}")
    worst = max(results[args.classes[-1]].items(), key=lambda item: item[1])
    ratio = worst[1] / results[args.classes[-1]]["softmax_cross_entropy"]
    print(f"slowest at C={args.classes[-1]}: {worst[0]} at {ratio:.2f}x cross-entropy")


if __name__ == "__main__":
    main()
