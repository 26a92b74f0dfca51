"""`build(config, data_spec)`: one resolved config -> the model, optimizer, method and the jitted data-parallel steps;
`build_ensemble(configs, data_spec)`: several configs that share the backbone -> one program training them all.

The loop, the tests and the benchmarks all build their steps here, so they run the same program:

    trainer = build(config, DataSpec(class_counts, image_shape, normalization, steps_per_epoch))
    state = trainer.init_state()
    schedule = trainer.epoch_inputs(epoch)                       # the host's schedule: epoch, phase, rate
    state = trainer.train_step(state, images, labels, schedule, mask)  # global uint8 [B, H, W, 3], [B], [B]
    stats, features = trainer.eval_step(state, images, labels, mask)

An ensemble's state and batches carry a leading member axis (`trainer.members`): images `[N, B, H, W, 3]`, each
member its own batch, as the single run of its seed would see it; the eval step takes one shared batch and returns
statistics per member. Members train under `jax.vmap` inside the same data-parallel step, so member k computes what
the single run of its config computes (up to float rounding) and a member whose loss diverges leaves the others
untouched.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding

from ltjax import datasets, methods
from ltjax.configs import schema
from ltjax.data.augment import Normalization
from ltjax.keys import ConfigError
from ltjax.methods import SecondStage
from ltjax.methods.ensemble import EnsembleObjective
from ltjax.metrics import TrainTotals
from ltjax.models import create_model
from ltjax.stats import ClassStats
from ltjax.train.optim import learning_rate_schedule, lr_milestones, make_optimizer
from ltjax.train.state import TrainState
from ltjax.train.step import (
    AXIS,
    MEMBERS_SPLIT,
    REPLICATED,
    SPLIT,
    Crops,
    EpochInputs,
    check_batch_divides,
    data_parallel,
    make_eval_step,
    make_outputs_step,
    make_train_step,
)

# The torchvision ResNets take a CIFAR-style stem (3x3, stride 1, no max-pool) on images this small.
_SMALL_INPUT_SIDE = 64
_TORCHVISION_RESNETS = ("resnet10", "resnet18", "resnet50", "resnet152", "resnext50_32x4d")
# What ensemble members must share: everything but the seed and the method.
SHARED_KEYS = (
    "dataset", "model", "optimizer", "num_epochs", "batch_size", "eval_batch_size", "parallel", "num_devices",
    "mixup_alpha",
)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a run needs to know about its training data to build its program.

    Attributes:
      class_counts: `[C]` training images per class.
      image_shape: `(H, W, 3)` of the uint8 images the steps receive.
      normalization: mean/std applied on device.
      steps_per_epoch: training steps per epoch (reported in the plan).
      crop_padding: the device augmentation's pad-crop border (None: no augmentation).
      crop_size, eval_resize: random-resized crops of this side in training, resize and centre crop in evaluation,
        on the device, instead of pad-crop (`datasets.TrainingData`).
    """

    class_counts: np.ndarray
    image_shape: tuple[int, ...]
    normalization: Normalization
    steps_per_epoch: int
    crop_padding: int | None = None
    crop_size: int | None = None
    eval_resize: int | None = None

    @classmethod
    def of(cls, data: datasets.TrainingData, steps_per_epoch: int) -> DataSpec:
        return cls(data.class_counts, data.image_shape, data.normalization, steps_per_epoch, data.crop_padding,
                   data.crop_size, data.eval_resize)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of an image the network sees: the crop's, or the stored image's."""
        if self.crop_size is None:
            return self.image_shape
        return (self.crop_size, self.crop_size, *self.image_shape[2:])


@dataclasses.dataclass(frozen=True)
class Trainer:
    """A run's program. `train_step` donates the state it is given: keep only the state it returns.

    Attributes:
      configs: the resolved config of each member (one for a single run).
      members: the ensemble size, or None for a single run (no member axis).
      objective: the method bound to the run (`Objective`), or an `EnsembleObjective`.
      batch_sharding: where the steps want their batch arrays (`ltjax.data.device_prefetch` puts them there).
      eval_sharding: likewise for the eval step's (shared) batches.
      replicated: a copy on every device (the state, the schedule).
      epoch_inputs: `epoch -> EpochInputs`, what the train step is given for that epoch (0-indexed): the run's
        milestones (phase starts, learning-rate schedule) live here, on the host, not in the compiled step.
    """

    configs: tuple[ml_collections.ConfigDict, ...]
    members: int | None
    objective: Any
    model: Any
    optimizer: optax.GradientTransformation
    devices: tuple
    batch_sharding: NamedSharding
    eval_sharding: NamedSharding
    replicated: NamedSharding
    plan: dict
    init_state: Callable[[], TrainState]
    train_step: Callable[..., TrainState]
    eval_step: Callable
    outputs_step: Callable
    start_epoch: Callable[[TrainState], TrainState]
    end_epoch: Callable[[TrainState], TrainState]
    epoch_inputs: Callable[[int], EpochInputs]

    @property
    def config(self) -> ml_collections.ConfigDict:
        """The (first) member's config: what all members share."""
        return self.configs[0]

    def method_of(self, member: int | None) -> methods.Method:
        """The method a member (None: the single run) trains with."""
        if member is None:
            return self.objective.method
        return self.objective.variants[self.objective.member_variants[member]].method


