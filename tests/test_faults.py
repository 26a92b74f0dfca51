"""The fault matrix: each bad input or fault a new user met, and the clear error or preserved data it now gets.

Each entry: the fault; what it did before; what it does now, which a test checks.

- the loss becomes NaN. Before: exit 0, "Many-shot 100%" report. Now: NonFiniteError, exit 2, no report, good
  checkpoints kept.
- flipped bytes in a checkpoint's arrays. Before: restored silently, wrong report. Now: digest mismatch, step moved
  aside, previous step resumed.
- truncated / deleted checkpoint data. Before: right error under orbax log noise. Now: one message, fallback to the
  previous step.
- every checkpoint damaged. Now: CheckpointError naming the steps.
- the workdir does not say what produced it. Before: no config, manifests, versions, devices. Now: config.json,
  manifests/*.json, provenance.json, plan.json.
- README's `--config.loss.name=la` after the default. Before: tried to resume the CE run, failed. Now: its own default
  workdir.
- resuming with another config. Before: checkpoint error without the difference. Now: ConfigError listing the changed
  keys.
- two runs in one workdir at once. Before: interleaved logs. Now: WorkdirBusyError.
- kill -9 and resume. Before: log.jsonl lost epoch lines. Now: one line per epoch, same report.
- SIGTERM (preemption) or Ctrl-C. Before: exit 143 / traceback, work since the last epoch lost. Now: one line, exit 75,
  checkpoint at that step, same report on rerun.
- a stop at an epoch's last step. Before: resumed without the epoch's hooks and log line. Now: the epoch ends first.
- a corrupt or wrong-size image in the test split. Before: found after training / unnamed crash. Now: DataError naming
  the file, before the first step.
- CIFAR with no data_dir. Before: looked in ./cifar10. Now: tfds's default ($TFDS_DATA_DIR), named in the error.
- a zero or inf count passed to a jitted loss. Before: NaN/inf losses. Now: see
  tests/test_losses_errors.py::test_invalid_traced_counts_raise_under_jit.
- README's tests on another CPU (AVX-512). Before: logits of ~140 compared with atol 1e-5. Now: tolerances scaled to the
  values (tests/tolerance.py).
- a config file that is not Python, or fails. Before: AttributeError / a raw traceback. Now: the file (and line) named,
  exit 2.
- seed, num_devices, batch out of range. Before: NumPy error / ZeroDivisionError / ran. Now: the key and its range,
  exit 2.
- a batch larger than the data; an imbalance factor it cannot give. Before: ValueError traceback. Now: the key and the
  largest value that fits, exit 2.
- any user error on any command. Before: a traceback around the message, exit 1. Now: the message alone, exit 2; --debug
  or LTJAX_DEBUG=1 adds the traceback; a bug keeps it.
- a full disk at a checkpoint. Before: 139-line orbax traceback. Now: one line: the step, the folder, what to do; the
  rerun resumes.
- a read-only workdir. Before: PermissionError / OSError traceback. Now: one line naming the folder, exit 2.
- a disk that fills while the image cache is built. Before: SIGBUS, exit 135, no message. Now: room reserved up front; a
  full disk one message, nothing half-written left.
- cRT / LWS from a first stage stopped early or diverged. Before: exit 0, a 10% / 90% report. Now: ConfigError unless
  loss.init_step names the step; the plan shows the start; non-finite values refused.
- two learning-rate decays on one epoch (a short run). Before: the later decay silently lost. Now: ConfigError naming
  both, and the run length that separates them.
- class counts of 2^31 or more, or 1e40. Before: wrapped to negative / a NaN prior. Now: exact up to 2^53, an error
  beyond.
- a byte-order mark in a split file. Before: part of the first path. Now: read past.
- IIF rel / normit / gombit at C = 1. Before: NaN. Now: ValueError naming C.
- each epoch's last partial batch. Before: dropped: 84 CIFAR-100-LT steps, not 85. Now: trained on, padded and masked
  (loss, BatchNorm, counts, method state); dataset.drop_remainder=true drops it.
- a paper's best-epoch number against our final epoch. Before: unlike compared with unlike. Now: test logged every
  epoch; tables add the best epoch (optimistic) and the validation-selected one.
- experiments/configs/iif.py against the IIF authors' recipe. Before: differences unstated. Now: every difference in its
  docstring.
"""
import json
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from runs import DATASET_MODEL, SMOKE_ARGS, digits_config, workdir_locked_elsewhere
from tolerance import assert_close_to_scale

from ltjax import commands, datasets, multihost
from ltjax.commands import EXIT_USER_ERROR
from ltjax.configs import schema
from ltjax.data.pipeline import TrainPipeline
from ltjax.data.splits import SplitManifest
from ltjax.keys import ConfigError
from ltjax.train import main as train_main
from ltjax.train.build import DataSpec, build
from ltjax.train.checkpoint import Checkpointer, CheckpointError, state_digest
from ltjax.train.loop import NonFiniteError, train_and_evaluate
from ltjax.train.optim import learning_rate_schedule
from ltjax.train.workdir import Workdir, WorkdirBusyError, default_name


