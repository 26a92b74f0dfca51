"""Ensembles: N members (seeds, a hyper-parameter grid, several methods on one head) in one compiled step; member k
equals the single run it stands for, and a member that diverges leaves the others untouched."""
import json

import jax
import numpy as np
import pytest
from runs import digits_config
from tolerance import assert_close_to_scale

from ltjax.data.augment import Normalization
from ltjax.keys import ConfigError
from ltjax.train.build import DataSpec, build, build_ensemble
from ltjax.train.loop import train_and_evaluate, train_ensemble

NORMALIZATION = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
COUNTS = np.array([40, 20, 10, 5])


def config(*overrides):
    return digits_config(("num_epochs", "3"), *overrides)


# Seeds of one method (LA 0 and 2) with a grid of its tau, and a second method (FFDS, whose DynaSmooth state the
# members carry), all on the linear head. The step-by-step test compares the members after the first with their single
# runs: member 1 has the swept tau (traced, per member) and its own seed, so a member given another's numbers or key
# fails it; member 0 runs the same code with the other values.
MEMBERS = [
    (("loss.name", "la"), ("loss.tau", "1.0"), ("seed", "0")),
    (("loss.name", "la"), ("loss.tau", "0.5"), ("seed", "2")),
    (("loss.name", "ffds"), ("loss.ffds_start", "1"), ("seed", "3")),
]


def test_member_k_equals_the_single_run_it_stands_for_step_by_step():
    configs = [config(*member) for member in MEMBERS]
    spec = DataSpec(COUNTS, (8, 8, 3), NORMALIZATION, steps_per_epoch=2, crop_padding=1)
    ensemble = build_ensemble(configs, spec, devices=jax.devices())
    checked = range(1, len(configs))
    singles = [build(configs[k], spec, devices=jax.devices()) for k in checked]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(configs), 6, 16, 8, 8, 3), dtype=np.uint8)  # [members, steps, batch, ...]
    labels = rng.integers(0, 4, (len(configs), 6, 16)).astype(np.int32)
    state = ensemble.init_state()
    single_states = [single.init_state() for single in singles]
    for step in range(6):
        epoch = step // 2
        if step % 2 == 0:
            state = ensemble.start_epoch(state)
            single_states = [single.start_epoch(s) for single, s in zip(singles, single_states)]
        state = ensemble.train_step(state, images[:, step], labels[:, step], ensemble.epoch_inputs(epoch))
        single_states = [single.train_step(s, images[k, step], labels[k, step], single.epoch_inputs(epoch))
                         for k, single, s in zip(checked, singles, single_states)]
        if step % 2 == 1:
            state = ensemble.end_epoch(state)
            single_states = [single.end_epoch(s) for single, s in zip(singles, single_states)]
    state = jax.device_get(state)
    for k, single_state in zip(checked, jax.device_get(single_states)):
        member = jax.tree.map(lambda leaf, k=k: leaf[k], state)
        # Relative to the network's largest parameter: the vmapped and single programs round differently, and six
        # SGD steps carry that into leaves whose own values are small (a BatchNorm bias near 0).
        scale = max(float(np.max(np.abs(leaf))) for leaf in jax.tree.leaves(single_state.params["model"]))
        for a, b in zip(jax.tree.leaves(member.params["model"]), jax.tree.leaves(single_state.params["model"])):
            assert_close_to_scale(a, b, rtol=1e-4, scale=scale)
        np.testing.assert_allclose(member.totals.loss_sum, single_state.totals.loss_sum, rtol=1e-4)
    ffds_means = state.loss_state["states"][str(1)].group_means[2]  # member 2 is FFDS, the second variant
    np.testing.assert_allclose(ffds_means, jax.device_get(single_states[-1]).loss_state.group_means, rtol=1e-5)
    assert np.max(np.abs(state.params["model"]["head"]["kernel"][0] - state.params["model"]["head"]["kernel"][1])) > 0


def test_an_ensemble_run_reproduces_each_single_run_and_a_diverged_member_touches_no_other(tmp_path):
    members = [
        config(("loss.name", "ce"), ("seed", "0"), ("num_epochs", "2"), ("plots", "true")),
        # IB with an absurd influence scale: its loss overflows from the first step.
        config(("loss.name", "ib"), ("loss.ib_start", "0"), ("loss.alpha", "1e38"), ("seed", "2"), ("num_epochs", "2"),
               ("plots", "true")),
    ]
    reports = train_ensemble(members, tmp_path / "ensemble", say=lambda _: None)
    assert reports[1] is None
    diverged = json.loads((tmp_path / "ensemble" / "members" / "1" / "diverged.json").read_text())
    assert diverged["epoch"] == 0
    # Each member that finished has its own plots; the diverged one has neither report nor plots.
    assert len(list((tmp_path / "ensemble" / "members" / "0").glob("*.png"))) == 4
    assert not list((tmp_path / "ensemble" / "members" / "1").glob("*.png"))
    single = train_and_evaluate(members[0], tmp_path / "single", say=lambda _: None)
    member_dir = tmp_path / "ensemble" / "members" / "0"
    assert json.loads((member_dir / "config.json").read_text()) == json.loads(
        (tmp_path / "single" / "config.json").read_text())
    ensemble_log = [json.loads(line) for line in (member_dir / "log.jsonl").read_text().splitlines()]
    single_log = [json.loads(line) for line in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    # Rounding differs between vmapped and single convolutions, and SGD amplifies it (about 10x an epoch here):
    # the first epoch agrees to 1e-4; the step-by-step test above bounds the programs' difference tightly.
    ensemble_losses, single_losses = ([r["train_loss"] for r in log] for log in (ensemble_log, single_log))
    np.testing.assert_allclose(ensemble_losses[0], single_losses[0], rtol=1e-4)
    np.testing.assert_allclose(ensemble_losses, single_losses, rtol=1e-2)
    np.testing.assert_allclose(reports[0]["per_class_accuracy"], single["per_class_accuracy"], atol=1 / 30)


def test_members_must_share_the_backbone_data_and_schedule():
    spec = DataSpec(COUNTS, (8, 8, 3), NORMALIZATION, steps_per_epoch=2)
    with pytest.raises(ConfigError, match="share the classifier head"):
        build_ensemble([config(("loss.name", "ce")), config(("loss.name", "ldam_drw"))], spec)
    with pytest.raises(ConfigError, match="must share 'num_epochs'"):
        build_ensemble([config(("loss.name", "ce")), config(("loss.name", "ce"), ("num_epochs", "4"))], spec)
    with pytest.raises(ConfigError, match="share the network"):
        build_ensemble([config(("loss.name", "ce")), config(("loss.name", "reslt"))], spec)


@pytest.mark.parametrize("method", ["bbn", "tde", "ride", "reslt"])
def test_methods_with_branches_train_as_ensembles_of_seeds(method, tmp_path):
    """The network (and BBN's partners) is the method's, not the loop's: seeds of one such method share one
    program, and each member's report is that member's."""
    members = [config(("loss.name", method), ("seed", str(seed)), ("num_epochs", "1")) for seed in (0, 1)]
    reports = train_ensemble(members, tmp_path / "ensemble", say=lambda _: None)
    assert all(report is not None and 0.0 < report["top1_accuracy"] <= 1.0 for report in reports)
    assert reports[0]["per_class_accuracy"] != reports[1]["per_class_accuracy"]
