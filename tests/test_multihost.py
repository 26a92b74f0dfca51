"""Runs across processes, on JAX's multi-controller runtime: 2 processes x 4 CPU devices against 1 process x 8.

Every run here is real: `python -m ltjax` processes joined by `--coordinator_address=127.0.0.1:<free port>
--num_processes --process_id`, summing over gloo, each waited for with a deadline and ended by the test.

Tolerance. Two processes compute what one process with as many devices computes, except the order in which the
gradient and BatchNorm sums add up (gloo between the processes, XLA within one): after one step the parameters
differ by about one float32 ulp (6e-7 relative, measured), and after these 3-epoch ResNet-2 runs the logged losses
by under 1e-6. So the reports' counts (confusion matrix, accuracies) must be equal and every other number, in the
report and the log, within rtol 1e-4: a hundred times what was measured, far below what a wrong batch, a missed
example or a doubled gradient gives. A run stopped and resumed on the same processes must match its uninterrupted
run exactly.
"""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from runs import SMOKE_ARGS, digits_config, workdir_locked_elsewhere

from ltjax import multihost
from ltjax.commands import EXIT_USER_ERROR
from ltjax.train import main as train_main
from ltjax.train.loop import train_ensemble

TESTS = pathlib.Path(__file__).resolve().parent
DEADLINE_S = 600
# D-FFDS from epoch 1, so DynaSmooth's state crosses processes; batch 16: 31 steps per epoch (the last one padded:
# 486 = 30 x 16 + 6), to stop in the middle.
FFDS_ARGS = [*SMOKE_ARGS, "--config.loss.name=ffds", "--config.loss.ffds_start=1", "--config.num_epochs=3",
             "--config.batch_size=16", "--config.checkpoint_every_steps=5"]
CE_ARGS = [*SMOKE_ARGS, "--config.num_epochs=3"]
STEPS_PER_EPOCH = 31
ENSEMBLE = [[["num_epochs", "3"], ["seed", "0"]],
            [["num_epochs", "3"], ["seed", "1"], ["loss.name", "ffds"], ["loss.ffds_start", "1"]]]
ENSEMBLE_DRIVER = """
import argparse, json
from ltjax import multihost
parser = argparse.ArgumentParser()
parser.add_argument("workdir")
parser.add_argument("members")
multihost.add_flags(parser)
arguments = parser.parse_args()
multihost.initialize_from(arguments)
from runs import digits_config
from ltjax.train.loop import train_ensemble
configs = [digits_config(*map(tuple, member)) for member in json.loads(arguments.members)]
train_ensemble(configs, arguments.workdir, say=lambda _: None)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(devices: int) -> dict:
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
             if not flag.startswith("--xla_force_host_platform_device_count")]
    return {**os.environ, "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
            "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


class Processes:
    """The processes of one run on this machine, started with the three flags (or, with `slurm`, with the variables
    a SLURM job step sets instead); every one is ended on exit."""

    def __init__(self, command: list[str], logs: pathlib.Path, *, count: int = 2, devices: int = 4,
                 slurm: bool = False):
        port = _free_port()
        logs.mkdir(parents=True, exist_ok=True)
        self.logs = [logs / f"process{index}.log" for index in range(count)]
        self.processes = []
        for index, log in enumerate(self.logs):
            flags = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={count}", f"--process_id={index}"]
            slurm_step = {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_NTASKS": str(count),
                          "SLURM_PROCID": str(index), "SLURM_LOCALID": str(index), "JAX_COORDINATOR_PORT": str(port)}
            with log.open("w") as output:
                self.processes.append(subprocess.Popen(
                    command if slurm else [*command, *flags], env={**_environment(devices), **(
                        slurm_step if slurm else {})}, stdout=output, stderr=subprocess.STDOUT))

    def output(self, index: int) -> str:
        return self.logs[index].read_text()

    def wait(self, timeout: float = DEADLINE_S, indices: list[int] | None = None) -> list[int]:
        """The exit codes of processes `indices` (default all), once they have ended; the test fails (and ends every
        process) past `timeout`."""
        indices = range(len(self.processes)) if indices is None else indices
        deadline = time.monotonic() + timeout
        for index in indices:
            try:
                self.processes[index].wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.end()
                pytest.fail(f"process {index} still ran after {timeout} s:\n{self.output(index)[-3000:]}")
        return [self.processes[index].returncode for index in indices]

    def end(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc) -> None:
        self.end()


def _train(arguments: list[str], workdir: pathlib.Path) -> list[int]:
    with Processes([sys.executable, "-m", "ltjax", f"--workdir={workdir}", *arguments], workdir.parent / "logs"
                   / workdir.name) as run:
        codes = run.wait()
        assert codes == [0, 0], [run.output(index)[-3000:] for index in range(2)]
        return codes


def _wait_for_checkpoint(workdir: pathlib.Path, step: int, run: Processes) -> None:
    """Returns once the run has checkpointed step `step` or a later one."""
    deadline = time.monotonic() + DEADLINE_S
    folder = workdir / "checkpoints"
    while not any(path.name.isdigit() and int(path.name) >= step for path in (folder.glob("*"))):
        assert all(process.poll() is None for process in run.processes), "a process ended early"
        assert time.monotonic() < deadline, f"no checkpoint from step {step} on within {DEADLINE_S} s"
        time.sleep(0.05)


def assert_same(result, reference, where: str = "report") -> None:
    """Equal structure, counts and strings; floats within rtol 1e-4 (the module docstring says why)."""
    if isinstance(reference, dict):
        assert result.keys() == reference.keys(), where
        for key in reference:
            assert_same(result[key], reference[key], f"{where}.{key}")
    elif isinstance(reference, list):
        assert len(result) == len(reference), where
        for index, (mine, theirs) in enumerate(zip(result, reference)):
            assert_same(mine, theirs, f"{where}[{index}]")
    elif isinstance(reference, float):
        np.testing.assert_allclose(result, reference, rtol=1e-4, atol=1e-12, err_msg=where)
    else:
        assert result == reference, where


def _log(workdir: pathlib.Path) -> list[dict]:
    """The run's epoch lines without their timings."""
    lines = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
    return [{key: value for key, value in line.items() if key not in ("seconds", "train_images_per_second")}
            for line in lines]