def quiet(_: str) -> None:
    pass


# --- a diverged run ---------------------------------------------------------------------------------------------

# 8 steps per epoch; from epoch 2 on the learning rate is multiplied by 1e12, which overflows the parameters.
DIVERGING = (("num_epochs", "4"), ("optimizer.lr_decay", "((2, 1e12),)"))


def test_a_diverged_run_stops_with_a_clear_error_and_keeps_its_good_checkpoints(tmp_path):
    with pytest.raises(NonFiniteError,
                       match=r"not finite at global step (1[7-9]|2[0-4]) \(epoch 2.*last good checkpoint, step 16"):
        train_and_evaluate(digits_config(*DIVERGING), tmp_path, say=quiet)
    assert not (tmp_path / "report.json").exists()
    assert Checkpointer(tmp_path / "checkpoints").steps() == [8, 16]
    restored = _restore_latest(digits_config(*DIVERGING), tmp_path)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(restored.params))
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [0, 1] and all(np.isfinite(r["train_loss"]) for r in log)


def test_the_command_exits_nonzero_on_divergence(tmp_path, capsys):
    argv = [f"--workdir={tmp_path}", *SMOKE_ARGS] + [f"--config.{k}={v}" for k, v in DIVERGING]
    assert train_main.main(argv) == EXIT_USER_ERROR
    assert "training diverged" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def _restore_latest(config, workdir: pathlib.Path):
    data = datasets.get("digits").load(config.dataset)
    trainer = build(config, DataSpec(data.class_counts, data.image_shape, data.normalization, steps_per_epoch=8))
    return Checkpointer(workdir / "checkpoints").restore(trainer.init_state(), schema.fingerprint(config), say=quiet)


# --- damaged checkpoints ------------------------------------------------------------------------------------------


def _checkpointed_config(*overrides):
    # ResNet-8's arrays fill the checkpoint's largest data file, so damage to that file lands in array data (ResNet-2's
    # few kB may share it with other records).
    return digits_config(("num_epochs", "2"), *overrides, model=DATASET_MODEL)


@pytest.fixture(scope="module")
def finished_run(trained_once) -> tuple[pathlib.Path, dict]:
    """A finished 2-epoch run, checkpoints at steps 8 and 16; tests damage or resume copies of it."""
    workdir = trained_once("finished", lambda path: train_and_evaluate(_checkpointed_config(), path, say=quiet))
    return workdir, json.loads((workdir / "report.json").read_text())


def _trained_workdir(finished_run, tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict]:
    source, report = finished_run
    return shutil.copytree(source, tmp_path / "run"), report


def _largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
    files_ = [
        path for path in (step_dir / "state").rglob("*") if path.is_file() and "metadata" not in path.name.lower()
    ]
    return max(files_, key=lambda path: path.stat().st_size)