def run_devices(config: ml_collections.ConfigDict) -> tuple:
    """The devices a run trains on: every device of every process (one global mesh, each process's devices side by
    side), or on one process its first `num_devices` (0: all).

    Raises:
      ConfigError: across processes, `num_devices` that leaves some out, or the `pmap` mode (it maps one process's
        devices).
    """
    devices = sorted(jax.devices(), key=lambda device: (device.process_index, device.id))
    if jax.process_count() == 1:
        return tuple(devices[: config.num_devices or None])
    if config.num_devices not in (0, len(devices)):
        raise ConfigError(f"num_devices={config.num_devices}: across {jax.process_count()} processes every one of "
                          f"the {len(devices)} devices takes part; leave num_devices at 0")
    if config.parallel != "shard_map":
        raise ConfigError(f"parallel={config.parallel} maps the devices of one process; across processes use "
                          "parallel=shard_map (the default)")
    return tuple(devices)


def model_name(config: ml_collections.ConfigDict) -> str:
    return config.model.name or datasets.get(config.dataset.name).model


def _bind(config: ml_collections.ConfigDict, stats: ClassStats) -> methods.Objective:
    hp = {key: value for key, value in config.loss.items() if key != "name"}
    return methods.bind(methods.get(config.loss.name), hp, stats, config.num_epochs)


def _check_shared(configs: Sequence[ml_collections.ConfigDict], heads: Sequence[str],
                  networks: Sequence[tuple[str, dict]]) -> None:
    first = configs[0].to_dict()
    for index, config in enumerate(configs[1:], start=1):
        other = config.to_dict()
        for key in SHARED_KEYS:
            if other[key] != first[key]:
                raise ConfigError(
                    f"ensemble members must share {key!r}: member 0 has {first[key]!r}, member {index} {other[key]!r}; "
                    "train them in separate runs"
                )
    if len(set(heads)) > 1:
        raise ConfigError(f"ensemble members must share the classifier head, got {sorted(set(heads))}; group the "
                          "methods by head (linear, normed, cosine)")
    if any(network != networks[0] for network in networks[1:]):
        raise ConfigError(f"ensemble members must share the network, got {[repr(n) for n in networks]}; methods "
                          "with branches (bbn, ride, reslt, tde) train in groups of their own")


def _check_second_stage(configs: Sequence[ml_collections.ConfigDict], objectives: Sequence) -> SecondStage | None:
    """The members' common second stage (None for first-stage methods), its requirements checked."""
    stages = {repr(objective.method.second_stage): objective.method.second_stage for objective in objectives}
    if len(stages) > 1:
        raise ConfigError("ensemble members must train the same parameters: do not mix second stages (cRT, LWS) "
                          "with each other or with first-stage methods")
    stage = next(iter(stages.values()))
    if stage is None:
        return None
    for config in configs:
        method = config.loss.name
        if not config.loss.init_from:
            raise ConfigError(f"method {method} starts from a trained run: set --config.loss.init_from=<workdir of "
                              "a first-stage run>")
        for dotted, value in stage.requires.items():
            section, key = dotted.split(".")
            if config[section][key] != value:
                raise ConfigError(f"method {method} trains with {dotted}={value!r}, as its reference does; add "
                                  f"--config.{dotted}={value}")
    return stage


