"""Training: one program from `build`, data-parallel agreement, one compilation across phases, the learning-rate
recipe, exact resume, and every experiment config resolving to a runnable program."""
import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from runs import SMOKE_MODEL, digits_config
from tolerance import assert_close_to_scale

from ltjax import losses
from ltjax.configs import files, schema
from ltjax.data.augment import Normalization
from ltjax.data.longtail import longtail_counts
from ltjax.keys import ConfigError
from ltjax.train.build import DataSpec, build
from ltjax.train.loop import train_and_evaluate
from ltjax.train.optim import learning_rate_schedule
from ltjax.train.step import REPLICATED, SPLIT, data_parallel, make_train_step

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
NORMALIZATION = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
COUNTS = np.array([40, 20, 10, 5])


def small_program(*overrides, devices=None, steps_per_epoch: int = 10, model: str = SMOKE_MODEL):
    """A 4-class program on 8x8 images (no dataset loaded), its initial state and a fixed batch of 16."""
    trainer = build(digits_config(*overrides, model=model),
                    DataSpec(COUNTS, (8, 8, 3), NORMALIZATION, steps_per_epoch), devices=devices)
    rng = np.random.default_rng(0)
    batch = (rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8), rng.integers(0, 4, 16).astype(np.int32))
    return trainer, trainer.init_state(), batch


def _max_difference(a, b) -> float:
    differences = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y)))), a, b)
    return max(jax.tree.leaves(differences), default=0.0)


# Methods whose step has more than per-example losses: a method state summed over devices (FFDS's DynaSmooth group
# means; Seesaw's class counts, which its loss also reads for the current batch), per-example random draws that
# must not depend on the device count (EQL, GCL), a term of the whole batch (LADE's regulariser), mixup's
# partners from the whole batch; methods that train a network with branches.
BEYOND_PER_EXAMPLE = {
    "ffds": (("loss.name", "ffds"), ("loss.ffds_start", "0")),
    "seesaw": (("loss.name", "seesaw"),),
    "eql": (("loss.name", "eql"), ("loss.tail_threshold", "0.2")),
    "lade": (("loss.name", "lade"), ("loss.alpha", "0.5")),
    "gcl": (("loss.name", "gcl"),),
    "mixup": (("mixup_alpha", "1.0"),),
    "gcl with mixup": (("loss.name", "gcl"), ("mixup_alpha", "0.2")),
    # Networks with branches: TDE's moving feature sum (kept with BatchNorm's statistics), ResLT's and RIDE's global
    # normalisers.
    "tde": (("loss.name", "tde"),),
    "reslt": (("loss.name", "reslt"),),
    "ride": (("loss.name", "ride"), ("loss.reweight_start", "0")),
}


@pytest.mark.parametrize("method", sorted(BEYOND_PER_EXAMPLE))
def test_one_device_eight_device_shard_map_and_pmap_steps_agree(method):
    """Synchronised BatchNorm, pmean'd gradients and a global weighted-mean normaliser make D devices one. FFDS in
    its own phase has all three and a method state (DynaSmooth's group means, psum'd in the step)."""
    results, initial = {}, None
    for mode, devices in [("shard_map", jax.devices()[:1]), ("shard_map", jax.devices()), ("pmap", jax.devices())]:
        trainer, state, (images, labels) = small_program(*BEYOND_PER_EXAMPLE[method], ("parallel", mode),
                                                         devices=devices)
        initial = jax.device_get(state)  # the step donates the state it is given
        new_state = trainer.train_step(state, images, labels, trainer.epoch_inputs(3))
        results[(mode, len(devices))] = jax.device_get(new_state)
    reference = results[("shard_map", 1)]
    for key, new_state in results.items():
        assert _max_difference(reference.params, new_state.params) < 1e-5, key
        assert _max_difference(reference.batch_stats, new_state.batch_stats) < 1e-5, key
        assert _max_difference(reference.loss_state, new_state.loss_state) < 1e-6, key
        np.testing.assert_allclose(new_state.totals.loss_sum, reference.totals.loss_sum, rtol=1e-6)
        assert int(new_state.totals.class_count.sum()) == 16
    assert _max_difference(reference.params, initial.params) > 1e-3  # the step did update the parameters
    if jax.tree.leaves(initial.loss_state):
        assert _max_difference(reference.loss_state, initial.loss_state) > 1e-6  # and collected its statistics