def _resume(workdir: pathlib.Path) -> tuple[dict, list[str]]:
    said = []
    report = train_and_evaluate(_checkpointed_config(), workdir, say=said.append)
    return report, said


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_checkpoint_is_named_moved_aside_and_the_previous_one_resumes(finished_run, tmp_path, damage, capfd):
    workdir, _ = _trained_workdir(finished_run, tmp_path)
    finished = (workdir / "report.json").read_text()
    target = _largest_array_file(workdir / "checkpoints" / "16")
    data = bytearray(target.read_bytes())
    if damage == "flip":
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(bytes(data[: len(data) // 3]))
    else:
        target.unlink()
    capfd.readouterr()
    _, said = _resume(workdir)  # epoch 1 is trained again from step 8
    assert any("checkpoint step 16 is damaged" in line for line in said), said
    assert any("resuming from checkpoint step 8" in line for line in said), said
    assert (workdir / "checkpoints" / "16.damaged").is_dir()  # kept for inspection
    assert (workdir / "report.json").read_text() == finished
    err = capfd.readouterr().err
    assert "orbax" not in err.lower() and len(err.splitlines()) < 5, err  # no orbax log noise on the terminal


def test_with_every_checkpoint_damaged_the_run_stops_naming_them(finished_run, tmp_path):
    workdir, _ = _trained_workdir(finished_run, tmp_path)
    for step in (8, 16):
        _largest_array_file(workdir / "checkpoints" / str(step)).write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match=r"no good checkpoint .*steps \[16, 8\] are damaged"):
        _resume(workdir)


def test_digest_covers_every_array():
    state = {"a": np.arange(4.0), "b": {"c": np.zeros((2, 2), np.int32)}}
    changed = {"a": np.arange(4.0), "b": {"c": np.array([[0, 0], [0, 1]], np.int32)}}
    assert state_digest(state) == state_digest(jax.tree.map(np.copy, state))
    assert state_digest(state) != state_digest(changed)


# --- provenance, naming, config changes, the lock, the log ---------------------------------------------------


def test_the_workdir_records_what_produced_the_run(finished_run):
    workdir, report = finished_run
    config = json.loads((workdir / "config.json").read_text())
    assert config["loss"] == {"name": "ce", "label_smoothing": 0.0} and config["num_epochs"] == 2
    for split in ("train", "validation", "test"):
        manifest = SplitManifest.load(workdir / "manifests" / f"{split}.json")  # verifies its SHA-256
        assert manifest.split == split and manifest.dataset == "digits"
    assert SplitManifest.load(workdir / "manifests" / "train.json").class_counts.tolist() == report[
        "train_class_counts"]
    session = json.loads((workdir / "provenance.json").read_text())["sessions"][0]
    assert session["devices"]["count"] == len(jax.local_devices()) and session["devices"]["kind"]
    assert session["versions"]["jax"] == jax.__version__ and session["command"]
    assert json.loads((workdir / "plan.json").read_text())["members"][0]["method"] == "ce"
    assert report["class_names"] == [str(d) for d in range(10)]


def test_default_workdirs_differ_by_method_dataset_factor_and_seed():
    names = {default_name(digits_config(*overrides)) for overrides in [
        (), (("loss.name", "la"),), (("dataset.imbalance_factor", "5"),), (("seed", "1"),), (("loss.name", "la"),)]}
    assert len(names) == 4
    assert default_name(digits_config(("loss.name", "la"))).startswith("la-digits-if10-seed0-")
    # Keys that do not change the result keep the name: a run resumes into its folder.
    assert default_name(digits_config(("progress_bar", "true"))) == default_name(digits_config())


def test_resuming_with_another_config_is_an_error_showing_the_difference(finished_run, tmp_path):
    workdir, _ = _trained_workdir(finished_run, tmp_path)
    changed = _checkpointed_config(("optimizer.learning_rate", "0.05"))
    with pytest.raises(ConfigError, match=r"(?s)another config.*optimizer\.learning_rate: 0\.1 -> 0\.05"):
        train_and_evaluate(changed, workdir, say=quiet)


def test_a_run_made_before_a_key_existed_is_the_same_run_after_it(finished_run, tmp_path):
    """`schema.ADDED_KEYS`: a workdir whose config.json lacks a later key (as one written by release 0.1.0 lacks
    `model.pretrained`) resumes to its report, with the same fingerprint; the key set to another value is a change."""
    from ltjax.configs import schema

    workdir, report = _trained_workdir(finished_run, tmp_path)
    recorded = json.loads((workdir / "config.json").read_text())
    for (section, key), default in schema.ADDED_KEYS.items():
        assert recorded.get(section, {}).get(key, default) == default
        recorded.get(section, {}).pop(key, None)
    (workdir / "config.json").write_text(json.dumps(recorded, indent=1, sort_keys=True))
    config = _checkpointed_config()
    older = ml_collections.ConfigDict(recorded)
    assert schema.fingerprint(older) == schema.fingerprint(config)
    assert train_and_evaluate(config, workdir, say=quiet)["per_class_accuracy"] == report["per_class_accuracy"]
    with pytest.raises(ConfigError, match=r"model\.pretrained: '<absent>' -> 'resnet18.pth'"):
        train_and_evaluate(_checkpointed_config(("model.pretrained", "resnet18.pth")), workdir, say=quiet)


def test_a_second_run_is_kept_out_of_a_busy_workdir(tmp_path):
    with workdir_locked_elsewhere(tmp_path):
        with pytest.raises(WorkdirBusyError, match="is in use by pid test"):
            with Workdir(tmp_path).lock():
                pass
    with Workdir(tmp_path).lock():  # released when the holder dies
        pass


def test_a_resumed_run_logs_each_epoch_exactly_once(tmp_path):
    config = digits_config(("num_epochs", "3"), ("checkpoint_every_steps", "3"))
    assert train_and_evaluate(config, tmp_path, max_steps=17, say=quiet) is None  # stops mid-epoch 2
    # As if killed after writing epoch 2's line but before its checkpoint: a stale line beyond the resume point.
    with (tmp_path / "log.jsonl").open("a") as log:
        log.write(json.dumps({"epoch": 2, "train_loss": -1.0}) + "\n")
    train_and_evaluate(config, tmp_path, say=quiet)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]


def _arguments(workdir: pathlib.Path) -> list[str]:
    # D-FFDS from epoch 1: the run carries method state (DynaSmooth's sums and group means) across the kill.
    return [f"--workdir={workdir}", "--config.loss.name=ffds", "--config.loss.ffds_start=1", "--config.num_epochs=3",
            "--config.checkpoint_every_steps=2", *SMOKE_ARGS]


@pytest.fixture(scope="module")
def straight_cli_run(trained_once) -> pathlib.Path:
    """The workdir of `_arguments`' run, never stopped: what a stopped and resumed run must give."""
    return trained_once("ffds-cli-straight", lambda workdir: train_main.main(_arguments(workdir)))


def _start_and_wait_for_step_10(workdir: pathlib.Path, **streams) -> subprocess.Popen:
    """The command of `_arguments(workdir)` in a process of its own, once it has checkpointed step 10 (mid-epoch 1;
    digits: 8 steps per epoch)."""
    process = subprocess.Popen([sys.executable, "-m", "ltjax", *_arguments(workdir)], **streams)
    deadline = time.monotonic() + 300
    while not (workdir / "checkpoints" / "10").is_dir():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run ended, or ran 300 s, before its checkpoint of step 10")
        time.sleep(0.05)
    return process


def test_killed_cli_run_resumes_to_the_uninterrupted_result(straight_cli_run, tmp_path):
    """SIGKILL the real command mid-epoch, rerun it, compare with a run never killed; the kill lands in D-FFDS's
    collecting epoch, so its state must come back from the checkpoint too. Only the killed run needs a process of its
    own; the others run the same command's `main` here."""
    killed = tmp_path / "killed"
    process = _start_and_wait_for_step_10(killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "report.json").exists()
    assert train_main.main(_arguments(killed)) == 0
    assert (killed / "report.json").read_text() == (straight_cli_run / "report.json").read_text()
    assert len((killed / "log.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_command_with_a_checkpoint_and_the_rerun_resumes_exactly(signal_number, straight_cli_run,
                                                                                      tmp_path):
    """A scheduler's SIGTERM (preemption) or a Ctrl-C: one line, a distinct exit code, a checkpoint at the step the
    run stopped after, and no traceback; the rerun ends as the run never stopped."""
    stopped = tmp_path / "stopped"
    process = _start_and_wait_for_step_10(stopped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.send_signal(signal_number)
    try:
        _, errors = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == multihost.EXIT_INTERRUPTED, errors
    assert "Traceback" not in errors
    line = errors.strip().splitlines()[-1]
    epoch, step = map(int, line.removeprefix("ltjax-train: interrupted at epoch ").split(";")[0].split(" step "))
    assert line.endswith("; checkpoint saved; run the same command to resume")
    assert (stopped / "checkpoints" / str(8 * epoch + step)).is_dir() and 8 * epoch + step > 10
    assert not (stopped / "report.json").exists()
    assert train_main.main(_arguments(stopped)) == 0
    assert (stopped / "report.json").read_text() == (straight_cli_run / "report.json").read_text()
    assert len((stopped / "log.jsonl").read_text().splitlines()) == 3


def test_a_stop_at_the_last_step_of_an_epoch_ends_that_epoch_first(tmp_path):
    """A stop (max_steps, or a signal) after an epoch's last step checkpoints the finished epoch (its method hook,
    validation and log line done), so the rerun begins the next epoch and ends as the run never stopped."""
    config = digits_config(("num_epochs", "3"), ("loss.name", "ffds"), ("loss.ffds_start", "1"))
    straight = train_and_evaluate(config, tmp_path / "straight", say=quiet)
    assert train_and_evaluate(config, tmp_path / "stopped", max_steps=16, say=quiet) is None  # the end of epoch 1
    assert len((tmp_path / "stopped" / "log.jsonl").read_text().splitlines()) == 2
    assert train_and_evaluate(config, tmp_path / "stopped", say=quiet) == straight
    assert [json.loads(line)["epoch"] for line in (tmp_path / "stopped" / "log.jsonl").read_text().splitlines()] == [
        0, 1, 2]


# --- data faults surface before the first step, naming the file ---------------------------------------------------


@pytest.fixture
def small_tiny_imagenet(tmp_path, monkeypatch):
    """A Tiny ImageNet folder in the official layout, 3 classes x 10 generated 64x64 JPEGs, 6 test images."""
    from PIL import Image

    from ltjax.data import tiny_imagenet

    monkeypatch.setattr(tiny_imagenet, "NUM_CLASSES", 3)
    monkeypatch.setattr(tiny_imagenet, "IMAGES_PER_CLASS", 10)
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02", "n03"]
    rng = np.random.default_rng(0)

    def image(path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, format="JPEG")

    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        for k in range(10):
            image(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG")
    annotations = []
    for k in range(6):
        image(root / "val" / "images" / f"val_{k}.JPEG")
        annotations.append(f"val_{k}.JPEG\t{wnids[k % 3]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root


def _tiny_config(root: pathlib.Path, cache: pathlib.Path):
    return digits_config(("dataset.name", "tiny_imagenet"), ("dataset.data_dir", str(root)),
                         ("dataset.imbalance_factor", "2"), ("dataset.validation_per_class", "0"),
                         ("data_cache_dir", str(cache)), ("batch_size", "8"),
                         ("eval_batch_size", "8"), ("num_epochs", "1"))


@pytest.mark.parametrize("fault, message", [
    ("corrupt", r"val_4\.JPEG: cannot decode"),
    ("wrong size", r"val_4\.JPEG: is 48x64x3, expected 64x64x3"),
])
def test_a_bad_test_image_is_found_before_training_and_named(small_tiny_imagenet, tmp_path, fault, message):
    from PIL import Image

    from ltjax.data import DataError

    bad = small_tiny_imagenet / "val" / "images" / "val_4.JPEG"
    if fault == "corrupt":
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(bad, format="JPEG")
    workdir = tmp_path / "run"
    started = time.monotonic()
    with pytest.raises(DataError, match=message):
        train_and_evaluate(_tiny_config(small_tiny_imagenet, tmp_path / "cache"), workdir, say=quiet)
    assert time.monotonic() - started < 60
    assert not (workdir / "checkpoints").exists()  # nothing was trained


def test_cifar_without_a_data_dir_looks_where_tfds_does(tmp_path):
    empty = tmp_path / "tfds"
    result = subprocess.run(
        [sys.executable, "-m", "ltjax", "--plan", "--config.dataset.name=cifar10"],
        env={**__import__("os").environ, "TFDS_DATA_DIR": str(empty)}, cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == EXIT_USER_ERROR
    assert f"cifar10 is not prepared in {empty}/cifar10" in result.stderr and "tfds build cifar10" in result.stderr
    assert "tfds's default, as no data_dir was given" in result.stderr


# --- a user's mistake is one message and exit code 2 -------------------------------------------------------------

BAD_CONFIG_FILES = {
    "syntax.py": ("import ml_collections\n\ndef get_config(:\n    pass\n", "syntax.py, line 3 fails as it runs: "
                  "SyntaxError"),
    "name.py": ("x = 1\ny = undefined_name\n", "name.py, line 2 fails as it runs: NameError"),
    "raises.py": ("def get_config():\n    raise RuntimeError('no such recipe')\n",
                  "raises.py, line 2 fails as it runs: RuntimeError: no such recipe"),
}


@pytest.mark.parametrize("arguments, message", [
    (["--config", "README.md"], "README.md is not a Python file: a config (or table spec) is a .py file"),
    (["--config", "missing.py"], "file missing.py does not exist"),
    (["--config.seed=-1"], "config.seed must be between 0 and 2147483647, got -1"),
    (["--config.num_devices=-1"], "config.num_devices must be >= 0, got -1"),
    (["--config.batch_size=1000"], "fewer than the global batch of 1000: lower the batch size (batch_size <= 486)"),
    (["--config.dataset.imbalance_factor=1000"], "no images (n_max / IF = 0.12 < 1); use a smaller imbalance factor "
                                                 "(dataset.imbalance_factor <= 120)"),
    (["--config.loss.gama=2"], "unknown config key loss.gama; did you mean 'gamma'?"),
], ids=["not-python", "missing", "seed", "num-devices", "batch", "imbalance", "key"])
def test_a_users_mistake_is_one_line_and_exit_code_2(arguments, message, capsys, monkeypatch):
    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])
    if "--config.loss.gama=2" in arguments:
        arguments = ["--config.loss.name=focal", *arguments]
    assert train_main.main([*arguments, "--plan"]) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert error.startswith("ltjax-train: error: ") and message in error and len(error.strip().splitlines()) == 1, \
        error


@pytest.mark.parametrize("name", sorted(BAD_CONFIG_FILES))
def test_a_config_file_that_fails_is_named_with_its_line(name, tmp_path, capsys, monkeypatch):
    source, message = BAD_CONFIG_FILES[name]
    (tmp_path / name).write_text(source)
    monkeypatch.chdir(tmp_path)
    assert train_main.main(["--config", name, "--plan"]) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error, error


def test_debug_shows_the_traceback_behind_a_message(capsys, monkeypatch):
    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])
    assert train_main.main(["--config", "README.md", "--plan", "--debug"]) == EXIT_USER_ERROR
    with_flag = capsys.readouterr().err
    monkeypatch.setenv("LTJAX_DEBUG", "1")
    assert train_main.main(["--config", "README.md", "--plan"]) == EXIT_USER_ERROR
    with_variable = capsys.readouterr().err
    for error in (with_flag, with_variable):
        assert "Traceback" in error and "ConfigError" in error
        assert error.strip().splitlines()[-1].startswith("ltjax-train: error: README.md is not a Python file")


def test_a_bug_keeps_its_traceback():
    """What no rule describes as the user's is ltjax's: it propagates (Python prints it and exits 1)."""
    def broken(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        commands.run("ltjax-test", broken, [])


def test_every_command_reports_a_users_mistake_alike(tmp_path, capsys):
    from ltjax.methods import listing
    from ltjax.tables import main as table_main
    from ltjax.train import eval_main

    for program, main, arguments, message in [
        ("ltjax-eval", eval_main.main, ["--workdir", str(tmp_path)], "is not a run's workdir"),
        ("ltjax-table", table_main.main, [str(tmp_path / "nope.py")], "nope.py does not exist"),
        ("ltjax-methods", listing.main, ["fdds"], "did you mean 'ffds'"),
    ]:
        assert main(arguments) == EXIT_USER_ERROR, program
        error = capsys.readouterr().err
        assert error.startswith(f"{program}: error: ") and message in error and "Traceback" not in error, error


def test_a_corrupt_image_through_the_command_is_one_message(small_tiny_imagenet, tmp_path, capsys):
    bad = small_tiny_imagenet / "val" / "images" / "val_4.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    arguments = [f"--workdir={tmp_path / 'run'}", "--config.dataset.name=tiny_imagenet",
                 f"--config.dataset.data_dir={small_tiny_imagenet}", "--config.dataset.imbalance_factor=2",
                 "--config.dataset.validation_per_class=0", f"--config.data_cache_dir={tmp_path / 'cache'}",
                 "--config.batch_size=8", "--config.eval_batch_size=8", "--config.num_epochs=1", *SMOKE_ARGS]
    assert train_main.main(arguments) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert error.startswith("ltjax-train: error: ") and "val_4.JPEG: cannot decode" in error
    assert "Traceback" not in error


# --- a disk that is full or read-only ------------------------------------------------------------------------------

OWN_FILE_SYSTEM = 'mkdir -p "$1" && mount -t tmpfs -o "$2" none "$1" && shift 2 && exec "$@"'


@pytest.fixture(scope="module")
def own_file_system():
    """`run(folder, mount_options, command) -> CompletedProcess`: the command in a private mount namespace where
    `folder` is a fresh tmpfs mounted with `mount_options` (`size=600k`, `ro`): a real full or read-only file system,
    made without privileges (a user namespace maps this user to root in it)."""
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine makes no user and mount namespaces: {probe.stderr.decode().strip()}")

    def run(folder: pathlib.Path, options: str, command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", OWN_FILE_SYSTEM, "sh", str(folder),
             options, *command], capture_output=True, text=True, timeout=300)

    return run


def test_a_full_disk_at_a_checkpoint_is_one_message(own_file_system, tmp_path):
    folder = tmp_path / "small"
    result = own_file_system(folder, "size=600k", [
        sys.executable, "-m", "ltjax", f"--workdir={folder / 'run'}", "--config.num_epochs=2", *SMOKE_ARGS[1:]])
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"ltjax-train: error: cannot write checkpoint step 8 in {folder / 'run' / 'checkpoints'}: "
                           "the disk is full"), result.stderr
    assert "Traceback" not in result.stderr


