"""One run over the same devices split among processes: train-step images/s and the collectives of the compiled step.

    .venv/bin/python benchmarks/multihost.py [--layouts 1x8,2x4,4x2] [--steps 30] [--batch 64] [--model resnet8]

Each layout PxD runs P processes of D devices on this machine, joined by JAX's multi-controller runtime on a free
127.0.0.1 port exactly as `ltjax-train --coordinator_address --num_processes --process_id` joins them (the CPU
processes sum over gloo). Every process builds the default digits run's program (`ltjax.train.build`), feeds its
share of each global batch from the real pipeline (`TrainPipeline` -> `device_prefetch`), and then:
  - counts the collectives in the compiled train step's optimised HLO, by kind, with the bytes they carry;
  - times `--steps` train steps after `--warmup` (the step is asynchronous; the clock stops when the last step's
    state is ready), `--repeats` times; the table gives the median window's global images/s.
Process 0 prints one JSON line per layout; the table follows. `--platform gpu` gives each process D GPUs of its own
(CUDA_VISIBLE_DEVICES) instead of fake CPU devices.

`--train-runs` instead trains a whole run in each layout, `ltjax-train` as README's "Beyond one machine" starts it
(the default digits run, or the config of `--run-args`), and compares each layout's report and log with the first
layout's: top-1, calibration error, the confusion entries that differ, the largest relative difference of an
epoch's training loss.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1])]

# An HLO instruction: `%name = <shape> <op>(`, the shape a type like f32[16,10]{1,0} or a tuple of them.
_COLLECTIVE = re.compile(
    r"=\s*(?P<shape>\(.*?\)|\S+)\s+(?P<op>all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)"
    r"(?:-start)?\(")
_ARRAY = re.compile(r"(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]")
_BYTES = {"f32": 4, "s32": 4, "u32": 4, "f16": 2, "bf16": 2, "f64": 8, "s64": 8, "pred": 1, "u8": 1, "s8": 1}


def count_collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """`{op: {"count", "bytes"}}` over the optimised HLO's collective instructions."""
    found: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
    for match in _COLLECTIVE.finditer(hlo_text):
        entry = found[match["op"]]
        entry["count"] += 1
        for array in _ARRAY.finditer(match["shape"]):
            size = 1
            for dim in filter(None, array["dims"].split(",")):
                size *= int(dim)
            entry["bytes"] += size * _BYTES.get(array["dtype"], 4)
    return dict(found)