def test_a_mixup_step_trains_on_the_mixed_batch_with_both_label_sets():
    """The step's loss is lam CE(z, y) + (1 - lam) CE(z, y[partner]), z the model's logits of the mixed images."""
    from ltjax.data import mixup
    from ltjax.data.augment import normalize

    trainer, state, (images, labels) = small_program(("mixup_alpha", "1.0"), devices=jax.devices()[:1])
    before = jax.device_get(state)
    new_state = trainer.train_step(state, images, labels, trainer.epoch_inputs(0))
    weight_key, partner_key = mixup.mixup_keys(int(before.seed), int(before.step))
    weight = mixup.mixup_lambda(weight_key, 1.0)
    partners = mixup.mixup_partners(partner_key, jnp.ones(len(labels), bool))
    mixed = weight * normalize(images, NORMALIZATION) + (1 - weight) * normalize(images[np.asarray(partners)],
                                                                                NORMALIZATION)
    (logits, _), _ = trainer.model.apply({"params": before.params["model"], "batch_stats": before.batch_stats},
                                         mixed, train=True, mutable=["batch_stats"])
    expected = weight * losses.mean(losses.softmax_cross_entropy(logits, labels)) + (1 - weight) * losses.mean(
        losses.softmax_cross_entropy(logits, labels[np.asarray(partners)]))
    assert 0.0 < float(weight) < 1.0
    np.testing.assert_allclose(float(new_state.totals.loss_sum), float(expected), rtol=1e-5)


def test_train_step_compiles_once_across_deferred_phases():
    trainer, state, (images, labels) = small_program(("loss.name", "ib"), ("loss.ib_start", "2"))
    model = trainer.model.clone(batch_norm_axis_name="batch")
    step = chex.assert_max_traces(make_train_step(model, trainer.optimizer, trainer.objective, NORMALIZATION), n=1)
    run = data_parallel(step, "shard_map", jax.devices(), in_specs=(REPLICATED, SPLIT, SPLIT, REPLICATED, SPLIT),
                        out_specs=REPLICATED)
    losses_by_epoch = []
    for epoch in (0, 1, 2, 3):  # CE for epochs 0-1, influence-balanced from 2
        state = run(trainer.start_epoch(state), images, labels, trainer.epoch_inputs(epoch), np.ones(16, bool))
        losses_by_epoch.append(float(state.totals.loss_sum))
    assert losses_by_epoch[2] > 10 * losses_by_epoch[1]  # IB's alpha = 1000 changes the loss scale at the switch


def test_learning_rate_schedule_is_the_reference_recipe_and_follows_the_run():
    config = digits_config(("optimizer.warmup", "0.025"), ("optimizer.lr_decay", "((0.8, 0.01), (0.9, 1e-4))"),
                           ("num_epochs", "200"))
    schedule = learning_rate_schedule(config.optimizer, num_epochs=200)
    # 1-indexed epoch e = epoch + 1: warm-up 0.1 * e / 5, then x0.01 from epoch 160 and x0.0001 from 180.
    for epoch, expected in [(0, 0.02), (3, 0.08), (4, 0.1), (159, 0.1), (160, 0.001), (180, 1e-5), (199, 1e-5)]:
        assert schedule(epoch) == pytest.approx(expected, rel=1e-12), epoch
    short = learning_rate_schedule(config.optimizer, num_epochs=20)
    for epoch, expected in [(0, 0.1), (15, 0.1), (16, 0.001), (17, 0.001), (18, 1e-5)]:  # decay at 16 and 18
        assert short(epoch) == pytest.approx(expected, rel=1e-12), epoch


