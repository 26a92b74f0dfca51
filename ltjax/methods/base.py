"""What a method is: its loss in phases, its keys, head, prediction rule, state and hooks; and that method bound to a
run (`Objective`), which the train step calls without knowing which method it is.

A `Method` is a record. Its `phases` run in order, each from the epoch its start key names (the first from epoch 0);
a phase's `loss` maps the step's `Inputs` to per-example losses. The train step switches phases with `lax.switch` on
the phase index the host gives it for the epoch (`Objective.phase_at`), so one compiled program serves the whole run,
and every run that differs only in its length or its phase starts. State that persists across steps and epochs
(DynaSmooth's group means, SWRM's coordinates) is the method's own pytree, carried in the train state: created by
`init_state`, updated inside the step by a phase's `collect`, at each epoch's end by `end_epoch`, and on the host when
a phase begins by its `enter` hook (SWRM's similarity model needs a pass over the training set there).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import losses
from ltjax.keys import ConfigError, Key
from ltjax.schedules import epoch_of
from ltjax.stats import ClassStats


class Inputs(NamedTuple):
    """What a phase's loss sees in the train step (one device's shard of the batch).

    Attributes:
      logits: `[B, C]` the head's outputs (cosines for a normed head).
      features: `[B, D]` penultimate features.
      labels: `[B]` int32.
      hp: the method's keys, resolved (numbers, static choices, phase start epochs).
      stats: the training set's `ClassStats`.
      state: the method's state pytree.
      params: the method's trainable parameters (DySWRM's coordinates), trained with the model.
      mask: `[B]` bool, the real examples of a padded last batch (None: all are); a phase's `collect` counts only
        those (its loss need not: `Objective.loss` leaves the padding out).
    """

    logits: jax.Array
    features: jax.Array
    labels: jax.Array
    hp: Mapping[str, Any]
    stats: ClassStats
    state: Any
    params: Any
    mask: jax.Array | None = None


class PerExample(NamedTuple):
    """A phase's per-example losses, and the sample weights of a weighted mean.

    `weights` is None for a plain batch mean (divide the sum by B); otherwise the batch loss is
    `sum(losses) / sum(weights)`, PyTorch's `cross_entropy(weight=w)` reduction (LDAM-DRW).
    """

    losses: jax.Array
    weights: jax.Array | None = None


class Hooks(NamedTuple):
    """What a phase's host-side `enter` hook may use (SWRM: class prototypes from the training set)."""

    class_mean_features: Callable[[], np.ndarray]  # `[C, D]` mean penultimate feature of each class, eval mode
    seed: int


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of a method.

    Attributes:
      name: shown in the run's plan.
      loss: `Inputs -> PerExample`.
      start: the key of the method holding this phase's start epoch; None for the first phase (epoch 0).
      collect: `(state, inputs, axis_name) -> state`, run inside the train step while this phase is on.
      enter: `(state, hp, hooks) -> state`, run on the host before the first step of this phase.
      min_epochs: epochs the phase needs to have an effect (FFDS: 2, its first epoch collects statistics).
      why: why it needs them, for the error when the run leaves it fewer.
    """

    name: str
    loss: Callable[[Inputs], PerExample]
    start: str | None = None
    collect: Callable | None = None
    enter: Callable | None = None
    min_epochs: int = 1
    why: str = ""


def cross_entropy(inputs: Inputs) -> PerExample:
    """The first phase of the deferred methods: plain softmax cross-entropy."""
    return PerExample(losses.softmax_cross_entropy(inputs.logits, inputs.labels))


@dataclasses.dataclass(frozen=True)
class SecondStage:
    """What makes a method a second stage, trained from a first-stage run (decoupled training, Kang et al. 2020).

    The run named by the method's `init_from` key provides every model parameter and BatchNorm statistic except
    those under `fresh`, which start from this run's initialisation; only the parameters under `trains` are updated
    (the others get no gradient step and no weight decay).

    Attributes:
      trains: parameter paths that train, e.g. `("model/head",)`.
      fresh: parameter paths initialised anew instead of loaded (cRT's classifier, LWS's scales).
      requires: other config values the stage needs, dotted keys (e.g. class-balanced sampling).
    """

    trains: tuple[str, ...]
    fresh: tuple[str, ...]
    requires: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Method:
    """A long-tail method as a researcher compares it.

    Attributes:
      name: the name users type (`--config.loss.name=<name>`).
      summary: one line: what it is and where it comes from.
      keys: its config keys (hyper-parameters and phase starts), each default written once.
      phases: its phases in order.
      head: the classifier head its reference trains ("linear", "normed" cosines, IIF's "cosine").
      predict: `(logits, hp, stats) -> logits` whose argmax is the prediction; None: the logits.
      init_state: `(stats, hp) -> state`; None: no state.
      init_params: `(stats, hp, key) -> params` trained with the model; None: none.
      end_epoch: `state -> state` at each epoch's end, jitted; None: nothing.
      second_stage: set for a method that starts from a trained run (its keys then include `init_from`).
      notes: what a user should know (differences from the reference, recipe caveats).
    """

    name: str
    summary: str
    keys: Mapping[str, Key]
    phases: tuple[Phase, ...]
    head: str = "linear"
    predict: Callable | None = None
    init_state: Callable | None = None
    init_params: Callable | None = None
    end_epoch: Callable | None = None
    second_stage: SecondStage | None = None
    notes: str = ""

    def __post_init__(self):
        starts = [phase.start for phase in self.phases]
        if not self.phases or starts[0] is not None or any(start is None for start in starts[1:]):
            raise ValueError(f"method {self.name}: the first phase starts at 0, every later one at a start key")
        for start in starts[1:]:
            if start not in self.keys or self.keys[start].kind != "epoch":
                raise ValueError(f"method {self.name}: phase start {start!r} must be one of its epoch keys")
        if self.second_stage is not None and "init_from" not in self.keys:
            raise ValueError(f"method {self.name}: a second stage names its first stage with an init_from key")


@dataclasses.dataclass(frozen=True)
class Objective:
    """A method bound to a run: its resolved keys, the training set's statistics, the run's length.

    Built by `bind`; what the train step, the eval step and the loop call.
    """

    method: Method
    hp: Mapping[str, Any]
    stats: ClassStats
    phase_starts: tuple[int, ...]  # absolute first epoch of each phase; phase_starts[0] == 0

    @property
    def num_classes(self) -> int:
        return self.stats.num_classes

    def phase_at(self, epoch: int) -> int:
        """The index of the phase that `epoch` belongs to (on the host: the step receives it)."""
        return sum(epoch >= start for start in self.phase_starts[1:])

    def _inputs(self, outputs, labels, state, params, mask=None) -> Inputs:
        return Inputs(outputs.logits, outputs.features, labels, self.hp, self.stats, state, params, mask)

    def loss(self, outputs, labels, phase, state, params, mask=None) -> tuple[jax.Array, jax.Array]:
        """`(sum of the per-example losses, the normaliser)` of this device's shard, in phase `phase` (traced).

        The batch loss is the psum of the sums over the psum of the normalisers: the number of examples, or the sum of
        the sample weights of a weighted mean. `mask [B]` marks the real examples of a padded batch; the padding
        counts in neither.
        """
        inputs = self._inputs(outputs, labels, state, params, mask)
        # Branches close over the inputs (static keys and pytrees with static fields are not switch operands).
        branches = [_as_branch(phase.loss, inputs) for phase in self.method.phases]
        if len(branches) == 1:
            values, weights = branches[0]()
        else:
            values, weights = jax.lax.switch(phase, branches)
        if mask is not None:  # `where`, not a product: a padded example's loss may be anything, even NaN
            values, weights = jnp.where(mask, values, 0), jnp.where(mask, weights, 0)
        return jnp.sum(values), jnp.sum(weights)

    def collect(self, state, outputs, labels, phase, axis_name: str | None, mask=None):
        """The in-step state update of phase `phase` (identity in phases without one), from the examples `mask`
        marks."""
        phases = self.method.phases
        if all(phase.collect is None for phase in phases):
            return state
        inputs = self._inputs(outputs, labels, state, None, mask)
        branches = [
            functools.partial(phase.collect, inputs=inputs, axis_name=axis_name) if phase.collect else (lambda s: s)
            for phase in phases
        ]
        return jax.lax.switch(phase, branches, state)

    def predict(self, outputs, state=None) -> jax.Array:
        """Logits whose argmax is the method's prediction (`state` is the method's state; unused here)."""
        if self.method.predict is None:
            return outputs.logits
        return self.method.predict(outputs.logits, self.hp, self.stats)

    def numbers(self) -> dict[str, float]:
        """The method's numeric keys and their values: what ensemble members may vary."""
        return {key: self.hp[key] for key, spec in self.method.keys.items() if spec.kind == "number"}

    def with_numbers(self, numbers) -> "Objective":
        """This objective with its numeric keys replaced (by traced per-member values inside an ensemble step)."""
        return dataclasses.replace(self, hp={**self.hp, **numbers})

    def init_state(self):
        return self.method.init_state(self.stats, self.hp) if self.method.init_state else {}

    def init_params(self, key: jax.Array):
        return self.method.init_params(self.stats, self.hp, key) if self.method.init_params else {}

    def end_epoch(self, state):
        return self.method.end_epoch(state) if self.method.end_epoch else state

    def phases_entered_at(self, epoch: int) -> tuple[Phase, ...]:
        """The phases whose first epoch is `epoch` and that have a host-side `enter` hook."""
        return tuple(
            phase for phase, start in zip(self.method.phases, self.phase_starts)
            if start == epoch and phase.enter is not None
        )

    def plan(self, num_epochs: int) -> list[dict[str, Any]]:
        """The phases with their epochs, e.g. `[{"phase": "LDAM", "epochs": [0, 15]}, ...]`."""
        ends = list(self.phase_starts[1:]) + [num_epochs]
        return [
            {"phase": phase.name, "first_epoch": start, "last_epoch": end - 1,
             **({"set_by": f"loss.{phase.start}={self.hp[phase.start]:g}"} if phase.start else {})}
            for phase, start, end in zip(self.method.phases, self.phase_starts, ends)
        ]


