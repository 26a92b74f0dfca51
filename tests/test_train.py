"""Training: data-parallel step agreement, one program across phases, exact resume, checkpoint errors, and every
experiment config family end to end on the embedded digits."""
import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ltjax.configs import digits
from ltjax.data.augment import Normalization
from ltjax.models import create_model
from ltjax.stats import ClassStats
from ltjax.train import objective as objectives
from ltjax.train.checkpoint import CheckpointError
from ltjax.train.loop import train_and_evaluate
from ltjax.train.optim import learning_rate_schedule, make_optimizer
from ltjax.train.state import create_train_state
from ltjax.train.step import AXIS, data_parallel, make_train_step

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
NORMALIZATION = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _step_setup(loss: dict, head: str = "linear"):
    stats = ClassStats.from_counts(np.array([40, 20, 10, 5]), num_groups=2)
    model = create_model("resnet8", 4, head=head)
    optimizer = make_optimizer(ml_collections.ConfigDict({"learning_rate": 0.1, "warmup_epochs": 2}), 10)
    loss_config = ml_collections.ConfigDict(loss)
    state = create_train_state(
        model, optimizer, objectives.init_loss_params(loss_config, 4, 0), objectives.init_loss_state(stats),
        (8, 8, 3), seed=0,
    )
    phase = (lambda epoch: epoch >= 0) if loss["name"] == "ffds" else None
    step = make_train_step(model.clone(batch_norm_axis_name=AXIS), optimizer,
                           objectives.make_objective(loss_config, stats, 10), NORMALIZATION, 4, phase)
    rng = np.random.default_rng(0)
    batch = (rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), rng.integers(0, 4, 16).astype(np.int32))
    return state, step, batch


def _max_difference(a, b) -> float:
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))), a, b)))


@pytest.mark.parametrize(
    "loss, head",
    [({"name": "ldam_drw", "drw_epoch": 0}, "normed"), ({"name": "ffds", "trigger_epoch": 0}, "linear")],
)
def test_one_device_eight_device_shard_map_and_pmap_steps_agree(loss, head):
    """Synchronised BatchNorm, pmean'd gradients and a global weighted-mean normaliser make D devices one."""
    state, step, (images, labels) = _step_setup(loss, head)
    results = {}
    for mode, devices in [("shard_map", jax.devices()[:1]), ("shard_map", jax.devices()), ("pmap", jax.devices())]:
        assert len(devices) in (1, 8)
        run = data_parallel(step, mode, devices, sharded_args=(False, True, True, False), sharded_outputs=(False, False))
        results[(mode, len(devices))] = run(state, images, labels, jnp.int32(3))
    reference_state, reference_metrics = results[("shard_map", 1)]
    for key, (new_state, step_metrics) in results.items():
        assert _max_difference(reference_state.params, new_state.params) < 1e-5, key
        assert _max_difference(reference_state.batch_stats, new_state.batch_stats) < 1e-5, key
        assert _max_difference(reference_state.loss_state, new_state.loss_state) < 1e-6, key
        np.testing.assert_allclose(step_metrics["loss"], reference_metrics["loss"], rtol=1e-6)
        assert int(step_metrics["class_count"].sum()) == 16
    assert _max_difference(reference_state.params, state.params) > 1e-3  # the step did update the parameters


def test_train_step_compiles_once_across_deferred_phases():
    state, step, (images, labels) = _step_setup({"name": "ib", "start_epoch": 2})
    counted = chex.assert_max_traces(step, n=1)
    run = data_parallel(counted, "shard_map", jax.devices(), sharded_args=(False, True, True, False),
                        sharded_outputs=(False, False))
    losses_by_epoch = []
    for epoch in (0, 1, 2, 3):  # CE for epochs 0-1, influence-balanced from 2
        state, step_metrics = run(state, images, labels, jnp.int32(epoch))
        losses_by_epoch.append(float(step_metrics["loss"]))
    assert losses_by_epoch[2] > 10 * losses_by_epoch[1]  # IB's alpha = 1000 changes the loss scale at the switch


def test_learning_rate_schedule_is_the_reference_recipe():
    schedule = learning_rate_schedule(
        ml_collections.ConfigDict({"learning_rate": 0.1, "warmup_epochs": 5, "lr_decay": ((160, 0.01), (180, 1e-4))}),
        steps_per_epoch=10,
    )
    # 1-indexed epoch e = step // 10 + 1: warm-up 0.1 * e / 5, then x0.01 after 160 and x0.0001 after 180.
    for step, expected in [(0, 0.02), (39, 0.08), (45, 0.1), (1599, 0.1), (1600, 0.001), (1800, 1e-5)]:
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step


def _tiny_config(config: ml_collections.ConfigDict, **changes) -> ml_collections.ConfigDict:
    """A recipe shrunk to the digits: ResNet-8, 2 epochs, every deferred phase switching at epoch 1."""
    config.dataset = digits.get_config().dataset
    config.model.name = "resnet8"
    config.model.small_input = False
    config.num_epochs = 2
    config.batch_size = 64
    config.eval_batch_size = 256
    config.progress_bar = False
    config.optimizer.warmup_epochs = 1
    config.optimizer.lr_decay = ((1, 0.1),)
    loss = config.loss
    for key in ("drw_epoch", "start_epoch", "ga_epoch", "trigger_epoch"):
        if key in loss:
            loss[key] = 1
    if "active_epochs" in loss:
        loss.active_epochs = 1
        loss.window_size = 3
    for key, value in changes.items():
        config[key] = value
    return config


def _load_recipe(name: str, argument: str = "cifar10-if100") -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(argument)


RECIPES = sorted(path.stem for path in CONFIGS.glob("*.py"))


