"""Methods: every method's phases in the compiled step, every method from the command line, every key of every
method overridable, unknown keys with a suggestion, and no method named in the loop or the step."""
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from runs import SMOKE_ARGS, digits_config

from ltjax import losses, methods
from ltjax.commands import EXIT_USER_ERROR
from ltjax.configs import files, schema
from ltjax.data.augment import Normalization
from ltjax.keys import ConfigError
from ltjax.methods import listing
from ltjax.train import main as train_main
from ltjax.train.build import DataSpec, build

NORMALIZATION = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
COUNTS = np.array([40, 20, 10, 5])
NUM_EPOCHS = 4
# The deferred methods: several phases, the first plain cross-entropy (read from the registry).
FIRST_PHASE_IS_CE = tuple(name for name, method in methods.METHODS.items()
                          if len(method.phases) > 1 and method.phases[0].loss is methods.cross_entropy)


def _config(name: str, *overrides):
    return digits_config(("loss.name", name), ("num_epochs", str(NUM_EPOCHS)), *overrides)


def _first_phase_loss(name: str, outputs, labels) -> jax.Array:
    """The reference loss of a method's first phase, from `ltjax.losses` directly."""
    logits = outputs.logits
    if name in FIRST_PHASE_IS_CE:
        return losses.softmax_cross_entropy(logits, labels)
    if name == "ride":  # the experts' cosines, scaled
        return losses.ride_loss(30.0 * outputs.branches, labels, class_counts=COUNTS)
    if name == "ldam_drw":
        return losses.ldam_loss(logits, labels, class_counts=COUNTS)
    if name == "kps":
        return losses.kps_loss(logits, labels, class_counts=COUNTS)
    raise AssertionError(f"{name}'s first phase ({methods.get(name).phases[0].name}) is not cross-entropy: add its "
                         "reference loss, computed from ltjax.losses directly, to _first_phase_loss")


TWO_PHASE = [name for name, method in methods.METHODS.items() if len(method.phases) > 1]


@pytest.mark.parametrize("name", TWO_PHASE)
def test_compiled_objective_equals_the_first_phase_before_the_switch_and_differs_after(name):
    """The built program's loss, epoch by epoch over a 4-epoch run, with the method's state carried as the loop does
    (in-step collection, epoch end, phase-entry hook)."""
    trainer = build(_config(name), DataSpec(COUNTS, (8, 8, 3), NORMALIZATION, steps_per_epoch=5))
    objective = trainer.objective
    state = trainer.init_state()
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 4, 32), jnp.int32)
    outputs = trainer.model.apply({"params": state.params["model"], "batch_stats": state.batch_stats},
                                  (images / 255.0 - 0.5) / 0.25, train=False)
    loss_at = jax.jit(lambda phase, loss_state: objective.loss(outputs, labels, phase, loss_state,
                                                               state.params["loss"])[0])
    first_phase = float(jnp.sum(_first_phase_loss(name, outputs, labels)))
    start = objective.phase_starts[1]
    hooks = methods.Hooks(lambda: rng.standard_normal((4, 16)), seed=0)
    loss_state = state.loss_state
    seen = []
    for epoch in range(NUM_EPOCHS):
        for phase in objective.phases_entered_at(epoch):
            loss_state = phase.enter(loss_state, objective.hp, hooks)
        phase = trainer.epoch_inputs(epoch).phase  # what the loop gives the step for this epoch
        seen.append(float(loss_at(phase, loss_state)))
        loss_state = objective.end_epoch(objective.collect(loss_state, outputs, labels, phase, None))
    assert 0 < start < NUM_EPOCHS
    # FFDS's first epoch collects DynaSmooth's statistics with CE: its own loss begins one epoch later.
    effective = start + (1 if name == "ffds" else 0)
    for epoch, value in enumerate(seen):
        if epoch < effective:
            np.testing.assert_allclose(value, first_phase, rtol=1e-5, err_msg=f"epoch {epoch}")
        else:
            assert abs(value - first_phase) > 1e-3 * abs(first_phase), (epoch, value, first_phase)