def test_a_read_only_workdir_is_one_message(own_file_system, tmp_path):
    folder = tmp_path / "read-only"
    result = own_file_system(folder, "ro", [sys.executable, "-m", "ltjax", f"--workdir={folder / 'run'}",
                                            *SMOKE_ARGS])
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert result.stderr.strip() == (f"ltjax-train: error: cannot write {folder / 'run'}: the file system is "
                                     "read-only: choose a folder you can write")


FILLING_CACHE = """
import pathlib, shutil, sys, time
import numpy as np
from ltjax.data.cache import write_cache
from ltjax.data.source import ArraySource

folder = pathlib.Path(sys.argv[1])


class FillsTheDisk(ArraySource):
    # Halfway through the build, another writer takes all but 64 KiB of the disk, once the cache's file has its
    # blocks (or after 3 s: a sparse file never gets them).
    def __getitem__(self, index):
        if index == 50:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and sum(
                    path.stat().st_blocks * 512 for path in folder.glob("*.partial-*")) < self.images.nbytes:
                time.sleep(0.01)
            try:
                (folder / "filler").write_bytes(bytes(shutil.disk_usage(folder).free - (64 << 10)))
            except OSError:
                pass
        return super().__getitem__(index)


images = np.random.default_rng(0).integers(0, 256, (100, 64, 64, 3), dtype=np.uint8)
write_cache(FillsTheDisk(images, np.zeros(100, np.int64), 1, ("a",)), folder / "filled.npy", num_workers=1)
assert np.array_equal(np.load(folder / "filled.npy"), images)
try:
    write_cache(ArraySource(images, np.zeros(100, np.int64), 1, ("a",)), folder / "full.npy", num_workers=1)
except OSError as error:
    print(error.strerror)
print(sorted(path.name for path in folder.iterdir()))
"""