def _frozen_outside(optimizer: optax.GradientTransformation, trains: tuple[str, ...]) -> optax.GradientTransformation:
    """`optimizer` on the parameters under the `trains` paths; no update (and no weight decay) for the others."""

    def labels(params):
        return traverse_util.path_aware_map(
            lambda path, _: "train" if any("/".join(path) == prefix or "/".join(path).startswith(prefix + "/")
                                           for prefix in trains) else "frozen",
            params,
        )

    return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)


def build(config: ml_collections.ConfigDict, data: DataSpec, *, devices=None) -> Trainer:
    """The program of `config` (resolved here if it is not yet) on training data described by `data`.

    Raises:
      ConfigError: a config that cannot run as written (an unknown key, a phase outside the run, ...).
      ValueError: a global batch that does not divide over the devices, or counts with an empty class.
    """
    return _build([config], data, devices, ensemble=False)


def build_ensemble(configs: Sequence[ml_collections.ConfigDict], data: DataSpec, *, devices=None) -> Trainer:
    """One program training every config of `configs` as a member (see the module docstring).

    Members may differ in their seed and their method (`loss` section); everything in `SHARED_KEYS` and the
    classifier head must be equal.

    Raises:
      ConfigError: members that differ where they must not, or a config that cannot run.
    """
    if not configs:
        raise ConfigError("an ensemble needs at least one member")
    return _build(list(configs), data, devices, ensemble=True)


