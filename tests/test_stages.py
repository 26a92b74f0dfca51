"""Decoupled second stages (cRT, LWS, GCL's classifier stage) as methods: they start from a first-stage run, train
only what they should, and cRT raises the few-shot accuracy of a CE run."""
import jax
import numpy as np
import pytest
from flax import traverse_util
from runs import DATASET_MODEL, SMOKE_MODEL, digits_config

from ltjax.keys import ConfigError
from ltjax.train.evaluate import load_run
from ltjax.train.loop import train_and_evaluate


def config(*overrides, model: str = DATASET_MODEL):
    """cRT's few-shot gain needs a network that learns: ResNet-8 unless a test only checks what a stage refuses."""
    return digits_config(("dataset.imbalance_factor", "100"), *overrides, model=model)


def quiet(_: str) -> None:
    pass


def _second(name: str, first, workdir, *overrides, model: str = DATASET_MODEL):
    return train_and_evaluate(
        config(("loss.name", name), ("loss.init_from", str(first)), ("dataset.sampler", "class_balanced"),
               ("num_epochs", "6"), *overrides, model=model),
        workdir, say=quiet)


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_crt_retrains_only_the_classifier_and_raises_few_shot_accuracy(ce_run, tmp_path):
    first, first_report = ce_run
    report = _second("crt", first, tmp_path)
    assert report["few_shot_accuracy"] > first_report["few_shot_accuracy"] + 0.03
    before, after = load_run(first, say=quiet).state, load_run(tmp_path, say=quiet).state
    before_params, after_params = _flat(before.params["model"]), _flat(after.params["model"])
    for path, value in before_params.items():
        if path.startswith("head/"):
            assert not np.allclose(after_params[path], value), path  # re-initialised, then trained
        else:
            np.testing.assert_array_equal(after_params[path], value, err_msg=path)  # the frozen backbone


def test_lws_trains_only_the_class_scales(tmp_path):
    """Which parameters train does not need a network that learns: ResNet-2 for both stages."""
    first, second = tmp_path / "ce", tmp_path / "lws"
    train_and_evaluate(config(("num_epochs", "2"), model=SMOKE_MODEL), first, say=quiet)
    _second("lws", first, second, model=SMOKE_MODEL)
    before, after = _flat(load_run(first, say=quiet).state.params["model"]), _flat(
        load_run(second, say=quiet).state.params["model"])
    assert set(after) == set(before) | {"head/scales"}
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    assert not np.allclose(after["head/scales"], 1.0)


def test_second_stages_say_what_they_need(ce_run, tmp_path):
    first, _ = ce_run
    with pytest.raises(ConfigError, match=r"starts from a trained run: set --config\.loss\.init_from="):
        train_and_evaluate(config(("loss.name", "crt"), ("dataset.sampler", "class_balanced")), tmp_path, say=quiet)
    with pytest.raises(ConfigError, match=r"trains with dataset\.sampler='class_balanced'.*add "
                                          r"--config\.dataset\.sampler=class_balanced"):
        train_and_evaluate(config(("loss.name", "crt"), ("loss.init_from", str(first))), tmp_path, say=quiet)
    with pytest.raises(ConfigError, match=r"trained another dataset"):
        _second("crt", first, tmp_path / "other", ("dataset.imbalance_factor", "10"))


def test_lws_needs_a_linear_first_stage(tmp_path):
    normed = tmp_path / "ldam"
    train_and_evaluate(config(("loss.name", "ldam_drw"), ("num_epochs", "2"), model=SMOKE_MODEL), normed, say=quiet)
    with pytest.raises(ConfigError, match=r"model/head/bias differ .* whose head has \['head/bias', 'head/kernel'\]"):
        _second("lws", normed, tmp_path / "lws", model=SMOKE_MODEL)


