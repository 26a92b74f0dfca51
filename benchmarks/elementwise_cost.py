"""What one elementwise function costs on the default device, written out as a `[B, C]` array or summed over each row.

The class-balanced sigmoid and focal losses need, per logit, an `exp`, a `log1p`, a division and (focal) a power in
their value, and most of them again in their gradient, which is a `[B, C]` array; the forms they take follow from
these costs. This prints, for each function `f` of a `[512, 1000]` float32 array `x`, the time of `jit(f)(x)` (the
elementwise output) and of `jit(lambda x: sum(f(x), axis=-1))(x)` (a row sum), beside the value and gradient of
softmax cross-entropy at the same shape, and which kind of program XLA compiled: on XLA:CPU a row sum of elementwise
math becomes one YNNPACK fusion, an elementwise output one of XLA's own loop fusions. Medians of `--repeats` rounds
of `--calls` calls, interleaved.

    python benchmarks/elementwise_cost.py [--repeats 11] [--calls 50] [--batch 512] [--classes 1000]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import losses
from ltjax.losses import _math

FUNCTIONS = {
    "2 x (a copy)": lambda x: 2.0 * x,
    "exp(-|x|)": lambda x: jnp.exp(-jnp.abs(x)),
    "log(1 + |x|)": lambda x: jnp.log(1.0 + jnp.abs(x)),
    "log1p(|x|)": lambda x: jnp.log1p(jnp.abs(x)),
    "log1p(exp(-|x|))": lambda x: jnp.log1p(jnp.exp(-jnp.abs(x))),
    "the same, log1p as ltjax's polynomial": lambda x: _math.log1p_of_fraction(jnp.exp(-jnp.abs(x))),
    "max(x, 0)": lambda x: jnp.maximum(x, 0.0),
    "where(x > 1, x, -x) (a select)": lambda x: jnp.where(x > 1.0, x, -x),
    "1 / (1 + |x|)": lambda x: 1.0 / (1.0 + jnp.abs(x)),
    "sigmoid(x)": jax.nn.sigmoid,
}


def program_kind(fn, x) -> str:
    text = jax.jit(fn).lower(x).compile().as_text()
    return "YNNPACK fusion" if "__ynn_fusion" in text else "XLA loop fusion" if "kind=kLoop" in text else "other"


def median_ms(programs: dict, x, repeats: int, calls: int) -> dict[str, float]:
    samples = {name: [] for name in programs}
    for fn in programs.values():
        for _ in range(2):  # compile, then warm up
            jax.block_until_ready(fn(x))
    for _ in range(repeats):
        for name, fn in programs.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = fn(x)
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: 1e3 * statistics.median(times) for name, times in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = jnp.asarray(3.0 * rng.standard_normal((args.batch, args.classes)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, args.classes, args.batch), jnp.int32)
    programs = {"softmax cross-entropy, value and gradient": jax.jit(jax.value_and_grad(
        lambda z: jnp.sum(losses.softmax_cross_entropy(z, labels))))}
    kinds = {}
    for name, fn in FUNCTIONS.items():
        row_sum = lambda x, fn=fn: jnp.sum(fn(x), axis=-1)  # noqa: E731
        programs[f"{name} elementwise"], programs[f"{name} row sum"] = jax.jit(fn), jax.jit(row_sum)
        kinds[name] = (program_kind(fn, x), program_kind(row_sum, x))
    times = median_ms(programs, x, args.repeats, args.calls)

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"x [{args.batch}, {args.classes}] float32, median of {args.repeats} rounds of {args.calls} calls")
    reference = times["softmax cross-entropy, value and gradient"]
    print(f"softmax cross-entropy, value and gradient: {reference:.3f} ms")
    print("| f(x) | elementwise ms | its program | row sum ms | its program |")
    print("|---|---:|---|---:|---|")
    for name in FUNCTIONS:
        print(f"| {name} | {times[f'{name} elementwise']:.3f} | {kinds[name][0]} | {times[f'{name} row sum']:.3f} | "
              f"{kinds[name][1]} |")


if __name__ == "__main__":
    main()
