"""The train state: everything a step reads and writes, one pytree, checkpointed whole."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from ltjax.train.objective import LossState


@flax.struct.dataclass
class TrainState:
    """Attributes:
      step: global step (the data position is `divmod(step, steps_per_epoch)`: the pipeline is deterministic).
      params: `{"model": ..., "loss": ...}`; the loss's own trainable parameters (DySWRM) train with the model.
      batch_stats: BatchNorm running statistics.
      opt_state: optimizer state.
      loss_state: DynaSmooth group means and SWRM coordinates.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    loss_state: LossState


def create_train_state(
    model, optimizer: optax.GradientTransformation, loss_params: dict, loss_state: LossState, image_shape, seed: int
) -> TrainState:
    variables = model.init(jax.random.key(seed), jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = {"model": variables["params"], "loss": loss_params}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables["batch_stats"],
        opt_state=optimizer.init(params),
        loss_state=loss_state,
    )