def test_gcl_classifier_stage_keeps_the_first_stage_classifier_and_batch_norm_statistics(tmp_path):
    """GCL's second stage trains on from the gcl run's cosine classifier, with the backbone and its BatchNorm
    statistics frozen (eval mode); a first stage with another head is refused, naming the head it needs."""
    first, linear = tmp_path / "gcl", tmp_path / "ce"
    train_and_evaluate(config(("loss.name", "gcl"), ("num_epochs", "2"), model=SMOKE_MODEL), first, say=quiet)
    train_and_evaluate(config(("num_epochs", "2"), model=SMOKE_MODEL), linear, say=quiet)
    with pytest.raises(ConfigError, match=r"model/head/bias differ .* whose head has \['head/kernel'\]"):
        _second("gcl_cls", linear, tmp_path / "refused", ("num_epochs", "2"), model=SMOKE_MODEL)
    _second("gcl_cls", first, tmp_path / "second", ("num_epochs", "2"), model=SMOKE_MODEL)
    before, after = load_run(first, say=quiet).state, load_run(tmp_path / "second", say=quiet).state
    before_params, after_params = _flat(before.params["model"]), _flat(after.params["model"])
    assert set(before_params) == set(after_params)
    for path, value in before_params.items():
        if path.startswith("head/"):
            assert not np.allclose(after_params[path], value), path  # trained on from the first stage's
        else:
            np.testing.assert_array_equal(after_params[path], value, err_msg=path)
    for path, value in _flat(before.batch_stats).items():
        np.testing.assert_array_equal(_flat(after.batch_stats)[path], value, err_msg=path)


def test_mislas_trains_the_classifier_on_with_fresh_scales_and_shifts_the_batch_norm_statistics(tmp_path):
    """MiSLAS's stage 2 from a mixup CE run: the linear classifier trains on (not re-initialised) with a fresh LWS
    scale per class; the backbone's parameters stay frozen while its BatchNorm statistics follow the class-balanced
    batches (shift learning)."""
    first = tmp_path / "mixup"
    train_and_evaluate(config(("mixup_alpha", "1.0"), ("num_epochs", "2"), model=SMOKE_MODEL), first, say=quiet)
    _second("mislas", first, tmp_path / "second", ("num_epochs", "2"), model=SMOKE_MODEL)
    before, after = load_run(first, say=quiet).state, load_run(tmp_path / "second", say=quiet).state
    before_params, after_params = _flat(before.params["model"]), _flat(after.params["model"])
    assert set(after_params) - set(before_params) == {"head/scales"}
    assert not np.allclose(after_params["head/scales"], 1.0)  # trained from ones
    for path, value in before_params.items():
        if path.startswith("head/"):
            assert not np.allclose(after_params[path], value), path
        else:
            np.testing.assert_array_equal(after_params[path], value, err_msg=path)
    moved = [path for path, value in _flat(before.batch_stats).items()
             if not np.allclose(_flat(after.batch_stats)[path], value)]
    assert moved, "the BatchNorm statistics did not follow the class-balanced batches"


def test_disalign_trains_only_the_calibration_on_a_frozen_linear_classifier(tmp_path):
    first = tmp_path / "ce"
    train_and_evaluate(config(("num_epochs", "2"), model=SMOKE_MODEL), first, say=quiet)
    train_and_evaluate(config(("loss.name", "disalign"), ("loss.init_from", str(first)), ("num_epochs", "2"),
                              model=SMOKE_MODEL), tmp_path / "second", say=quiet)
    before, after = load_run(first, say=quiet).state, load_run(tmp_path / "second", say=quiet).state
    before_params, after_params = _flat(before.params["model"]), _flat(after.params["model"])
    calibration = {"head/logit_scale", "head/logit_bias", "head/confidence_kernel", "head/confidence_bias"}
    assert set(after_params) - set(before_params) == calibration
    for path, value in before_params.items():
        np.testing.assert_array_equal(after_params[path], value, err_msg=path)  # classifier and backbone frozen
    assert not np.allclose(after_params["head/logit_bias"], 0.0)
