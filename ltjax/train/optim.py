"""SGD with the long-tail references' learning-rate recipe: linear warm-up, then step decay, by epoch."""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(optimizer_config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """The references' `adjust_learning_rate`, as a function of the step.

    With the 1-indexed epoch `e` (as those scripts count it): `lr * e / warmup_epochs` while `e <= warmup_epochs`,
    then `lr * multiplier` for the last `(after_epoch, multiplier)` of `lr_decay` with `e > after_epoch`, else `lr`.
    LDAM-DRW: warm-up 5, decay `((160, 0.01), (180, 0.0001))`; FFDS/KPS: `((160, 0.1), (180, 0.01))`.
    """
    base = optimizer_config.learning_rate
    warmup = optimizer_config.get("warmup_epochs", 0)
    decay = sorted(tuple(pair) for pair in optimizer_config.get("lr_decay", ()))

    def schedule(step):
        epoch = step // steps_per_epoch + 1
        rate = jnp.where(epoch <= warmup, base * epoch / max(warmup, 1), base) if warmup else jnp.float32(base)
        for after_epoch, multiplier in decay:
            rate = jnp.where(epoch > after_epoch, base * multiplier, rate)
        return rate

    return schedule


def make_optimizer(optimizer_config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
    """PyTorch's `SGD(momentum, weight_decay, nesterov)`: L2 added to the gradient, then heavy-ball momentum."""
    return optax.chain(
        optax.add_decayed_weights(optimizer_config.get("weight_decay", 2e-4)),
        optax.sgd(
            learning_rate_schedule(optimizer_config, steps_per_epoch),
            momentum=optimizer_config.get("momentum", 0.9),
            nesterov=optimizer_config.get("nesterov", False),
        ),
    )
