"""ltjax-eval: a trained workdir evaluated read-only, post-hoc corrections, choosing their strength on validation."""
import hashlib
import json

import numpy as np
from runs import digits_config

from ltjax import posthoc
from ltjax.commands import EXIT_USER_ERROR
from ltjax.train import eval_main
from ltjax.train.evaluate import load_run, select_on_validation
from ltjax.train.loop import train_and_evaluate, train_ensemble


def config(*overrides):
    """A run for the tests that check wiring; the post-hoc gains are measured on the shared `ce_run` (conftest)."""
    return digits_config(("dataset.imbalance_factor", "100"), *overrides)


def _checkpoint_digest(workdir) -> str:
    digest = hashlib.sha256()
    for path in sorted((workdir / "checkpoints").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(workdir)).encode() + path.read_bytes())
    return digest.hexdigest()


def _eval(workdir, *arguments, name: str) -> dict:
    """`ltjax-eval` into `eval/<name>`; the shared run is evaluated by tests on several workers, each its own name."""
    assert eval_main.main(["--workdir", str(workdir), "--name", name, *arguments]) == 0
    return json.loads((workdir / "eval" / name / "report.json").read_text())


def test_evaluation_reproduces_the_training_report_and_touches_no_training_state(ce_run):
    workdir, trained = ce_run
    before = _checkpoint_digest(workdir), (workdir / "log.jsonl").read_text()
    report = _eval(workdir, name="plain")
    assert report["confusion"] == trained["confusion"] and report["per_class_accuracy"] == trained[
        "per_class_accuracy"]
    assert report["evaluation"]["split"] == "test" and report["evaluation"]["posthoc"] == "none"
    assert (_checkpoint_digest(workdir), (workdir / "log.jsonl").read_text()) == before


def test_posthoc_logit_adjustment_raises_few_shot_accuracy_of_a_ce_run(ce_run):
    workdir, trained = ce_run
    adjusted = _eval(workdir, "--posthoc", "la", "--value", "1.0", name="la")
    assert adjusted["few_shot_accuracy"] > trained["few_shot_accuracy"] + 0.05
    assert adjusted["top1_accuracy"] > trained["top1_accuracy"]


def test_tau_is_chosen_on_validation_and_every_tried_value_is_reported(ce_run):
    workdir, _ = ce_run
    run = load_run(workdir, say=lambda _: None)
    chosen, tried = select_on_validation(run, "tau_norm")
    assert [row["value"] for row in tried] == list(posthoc.CORRECTIONS["tau_norm"].grid)
    assert chosen == max(tried, key=lambda row: row["top1_accuracy"])["value"]
    _eval(workdir, "--posthoc", "tau_norm", "--select-on", "validation", name="tau")
    selection = json.loads((workdir / "eval" / "tau" / "selection.json").read_text())
    assert selection["value"] == chosen and selection["selected_on"] == "validation" and len(selection["tried"]) == 21
    report = json.loads((workdir / "eval" / "tau" / "report.json").read_text())
    assert report["evaluation"]["value"] == chosen


def test_tau_zero_normalisation_is_the_bias_free_linear_head(ce_run):
    workdir, _ = ce_run
    run = load_run(workdir, say=lambda _: None)
    from ltjax.train.evaluate import corrected_logits, split_outputs

    outputs = split_outputs(run.trainer, run.state, run.data.test)
    head = run.state.params["model"]["head"]
    untouched = corrected_logits(run, outputs, "tau_norm", 0.0)
    np.testing.assert_allclose(untouched, outputs.logits - np.asarray(head["bias"]), rtol=1e-4,
                               atol=1e-4 * np.abs(outputs.logits).max())
    np.testing.assert_array_equal(corrected_logits(run, outputs, "la", 0.0), outputs.logits)


def test_another_split_and_errors(ce_run, capsys):
    workdir, _ = ce_run
    validation = _eval(workdir, "--split", "validation", name="validation")
    assert validation["num_examples"] == 100  # 10 held-out images per digit
    other = _eval(workdir, "--config.dataset.imbalance_factor=10", name="if10")
    assert other["num_examples"] == 300
    assert eval_main.main(["--workdir", str(workdir), "--config.loss.name=la"]) == EXIT_USER_ERROR
    assert "only --config.dataset" in capsys.readouterr().err
    assert eval_main.main(["--workdir", str(workdir / "nothing")]) == EXIT_USER_ERROR
    assert "not a run's workdir" in capsys.readouterr().err


def test_selection_needs_a_validation_split(tmp_path, capsys):
    unsplit = config(("dataset.validation_per_class", "0"), ("num_epochs", "1"))
    train_and_evaluate(unsplit, tmp_path, say=lambda _: None)
    assert eval_main.main(["--workdir", str(tmp_path), "--posthoc", "la", "--select-on",
                           "validation"]) == EXIT_USER_ERROR
    assert "the test split is never used for selection" in capsys.readouterr().err


def test_a_member_of_an_ensemble_is_evaluated_as_its_own_run(tmp_path, capsys):
    members = [config(("num_epochs", "2"), ("seed", "0")),
               config(("num_epochs", "2"), ("seed", "1"), ("loss.name", "la"))]
    reports = train_ensemble(members, tmp_path, say=lambda _: None)
    assert eval_main.main(["--workdir", str(tmp_path)]) == EXIT_USER_ERROR
    assert "--member K" in capsys.readouterr().err
    assert eval_main.main(["--workdir", str(tmp_path), "--member", "1", "--name", "x"]) == 0
    report = json.loads((tmp_path / "members" / "1" / "eval" / "x" / "report.json").read_text())
    assert report["confusion"] == reports[1]["confusion"]


def test_a_network_with_branches_is_evaluated_by_its_own_rule_and_refuses_tau_normalisation(tmp_path, capsys):
    """TDE's evaluation rule (the counterfactual removed, from the moving feature sum in its checkpoint) is what
    `ltjax-eval` reproduces; tau-normalisation, which rescales one linear classifier, is refused by name."""
    run = config(("loss.name", "tde"), ("num_epochs", "1"), ("model.name", "resnet8"))
    trained = train_and_evaluate(run, tmp_path, say=lambda _: None)
    assert _eval(tmp_path, name="plain")["per_class_accuracy"] == trained["per_class_accuracy"]
    assert _eval(tmp_path, "--posthoc", "la", "--value", "1.0", name="la")["evaluation"]["posthoc"] == "la"
    assert eval_main.main(["--workdir", str(tmp_path), "--posthoc", "tau_norm"]) == EXIT_USER_ERROR
    assert "tde trains the bilateral network" in capsys.readouterr().err
