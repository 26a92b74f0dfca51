"""The processes of one run: joining JAX's multi-controller runtime, deciding together, stopping together.

A run on several hosts is one process per host (or per GPU), each running the same command. JAX's distributed
runtime joins them (`initialize`); from then on `jax.devices()` lists every process's devices, one global mesh spans
them, and each process feeds only its own devices. ltjax adds to that runtime only what a training run needs of it:

- `initialize`: join from the three flags `--coordinator_address --num_processes --process_id`, or from the cluster
  JAX detects (Cloud TPU, SLURM, Open MPI, ...), or stay one process. CPU processes collect over gloo.
- `on_primary` / `on_every`: process 0 alone writes the run's files; every process learns the outcome, so an error
  (a busy workdir, another config, unreadable data) stops every process with the same message instead of leaving
  the others waiting in a collective.
- `gather`: a globally sharded array as one NumPy array on every process; `broadcast`: process 0's values on all.
- `Interruption`: SIGTERM or SIGINT to any process stops every process at the same step, where the run saves a
  checkpoint. Several processes agree on the step through JAX's preemption sync point.
- `run_command`: a process that dies stops the others within `PEER_TIMEOUT_S`, and one that ends with an error the
  others do not share within `_GRACE_S`, each with a message naming it (JAX's own heartbeat takes 100 s and ends
  them with a C++ stack trace). Each process beats in the runtime's key-value store once a second. Where process 0
  dies, the runtime's service dies with it, and JAX ends the others at once with its own message.

With one process every function here is a plain call: nothing is exchanged.
"""
from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from ltjax.keys import ConfigError

T = TypeVar("T")

# Exit codes of the command-line tools besides those of `ltjax.commands`: each asks to run the same command again.
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM/SIGINT with a checkpoint at that step
EXIT_PEER_LOST = 69  # EX_UNAVAILABLE: another process of the run died
PEER_TIMEOUT_S = 20.0
_HEARTBEAT_S = 1.0
_GRACE_S = 10.0
_EXIT_GRACE_S = 30.0
# What jax.distributed.initialize says when it has no flags and detects no cluster: the run is one process.
_NO_CLUSTER = "coordinator_address should be defined"


class Interrupted(Exception):
    """The run stopped at a signal, with a checkpoint at `global_step`; running it again resumes there."""

    def __init__(self, epoch: int, step: int, global_step: int):
        super().__init__(f"interrupted at epoch {epoch} step {step}; checkpoint saved; run the same command to "
                         "resume")
        self.epoch, self.step, self.global_step = epoch, step, global_step


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, initialization_timeout: int = 300) -> None:
    """Joins this process to the run's other processes; call it once, before anything touches the devices.

    With the three arguments (the names of `jax.distributed.initialize`'s), the run has `num_processes` processes
    whose process 0 serves the coordinator at `coordinator_address` (HOST:PORT, reachable from every process).
    Without them, a cluster JAX detects (Cloud TPU VMs, SLURM, Open MPI, Kubernetes) gives them, and elsewhere the
    run is this one process. A caller that joined the runtime itself is left as it is.

    Raises:
      ConfigError: some of the three given but not all, a process id outside the run, or a coordinator that cannot
        be reached within `initialization_timeout` seconds.
    """
    flags = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    given = [name for name, value in flags.items() if value is not None]
    if given and len(given) < len(flags):
        missing = [f"--{name}" for name in flags if name not in given]
        raise ConfigError(f"a run across processes needs all three of --coordinator_address, --num_processes and "
                          f"--process_id; missing {', '.join(missing)} (or give none on a cluster JAX detects)")
    if jax.distributed.is_initialized():
        return
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        # CPU processes need a collectives backend to sum across each other; GPUs and TPUs have their own.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=initialization_timeout)
    except ValueError as error:
        if not given and _NO_CLUSTER in str(error):
            return
        raise ConfigError(f"cannot join the run's processes: {error}") from None
    except jax.errors.JaxRuntimeError as error:
        where = f"process {process_id} could not join the run at {coordinator_address}" if given else \
            "this process could not join the run of the cluster JAX detected"
        raise ConfigError(
            f"{where} within {initialization_timeout} s ({str(error).splitlines()[0][:200]}): start every process "
            "with the same --coordinator_address and --num_processes, process 0 on the host named there"
        ) from None
    except RuntimeError as error:  # JAX already runs in this process: a caller computed something first
        if not given:
            return
        raise ConfigError(f"cannot join the run's processes: {error}") from None
    _watch_peers()