@pytest.mark.parametrize("method", [(), (("loss.name", "ldam_drw"),)])
def test_the_compiled_step_is_one_program_for_every_run_length_phase_start_and_learning_rate(method):
    """The schedule runs on the host: runs that differ only in length, phase starts, milestones or base rate (a
    sweep, a shortened run, --extend) lower to the same program, so they share one compilation."""
    def lowered(*overrides):
        trainer, state, (images, labels) = small_program(*method, *overrides)
        return trainer.train_step.lower(state, images, labels, trainer.epoch_inputs(1)).as_text()

    one = lowered(("num_epochs", "2"))
    assert lowered(("num_epochs", "12"), ("optimizer.learning_rate", "0.05"), ("optimizer.warmup", "3"),
                   ("optimizer.lr_decay", "((0.5, 0.1), (0.75, 0.01))"),
                   *((("loss.drw_start", "9"),) if method else ())) == one
    assert lowered(("num_epochs", "2"), ("optimizer.momentum", "0.5")) != one  # what is compiled in does show


def test_train_step_counts_accuracy_with_the_method_prediction_rule():
    """IIF predicts with z * iif: the train step's per-class correct counts use that rule, as evaluation does. With a
    zero kernel every example's logits are the head's bias, whose raw argmax (class 0) and IIF argmax (class 3, the
    rarest and most up-weighted) differ."""
    trainer, state, (images, labels) = small_program(("loss.name", "iif"), ("model.head", "linear"))
    state = jax.device_get(state)
    bias = np.array([1.0, 0.9, 0.8, 0.7], np.float32)
    head = {"kernel": np.zeros_like(state.params["model"]["head"]["kernel"]), "bias": bias}
    state = state.replace(params={**state.params, "model": {**state.params["model"], "head": head}})
    assert np.argmax(bias) == 0 and np.argmax(losses.iif_logits(bias, class_counts=COUNTS)) == 3
    new_state = trainer.train_step(state, images, labels, trainer.epoch_inputs(0))
    np.testing.assert_array_equal(new_state.totals.class_correct, np.bincount(labels[labels == 3], minlength=4))


def test_bfloat16_compute_trains_with_float32_parameters():
    trainer, state, (images, labels) = small_program(("model.dtype", "bfloat16"))
    new_state = trainer.train_step(jax.device_get(state), images, labels, trainer.epoch_inputs(0))
    assert np.isfinite(new_state.totals.loss_sum)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_state.params))
    assert _max_difference(new_state.params, state.params) > 0


def test_batch_size_must_divide_by_the_device_count():
    with pytest.raises(ValueError, match="global batch size 60 must divide by the number of devices 8"):
        small_program(("batch_size", "60"), devices=jax.devices())


# --- every recipe file resolves to a program whose phases fit its run ------------------------------------------

# The recipes of the long-tailed CIFAR and Tiny ImageNet splits (`<dataset>-if<factor>` arguments); the large-scale
# recipes name their own arguments (`ARGUMENTS` in the file) and are checked below.
LARGE_SCALE = ("decoupling",)
RECIPES = sorted(path.stem for path in CONFIGS.glob("*.py") if path.stem not in LARGE_SCALE)
ARGUMENTS = ("cifar10-if100", "cifar10-if10", "cifar100-if50", "tiny_imagenet-if100")


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_resolves_and_binds_for_every_dataset(recipe):
    for argument in ARGUMENTS:
        written = files.load_config_file(f"{CONFIGS / recipe}.py:{argument}")
        config = schema.resolve(written)
        num_classes = {"cifar10": 10, "cifar100": 100, "tiny_imagenet": 200}[config.dataset.name]
        counts = longtail_counts(500, num_classes, config.dataset.imbalance_factor, "exp")
        trainer = build(config, DataSpec(counts, (32, 32, 3), NORMALIZATION, steps_per_epoch=97), devices=jax.devices())
        assert trainer.plan["num_epochs"] == 200
        starts = [phase["first_epoch"] for phase in trainer.plan["members"][0]["phases"]]
        reference = {"ldam_drw": [0, 160], "ffds": [0, 130], "ib": [0, 100], "kps": [0, 120], "swrm": [0, 140]}
        assert starts == reference.get(recipe, [0]), (recipe, argument)