@pytest.mark.parametrize("recipe", RECIPES + ["dyswrm"])
def test_every_config_family_trains_end_to_end(recipe, tmp_path):
    config = _load_recipe("swrm" if recipe == "dyswrm" else recipe)
    if recipe == "dyswrm":
        config.loss.name = "dyswrm"
    report = train_and_evaluate(_tiny_config(config), tmp_path)
    assert set(report) >= {"top1_accuracy", "many_shot_accuracy", "few_shot_accuracy", "macro_f1", "confusion"}
    assert 0.0 <= report["top1_accuracy"] <= 1.0 and np.isfinite(report["top1_accuracy"])
    assert np.asarray(report["confusion"]).sum() == 300  # the balanced digits test split, every example once
    for name in ("report.json", "log.jsonl", "curves.png", "confusion.png", "class_distribution.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path):
    config = _tiny_config(_load_recipe("ffds"), checkpoint_every_steps=3)
    config.num_epochs = 3
    uninterrupted_dir, interrupted_dir = tmp_path / "straight", tmp_path / "interrupted"
    train_and_evaluate(config, uninterrupted_dir)
    # Stop mid-epoch (7 steps per epoch), after a mid-epoch checkpoint, then resume twice more.
    assert train_and_evaluate(config, interrupted_dir, max_steps=10) is None
    assert train_and_evaluate(config, interrupted_dir, max_steps=17) is None
    report = train_and_evaluate(config, interrupted_dir)
    straight = (uninterrupted_dir / "report.json").read_text()
    assert report is not None and (interrupted_dir / "report.json").read_text() == straight

    from ltjax.train.checkpoint import Checkpointer

    restored = [Checkpointer(d / "checkpoints").latest_step() for d in (uninterrupted_dir, interrupted_dir)]
    assert restored[0] == restored[1] == 21


def test_corrupt_or_mismatched_checkpoint_is_a_clear_error(tmp_path):
    config = _tiny_config(_load_recipe("ce"))
    config.num_epochs = 1
    train_and_evaluate(config, tmp_path)
    changed = _tiny_config(_load_recipe("ce"))
    changed.num_epochs = 1
    changed.optimizer.learning_rate = 0.05
    with pytest.raises(CheckpointError, match="different config"):
        train_and_evaluate(changed, tmp_path)
    step_dir = next((tmp_path / "checkpoints").glob("[0-9]*"))
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
            path.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match=f"checkpoint {step_dir} cannot be restored"):
        train_and_evaluate(config, tmp_path)


def test_batch_size_must_divide_by_the_device_count(tmp_path):
    config = _tiny_config(_load_recipe("ce"), batch_size=60)
    with pytest.raises(ValueError, match="global batch size 60 must divide by the number of devices 8"):
        train_and_evaluate(config, tmp_path)


def _cli(workdir: pathlib.Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "ltjax", f"--workdir={workdir}", "--config.num_epochs=3",
            "--config.checkpoint_every_steps=2", "--config.progress_bar=False"]


def test_killed_cli_run_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL the real command mid-epoch (digits: 7 steps per epoch), rerun it, compare with a run never killed."""
    import signal
    import subprocess
    import time

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_cli(straight), check=True, capture_output=True, timeout=600)
    process = subprocess.Popen(_cli(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "10").is_dir():  # step 10 is mid-epoch 1
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "report.json").exists()
    subprocess.run(_cli(killed), check=True, capture_output=True, timeout=600)
    assert (killed / "report.json").read_text() == (straight / "report.json").read_text()


def test_bfloat16_compute_trains_with_float32_parameters():
    stats = ClassStats.from_counts(np.array([40, 20, 10, 5]))
    model = create_model("resnet8", 4, dtype=jnp.bfloat16)
    optimizer = make_optimizer(ml_collections.ConfigDict({"learning_rate": 0.1}), 10)
    loss_config = ml_collections.ConfigDict({"name": "ce"})
    state = create_train_state(model, optimizer, {}, objectives.init_loss_state(stats), (8, 8, 3), seed=0)
    step = data_parallel(
        make_train_step(model.clone(batch_norm_axis_name=AXIS), optimizer,
                        objectives.make_objective(loss_config, stats, 10), NORMALIZATION, 4, None),
        "shard_map", jax.devices(), sharded_args=(False, True, True, False), sharded_outputs=(False, False),
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    new_state, step_metrics = step(state, images, rng.integers(0, 4, 16).astype(np.int32), jnp.int32(0))
    assert np.isfinite(step_metrics["loss"])
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_state.params))
    assert _max_difference(new_state.params, state.params) > 0


def test_training_accuracy_uses_the_loss_prediction_rule():
    """The train step counts correct predictions with the same `predict_logits` as evaluation (IIF: z * iif)."""
    state, _, (images, labels) = _step_setup({"name": "ce"})
    stats = ClassStats.from_counts(np.array([40, 20, 10, 5]), num_groups=2)
    model = create_model("resnet8", 4)
    optimizer = make_optimizer(ml_collections.ConfigDict({"learning_rate": 0.1}), 10)
    always_class_zero = lambda outputs: jnp.zeros_like(outputs.logits).at[:, 0].set(1.0)  # noqa: E731
    step = make_train_step(model.clone(batch_norm_axis_name=AXIS), optimizer,
                           objectives.make_objective(ml_collections.ConfigDict({"name": "ce"}), stats, 10),
                           NORMALIZATION, 4, None, predict_logits=always_class_zero)
    run = data_parallel(step, "shard_map", jax.devices(), sharded_args=(False, True, True, False),
                        sharded_outputs=(False, False))
    _, step_metrics = run(state, images, labels, jnp.int32(0))
    expected = np.zeros(4, int)
    expected[0] = int(np.sum(labels == 0))
    np.testing.assert_array_equal(step_metrics["class_correct"], expected)
