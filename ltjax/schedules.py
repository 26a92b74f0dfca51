"""When things happen in a run: epoch specs (relative to the run or absolute) and the DRW weights switch.

Every switch epoch and learning-rate milestone of a config is an *epoch spec*: a number `x` that is a fraction of
the run when `0 <= x < 1` (`floor(x * num_epochs)`, so D-FFDS's 0.65 is epoch 130 of 200 and epoch 13 of 20) and an
absolute 0-indexed epoch when `x >= 1` (then it must be a whole number). The reference recipes' 200-epoch switches
are written as fractions, so shortening a run moves them with it; an absolute epoch stays expressible.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ltjax.errors import ConfigError
from ltjax.losses.class_vectors import class_balanced_weights

# Fractions such as 0.7 are not exact in binary; the slack keeps floor(0.7 * 20) at 14, not 13.
_FLOOR_SLACK = 1e-9


def epoch_of(spec: float, num_epochs: int, *, key: str) -> int:
    """The 0-indexed epoch an epoch spec names in a run of `num_epochs`.

    Args:
      spec: a fraction of the run in [0, 1), or a whole absolute epoch >= 1.
      num_epochs: the run's length.
      key: the config key holding the spec, for messages.

    Raises:
      ConfigError: a negative spec, or one >= 1 that is not a whole number.
    """
    if spec < 0:
        raise ConfigError(f"{key}={spec:g} is negative; give a fraction of the run in [0, 1) or an epoch >= 1")
    if spec < 1:
        return math.floor(spec * num_epochs + _FLOOR_SLACK)
    if not float(spec).is_integer():
        raise ConfigError(
            f"{key}={spec:g} is neither a fraction of the run (< 1) nor a whole epoch; write e.g. "
            f"{math.floor(spec)} or {spec / num_epochs:.3g}"
        )
    return int(spec)


def drw_class_weights(class_counts: jax.Array, active: jax.Array, *, beta: float = 0.9999) -> jax.Array:
    """Deferred re-weighting (LDAM-DRW): unit weights, then class-balanced weights (sum C) while `active`.

    The reference picks beta from `[0, 0.9999][epoch // 160]`; beta = 0 gives unit weights.
    """
    weights = class_balanced_weights(class_counts, beta=beta)
    return jnp.where(active, weights, jnp.ones_like(weights))


def bbn_alpha(epoch: int | jax.Array, num_epochs: int) -> jax.Array:
    r"""BBN's cumulative-learning weight of the conventional branch in 0-indexed epoch `epoch` of `num_epochs`:
    :math:`\alpha = 1 - (e / D)^2` (Zhou et al., CVPR 2020; `lib/core/combiner.py` with its 1-indexed epoch minus one).

    D is the run's length, except the reference's 90- and 180-epoch runs, which divide by 100 and 200 (so alpha ends at
    0.2079 and 0.19); alpha starts at exactly 1 and never reaches 0 (the paper writes :math:`1 - (T / T_{max})^2`).

    Example:
      >>> [round(float(bbn_alpha(e, 200)), 5) for e in (0, 100, 199)]
      [1.0, 0.75, 0.00998]
    """
    divisor = 100 * (num_epochs // 100 + 1) if num_epochs in (90, 180) else num_epochs
    return 1.0 - jnp.square(jnp.asarray(epoch, jnp.float32) / divisor)