def test_the_imagenet_lt_recipe_is_decouplings_and_builds_its_program():
    """Decoupling's feat_uniform.yaml: ResNeXt-50 from scratch, 90 epochs of 512 at lr 0.2 annealed by a cosine
    stepped at each epoch's start, weight decay 5e-4; random-resized 224-px crops of the 256-px cache."""
    import math

    config = schema.resolve(files.load_config_file(f"{CONFIGS / 'decoupling'}.py:imagenet_lt"))
    assert (config.model.name, config.num_epochs, config.batch_size, config.optimizer.weight_decay,
            config.dataset.image_size, config.dataset.cache_size) == ("resnext50_32x4d", 90, 512, 5e-4, 224, 256)
    counts = np.round(1280 * (5 / 1280) ** (np.arange(1000) / 999)).astype(int)  # ImageNet-LT's 1280 down to 5
    spec = DataSpec(counts, (256, 256, 3), NORMALIZATION, steps_per_epoch=227, crop_size=224, eval_resize=256)
    trainer = build(config, spec, devices=jax.devices())
    assert trainer.plan["learning_rate"]["schedule"] == "cosine_stepped_at_start"
    assert trainer.epoch_inputs(0).learning_rate == pytest.approx(0.1 * (1 + math.cos(math.pi / 90)))
    assert float(trainer.epoch_inputs(89).learning_rate) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="this recipe's stages are imagenet_lt, places_lt"):
        files.load_config_file(f"{CONFIGS / 'decoupling'}.py:cifar10-if100")


def test_the_places_lt_recipe_is_oltrs_stage_one_from_torchvision_weights(splits_dir, tmp_path):
    """OLTR's config/Places_LT/stage_1.py: a pretrained ResNet-152, the classifier at 0.1 and the backbone at 0.001,
    x0.1 from the 0-indexed epochs 9 and 19 of 30; its plan prints from the official split files alone."""
    config = schema.apply_overrides(files.load_config_file(f"{CONFIGS / 'decoupling'}.py:places_lt"), [
        ("dataset.data_dir", str(tmp_path)), ("dataset.split_dir", str(splits_dir))])[0]
    assert (config.model.name, config.model.pretrained, config.optimizer.backbone_lr_factor) == (
        "resnet152", "resnet152-394f9c45.pth", 0.01)
    from ltjax import datasets

    data = datasets.get("places_lt").load(config.dataset)
    trainer = build(config, DataSpec.of(data, steps_per_epoch=489), devices=jax.devices())
    assert [float(trainer.epoch_inputs(e).learning_rate) for e in (0, 8, 9, 19, 29)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001, 0.001])
    assert "resnet152, linear head, float32, from resnet152-394f9c45.pth" in trainer.plan["model"]
    assert trainer.plan["dataset"].startswith("places_lt (imbalance 996, 365 classes, 62500 training images)")


# --- runs of the real loop ------------------------------------------------------------------------------------


def test_report_carries_class_names_and_training_counts(tmp_path):
    report = train_and_evaluate(digits_config(("num_epochs", "1")), tmp_path, say=lambda _: None)
    assert report["class_names"] == [str(digit) for digit in range(10)]
    assert report["train_class_counts"][0] == 120 and report["train_class_counts"][-1] == 12
    assert np.asarray(report["confusion"]).sum() == 300  # the balanced digits test split, every example once
    assert not list(tmp_path.glob("*.png"))  # --config.plots=false


def test_a_run_draws_its_plots(ce_run):
    workdir, _ = ce_run
    assert {path.name for path in workdir.glob("*.png")} == {
        "class_distribution.png", "per_class_accuracy.png", "confusion.png", "curves.png"}
    assert all(path.stat().st_size > 0 for path in workdir.glob("*.png"))


def test_scaled_tolerance_helper_is_relative_to_the_largest_value():
    assert_close_to_scale([100.0, 1.0], [100.0005, 1.0004], rtol=1e-5)
    with pytest.raises(AssertionError):
        assert_close_to_scale([100.0, 1.0], [100.0, 1.01], rtol=1e-5)


def test_phase_that_cannot_start_within_the_run_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"loss\.drw_start=.*train longer|--config\.loss\.drw_start="):
        small_program(("loss.name", "ldam_drw"), ("loss.drw_start", "30"))
    with pytest.raises(ConfigError, match=r"FFDS phase .* needs 2 epochs .*config\.num_epochs=1"):
        small_program(("loss.name", "ffds"), ("num_epochs", "1"))