def _report(workdir: pathlib.Path) -> dict:
    return json.loads((workdir / "report.json").read_text())


@pytest.fixture(scope="module")
def ffds_across_processes(trained_once) -> pathlib.Path:
    """The D-FFDS run of `FFDS_ARGS` on 2 processes x 4 devices, uninterrupted: what interrupted runs must give."""
    return trained_once("ffds-2x4", lambda workdir: _train(FFDS_ARGS, workdir))


@pytest.mark.parametrize("method", ["ce", "ffds"])
def test_two_processes_of_four_devices_give_the_report_of_one_of_eight(method, request, tmp_path):
    arguments = CE_ARGS if method == "ce" else FFDS_ARGS
    if method == "ffds":
        across = request.getfixturevalue("ffds_across_processes")
    else:
        across = tmp_path / "2x4"
        _train(arguments, across)
    single = tmp_path / "1x8"
    assert train_main.main([f"--workdir={single}", *arguments]) == 0
    assert_same(_report(across), _report(single))
    assert_same(_log(across), _log(single), "log")  # one line per epoch: process 0 alone writes
    session = json.loads((across / "provenance.json").read_text())["sessions"][-1]["devices"]
    assert session["process_count"] == 2 and session["count"] == 8
    assert [len(process["devices"]) for process in session["processes"]] == [4, 4]
    assert not list(across.glob("members")) and len(list((across / "checkpoints").iterdir())) == 2


def test_a_two_process_ensemble_trains_the_members_of_the_single_process_one(tmp_path):
    members = json.dumps(ENSEMBLE)
    across = tmp_path / "2x4"
    with Processes([sys.executable, "-c", ENSEMBLE_DRIVER, str(across), members], tmp_path / "logs") as run:
        assert run.wait() == [0, 0], run.output(0)[-3000:]
    single = tmp_path / "1x8"
    train_ensemble([digits_config(*map(tuple, member)) for member in ENSEMBLE], single, say=lambda _: None)
    for member in range(len(ENSEMBLE)):
        assert_same(_report(across / "members" / str(member)), _report(single / "members" / str(member)))
        assert_same(_log(across / "members" / str(member)), _log(single / "members" / str(member)), "log")


