"""SGD with the long-tail references' learning-rate recipes: linear warm-up, then step decay or a cosine, by epoch.

Warm-up length and decay milestones are epoch specs (`ltjax.schedules.epoch_of`): fractions of the run by default,
so a shortened run keeps the recipe's shape (decay at 80% and 90% of 200 epochs is 160/180, of 20 epochs 16/18).

The schedule runs on the host and the train step receives the epoch's rate as an argument (`EpochInputs`, with the
method's phase): the compiled step does not depend on the run's length, its milestones or its base rate, so runs that
differ only there (a sweep, a shortened run, `--extend`) share one program and its compilation cache entry.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import ml_collections
import optax
from flax import traverse_util

from ltjax.errors import ConfigError
from ltjax.schedules import epoch_of


def lr_milestones(
    optimizer_config: ml_collections.ConfigDict, num_epochs: int
) -> tuple[int, tuple[tuple[int, float], ...]]:
    """`(warm-up epochs, ((first epoch, multiplier of the base rate), ...))` resolved for a run of `num_epochs`.

    Raises:
      ConfigError: milestones with the cosine schedule, which has none.
    """
    if optimizer_config.schedule != "step" and optimizer_config.lr_decay:
        raise ConfigError(f"optimizer.schedule={optimizer_config.schedule} decays without milestones: set "
                          "--config.optimizer.lr_decay=() (or schedule=step to keep them)")
    warmup = epoch_of(optimizer_config.warmup, num_epochs, key="optimizer.warmup")
    decay = tuple(sorted(
        (epoch_of(when, num_epochs, key=f"optimizer.lr_decay[{i}]"), float(multiplier))
        for i, (when, multiplier) in enumerate(optimizer_config.lr_decay)
    ))
    return warmup, decay


def learning_rate_schedule(optimizer_config: ml_collections.ConfigDict, num_epochs: int) -> Callable[[int], float]:
    """The references' `adjust_learning_rate`, as a function of the 0-indexed epoch.

    With the 1-indexed epoch `e` (as those scripts count it): `lr * e / W` while `e <= W` (W warm-up epochs), then
    `lr * multiplier` of the last milestone whose 0-indexed epoch the run has reached, else `lr`. LDAM-DRW: warm-up
    5 of 200, decay x0.01 from 160 and x0.0001 from 180; FFDS and KPS: x0.1 and x0.01. With `schedule=cosine`,
    after the warm-up, `lr * (1 + cos(pi * epoch / num_epochs)) / 2` for the 0-indexed epoch: PyTorch's
    `CosineAnnealingLR(T_max=num_epochs, eta_min=0)` stepped at each epoch's end (DisAlign's and FFDS's scripts);
    `schedule=cosine_stepped_at_start` takes `epoch + 1`, the same scheduler stepped at each epoch's start (the OLTR,
    Decoupling and TDE scripts, whose first epoch already runs at the once-stepped rate and last at 0).
    """
    base = float(optimizer_config.learning_rate)
    warmup, decay = lr_milestones(optimizer_config, num_epochs)
    cosine = optimizer_config.schedule != "step"
    offset = 1 if optimizer_config.schedule == "cosine_stepped_at_start" else 0

    def schedule(epoch: int) -> float:
        rate = base * (epoch + 1) / warmup if epoch < warmup else base
        if cosine and epoch >= warmup:
            return base * (1 + math.cos(math.pi * (epoch + offset) / num_epochs)) / 2
        for first_epoch, multiplier in decay:
            if epoch >= first_epoch:
                rate = base * multiplier
        return rate

    return schedule


def _step_at_learning_rate() -> optax.GradientTransformationExtraArgs:
    """`-learning_rate * updates`, with `learning_rate` an argument of `update` (a traced scalar in the step)."""

    def update(updates, state, params=None, *, learning_rate, **extra_args):
        del params, extra_args
        return jax.tree.map(lambda u: -learning_rate * u, updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def make_optimizer(optimizer_config: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
    """PyTorch's `SGD(momentum, weight_decay, nesterov)`: L2 added to the gradient, then heavy-ball momentum, then a
    step of the rate given to `update(..., learning_rate=rate)` (what `optax.sgd` does with a fixed rate).

    With `backbone_lr_factor` other than 1, two parameter groups as PyTorch's: the classifier heads (every model
    submodule named `head` or `*_head`) and the method's own parameters at the rate, the rest at the rate times the
    factor (scaling the step is scaling the group's rate, since momentum and decay are per parameter).
    """

    def sgd(factor: float = 1.0):
        return optax.chain(
            optax.add_decayed_weights(optimizer_config.weight_decay),
            optax.trace(decay=optimizer_config.momentum, nesterov=optimizer_config.nesterov),
            *([optax.scale(factor)] if factor != 1.0 else []),
            _step_at_learning_rate(),
        )

    factor = float(optimizer_config.backbone_lr_factor)
    if factor == 1.0:
        return sgd()
    return optax.multi_transform({"classifier": sgd(), "backbone": sgd(factor)}, _parameter_groups)


def _parameter_groups(params) -> dict:
    """"backbone" for the model's parameters outside its classifier heads, "classifier" for the others."""

    def group(path, _) -> str:
        in_backbone = path[0] == "model" and not (path[1] == "head" or path[1].endswith("_head"))
        return "backbone" if in_backbone else "classifier"

    return traverse_util.path_aware_map(group, params)