def worker(args: argparse.Namespace) -> None:
    """One process of a layout (the script re-run with --worker)."""
    from ltjax import multihost

    if args.num_processes > 1:
        multihost.initialize(args.coordinator_address, args.num_processes, args.process_id)
    import jax

    from ltjax import datasets
    from ltjax.configs import files, schema
    from ltjax.data.pipeline import TrainPipeline
    from ltjax.data.prefetch import device_prefetch
    from ltjax.train.build import DataSpec, build
    from ltjax.train.step import place

    config, _ = schema.apply_overrides(files.load_config_file(files.DEFAULT_CONFIG), [
        ("model.name", args.model), ("batch_size", str(args.batch)), ("progress_bar", "false")])
    data = datasets.get("digits").load(config.dataset)
    # Full batches only, so that every timed step carries `--batch` images.
    pipeline = TrainPipeline(data.train, global_batch_size=args.batch, seed=0, process_index=jax.process_index(),
                             process_count=jax.process_count(), drop_remainder=True)
    trainer = build(config, DataSpec(data.class_counts, data.image_shape, data.normalization,
                                     pipeline.steps_per_epoch(), data.crop_padding))
    batches = device_prefetch(pipeline.batches(), trainer.batch_sharding)
    schedule = place(trainer.epoch_inputs(0), trainer.replicated)
    state = trainer.init_state()
    first = next(batches)
    started = time.perf_counter()
    compiled = trainer.train_step.lower(state, first.images, first.labels, schedule, first.mask).compile()
    compile_seconds = time.perf_counter() - started
    collectives = count_collectives(compiled.as_text())
    for _ in range(args.warmup):
        batch = next(batches)
        state = trainer.train_step(state, batch.images, batch.labels, schedule, batch.mask)
    jax.block_until_ready(state)
    rates = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(args.steps):
            batch = next(batches)
            state = trainer.train_step(state, batch.images, batch.labels, schedule, batch.mask)
        jax.block_until_ready(state)
        rates.append(args.steps * args.batch / (time.perf_counter() - started))
    batches.close()
    if multihost.is_primary():
        print(json.dumps({
            "layout": f"{jax.process_count()}x{len(jax.local_devices())}", "devices": len(jax.devices()),
            "device_kind": jax.devices()[0].device_kind, "images_per_second": statistics.median(rates),
            "slowest": min(rates), "fastest": max(rates), "compile_seconds": compile_seconds,
            "collectives": collectives,
        }), flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_layout(processes: int, devices: int, args: argparse.Namespace) -> dict:
    """Times the step in a layout: process 0's result."""
    outputs = _run_processes(processes, devices, args, lambda index, port: [
        sys.executable, __file__, "--worker", "--num_processes", str(processes), "--process_id", str(index),
        "--coordinator_address", f"127.0.0.1:{port}", *_shared_arguments(args)])
    return json.loads([line for line in outputs[0].splitlines() if line.startswith("{")][-1])


def train_layout(processes: int, devices: int, args: argparse.Namespace, workdir: pathlib.Path) -> pathlib.Path:
    """Trains the run of `--run-args` in a layout, as `ltjax-train` across processes does: its workdir."""
    _run_processes(processes, devices, args, lambda index, port: [
        sys.executable, "-m", "ltjax", f"--workdir={workdir}", "--config.progress_bar=false", *args.run_args.split(),
        *([f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}", f"--process_id={index}"]
          if processes > 1 else [])])
    return workdir


def _run_processes(processes: int, devices: int, args: argparse.Namespace, command_of) -> list[str]:
    """Starts `command_of(index, port)` for each process of a layout, waits for them (bounded): their outputs."""
    port = _free_port()
    children = []
    for index in range(processes):
        env = dict(os.environ)
        if args.platform == "cpu":
            flags = [flag for flag in env.get("XLA_FLAGS", "").split()
                     if not flag.startswith("--xla_force_host_platform_device_count")]
            env.update(JAX_PLATFORMS="cpu",
                       XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]))
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index * devices + k) for k in range(devices))
        children.append(subprocess.Popen(command_of(index, port), env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True))
    try:
        outputs = [child.communicate(timeout=args.timeout) for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()
    for child, (_, errors) in zip(children, outputs):
        if child.returncode != 0:
            raise SystemExit(f"layout {processes}x{devices} failed:\n{errors[-3000:]}")
    return [output for output, _ in outputs]


def _run_comparison(layouts: list[str], workdirs: list[pathlib.Path]) -> str:
    """Each layout's report and log against the first layout's."""
    def read(workdir):
        log = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
        return json.loads((workdir / "report.json").read_text()), [line["train_loss"] for line in log]

    (first, first_losses), lines = read(workdirs[0]), [
        "| layout | top-1 | ECE | confusion entries unlike the first layout's | largest relative loss difference |",
        "|---|---:|---:|---:|---:|"]
    for layout, workdir in zip(layouts, workdirs):
        report, losses = read(workdir)
        differing = int((np.asarray(report["confusion"]) != np.asarray(first["confusion"])).sum())
        loss_gap = max(abs(a - b) / abs(b) for a, b in zip(losses, first_losses))
        lines.append(f"| {layout} | {100 * report['top1_accuracy']:.2f} | {report['ece']:.5f} | {differing} | "
                     f"{loss_gap:.1e} |")
    return "\n".join(lines)


def _shared_arguments(args: argparse.Namespace) -> list[str]:
    return ["--steps", str(args.steps), "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--batch",
            str(args.batch), "--model", args.model]


def _table(results: list[dict]) -> str:
    base = results[0]["images_per_second"]
    lines = ["| layout | devices | images/s (slowest-fastest) | vs first | compile s | collectives per step |",
             "|---|---:|---:|---:|---:|---|"]
    for result in results:
        collectives = ", ".join(f"{entry['count']} {op} ({entry['bytes'] / 1e3:.1f} kB)"
                                for op, entry in sorted(result["collectives"].items())) or "none"
        lines.append(f"| {result['layout']} | {result['devices']} x {result['device_kind']} | "
                     f"{result['images_per_second']:.0f} ({result['slowest']:.0f}-{result['fastest']:.0f}) | "
                     f"{result['images_per_second'] / base:.2f}x | {result['compile_seconds']:.1f} | {collectives} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", default="1x8,2x4", help="processes x devices per process, comma-separated")
    parser.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--batch", type=int, default=64, help="global batch")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed window")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900, help="seconds a layout may take")
    parser.add_argument("--train-runs", action="store_true", help="train a whole run per layout and compare them")
    parser.add_argument("--run-args", default="", help="ltjax-train's arguments for --train-runs (default: none)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--coordinator_address", help=argparse.SUPPRESS)
    parser.add_argument("--num_processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process_id", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    layouts = args.layouts.split(",")
    if args.train_runs:
        with tempfile.TemporaryDirectory() as folder:
            workdirs = [train_layout(*map(int, layout.split("x")), args, pathlib.Path(folder) / layout)
                        for layout in layouts]
            print(_run_comparison(layouts, workdirs))
        return
    results = []
    for layout in layouts:
        processes, devices = map(int, layout.split("x"))
        results.append(run_layout(processes, devices, args))
        print(json.dumps(results[-1]), flush=True)
    print()
    print(_table(results))


if __name__ == "__main__":
    main()