TINY_TABLE = """
from ltjax.tables import Row, Table


def get_table():
    rows = (Row("CE", {"name": "ce"}), Row("Focal", {"name": "focal"}), Row("SWRM", {"name": "swrm"}),
            Row("CE + cRT", {"name": "crt"}, overrides={"dataset.sampler": "class_balanced"}, after="CE"))
    return Table(name="tiny", title="tiny", recipe="ltjax/configs/digits.py", rows=rows, seeds=(0,), notes="",
                 overrides={"progress_bar": False, "plots": False, "num_epochs": 4, "model.name": "resnet2"})
"""


def test_a_table_across_processes_gives_the_single_process_table(tmp_path):
    """Ensembles through `ltjax-table`, cRT's second stage (its first stage restored by every process), and SWRM's
    phase entry (a t-SNE of class prototypes from every process's features, process 0's result taken by all). The
    t-SNE is chaotic on these barely trained prototypes (a 1e-7 change of them reorders the classes, measured), so
    SWRM is compared up to its phase entry only."""
    from ltjax.tables import main as table_main

    spec = tmp_path / "tiny.py"
    spec.write_text(TINY_TABLE)
    command = [str(pathlib.Path(sys.executable).parent / "ltjax-table"), str(spec), "--root", str(tmp_path / "2x4")]
    with Processes(command, tmp_path / "logs") as run:
        assert run.wait() == [0, 0], run.output(0)[-3000:]
    assert table_main.main([str(spec), "--root", str(tmp_path / "1x8")]) == 0
    tables = [json.loads((tmp_path / layout / "tiny" / "table.json").read_text()) for layout in ("2x4", "1x8")]
    cells = [{(cell["row"], cell["seed"]): pathlib.Path(cell["workdir"]) for row in table["rows"]
              for cell in row["cells"]} for table in tables]
    assert cells[0].keys() == cells[1].keys() and len(cells[0]) == 4
    for cell, reference in cells[1].items():
        if cell[0] == "SWRM":  # its phase starts at epoch 2 of 4
            assert_same(_log(cells[0][cell])[:2], _log(reference)[:2], "SWRM log")
            assert _report(cells[0][cell])["num_examples"] == 300
        else:
            assert_same(_report(cells[0][cell]), _report(reference), str(cell))


FEATURES_DRIVER = """
import argparse
import numpy as np
from ltjax import multihost
parser = argparse.ArgumentParser()
parser.add_argument("out")
multihost.add_flags(parser)
arguments = parser.parse_args()
multihost.initialize_from(arguments)
from features import features
stats, values = features()
if multihost.is_primary():
    np.savez(arguments.out, features=values, confusion=stats.confusion)
"""


def test_every_examples_features_gathered_across_processes_are_the_single_process_ones(tmp_path):
    """What SWRM's phase entry builds its class prototypes from: each example's features of an ensemble, gathered
    from every process's devices in the split's order, without the padding of the last batch."""
    from features import features

    with Processes([sys.executable, "-c", FEATURES_DRIVER, str(tmp_path / "across.npz")], tmp_path / "logs") as run:
        assert run.wait() == [0, 0], run.output(0)[-3000:]
    across = np.load(tmp_path / "across.npz")
    stats, values = features()
    assert values.shape == across["features"].shape == (2, 486, 16)
    np.testing.assert_allclose(across["features"], values, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(across["confusion"], stats.confusion)
    assert stats.confusion.sum() == 2 * 486


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_one_process_stops_all_at_one_step_and_the_rerun_resumes_exactly(
        signal_number, ffds_across_processes, tmp_path):
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "ltjax", f"--workdir={workdir}", *FFDS_ARGS]
    with Processes(command, tmp_path / "interrupted") as run:
        _wait_for_checkpoint(workdir, 35, run)  # mid-epoch 1, D-FFDS collecting its group means
        run.processes[1].send_signal(signal_number)
        codes = run.wait()
        outputs = [run.output(index) for index in range(2)]
    assert codes == [multihost.EXIT_INTERRUPTED] * 2, outputs
    stops = [line for output in outputs for line in output.splitlines() if "interrupted at" in line]
    assert len(stops) == 2 and "Traceback" not in "".join(outputs), outputs
    epoch, step = map(int, stops[0].split("interrupted at epoch ")[1].split("; ")[0].split(" step "))
    assert all(stop.endswith(f"interrupted at epoch {epoch} step {step}; checkpoint saved; run the same command to "
                             "resume") for stop in stops), stops
    assert (workdir / "checkpoints" / str(epoch * STEPS_PER_EPOCH + step)).is_dir()
    assert not (workdir / "report.json").exists()
    _train(FFDS_ARGS, workdir)
    assert (workdir / "report.json").read_text() == (ffds_across_processes / "report.json").read_text()
    assert _log(workdir) == _log(ffds_across_processes)