@pytest.fixture(scope="module")
def cli_runs(trained_once):
    """The log of `ltjax-train --config.loss.name=<name> --config.num_epochs=4` (in process), run once per method."""

    def train(name: str, workdir, head: str | None) -> None:
        argv = [f"--workdir={workdir}", f"--config.loss.name={name}", f"--config.num_epochs={NUM_EPOCHS}", *SMOKE_ARGS,
                *([f"--config.model.head={head}"] if head else [])]
        method = methods.get(name)
        if method.second_stage:  # a second stage continues a CE run with its head
            first = run("ce", None if method.head == methods.get("ce").head else method.head)
            argv += [f"--config.loss.init_from={first}", "--config.dataset.sampler=class_balanced"]
        assert train_main.main(argv) == 0

    def run(name: str, head: str | None = None):
        return trained_once(f"cli-{name}" + (f"-{head}" if head else ""), lambda workdir: train(name, workdir, head))

    return lambda name: [json.loads(line) for line in (run(name) / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", methods.names())
def test_every_method_runs_from_the_command_line_and_enters_its_phase(name, cli_runs):
    log = cli_runs(name)
    assert [record["epoch"] for record in log] == list(range(NUM_EPOCHS))
    if name not in FIRST_PHASE_IS_CE:
        return  # one-phase methods, and LDAM-DRW and KPS, whose first phase is not CE (checked above in the step)
    ce = cli_runs("ce")
    objective = build(_config(name), DataSpec(COUNTS, (8, 8, 3), NORMALIZATION, 7)).objective
    effective = objective.phase_starts[1] + (1 if name == "ffds" else 0)
    for before in range(effective):
        np.testing.assert_allclose(log[before]["train_loss"], ce[before]["train_loss"], rtol=1e-4)
    for after in range(effective, NUM_EPOCHS):
        assert abs(log[after]["train_loss"] - ce[after]["train_loss"]) > 1e-3 * ce[after]["train_loss"], after


def _changed_value(key: str, spec) -> str:
    """A valid command-line value for `key` that differs from its default."""
    if spec.choices:
        return next(str(choice) for choice in spec.choices if choice != spec.default)
    if isinstance(spec.default, bool):
        return str(not spec.default)
    if spec.kind == "epoch":
        return "0.25" if spec.default != 0.25 else "0.5"
    if isinstance(spec.default, tuple):
        return "(2, 4)"  # group_ends of 4 classes
    if isinstance(spec.default, str):
        return "runs/first-stage"  # init_from
    if isinstance(spec.default, int):
        return str(spec.default + 1) if key != "window_size" else "3"
    return repr(spec.default * 0.5 + 0.125)


def test_every_key_of_every_method_overrides_from_the_command_line():
    for name, method in methods.METHODS.items():
        for key, spec in method.keys.items():
            text = _changed_value(key, spec)
            stage = ((("dataset.sampler", "class_balanced"),) + ((("loss.init_from", "first-stage"),)
                     if key != "init_from" else ())) if method.second_stage else ()
            config = _config(name, (f"loss.{key}", text), *stage)
            value = config.loss[key]
            expected = schema.parse_value(text, spec.default, key)
            assert value == (tuple(expected) if isinstance(expected, tuple) else expected), (name, key)
            assert value != spec.default, (name, key)
            trainer = build(config, DataSpec(COUNTS, (8, 8, 3), NORMALIZATION, 5))
            assert trainer.objective.hp[key] == value, (name, key)


def test_unknown_keys_raise_with_the_nearest_valid_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key loss\.gama; did you mean 'gamma'\?"):
        _config("focal", ("loss.gama", "2"))
    with pytest.raises(ConfigError, match=r"unknown config key optimizer\.learnig_rate; did you mean 'learning_rate'"):
        _config("ce", ("optimizer.learnig_rate", "0.1"))
    with pytest.raises(ConfigError, match=r"unknown method 'ldam'.*did you mean 'ldam_drw'"):
        _config("ldam")
    misspelt = tmp_path / "focal_typo.py"
    misspelt.write_text(
        "from ltjax.configs import digits\n\n\ndef get_config():\n    config = digits.get_config()\n"
        "    config.loss = {'name': 'focal', 'gama': 2.0}\n    return config\n"
    )
    with pytest.raises(ConfigError, match=r"unknown key loss\.gama; did you mean 'gamma'"):
        schema.resolve(files.load_config_file(misspelt))


def test_a_key_the_chosen_method_does_not_read_is_an_error_in_a_file_and_a_warning_when_switched():
    recipe = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs" / "cb_focal.py"
    edited = files.load_config_file(recipe)
    edited.loss.name = "focal"  # the file itself names a method that reads neither beta nor loss_type
    with pytest.raises(ConfigError, match=r"unknown key loss\.(beta|loss_type); valid keys: gamma, name"):
        schema.resolve(edited)
    config, warnings = schema.apply_overrides(files.load_config_file(recipe), [("loss.name", "focal")])
    assert config.loss.gamma == 1.0  # read by both methods: kept
    assert len(warnings) == 1 and "loss.beta=0.9999, loss.loss_type='focal'" in warnings[0]


def test_cli_errors_are_one_line_and_exit_nonzero(capsys):
    assert train_main.main(["--config.loss.name=focal", "--config.loss.gama=2", "--plan"]) == EXIT_USER_ERROR
    assert "did you mean 'gamma'" in capsys.readouterr().err
    assert train_main.main(["--config.loss.name=ffds", "--config.num_epochs=1", "--plan"]) == EXIT_USER_ERROR
    assert "needs 2 epochs" in capsys.readouterr().err


def test_listing_command_shows_methods_and_one_method_keys(capsys):
    assert listing.main([]) == 0
    overview = capsys.readouterr().out
    assert all(re.search(rf"^{name}\s", overview, re.MULTILINE) for name in methods.names())
    assert listing.main(["ffds"]) == 0
    described = capsys.readouterr().out
    for key, spec in methods.get("ffds").keys.items():
        assert re.search(rf"^\s+{key}\s+{re.escape(repr(spec.default))}", described, re.MULTILINE), key
    assert listing.main(["fdds"]) == EXIT_USER_ERROR and "did you mean 'ffds'" in capsys.readouterr().err


def test_the_loop_and_the_step_name_no_method():
    source = pathlib.Path(__file__).resolve().parents[1] / "ltjax" / "train"
    pattern = re.compile(r"\b(" + "|".join(methods.names()) + r"|dynasmooth|schedules)\b", re.IGNORECASE)
    for name in ("loop.py", "step.py"):
        found = pattern.findall((source / name).read_text())
        assert not found, (name, found)


def _per_example_ce(inputs):
    return methods.PerExample(losses.softmax_cross_entropy(inputs.logits, inputs.labels))


def test_hooks_that_cannot_be_called_as_the_step_calls_them_fail_where_the_method_is_written():
    """The step calls `collect(state, inputs=..., axis_name=...)` by keyword: other names fail at definition."""
    with pytest.raises(ValueError, match=r"cannot be called as Collect\(state, \*, inputs, axis_name\)"):
        methods.Phase("P", _per_example_ce, collect=lambda state, batch, axis: state)
    with pytest.raises(ValueError, match="cannot be called as PhaseLoss"):
        methods.Phase("P", lambda inputs, hp: inputs)
    with pytest.raises(ValueError, match="cannot be called as Enter"):
        methods.Phase("P", _per_example_ce, enter=lambda state: state)
    with pytest.raises(ValueError, match="method m: .* cannot be called as Predict"):
        methods.Method("m", "", {}, (methods.Phase("P", _per_example_ce),), predict=lambda logits: logits)
    phase = methods.Phase("P", _per_example_ce, collect=lambda state, *, inputs, axis_name: state,
                          enter=lambda state, hp, hooks: state)
    assert methods.Method("m", "", {}, (phase,), predict=lambda logits, hp, stats: logits).phases == (phase,)


def test_a_string_option_not_declared_static_fails_where_its_keys_are_read():
    from ltjax.keys import signature_defaults

    def loss(logits, labels, *, variant: str = "a", gamma: float = 2.0, detach: bool = False):
        return logits

    with pytest.raises(ValueError, match=r"'variant' defaults to 'a', not a number: .* static=\(\.\.\.\)"):
        signature_defaults(loss, {"variant": "which", "gamma": "exponent"})
    with pytest.raises(ValueError, match="'detach' defaults to False, not a number"):
        signature_defaults(loss, {"detach": "stop the gradient"})
    keys = signature_defaults(loss, {"variant": "which", "gamma": "exponent", "detach": "stop"},
                              static=("variant", "detach"))
    assert [keys[name].kind for name in keys] == ["static", "number", "static"]


def test_the_deferred_methods_are_read_from_the_registry():
    assert set(FIRST_PHASE_IS_CE) >= {"ib", "ffds", "swrm", "dyswrm"}
    assert not set(FIRST_PHASE_IS_CE) & {"ce", "ldam_drw", "kps"}


def test_a_network_option_must_be_a_static_key_of_the_method():
    from ltjax.keys import number

    phase = methods.Phase("P", _per_example_ce)
    with pytest.raises(ValueError, match="network option 'scale' must be one of its static keys"):
        methods.Method("m", "", {"scale": number(1.0, "")}, (phase,), network=methods.Network("experts", ("scale",)))
    with pytest.raises(ValueError, match="network option 'num_experts' must be one of its static keys"):
        methods.Method("m", "", {}, (phase,), network=methods.Network("experts", ("num_experts",)))
