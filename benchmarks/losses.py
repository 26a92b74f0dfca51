"""Times value-and-gradient of every loss against softmax cross-entropy on the default device.

For each number of classes C in {10, 100, 1000} and a batch of 512, every case of `ltjax.testing.ALL` is jitted as
`value_and_grad(sum(loss))` with respect to the logits, warmed up, then timed `--repeats` times; the table gives the
median time and its ratio to `softmax_cross_entropy` at the same C. The per-class vectors (weights, margins, ...) are
computed inside the timed function, as a train step that derives them from the counts would.

    python benchmarks/losses.py [--repeats 50] [--batch 512]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from ltjax.testing import ALL, make_problem


def median_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_case(case, problem, repeats: int) -> float:
    step = jax.jit(jax.value_and_grad(lambda z, y: jnp.sum(case(z, y, problem))))
    return median_seconds(step, (problem.logits, problem.labels), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"batch {args.batch}, median of {args.repeats}")
    problems = {c: make_problem(seed=0, batch=args.batch, num_classes=c) for c in args.classes}
    results = {c: {name: time_case(case, problems[c], args.repeats) for name, case in ALL.items()}
               for c in args.classes}

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