def test_a_disk_that_fills_during_the_cache_build_is_no_crash_and_leaves_nothing_half_written(own_file_system,
                                                                                                tmp_path):
    """The cache's room is reserved when its file is made, so a disk that fills after the free-space check cannot
    stop its writes (through a memory map it was SIGBUS, exit 135); a disk already full is one message, and no
    partial file is left."""
    folder = tmp_path / "small"
    result = own_file_system(folder, "size=2m", [sys.executable, "-c", FILLING_CACHE, str(folder)])
    assert result.returncode == 0, result.stderr
    message, files = result.stdout.strip().splitlines()
    assert message.startswith(f"the image cache needs 1 MiB in {folder} and has 0 MiB free: free some space"), message
    assert files == "['filled.npy', 'filled.npy.json', 'filler']"


# --- nothing silently wrong, round 3 -------------------------------------------------------------------------------

def _second_stage(first: pathlib.Path, *overrides: tuple[str, str]):
    return digits_config(("loss.name", "crt"), ("loss.init_from", str(first)), ("dataset.sampler", "class_balanced"),
                         ("num_epochs", "1"), *overrides)


def test_a_second_stage_needs_a_finished_first_stage_or_a_step_named_on_purpose(tmp_path, capsys):
    stopped = tmp_path / "stopped"
    assert train_and_evaluate(digits_config(("num_epochs", "2")), stopped, max_steps=10, say=quiet) is None
    with pytest.raises(ConfigError, match=r"has not finished \(its newest checkpoint is step 10: it was stopped.*"
                                          r"--config\.loss\.init_step=<step> \(its newest: 10\)"):
        train_and_evaluate(_second_stage(stopped), tmp_path / "crt", say=quiet)
    with pytest.raises(CheckpointError, match=r"no checkpoint step 9 in .*; it holds steps \[8, 10\]"):
        train_and_evaluate(_second_stage(stopped, ("loss.init_step", "9")), tmp_path / "crt-9", say=quiet)
    said = []
    assert train_and_evaluate(_second_stage(stopped, ("loss.init_step", "8")), tmp_path / "crt-8", say=said.append)
    assert f"start    from {stopped}, step 8" in said[0]
    assert any(f"starting from the first stage in {stopped} (step 8)" in line for line in said)


