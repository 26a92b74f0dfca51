"""`build(config, data_spec)`: one resolved config -> the model, optimizer, method and the jitted data-parallel steps.

The loop, the tests and the benchmarks all build their steps here, so they run the same program:

    trainer = build(config, DataSpec(class_counts, image_shape, normalization, steps_per_epoch))
    state = trainer.init_state()
    state = trainer.train_step(state, images, labels, epoch)      # global uint8 batch [B, H, W, 3], labels [B]
    stats, features = trainer.eval_step(state, images, labels, mask)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from ltjax import datasets, methods
from ltjax.configs import schema
from ltjax.data.augment import Normalization
from ltjax.metrics import TrainTotals
from ltjax.models import create_model
from ltjax.stats import ClassStats
from ltjax.train.optim import lr_milestones, make_optimizer
from ltjax.train.state import TrainState
from ltjax.train.step import AXIS, REPLICATED, SPLIT, check_batch_divides, data_parallel, make_eval_step, \
    make_train_step

# The torchvision ResNets take a CIFAR-style stem (3x3, stride 1, no max-pool) on images this small.
_SMALL_INPUT_SIDE = 64
_TORCHVISION_RESNETS = ("resnet10", "resnet18", "resnet50")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a run needs to know about its training data to build its program.

    Attributes:
      class_counts: `[C]` training images per class.
      image_shape: `(H, W, 3)` of the uint8 images the steps receive.
      normalization: mean/std applied on device.
      steps_per_epoch: training steps per epoch (the learning-rate schedule counts epochs in steps).
      crop_padding: the device augmentation's pad-crop border (None: no augmentation).
    """

    class_counts: np.ndarray
    image_shape: tuple[int, ...]
    normalization: Normalization
    steps_per_epoch: int
    crop_padding: int | None = None


@dataclasses.dataclass(frozen=True)
class Trainer:
    """A run's program. `train_step` donates the state it is given: keep only the state it returns.

    `batch_sharding` is where the steps want their batch arrays (`ltjax.data.device_prefetch` puts them there).
    """

    config: ml_collections.ConfigDict
    objective: methods.Objective
    model: Any
    optimizer: optax.GradientTransformation
    devices: tuple
    batch_sharding: NamedSharding
    plan: dict
    init_state: Callable[[], TrainState]
    train_step: Callable[..., TrainState]
    eval_step: Callable
    start_epoch: Callable[[TrainState], TrainState]
    end_epoch: Callable[[TrainState], TrainState]


def model_name(config: ml_collections.ConfigDict) -> str:
    return config.model.name or datasets.get(config.dataset.name).model