def _build(configs: list, data: DataSpec, devices, *, ensemble: bool) -> Trainer:
    configs = tuple(schema.resolve(config) for config in configs)
    config = configs[0]
    devices = tuple(devices or run_devices(config))
    check_batch_divides(config.batch_size, len(devices))
    check_batch_divides(config.eval_batch_size, len(devices))
    stats = ClassStats.from_counts(data.class_counts)
    objectives = [_bind(member, stats) for member in configs]
    heads = [member.model.head or objective.method.head for member, objective in zip(configs, objectives)]
    networks = [(*objective.network(), objective.method.partners) for objective in objectives]
    _check_shared(configs, heads, networks)
    network, network_options, partners = networks[0]
    if partners and config.mixup_alpha > 0:
        raise ConfigError(f"method {config.loss.name} trains on example pairs ({partners} partners); mixup would mix "
                          "them with a third batch: set --config.mixup_alpha=0")

    name = model_name(config)
    # Pretrained weights keep torchvision's 7x7 stem whatever the image size.
    small = name in _TORCHVISION_RESNETS and data.input_shape[0] <= _SMALL_INPUT_SIDE and not config.model.pretrained
    options = {"small_input": True} if small else {}
    try:
        model = create_model(name, stats.num_classes, head=heads[0], network=network,
                             dtype=jnp.dtype(config.model.dtype), **options, **network_options)
    except ValueError as error:
        raise ConfigError(f"method {config.loss.name}: {error}") from None
    optimizer = make_optimizer(config.optimizer)
    stage = _check_second_stage(configs, objectives)
    if stage is not None:
        optimizer = _frozen_outside(optimizer, stage.trains)
    objective = EnsembleObjective.of(objectives) if ensemble else objectives[0]

    def init_member(member: int) -> TrainState:
        key = jax.random.key(configs[member].seed)
        variables = model.init(key, jnp.zeros((1, *data.input_shape), jnp.float32), train=False)
        loss_key = jax.random.fold_in(key, 1)
        loss_params = objective.member_params(member, loss_key) if ensemble else objective.init_params(loss_key)
        params = {"model": variables["params"], "loss": loss_params}
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables["batch_stats"],
            opt_state=optimizer.init(params),
            loss_state=objective.member_state(member) if ensemble else objective.init_state(),
            totals=TrainTotals.init(stats.num_classes),
            seed=jnp.asarray(configs[member].seed, jnp.int32),
        )

    # One compiled program: initialised eagerly, every initialiser would compile and run on its own (a hundred small
    # programs for a ResNet, seconds at every start). It runs once per run, so it is compiled without XLA's
    # optimisations, which take seconds on the random-number generators and change the values only by rounding.
    # Outputs of a jitted function own their buffers, as the train step, which donates the state, needs.
    @functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
    def init_state() -> TrainState:
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *map(init_member, range(len(configs)))) \
            if ensemble else init_member(0)

    member_map = jax.vmap if ensemble else (lambda fn, **_: fn)
    crops = None if data.crop_size is None else Crops(data.crop_size, data.eval_resize)
    batch_split = MEMBERS_SPLIT if ensemble else SPLIT
    train_step = _all_real_by_default(data_parallel(
        member_map(make_train_step(model.clone(batch_norm_axis_name=AXIS), optimizer, objective, data.normalization,
                                   crop_padding=data.crop_padding,
                                   frozen_batch_norm=stage is not None and stage.frozen_batch_norm,
                                   mixup_alpha=config.mixup_alpha, partners=partners is not None, crops=crops),
                   in_axes=(0, 0, 0, EpochInputs(None, 0, None), 0)),
        config.parallel, devices, in_specs=(REPLICATED, batch_split, batch_split, REPLICATED, batch_split),
        out_specs=REPLICATED, donate_argnums=(0,),
    ))
    eval_step = data_parallel(
        member_map(make_eval_step(model, data.normalization, objective, crops), in_axes=(0, None, None, None)),
        config.parallel, devices, in_specs=(REPLICATED, SPLIT, SPLIT, SPLIT),
        out_specs=(REPLICATED, MEMBERS_SPLIT if ensemble else SPLIT),
    )
    outputs_step = data_parallel(
        member_map(make_outputs_step(model, data.normalization, crops), in_axes=(0, None)),
        config.parallel, devices, in_specs=(REPLICATED, SPLIT),
        out_specs=(MEMBERS_SPLIT, MEMBERS_SPLIT) if ensemble else (SPLIT, SPLIT),
    )
    mesh = Mesh(np.asarray(devices), (AXIS,))
    reset = lambda s: s.replace(totals=TrainTotals.init(stats.num_classes))  # noqa: E731
    end = lambda s: s.replace(loss_state=objective.end_epoch(s.loss_state))  # noqa: E731
    return Trainer(
        configs=configs, members=len(configs) if ensemble else None, objective=objective, model=model,
        optimizer=optimizer, devices=devices,
        batch_sharding=NamedSharding(mesh, MEMBERS_SPLIT if ensemble else SPLIT),
        eval_sharding=NamedSharding(mesh, SPLIT),
        replicated=NamedSharding(mesh, REPLICATED),
        plan=_plan(configs, objectives, name, heads[0], data, devices),
        init_state=init_state, train_step=train_step, eval_step=eval_step, outputs_step=outputs_step,
        start_epoch=jax.jit(member_map(reset)), end_epoch=jax.jit(member_map(end)),
        epoch_inputs=functools.partial(_epoch_inputs, objective,
                                       learning_rate_schedule(config.optimizer, config.num_epochs)),
    )


def _all_real_by_default(train_step: Callable) -> Callable:
    """`train_step(state, images, labels, schedule, mask=None)`: without a mask, every example is real."""

    def arguments(state, images, labels, schedule, mask=None) -> tuple:
        if mask is None:
            mask = (jnp.ones_like(labels, dtype=bool) if isinstance(labels, jax.Array)
                    else np.ones(np.shape(labels), bool))
        return state, images, labels, schedule, mask

    def step(*args, **kwargs):
        return train_step(*arguments(*args, **kwargs))

    step.lower = lambda *args, **kwargs: train_step.lower(*arguments(*args, **kwargs))
    return step


def _epoch_inputs(objective, learning_rate: Callable[[int], float], epoch: int) -> EpochInputs:
    return EpochInputs(np.int32(epoch), np.asarray(objective.phase_at(epoch), np.int32),
                       np.float32(learning_rate(epoch)))


def _imbalance(config: ml_collections.ConfigDict, data: DataSpec) -> float:
    """The config's imbalance factor, or (a dataset fixed by its split files) the training counts' ratio."""
    return config.dataset.get("imbalance_factor") or float(np.max(data.class_counts) / np.min(data.class_counts))


