"""SGD with the long-tail references' learning-rate recipe: linear warm-up, then step decay, by epoch.

Warm-up length and decay milestones are epoch specs (`ltjax.schedules.epoch_of`): fractions of the run by default,
so a shortened run keeps the recipe's shape (decay at 80% and 90% of 200 epochs is 160/180, of 20 epochs 16/18).
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax

from ltjax.schedules import epoch_of


def lr_milestones(
    optimizer_config: ml_collections.ConfigDict, num_epochs: int
) -> tuple[int, tuple[tuple[int, float], ...]]:
    """`(warm-up epochs, ((first epoch, multiplier of the base rate), ...))` resolved for a run of `num_epochs`."""
    warmup = epoch_of(optimizer_config.warmup, num_epochs, key="optimizer.warmup")
    decay = tuple(sorted(
        (epoch_of(when, num_epochs, key=f"optimizer.lr_decay[{i}]"), float(multiplier))
        for i, (when, multiplier) in enumerate(optimizer_config.lr_decay)
    ))
    return warmup, decay


def learning_rate_schedule(
    optimizer_config: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int
) -> optax.Schedule:
    """The references' `adjust_learning_rate`, as a function of the step.

    With the 1-indexed epoch `e` (as those scripts count it): `lr * e / W` while `e <= W` (W warm-up epochs), then
    `lr * multiplier` of the last milestone whose 0-indexed epoch the run has reached, else `lr`. LDAM-DRW: warm-up
    5 of 200, decay x0.01 from 160 and x0.0001 from 180; FFDS and KPS: x0.1 and x0.01.
    """
    base = optimizer_config.learning_rate
    warmup, decay = lr_milestones(optimizer_config, num_epochs)

    def schedule(step):
        epoch = step // steps_per_epoch + 1
        rate = jnp.where(epoch <= warmup, base * epoch / max(warmup, 1), base) if warmup else jnp.float32(base)
        for first_epoch, multiplier in decay:
            rate = jnp.where(epoch > first_epoch, base * multiplier, rate)
        return rate

    return schedule


def make_optimizer(
    optimizer_config: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int
) -> optax.GradientTransformation:
    """PyTorch's `SGD(momentum, weight_decay, nesterov)`: L2 added to the gradient, then heavy-ball momentum."""
    return optax.chain(
        optax.add_decayed_weights(optimizer_config.weight_decay),
        optax.sgd(
            learning_rate_schedule(optimizer_config, steps_per_epoch, num_epochs),
            momentum=optimizer_config.momentum,
            nesterov=optimizer_config.nesterov,
        ),
    )
