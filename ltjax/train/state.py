"""The train state: everything a step reads and writes, one pytree, checkpointed whole."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax

from ltjax.metrics import TrainTotals


@flax.struct.dataclass
class TrainState:
    """Attributes:
      step: global step (the data position is `divmod(step, steps_per_epoch)`: the pipeline is deterministic).
      params: `{"model": ..., "loss": ...}`; the method's own trainable parameters (DySWRM) train with the model.
      batch_stats: BatchNorm running statistics.
      opt_state: optimizer state.
      loss_state: the method's state (DynaSmooth's group means, SWRM's coordinates).
      totals: the current epoch's running training sums, reset at each epoch's start.
      seed: the run's seed (int32), from which the step draws its augmentation; one per ensemble member.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    loss_state: Any
    totals: TrainTotals
    seed: jax.Array