def _as_branch(loss: Callable[[Inputs], PerExample], inputs: Inputs) -> Callable[[], tuple]:
    """A phase loss as a `lax.switch` branch: every branch returns `(losses, weights)` with weights filled in."""

    def branch():
        values, weights = loss(inputs)
        return values, jnp.ones_like(values) if weights is None else weights

    return branch


def bind(method: Method, hp: Mapping[str, Any], stats: ClassStats, num_epochs: int) -> Objective:
    """The method in a run of `num_epochs` with resolved keys `hp` on a training set with `stats`.

    Raises:
      ConfigError: a phase that starts outside the run, out of order, or too late to have an effect; the message
        names the key and a value that works.
    """
    starts = [0]
    for previous, phase in zip(method.phases, method.phases[1:]):
        key = f"loss.{phase.start}"
        start = epoch_of(hp[phase.start], num_epochs, key=key)
        last_start = num_epochs - phase.min_epochs
        if not starts[-1] <= start <= last_start:
            fits = (last_start + starts[-1] + 1) // 2 if last_start >= starts[-1] else None
            advice = (
                f"set --config.{key}={fits} (or the fraction {fits / num_epochs:.3g}), or train longer"
                if fits is not None else f"train for more epochs (config.num_epochs={num_epochs})"
            )
            needs = f" and needs {phase.min_epochs} epochs ({phase.why})" if phase.min_epochs > 1 else ""
            raise ConfigError(
                f"method {method.name}: its {phase.name} phase would start at epoch {start}{needs}, but the run has "
                f"epochs 0-{num_epochs - 1} and the {previous.name} phase starts at epoch {starts[-1]}; the phase "
                f"would never run as configured. {advice}"
            )
        starts.append(start)
    return Objective(method, dict(hp), stats, tuple(starts))