def test_a_frozen_process_stops_the_other_with_a_message_naming_it_and_the_rerun_resumes(ffds_across_processes,
                                                                                        tmp_path):
    """A stopped process keeps its sockets open, so the collectives just wait: the heartbeat alone must notice."""
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "ltjax", f"--workdir={workdir}", *FFDS_ARGS]
    with Processes(command, tmp_path / "frozen") as run:
        _wait_for_checkpoint(workdir, 35, run)
        run.processes[1].send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        assert run.wait(timeout=multihost.PEER_TIMEOUT_S + 60, indices=[0]) == [multihost.EXIT_PEER_LOST], (
            run.output(0)[-3000:])
        waited = time.monotonic() - frozen
        survivor = run.output(0)
    assert multihost.PEER_TIMEOUT_S / 2 < waited < multihost.PEER_TIMEOUT_S + 60  # a beat may be up to one period old
    assert (f"process 1 of 2 stopped (no heartbeat for {multihost.PEER_TIMEOUT_S:.0f} s" in survivor
            and "run the same command on every process" in survivor), survivor[-3000:]
    _train(FFDS_ARGS, workdir)
    assert (workdir / "report.json").read_text() == (ffds_across_processes / "report.json").read_text()


def test_a_killed_process_stops_the_other_and_the_rerun_resumes(ffds_across_processes, tmp_path):
    """A killed process closes its sockets. Between CPU processes gloo may then abort the survivor in the collective
    it was in (its own message, SIGABRT) before the heartbeat's message: either way it ends, and no work is lost."""
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "ltjax", f"--workdir={workdir}", *FFDS_ARGS]
    with Processes(command, tmp_path / "killed") as run:
        _wait_for_checkpoint(workdir, 35, run)
        run.processes[1].send_signal(signal.SIGKILL)
        codes = run.wait(timeout=multihost.PEER_TIMEOUT_S + 60)
        survivor = run.output(0)
    assert codes in ([multihost.EXIT_PEER_LOST, -signal.SIGKILL], [-signal.SIGABRT, -signal.SIGKILL]), survivor[-3000:]
    if codes[0] == multihost.EXIT_PEER_LOST:
        assert "process 1 of 2 stopped" in survivor, survivor[-3000:]
    else:
        assert "gloo" in survivor, survivor[-3000:]
    _train(FFDS_ARGS, workdir)
    assert (workdir / "report.json").read_text() == (ffds_across_processes / "report.json").read_text()


def test_a_damaged_checkpoint_is_moved_aside_once_and_every_process_resumes_the_previous(ffds_across_processes,
                                                                                         tmp_path):
    workdir = shutil.copytree(ffds_across_processes, tmp_path / "run", ignore=shutil.ignore_patterns("eval"))
    (workdir / "report.json").unlink()
    previous, newest = sorted(int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit())
    arrays = [path for path in (workdir / "checkpoints" / str(newest) / "state").rglob("*")
              if path.is_file() and "metadata" not in path.name.lower()]
    largest = max(arrays, key=lambda path: path.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 3])
    _train(FFDS_ARGS, workdir)
    said = (workdir.parent / "logs" / "run" / "process0.log").read_text()
    assert f"checkpoint step {newest} is damaged" in said and f"resuming from checkpoint step {previous}" in said
    assert [path.name for path in (workdir / "checkpoints").iterdir() if "damaged" in path.name] == [
        f"{newest}.damaged"]
    assert (workdir / "report.json").read_text() == (ffds_across_processes / "report.json").read_text()


