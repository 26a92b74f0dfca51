"""Interleaved timing of several contestants, each in its own child process.

A development machine shared with other jobs drifts by tens of percent within a minute, so timing one contestant
after another compares two different machines. Here every contestant runs in its own process (its own thread
pools, its own CPU affinity, its own environment, e.g. `XLA_FLAGS`), and the parent asks them in turn for one
timing window at a time, alternating the order, so that all of them see the same load.

Protocol: the parent starts `python <script> --worker <spec>` (the script's own worker mode) and exchanges JSON
lines over the child's stdin/stdout. The child answers the first line with what it measured while building (e.g.
compile times), then each `{"steps": n}` with the wall-clock and CPU seconds of n steps; EOF ends it.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Contestant:
    """One child process: `name` labels it, `argv` runs its worker mode, `env` adds to the parent's environment."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    info: dict = field(default_factory=dict)
    wall_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *self.argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, **self.env},
        )
        self.info = self._read()

    def window(self, steps: int) -> None:
        self.process.stdin.write(json.dumps({"steps": steps}) + "\n")
        self.process.stdin.flush()
        reply = self._read()
        self.wall_seconds.append(reply["wall"] / steps)
        self.cpu_seconds.append(reply["cpu"] / steps)

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"contestant {self.name!r} exited with status {self.process.wait()}")
        return json.loads(line)

    def median_step_seconds(self) -> float:
        return statistics.median(self.wall_seconds)


# Idle time before each window: thread pools spin for a while after their last task (OpenMP, Eigen), and a
# neighbour's spinning threads would steal the cores of the next contestant's first milliseconds.
SETTLE_SECONDS = 0.2


def run(contestants: list[Contestant], *, windows: int, steps: int) -> list[Contestant]:
    """Starts every contestant, then times `windows` rounds of `steps` steps each, reversing the order every round.

    The children are started one after another, so one's compilation does not slow another's warm-up.
    """
    for contestant in contestants:
        contestant.start()
    try:
        for round_index in range(windows):
            order = contestants if round_index % 2 == 0 else contestants[::-1]
            for contestant in order:
                time.sleep(SETTLE_SECONDS)
                contestant.window(steps)
    finally:
        for contestant in contestants:
            contestant.stop()
    return contestants


def serve(build: Callable[[], tuple[dict, Callable[[], object], Callable[[object], None]]]) -> None:
    """The child's side: `build()` returns `(info, step, wait)`; `step()` dispatches one step and returns a handle,
    `wait(handle)` blocks until it has finished (asynchronous frameworks need that before the clock stops)."""
    info, step, wait = build()
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        steps = json.loads(line)["steps"]
        started_wall, started_cpu = time.perf_counter(), time.process_time()
        handle = None
        for _ in range(steps):
            handle = step()
        wait(handle)
        print(json.dumps({"wall": time.perf_counter() - started_wall, "cpu": time.process_time() - started_cpu}),
              flush=True)


def pin_to_cpus(num_threads: int) -> list[int]:
    """Restricts this process to its first `num_threads` allowed CPUs (XLA sizes its thread pool from the
    affinity mask; PyTorch is told the count), and returns them."""
    cpus = sorted(os.sched_getaffinity(0))[:num_threads]
    os.sched_setaffinity(0, cpus)
    return cpus


def load_average() -> float:
    return os.getloadavg()[0]