def test_a_second_stage_refuses_a_diverged_first_stage_and_values_that_are_not_finite(tmp_path):
    diverged = tmp_path / "diverged"
    with pytest.raises(NonFiniteError):
        train_and_evaluate(digits_config(*DIVERGING), diverged, say=quiet)
    with pytest.raises(ConfigError, match="has not finished"):
        train_and_evaluate(_second_stage(diverged), tmp_path / "crt", say=quiet)
    # A checkpoint that holds NaN, saved and digested as any other (an ensemble keeps a diverged member's values).
    state = _restore_latest(digits_config(*DIVERGING), diverged)
    poisoned = state.replace(step=state.step + 1, params=jax.tree.map(lambda leaf: leaf * np.nan, state.params))
    checkpointer = Checkpointer(diverged / "checkpoints", max_to_keep=5)
    checkpointer.save(poisoned, {"fingerprint": schema.fingerprint(digits_config(*DIVERGING))})
    checkpointer.close()
    with pytest.raises(ConfigError, match=r"at step 17 holds values that are not finite \(in \['params'\]"):
        train_and_evaluate(_second_stage(diverged, ("loss.init_step", "17")), tmp_path / "crt-17", say=quiet)


def test_decays_that_fall_on_one_epoch_are_an_error_naming_them():
    with pytest.raises(ConfigError, match=r"optimizer\.lr_decay\[0\] = \(0\.8, 0\.1\) and optimizer\.lr_decay\[1\] = "
                                          r"\(0\.9, 0\.01\) both start at epoch 2 of this 3-epoch run.*train at least "
                                          r"6 epochs"):
        digits_config(("num_epochs", "3"), ("optimizer.lr_decay", "((0.8, 0.1), (0.9, 0.01))"))
    schedule = learning_rate_schedule(digits_config(("num_epochs", "6"), ("optimizer.warmup", "0"), (
        "optimizer.lr_decay", "((0.8, 0.1), (0.9, 0.01))")).optimizer, 6)
    assert [round(schedule(epoch), 6) for epoch in range(6)] == [0.1, 0.1, 0.1, 0.1, 0.01, 0.001]