def test_a_busy_workdir_stops_every_process_with_process_0s_error(tmp_path):
    """Process 0 alone takes the workdir's lock; the others must learn of its failure rather than wait for it."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    with workdir_locked_elsewhere(workdir), Processes(
            [sys.executable, "-m", "ltjax", f"--workdir={workdir}", *CE_ARGS], tmp_path / "logs") as run:
        assert run.wait() == [EXIT_USER_ERROR] * 2
        for index in range(2):
            assert f"process {index} of 2: error: workdir {workdir} is in use by pid test" in run.output(index)


def test_an_error_of_one_process_alone_ends_the_others_with_a_message_naming_it(tmp_path):
    """Process 1 fails where process 0 does not (here its config file raises): it prints its error and leaves; process
    0, waiting in a collective for it, learns of it and stops, instead of waiting on."""
    config = tmp_path / "config.py"
    config.write_text("import jax\nfrom ltjax.configs import digits\n\n\ndef get_config():\n"
                      "    if jax.process_index() == 1:\n        raise RuntimeError('only here')\n"
                      "    return digits.get_config()\n")
    started = time.monotonic()
    with Processes([sys.executable, "-m", "ltjax", f"--workdir={tmp_path / 'run'}", "--config", str(config),
                    *CE_ARGS], tmp_path / "logs") as run:
        assert run.wait(timeout=120) == [multihost.EXIT_PEER_LOST, EXIT_USER_ERROR]
        assert "process 1 of 2 stopped (it ended with exit code 2)" in run.output(0)
        assert "config.py, line 7 fails as it runs: RuntimeError: only here" in run.output(1)
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("setting, message", [
    ("--config.parallel=pmap", "parallel=pmap maps the devices of one process"),
    ("--config.num_devices=4", "num_devices=4: across 2 processes every one of the 8 devices takes part"),
], ids=["pmap", "num_devices"])
def test_a_device_setting_one_process_only_can_serve_is_a_clear_error_on_every_process(setting, message, tmp_path):
    with Processes([sys.executable, "-m", "ltjax", f"--workdir={tmp_path / 'run'}", *CE_ARGS, setting],
                   tmp_path / "logs") as run:
        assert run.wait() == [EXIT_USER_ERROR] * 2
        for index in range(2):
            assert message in run.output(index)


def test_evaluation_across_processes_gives_the_single_process_evaluation(ffds_across_processes, tmp_path):
    from ltjax.train import eval_main

    options = ["--posthoc", "la", "--select-on", "validation"]
    command = [str(pathlib.Path(sys.executable).parent / "ltjax-eval"), "--workdir", str(ffds_across_processes),
               *options, "--name", f"across-{tmp_path.name}"]
    with Processes(command, tmp_path / "logs") as run:
        assert run.wait() == [0, 0], run.output(0)[-3000:]
    assert eval_main.main(["--workdir", str(ffds_across_processes), *options, "--name", f"one-{tmp_path.name}"]) == 0
    folder = ffds_across_processes / "eval"
    for name in ("report.json", "selection.json"):
        assert_same(json.loads((folder / f"across-{tmp_path.name}" / name).read_text()),
                    json.loads((folder / f"one-{tmp_path.name}" / name).read_text()))


def test_processes_of_a_slurm_job_step_join_without_flags(tmp_path):
    """JAX's cluster detection reads the variables SLURM sets (here for two tasks on this host); the plan then
    spans both processes' devices."""
    with Processes([sys.executable, "-m", "ltjax", "--plan", *CE_ARGS], tmp_path / "logs", slurm=True) as run:
        assert run.wait() == [0, 0], run.output(0)[-3000:]
        assert "on 8 x cpu (shard_map) in 2 processes" in run.output(0)
        assert "run " not in run.output(1)  # process 0 alone prints


def test_partial_flags_name_the_missing_ones():
    from ltjax.keys import ConfigError

    with pytest.raises(ConfigError, match="missing --num_processes, --process_id"):
        multihost.initialize("127.0.0.1:1234")


def test_a_process_id_outside_the_run_is_one_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ltjax", "--plan", *CE_ARGS, "--coordinator_address=127.0.0.1:1", "--num_processes=2",
         "--process_id=5"], env=_environment(4), capture_output=True, text=True, timeout=DEADLINE_S, cwd=tmp_path)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert result.stderr.strip().startswith("ltjax-train: error: cannot join the run's processes: ")
    assert "process_id < num_processes" in result.stderr and "Traceback" not in result.stderr