def _tensorboard_scalars(folder: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """The scalar events of a folder's TensorBoard files (TFRecord framing: length, its CRC, data, data's CRC)."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_events_beside_the_log_hold_every_epoch(tmp_path):
    train_and_evaluate(digits_config(("num_epochs", "3")), tmp_path, say=lambda _: None)
    scalars = _tensorboard_scalars(tmp_path)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [step for step, _ in scalars["train_loss"]] == [0, 1, 2]
    np.testing.assert_allclose([value for _, value in scalars["train_loss"]], [r["train_loss"] for r in log],
                               rtol=1e-6)
    assert [value for _, value in scalars["validation/few_shot_accuracy"]] == pytest.approx(
        [r["validation"]["few_shot_accuracy"] for r in log])
    assert "gap/few" in scalars


def test_a_run_is_extended_only_when_asked_and_only_in_length(tmp_path):
    train_and_evaluate(digits_config(("num_epochs", "2")), tmp_path, say=lambda _: None)
    with pytest.raises(ConfigError, match=r"(?s)num_epochs: 2 -> 3.*add --extend"):
        train_and_evaluate(digits_config(("num_epochs", "3")), tmp_path, say=lambda _: None)
    with pytest.raises(ConfigError, match=r"another config"):
        train_and_evaluate(digits_config(("num_epochs", "3"), ("optimizer.learning_rate", "0.2")), tmp_path,
                           extend=True, say=lambda _: None)
    with pytest.raises(ConfigError, match=r"another config"):
        train_and_evaluate(digits_config(("num_epochs", "1")), tmp_path, extend=True, say=lambda _: None)
    said = []
    report = train_and_evaluate(digits_config(("num_epochs", "4")), tmp_path, extend=True, say=said.append)
    assert report is not None and any("extending the run from 2 to 4 epochs" in line for line in said)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    sessions = json.loads((tmp_path / "provenance.json").read_text())["sessions"]
    assert sessions[-1]["extended"] == {"from_epochs": 2, "to_epochs": 4}
    assert json.loads((tmp_path / "config.json").read_text())["num_epochs"] == 4


def test_random_resized_crops_train_the_same_on_one_and_eight_devices_and_evaluation_centre_crops():
    """A `DataSpec` with `crop_size` (the 224-px recipes' augmentation, here 8-px images cropped to 12): the network
    is built for the crop, each example's crop is drawn from its global position (so 1 and 8 devices agree), and
    evaluation resizes and centre-crops (`device_crops.resize_center_crop`) before the network."""
    from ltjax.data import device_crops
    from ltjax.data.augment import normalize

    spec = DataSpec(COUNTS, (8, 8, 3), NORMALIZATION, 10, crop_size=12, eval_resize=14)
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 16).astype(np.int32)
    results = {}
    for devices in (jax.devices()[:1], jax.devices()):
        trainer = build(digits_config(), spec, devices=devices)
        state = trainer.init_state()
        assert trainer.plan["augmentation"].startswith("random-resized 12-px crop + flip")
        results[len(devices)] = jax.device_get(trainer.train_step(state, images, labels, trainer.epoch_inputs(0)))
    one, many = results[1], results[len(jax.devices())]
    assert _max_difference(one.params, many.params) < 1e-5
    np.testing.assert_allclose(one.totals.loss_sum, many.totals.loss_sum, rtol=1e-6)
    _, features = trainer.eval_step(one, images, labels, np.ones(16, bool))
    centred = device_crops.resize_center_crop(jnp.asarray(images), size=12, resize_to=14)
    expected = trainer.model.apply({"params": one.params["model"], "batch_stats": one.batch_stats},
                                   normalize(centred, NORMALIZATION), train=False)
    assert_close_to_scale(features, expected.features, rtol=1e-5)


def test_the_cosine_schedule_is_pytorchs_cosine_annealing_stepped_per_epoch():
    """Decoupling's `coslr` (ImageNet-LT, 90 epochs, lr 0.2): `CosineAnnealingLR(T_max=E, eta_min=0)`, stepped at each
    epoch's end, gives epoch k (0-indexed) `0.2 * (1 + cos(pi k / E)) / 2`; a warm-up comes first; milestones with it
    are an error."""
    import math

    config = digits_config(("optimizer.schedule", "cosine"), ("optimizer.lr_decay", "()"), ("optimizer.warmup", "0"),
                           ("optimizer.learning_rate", "0.2"), ("num_epochs", "90"))
    schedule = learning_rate_schedule(config.optimizer, num_epochs=90)
    rates = [0.2]
    for epoch in range(1, 90):  # the recurrence PyTorch's CosineAnnealingLR steps with, from 0.2
        previous = rates[-1]
        rates.append((1 + math.cos(math.pi * epoch / 90)) / (1 + math.cos(math.pi * (epoch - 1) / 90)) * previous)
    for epoch in (0, 1, 30, 45, 89):
        assert schedule(epoch) == pytest.approx(rates[epoch], rel=1e-9, abs=1e-12), epoch
    warm = learning_rate_schedule(digits_config(("optimizer.schedule", "cosine"), ("optimizer.lr_decay", "()"),
                                                ("optimizer.warmup", "5"), ("num_epochs", "100")).optimizer, 100)
    assert [warm(e) for e in (0, 4)] == pytest.approx([0.02, 0.1]) and warm(5) == pytest.approx(0.05 * (1 + math.cos(
        math.pi * 5 / 100)))
    with pytest.raises(ConfigError, match=r"schedule=cosine decays without milestones: set .*lr_decay=\(\)"):
        learning_rate_schedule(digits_config(("optimizer.schedule", "cosine")).optimizer, num_epochs=10)
    # The OLTR-derived scripts step the scheduler at each epoch's start: one step ahead, the last epoch at 0.
    at_start = learning_rate_schedule(digits_config(
        ("optimizer.schedule", "cosine_stepped_at_start"), ("optimizer.lr_decay", "()"), ("optimizer.warmup", "0"),
        ("optimizer.learning_rate", "0.2"), ("num_epochs", "90")).optimizer, 90)
    assert [at_start(e) for e in (0, 44, 88)] == pytest.approx(rates[1:90:44], rel=1e-9)
    assert at_start(89) == pytest.approx(0.0, abs=1e-12)


def test_a_backbone_learning_rate_factor_steps_the_classifier_at_the_rate_and_the_rest_at_its_fraction():
    """OLTR's Places-LT stage 1 trains the backbone at 0.001 under a classifier at 0.1: with momentum and weight decay
    per parameter, each group's step is PyTorch's SGD at its own rate."""
    import optax

    from ltjax.train.optim import make_optimizer

    config = digits_config(("optimizer.backbone_lr_factor", "0.01"), ("optimizer.momentum", "0.9"),
                           ("optimizer.weight_decay", "0.0005")).optimizer
    params = {"model": {"stem_conv": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones(3)},
                        "expert1_head": {"kernel": jnp.ones(2)}}, "loss": {"coordinates": jnp.ones(2)}}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    optimizer = make_optimizer(config)
    state = optimizer.init(params)
    for _ in range(2):  # the second step carries momentum
        updates, state = optimizer.update(grads, state, params, learning_rate=0.1)
        params = optax.apply_updates(params, updates)
    # PyTorch's SGD on one parameter from 1 with the gradient 0.5 both steps: buf = g + wd p, then 0.9 buf + g + wd p'.
    def torch_sgd(rate):
        p, buffer = 1.0, None
        for _ in range(2):
            g = 0.5 + 0.0005 * p
            buffer = g if buffer is None else 0.9 * buffer + g
            p -= rate * buffer
        return p

    np.testing.assert_allclose(params["model"]["stem_conv"]["kernel"], torch_sgd(0.001), rtol=1e-6)
    for classifier in (params["model"]["head"], params["model"]["expert1_head"], params["loss"]):
        np.testing.assert_allclose(jax.tree.leaves(classifier)[0], torch_sgd(0.1), rtol=1e-6)