def test_counts_are_exact_up_to_2_to_the_53_and_an_error_beyond():
    from ltjax import losses
    from ltjax.stats import ClassStats

    stats = ClassStats.from_counts(np.array([2**31, 5]))  # an int64 vector: JAX would narrow it to int32
    np.testing.assert_allclose(stats.prior, [1.0, 5 / 2**31], rtol=1e-6)
    weights = losses.class_balanced_weights(np.array([2**31, 5]))
    assert np.all(np.asarray(weights) > 0) and weights[0] < weights[1]
    for counts in ([1e40, 1], [2**53 + 2, 1]):
        with pytest.raises(ValueError, match=r"at most 2\^53"):
            ClassStats.from_counts(np.array(counts))
    with pytest.raises(Exception, match=r"at most 2\^53"):
        jax.block_until_ready(jax.jit(losses.class_balanced_weights)(jax.numpy.array([1e30, 1.0])))


def test_a_byte_order_mark_in_a_split_file_is_read_past(tmp_path):
    from ltjax.data.split_files import read_split_file

    path = tmp_path / "split.txt"
    path.write_bytes(b"\xef\xbb\xbftrain/a/1.jpg 0\r\ntrain/b/2.jpg 1\r\n\r\n")
    paths, labels = read_split_file(path)
    assert paths == ("train/a/1.jpg", "train/b/2.jpg") and labels.tolist() == [0, 1]