def is_primary() -> bool:
    """Whether this is process 0, which writes the run's files."""
    return jax.process_index() == 0


def primary_only(say: Callable[[str], None]) -> Callable[[str], None]:
    """`say` on process 0, and nothing on the others: a note the run prints once."""
    return say if is_primary() else (lambda _: None)


def label() -> str:
    """`"process I of N: "` where the run has several processes, so that each one's messages say whose they are."""
    return f"process {jax.process_index()} of {jax.process_count()}: " if jax.process_count() > 1 else ""


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name`."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def gather(array: jax.Array | np.ndarray) -> np.ndarray:
    """The whole of a (globally sharded) array as a NumPy array, on every process."""
    if jax.process_count() == 1:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def broadcast(tree: T) -> T:
    """Process 0's values of a pytree of arrays, on every process (as NumPy arrays across processes). For values each
    process computes for itself that must agree to the bit (an initialisation, a host-side computation), which hosts
    of different CPUs could round differently."""
    if jax.process_count() == 1:
        return tree
    return multihost_utils.broadcast_one_to_all(jax.device_get(tree))


def exchange(value: Any) -> list[Any]:
    """Every process's JSON-able `value`, in process order, on every process."""
    if jax.process_count() == 1:
        return [value]
    payload = np.frombuffer(json.dumps(value).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.int64(len(payload)))).reshape(-1)
    # Padded to a power of two, so that a run compiles a few gathers rather than one per length.
    buffer = np.zeros(1 << int(max(lengths.max(), 1) - 1).bit_length(), np.uint8)
    buffer[:len(payload)] = payload
    gathered = np.asarray(multihost_utils.process_allgather(buffer)).reshape(len(lengths), -1)
    return [json.loads(bytes(row[:length])) for row, length in zip(gathered, lengths)]


def _described(error: Exception | None) -> dict | None:
    if error is None:
        return None
    kind = type(error)
    described = {"type": f"{kind.__module__}:{kind.__qualname__}", "message": str(error)}
    if isinstance(error, OSError) and error.errno is not None:  # what the disk refused, kept for its message
        described["os_error"] = [error.errno, error.strerror, error.filename and str(error.filename)]
    return described


def _rebuilt(described: dict, prefix: str = "") -> Exception:
    """An exception of the described type (RuntimeError where it cannot be rebuilt from a message)."""
    module, _, name = described["type"].partition(":")
    message = prefix + described["message"]
    try:
        kind = functools.reduce(getattr, name.split("."), importlib.import_module(module))
        if "os_error" in described:
            code, strerror, filename = described["os_error"]
            return kind(code, prefix + strerror, *([filename] if filename else []))
        error = kind(message)
    except Exception:  # a type this process cannot import or build from one message
        return RuntimeError(message)
    return error if isinstance(error, Exception) else RuntimeError(message)


def on_primary(fn: Callable[[], T]) -> T:
    """`fn()` run by process 0 alone; its JSON-able result on every process, or its error raised on every process."""
    if jax.process_count() == 1:
        return fn()
    result, error = None, None
    if is_primary():
        try:
            result = fn()
        except Exception as caught:  # handed to every process, then raised
            error = caught
    shared = exchange({"result": result, "error": _described(error)} if is_primary() else None)[0]
    if error is not None:
        raise error
    if shared["error"] is not None:
        raise _rebuilt(shared["error"])
    return shared["result"]


def on_every(fn: Callable[[], T]) -> T:
    """`fn()` run by every process; where it fails on any, every process raises (its own error, or the first failing
    process's, named)."""
    if jax.process_count() == 1:
        return fn()
    result, error = None, None
    try:
        result = fn()
    except Exception as caught:  # handed to every process, then raised
        error = caught
    outcomes = exchange(_described(error))
    if error is not None:
        raise error
    for process, failed in enumerate(outcomes):
        if failed is not None:
            raise _rebuilt(failed, prefix=f"process {process}: ")
    return result


class Interruption:
    """While entered, SIGTERM or SIGINT asks the run to stop, and `reached(step)` says at which step it stops.

    One process: the signal sets a flag and the next step stops. Several: SIGTERM (a scheduler's preemption notice)
    is JAX's to catch, and JAX's runtime agrees on one step for every process
    (`multihost_utils.reached_preemption_sync_point`); SIGINT is passed on as a SIGTERM to this process, so Ctrl-C
    in any terminal stops them all at one step. A second SIGINT to one process stops it at once, as Python does.
    Signal handlers belong to the main thread: entered in another thread, it handles no signal.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interruption:
        if threading.current_thread() is not threading.main_thread():
            return self
        if jax.process_count() > 1:
            handlers = {signal.SIGINT: self._pass_on} if jax.config.jax_enable_preemption_service else {}
        else:
            handlers = {signal.SIGINT: self._note, signal.SIGTERM: self._note}
        for number, handler in handlers.items():
            self._previous[number] = signal.signal(number, handler)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _note(self, number: int, frame) -> None:
        self.received = number
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _pass_on(self, number: int, frame) -> None:
        self._note(number, frame)
        signal.raise_signal(signal.SIGTERM)

    def reached(self, step: int) -> bool:
        """Whether the run stops after global step `step`; every process calls it at every step, in order."""
        if jax.process_count() > 1:
            return jax.config.jax_enable_preemption_service and multihost_utils.reached_preemption_sync_point(step)
        return self.received is not None


def _runtime_client():
    """The distributed runtime's client (its key-value store), or None where this JAX keeps it elsewhere."""
    from jax._src import distributed  # its client has no public handle; orbax reaches it the same way

    return getattr(distributed.global_state, "client", None)


class _PeerWatch:
    """A thread that beats in the runtime's key-value store, and ends this process once another one has died (no
    beat for `PEER_TIMEOUT_S`) or ended with an error while this one runs on (after `_GRACE_S`: an error they all
    share ends every process by itself first).

    A process that ends with an error leaves without JAX's shutdown barrier, which waits for every process and so
    would wait for the ones still in a collective: it tells the others (`ltjax/ended/<process>`), waits until each
    has ended or died (at most `_EXIT_GRACE_S`; process 0, whose service the others use, last), and exits.
    """

    def __init__(self, client, me: int, count: int):
        self.client, self.me, self.count = client, me, count
        now = time.monotonic()
        self.beats = {peer: (None, now) for peer in range(count) if peer != me}  # last beat seen, and when
        self.ends: dict[int, str | None] = {peer: None for peer in self.beats}
        self.errors_seen: dict[int, float] = {}
        self.ended = False
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name="ltjax-peer-watch")

    def run(self) -> None:
        beat = 0
        while not self.stopped.is_set():
            beat += 1
            try:
                self.client.key_value_set(f"ltjax/heartbeat/{self.me}", str(beat), allow_overwrite=True)
                self.poll()
            except Exception:  # the store is process 0's: it is gone
                if not self.ended:
                    self.stop(0, "the coordinator's connection closed")
                return
            if not self.ended:
                self.check(time.monotonic())
            self.stopped.wait(_HEARTBEAT_S)

    def poll(self) -> None:
        """Reads every other process's beat and end."""
        now = time.monotonic()
        for peer, (last, _) in self.beats.items():
            beat = _try_get(self.client, f"ltjax/heartbeat/{peer}")
            if beat != last:
                self.beats[peer] = (beat, now)
            self.ends[peer] = _try_get(self.client, f"ltjax/ended/{peer}")

    def gone(self, peer: int, now: float) -> bool:
        return self.ends[peer] is not None or now - self.beats[peer][1] > PEER_TIMEOUT_S

    def check(self, now: float) -> None:
        for peer, (_, since) in self.beats.items():
            if self.ends[peer] is not None:
                if int(self.ends[peer]) != 0 and now - self.errors_seen.setdefault(peer, now) > _GRACE_S:
                    self.stop(peer, f"it ended with exit code {self.ends[peer]}")
            elif now - since > PEER_TIMEOUT_S:
                self.stop(peer, f"no heartbeat for {PEER_TIMEOUT_S:.0f} s: it was killed, crashed or lost its host")

    def stop(self, peer: int, why: str) -> None:
        print(f"ltjax: process {peer} of {self.count} stopped ({why}); see its own output. Stopping process "
              f"{self.me} too. The checkpoints on disk are whole: run the same command on every process to resume "
              "from the newest.", file=sys.stderr, flush=True)
        self.leave(EXIT_PEER_LOST)

    def leave(self, code: int) -> None:
        """Ends this process with `code` (see the class docstring); never returns."""
        self.ended = True
        try:
            self.client.key_value_set(f"ltjax/ended/{self.me}", str(code), allow_overwrite=True)
            deadline = time.monotonic() + _EXIT_GRACE_S
            self.poll()
            while time.monotonic() < deadline and not all(self.gone(peer, time.monotonic()) for peer in self.beats):
                time.sleep(_HEARTBEAT_S / 5)
                self.poll()
            if self.me == 0:
                time.sleep(_HEARTBEAT_S / 2)  # the others may still be reading the store it serves
        except Exception:  # the store is gone with process 0: nobody is left to wait for
            pass
        _flush()
        os._exit(code)

    def finish(self) -> None:
        """This process ended well: stops beating (once it says so, the others stop watching it) and the thread
        (which must not be inside a call of the runtime when the interpreter ends)."""
        self.ended = True
        try:
            self.client.key_value_set(f"ltjax/ended/{self.me}", "0", allow_overwrite=True)
        except Exception:  # the store is gone with process 0; JAX's shutdown says the rest
            pass
        self.quit()

    def quit(self) -> None:
        self.stopped.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=5 * _HEARTBEAT_S)

    def wait_for_beats(self) -> None:
        """Returns once every other process has beaten again; where one has died, `run` ends this process first."""
        asked = time.monotonic()
        while any(since <= asked for _, since in self.beats.values()):
            if time.monotonic() - asked > PEER_TIMEOUT_S + 5 * _HEARTBEAT_S:
                return
            time.sleep(_HEARTBEAT_S / 5)


_watch: _PeerWatch | None = None


def _watch_peers() -> None:
    global _watch
    client = _runtime_client()
    if client is None or jax.process_count() == 1:
        return
    _watch = _PeerWatch(client, jax.process_index(), jax.process_count())
    _watch.thread.start()
    # Without `run_command` (a script of the user's), the thread still stops before the interpreter ends.
    atexit.register(_watch.quit)


def _try_get(client, key: str) -> str | None:
    try:
        return client.key_value_try_get(key)
    except jax.errors.JaxRuntimeError as error:
        if "NOT_FOUND" in str(error):
            return None
        raise


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def run_command(main: Callable[[], int]) -> int:
    """A command's `main()`, its end told to the run's other processes (see `_PeerWatch`).

    Across processes, an error that escapes `main` is first held until every other process has beaten again: a
    collective that failed because another process died ends this process with a message naming that process;
    otherwise its traceback is printed, and the process leaves with exit code 1 as Python would. Any exit code but
    0 leaves the same way.
    """
    try:
        code = main()
    except BaseException:
        if _watch is None:
            raise
        _watch.wait_for_beats()
        traceback.print_exc()
        _watch.leave(1)
    if _watch is not None:
        if code == 0:
            _watch.finish()
        else:
            _watch.leave(code)
    return code


def add_flags(parser) -> None:
    """The command-line flags of a run across processes (`initialize`'s arguments), for every ltjax command."""
    group = parser.add_argument_group(
        "across processes", "one process per host (or GPU), each started with the same command and its own "
        "--process_id; on a cluster JAX detects (Cloud TPU, SLURM, Open MPI) leave all three out")
    group.add_argument("--coordinator_address", metavar="HOST:PORT", help="process 0's host and a free port")
    group.add_argument("--num_processes", type=int, metavar="N", help="processes in the run")
    group.add_argument("--process_id", type=int, metavar="I", help="this process's index, 0 to N-1")


def initialize_from(arguments) -> None:
    """`initialize` with the flags `add_flags` declared."""
    initialize(arguments.coordinator_address, arguments.num_processes, arguments.process_id)