def _network_words(objective) -> str:
    """" split as the bilateral network, with reversed partners" for a method that changes the network or the data."""
    network, options = objective.network()
    words = f" split as the {network} network" if network != "plain" else ""
    if options:
        words += " (" + ", ".join(f"{key}={value}" for key, value in options.items()) + ")"
    partners = objective.method.partners
    return words + (f", every example paired with one from the {partners} sampler" if partners else "")


def _plan(configs, objectives: list, name: str, head: str, data: DataSpec, devices) -> dict:
    config = configs[0]
    warmup, decay = lr_milestones(config.optimizer, config.num_epochs)
    return {
        "members": [
            {"method": objective.method.name, "seed": member.seed, "summary": objective.method.summary,
             "phases": objective.plan(config.num_epochs), "notes": objective.method.notes,
             "keys": {key: value for key, value in member.loss.items() if key != "name"},
             **({"starts_from": {"workdir": member.loss.init_from, "step": member.loss.init_step or "its last, once "
                                 "finished"}} if objective.method.second_stage else {})}
            for member, objective in zip(configs, objectives)
        ],
        "dataset": f"{config.dataset.name} (imbalance {_imbalance(config, data):g}, "
                   f"{objectives[0].num_classes} classes, {int(np.sum(data.class_counts))} training images)",
        "model": f"{name}{_network_words(objectives[0])}, {head} head, {config.model.dtype}"
                 + (f", from {config.model.pretrained}" + (" (its classifier too)" if config.model.keep_classifier
                                                           else "") if config.model.pretrained else ""),
        "augmentation": ", ".join(([f"pad-{data.crop_padding} crop + flip, on the device"] if data.crop_padding
                                   else [])
                                  + ([f"random-resized {data.crop_size}-px crop + flip, on the device (evaluation: "
                                      f"resize to {data.eval_resize}, centre crop)"] if data.crop_size else [])
                                  + ([f"mixup (alpha {config.mixup_alpha:g})"] if config.mixup_alpha else [])
                                  ) or "none",
        "learning_rate": {"base": config.optimizer.learning_rate, "warmup_epochs": warmup,
                          "schedule": config.optimizer.schedule,
                          "decay": [{"from_epoch": epoch, "multiplier": multiplier} for epoch, multiplier in decay]},
        "num_epochs": config.num_epochs,
        "batch_size": config.batch_size,
        "steps_per_epoch": data.steps_per_epoch,
        "devices": f"{len(devices)} x {devices[0].device_kind} ({config.parallel})" + (
            f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""),
    }


def format_plan(plan: dict) -> str:
    """The plan as the lines a run prints at its start (one method line per distinct member method)."""
    lines = []
    described = set()
    for member in plan["members"]:
        phases = "; ".join(
            f"{p['phase']} epochs {p['first_epoch']}-{p['last_epoch']}" + (f" ({p['set_by']})" if "set_by" in p else "")
            for p in member["phases"] if p["first_epoch"] <= p["last_epoch"]
        )
        signature = (member["method"], phases)
        if signature in described:
            continue
        described.add(signature)
        lines.append(f"method   {member['method']}: {member['summary']}")
        lines.append(f"phases   {phases}")
        if member["notes"]:
            lines.append(f"note     {member['notes']}")
    if len(plan["members"]) > 1:
        lines.append(f"members  {len(plan['members'])}: " + ", ".join(
            f"{m['method']} seed {m['seed']}" for m in plan["members"]))
    for index, member in enumerate(plan["members"]):
        if "starts_from" in member:
            start = member["starts_from"]
            who = f"member {index} " if len(plan["members"]) > 1 else ""
            lines.append(f"start    {who}from {start['workdir']}, step {start['step']}")
    rate = plan["learning_rate"]
    decay = ", ".join(f"x{d['multiplier']:g} from epoch {d['from_epoch']}" for d in rate["decay"]) or "none"
    if rate["schedule"] != "step":
        decay = rate["schedule"].replace("_", " ") + " to 0 at the end"
    lines += [
        f"data     {plan['dataset']}",
        f"model    {plan['model']}; augmentation: {plan['augmentation']}",
        f"lr       {rate['base']:g}, warm-up {rate['warmup_epochs']} epochs, decay {decay}",
        f"run      {plan['num_epochs']} epochs x {plan['steps_per_epoch']} steps of {plan['batch_size']} on "
        f"{plan['devices']}",
    ]
    return "\n".join(lines)