@pytest.mark.parametrize("variant", ["rel", "normit", "gombit"])
def test_iif_variants_that_need_two_classes_say_so_at_one(variant):
    from ltjax import losses

    with pytest.raises(ValueError, match=rf"IIF variant '{variant}' needs at least 2 classes, got C = 1"):
        losses.iif_weights(np.array([7]), variant=variant)
    assert np.all(np.isfinite(losses.iif_weights(np.array([7, 3]), variant=variant)))


# --- the last partial batch, as the reference scripts train on it -------------------------------------------------

def test_an_epoch_has_the_reference_scripts_step_count(capsys):
    """PyTorch's DataLoader keeps the last partial batch: 486 digits at 64 a batch are 8 steps (7 full, one of 38)."""
    data = datasets.get("digits").load(digits_config().dataset)
    assert len(data.train) == 486
    assert TrainPipeline(data.train, global_batch_size=64).steps_per_epoch() == 8
    assert TrainPipeline(data.train, global_batch_size=64, drop_remainder=True).steps_per_epoch() == 7
    assert train_main.main(["--plan", *SMOKE_ARGS]) == 0
    assert "run      25 epochs x 8 steps of 64" in capsys.readouterr().out


def test_a_padded_partial_step_is_the_step_on_its_real_examples():
    """20 real examples padded to a batch of 64 on 8 devices (whole devices of padding, and one shared) against the
    same 20 as a batch of their own on 4 devices: the same loss, gradients (so parameters), BatchNorm statistics,
    counts and method state, to float rounding. D-FFDS in its FFDS phase has all of these."""
    overrides = (("loss.name", "ffds"), ("loss.ffds_start", "0"), ("batch_size", "64"))
    data = datasets.get("digits").load(digits_config().dataset)
    spec = DataSpec(data.class_counts, data.image_shape, data.normalization, 8, data.crop_padding)
    images, labels = data.train.images[:20], np.asarray(data.train.labels[:20], np.int32)
    padded = build(digits_config(*overrides, model=DATASET_MODEL), spec, devices=jax.devices())
    alone = build(digits_config(*overrides, ("batch_size", "20"), model=DATASET_MODEL), spec, devices=jax.devices()[:4])
    mask = np.arange(64) < 20

    def fill(array):  # as the pipeline pads: copies of the last example
        return np.concatenate([array, np.repeat(array[-1:], 44, axis=0)])

    schedule = padded.epoch_inputs(3)
    results = [
        jax.device_get(padded.train_step(padded.init_state(), fill(images), fill(labels), schedule, mask)),
        jax.device_get(alone.train_step(alone.init_state(), images, labels, alone.epoch_inputs(3))),
    ]
    for got, expected in zip(*(jax.tree.leaves((r.params, r.batch_stats, r.loss_state, r.totals)) for r in results)):
        assert_close_to_scale(got, expected, rtol=2e-5)
    unmasked = jax.device_get(padded.train_step(padded.init_state(), fill(images), fill(labels), schedule))
    assert int(unmasked.totals.class_count.sum()) == 64 and int(results[0].totals.class_count.sum()) == 20
    assert not np.allclose(unmasked.batch_stats["stem_bn"]["mean"], results[0].batch_stats["stem_bn"]["mean"])


# --- like for like with the papers ---------------------------------------------------------------------------------

def test_the_papers_best_epoch_protocol_is_computed_beside_the_final_epoch(tmp_path):
    """The papers' scripts report the best test top-1 over all epochs; ltjax logs the test split every epoch, so a
    table gives that number (labelled optimistic) and the one at the validation-selected epoch beside the final."""
    from ltjax.tables.run import epoch_protocols

    report = train_and_evaluate(digits_config(("num_epochs", "4")), tmp_path, say=quiet)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    tests = [line["test"]["top1_accuracy"] for line in log]
    assert len(tests) == 4 and tests[-1] == report["top1_accuracy"]
    chosen = max(range(4), key=lambda epoch: (log[epoch]["validation"]["top1_accuracy"], -epoch))
    assert epoch_protocols(tmp_path / "log.jsonl") == {
        "best_epoch_top1_accuracy": 100 * max(tests), "validation_selected_top1_accuracy": 100 * tests[chosen]}


def test_the_iif_recipe_states_every_difference_from_its_authors():
    from ltjax.configs import files

    module = files.load_module("experiments/configs/iif.py")
    for difference in ("weight decay", "400 epochs", "warm-up", "SE-ResNet-32", "mixup", "AutoAugment", "Cutout"):
        assert difference in module.__doc__, difference