def build(config: ml_collections.ConfigDict, data: DataSpec, *, devices=None) -> Trainer:
    """The program of `config` (resolved here if it is not yet) on training data described by `data`.

    Raises:
      ConfigError: a config that cannot run as written (an unknown key, a phase outside the run, ...).
      ValueError: a global batch that does not divide over the devices, or counts with an empty class.
    """
    config = schema.resolve(config)
    devices = tuple(devices or jax.local_devices()[: config.num_devices or None])
    check_batch_divides(config.batch_size, len(devices))
    check_batch_divides(config.eval_batch_size, len(devices))
    stats = ClassStats.from_counts(data.class_counts)
    method = methods.get(config.loss.name)
    hp = {key: value for key, value in config.loss.items() if key != "name"}
    objective = methods.bind(method, hp, stats, config.num_epochs)

    name = model_name(config)
    options = {"small_input": True} if name in _TORCHVISION_RESNETS and data.image_shape[0] <= _SMALL_INPUT_SIDE \
        else {}
    head = config.model.head or method.head
    model = create_model(name, stats.num_classes, head=head, dtype=jnp.dtype(config.model.dtype), **options)
    optimizer = make_optimizer(config.optimizer, data.steps_per_epoch, config.num_epochs)
    train_step = data_parallel(
        make_train_step(model.clone(batch_norm_axis_name=AXIS), optimizer, objective, data.normalization,
                        crop_padding=data.crop_padding, seed=config.seed),
        config.parallel, devices, in_specs=(REPLICATED, SPLIT, SPLIT, REPLICATED), out_specs=REPLICATED,
        donate_argnums=(0,),
    )
    eval_step = data_parallel(
        make_eval_step(model, data.normalization, objective),
        config.parallel, devices, in_specs=(REPLICATED, SPLIT, SPLIT, SPLIT), out_specs=(REPLICATED, SPLIT),
    )

    def init_state() -> TrainState:
        key = jax.random.key(config.seed)
        variables = model.init(key, jnp.zeros((1, *data.image_shape), jnp.float32), train=False)
        params = {"model": variables["params"], "loss": objective.init_params(jax.random.fold_in(key, 1))}
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables["batch_stats"],
            opt_state=optimizer.init(params),
            loss_state=objective.init_state(),
            totals=TrainTotals.init(stats.num_classes),
        )
        # The train step donates the state: every leaf must own its buffer (initialisers may share one zeros array).
        return jax.tree.map(jnp.array, state)

    plan = _plan(config, objective, name, head, data, devices)
    return Trainer(
        config=config, objective=objective, model=model, optimizer=optimizer, devices=devices,
        batch_sharding=NamedSharding(Mesh(np.asarray(devices), (AXIS,)), SPLIT), plan=plan,
        init_state=init_state, train_step=train_step, eval_step=eval_step,
        start_epoch=jax.jit(lambda s: s.replace(totals=TrainTotals.init(stats.num_classes))),
        end_epoch=jax.jit(lambda s: s.replace(loss_state=objective.end_epoch(s.loss_state))),
    )


def _plan(config, objective: methods.Objective, name: str, head: str, data: DataSpec, devices) -> dict:
    warmup, decay = lr_milestones(config.optimizer, config.num_epochs)
    method = objective.method
    return {
        "method": method.name,
        "summary": method.summary,
        "dataset": f"{config.dataset.name} (imbalance {config.dataset.imbalance_factor:g}, "
                   f"{objective.num_classes} classes, {int(np.sum(data.class_counts))} training images)",
        "model": f"{name}, {head} head, {config.model.dtype}",
        "augmentation": f"pad-{data.crop_padding} crop + flip, on the device" if data.crop_padding else "none",
        "phases": objective.plan(config.num_epochs),
        "learning_rate": {"base": config.optimizer.learning_rate, "warmup_epochs": warmup,
                          "decay": [{"from_epoch": epoch, "multiplier": multiplier} for epoch, multiplier in decay]},
        "num_epochs": config.num_epochs,
        "batch_size": config.batch_size,
        "steps_per_epoch": data.steps_per_epoch,
        "devices": f"{len(devices)} x {devices[0].device_kind} ({config.parallel})",
        "notes": method.notes,
    }


def format_plan(plan: dict) -> str:
    """The plan as the lines a run prints at its start."""
    phases = "; ".join(
        f"{p['phase']} epochs {p['first_epoch']}-{p['last_epoch']}" + (f" ({p['set_by']})" if "set_by" in p else "")
        for p in plan["phases"] if p["first_epoch"] <= p["last_epoch"]
    )
    rate = plan["learning_rate"]
    decay = ", ".join(f"x{d['multiplier']:g} from epoch {d['from_epoch']}" for d in rate["decay"]) or "none"
    lines = [
        f"method   {plan['method']}: {plan['summary']}",
        f"phases   {phases}",
        f"data     {plan['dataset']}",
        f"model    {plan['model']}; augmentation: {plan['augmentation']}",
        f"lr       {rate['base']:g}, warm-up {rate['warmup_epochs']} epochs, decay {decay}",
        f"run      {plan['num_epochs']} epochs x {plan['steps_per_epoch']} steps of {plan['batch_size']} on "
        f"{plan['devices']}",
    ]
    if plan["notes"]:
        lines.append(f"note     {plan['notes']}")
    return "\n".join(lines)
