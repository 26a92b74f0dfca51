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
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

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
        those (its loss need not: `Objective.loss` leaves the padding out, except from batch-level terms).
      keys: `[B]` typed random keys, one per example (`example_keys`), for a loss that draws (EQL's mask, GCL's
        cloud): a pure function of the run's seed, the step and the example's position in the global batch, so the
        draws do not depend on the number of devices. None outside the train step.
      axis_name: the devices' axis inside the data-parallel step (None outside): a batch-level term (LADE's
        regulariser, Seesaw's counts of the current batch) sums over it to be that of the global batch.
      branches: `[B, K, C]` the branches' (experts') own logits of a method whose `Network` has branches
        (`ltjax.models.BranchedOutput`); None for the plain networks.
      epoch: the 0-indexed epoch (traced int32) in the train step, for a loss with a schedule of its own (BBN's
        alpha); None outside it.
      num_epochs: the run's length.
      partner: for a method with `partners` (BBN), the `Inputs` of each example's partner, drawn by the method's
        partner sampler and passed through the network on its own (its `mask` is this batch's); None otherwise.
    """

    logits: jax.Array
    features: jax.Array
    labels: jax.Array
    hp: Mapping[str, Any]
    stats: ClassStats
    state: Any
    params: Any
    mask: jax.Array | None = None
    keys: jax.Array | None = None
    axis_name: str | None = None
    branches: jax.Array | None = None
    epoch: jax.Array | None = None
    num_epochs: int | None = None
    partner: Inputs | None = None


_LOSS_STREAM = 0x6C6F7373  # "loss": draws independent of the device augmentation's


def example_keys(seed: int | jax.Array, step: int | jax.Array, first_index: int | jax.Array,
                 batch_size: int) -> jax.Array:
    """`[batch_size]` keys of the examples at global positions `first_index + [0, batch_size)` of training step
    `step` (the global step) of a run seeded `seed`."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _LOSS_STREAM), step)
    return jax.vmap(lambda index: jax.random.fold_in(key, index))(first_index + jnp.arange(batch_size))


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


# The hooks a method supplies. The train step calls them only through these signatures; `Phase` and `Method` check
# at definition what a call would otherwise find out mid-training.


class PhaseLoss(Protocol):
    """A phase's loss: the step's `Inputs` -> per-example losses (and the weights of a weighted mean)."""

    def __call__(self, inputs: Inputs, /) -> PerExample: ...


class Collect(Protocol):
    """A phase's in-step update of the method's state from this device's shard; called with keywords. Sums over the
    batch must be `psum`med over `axis_name` (None outside a data-parallel step), so that every device agrees."""

    def __call__(self, state: Any, *, inputs: Inputs, axis_name: str | None) -> Any: ...


class Enter(Protocol):
    """A phase's host-side hook, run before its first step (with the method's resolved keys)."""

    def __call__(self, state: Any, hp: Mapping[str, Any], hooks: Hooks, /) -> Any: ...


class Predict(Protocol):
    """The logits whose argmax is the method's prediction."""

    def __call__(self, logits: jax.Array, hp: Mapping[str, Any], stats: ClassStats, /) -> jax.Array: ...


class InitState(Protocol):
    def __call__(self, stats: ClassStats, hp: Mapping[str, Any], /) -> Any: ...


class InitParams(Protocol):
    def __call__(self, stats: ClassStats, hp: Mapping[str, Any], key: jax.Array, /) -> Any: ...


class EndEpoch(Protocol):
    def __call__(self, state: Any, /) -> Any: ...


def _check_hook(owner: str, hook: Callable | None, protocol: type, *, keywords: tuple[str, ...] = ()) -> None:
    """Raises ValueError where `hook` cannot be called as `protocol` calls it: the wrong number of positional
    parameters, or a missing keyword parameter."""
    if hook is None:
        return
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    expected = [parameter.replace(annotation=inspect.Parameter.empty)
                for parameter in list(inspect.signature(protocol.__call__).parameters.values())[1:]]  # less self
    positional = [parameter for parameter in expected if parameter.kind is not inspect.Parameter.KEYWORD_ONLY]
    try:
        signature.bind(*[None] * len(positional), **{name: None for name in keywords})
    except TypeError as error:
        raise ValueError(f"{owner}: {getattr(hook, '__name__', hook)!r} cannot be called as {protocol.__name__}"
                         f"{inspect.Signature(expected)} ({error}); see ltjax.methods.base.{protocol.__name__}"
                         ) from None


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of a method.

    Attributes:
      name: shown in the run's plan.
      loss: `PhaseLoss`, `Inputs -> PerExample`.
      start: the key of the method holding this phase's start epoch; None for the first phase (epoch 0).
      collect: `Collect`, `(state, *, inputs, axis_name) -> state`, run inside the train step while this phase is on.
      enter: `Enter`, `(state, hp, hooks) -> state`, run on the host before the first step of this phase.
      min_epochs: epochs the phase needs to have an effect (FFDS: 2, its first epoch collects statistics).
      why: why it needs them, for the error when the run leaves it fewer.
    """

    name: str
    loss: PhaseLoss
    start: str | None = None
    collect: Collect | None = None
    enter: Enter | None = None
    min_epochs: int = 1
    why: str = ""

    def __post_init__(self):
        owner = f"phase {self.name}"
        _check_hook(owner, self.loss, PhaseLoss)
        _check_hook(owner, self.collect, Collect, keywords=("inputs", "axis_name"))
        _check_hook(owner, self.enter, Enter)


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
      frozen_batch_norm: the model's BatchNorm normalises with the first stage's running statistics and keeps them
        (eval mode, as GCL's reference); False: batch statistics, updated (training mode, as cRT's reference).
    """

    trains: tuple[str, ...]
    fresh: tuple[str, ...]
    requires: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    frozen_batch_norm: bool = False


@dataclasses.dataclass(frozen=True)
class Network:
    """The network a method trains where it is not the plain backbone: one of `ltjax.models.branched.NETWORKS`.

    Attributes:
      name: "bilateral" (BBN, TDE), "experts" (RIDE) or "reslt" (ResLT); built on the run's CIFAR ResNet.
      options: static keys of the method that are attributes of the network (RIDE's `num_experts`), passed to it
        under their own names.
    """

    name: str
    options: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Method:
    """A long-tail method as a researcher compares it.

    Attributes:
      name: the name users type (`--config.loss.name=<name>`).
      summary: one line: what it is and where it comes from.
      keys: its config keys (hyper-parameters and phase starts), each default written once.
      phases: its phases in order.
      head: the classifier head its reference trains ("linear", "normed" cosines, IIF's "cosine").
      predict: `Predict`, `(logits, hp, stats) -> logits` whose argmax is the prediction; None: the logits.
      init_state: `InitState`, `(stats, hp) -> state`; None: no state.
      init_params: `InitParams`, `(stats, hp, key) -> params` trained with the model; None: none.
      end_epoch: `EndEpoch`, `state -> state` at each epoch's end, jitted; None: nothing.
      second_stage: set for a method that starts from a trained run (its keys then include `init_from`).
      network: set for a method that trains a network with branches (its phases' losses read `Inputs.branches`);
        None: the run's model as configured.
      partners: the partner sampler (`ltjax.data.samplers.PARTNER_SAMPLERS`) of a method that trains on pairs: every
        training example comes with a partner drawn by it, which the step passes through the network separately
        (`Inputs.partner`). None: no partners.
      notes: what a user should know (differences from the reference, recipe caveats).
    """

    name: str
    summary: str
    keys: Mapping[str, Key]
    phases: tuple[Phase, ...]
    head: str = "linear"
    predict: Predict | None = None
    init_state: InitState | None = None
    init_params: InitParams | None = None
    end_epoch: EndEpoch | None = None
    second_stage: SecondStage | None = None
    network: Network | None = None
    partners: str | None = None
    notes: str = ""

    def __post_init__(self):
        for hook, protocol in ((self.predict, Predict), (self.init_state, InitState),
                               (self.init_params, InitParams), (self.end_epoch, EndEpoch)):
            _check_hook(f"method {self.name}", hook, protocol)
        starts = [phase.start for phase in self.phases]
        if not self.phases or starts[0] is not None or any(start is None for start in starts[1:]):
            raise ValueError(f"method {self.name}: the first phase starts at 0, every later one at a start key")
        for start in starts[1:]:
            if start not in self.keys or self.keys[start].kind != "epoch":
                raise ValueError(f"method {self.name}: phase start {start!r} must be one of its epoch keys")
        if self.second_stage is not None and "init_from" not in self.keys:
            raise ValueError(f"method {self.name}: a second stage names its first stage with an init_from key")
        for option in self.network.options if self.network else ():
            if option not in self.keys or self.keys[option].kind != "static":
                raise ValueError(f"method {self.name}: network option {option!r} must be one of its static keys (a "
                                 "network attribute shapes the compiled program)")

    def network_of(self, keys: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """`(name, attributes)` of the network this method trains with its keys `keys` ("plain", {} for none)."""
        if self.network is None:
            return "plain", {}
        return self.network.name, {option: keys[option] for option in self.network.options}


@dataclasses.dataclass(frozen=True)
class Objective:
    """A method bound to a run: its resolved keys, the training set's statistics, the run's length.

    Built by `bind`; what the train step, the eval step and the loop call.
    """

    method: Method
    hp: Mapping[str, Any]
    stats: ClassStats
    phase_starts: tuple[int, ...]  # absolute first epoch of each phase; phase_starts[0] == 0
    num_epochs: int | None = None

    @property
    def num_classes(self) -> int:
        return self.stats.num_classes

    def phase_at(self, epoch: int) -> int:
        """The index of the phase that `epoch` belongs to (on the host: the step receives it)."""
        return sum(epoch >= start for start in self.phase_starts[1:])

    def _inputs(self, outputs, labels, state, params, mask=None, keys=None, axis_name=None, epoch=None,
                partner=None) -> Inputs:
        partner_inputs = None
        if partner is not None:
            partner_outputs, partner_labels = partner
            partner_inputs = self._inputs(partner_outputs, partner_labels, state, params, mask, None, axis_name, epoch)
        return Inputs(outputs.logits, outputs.features, labels, self.hp, self.stats, state, params, mask, keys,
                      axis_name, getattr(outputs, "branches", None), epoch, self.num_epochs, partner_inputs)

    def network(self) -> tuple[str, dict[str, Any]]:
        """`(name, attributes)` of the network this method trains (`ltjax.models.create_model`'s `network`)."""
        return self.method.network_of(self.hp)

    def loss(self, outputs, labels, phase, state, params, mask=None, keys=None,
             axis_name: str | None = None, epoch=None, partner=None) -> tuple[jax.Array, jax.Array]:
        """`(sum of the per-example losses, the normaliser)` of this device's shard, in phase `phase` (traced).

        The batch loss is the psum of the sums over the psum of the normalisers: the number of examples, or the sum of
        the sample weights of a weighted mean. `mask [B]` marks the real examples of a padded batch; the padding
        counts in neither. `keys`, `axis_name` and `epoch`: see `Inputs`; `partner`: `(outputs, labels)` of the
        examples' partners (a method with `partners`).
        """
        inputs = self._inputs(outputs, labels, state, params, mask, keys, axis_name, epoch, partner)
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
        inputs = self._inputs(outputs, labels, state, None, mask, axis_name=axis_name)
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

    def with_numbers(self, numbers) -> Objective:
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


class TrainObjective(Protocol):
    """What the train and eval steps call: an `Objective` (a run's method), or an `EnsembleObjective` (each member's,
    under the step's `vmap`, with `phase` and `state` per member). New objectives implement this."""

    @property
    def num_classes(self) -> int: ...

    def loss(self, outputs, labels: jax.Array, phase: jax.Array, state: Any, params: Any,
             mask: jax.Array | None = None, keys: jax.Array | None = None,
             axis_name: str | None = None, epoch: jax.Array | None = None,
             partner: tuple[Any, jax.Array] | None = None) -> tuple[jax.Array, jax.Array]: ...

    def collect(self, state: Any, outputs, labels: jax.Array, phase: jax.Array, axis_name: str | None,
                mask: jax.Array | None = None) -> Any: ...

    def predict(self, outputs, state: Any) -> jax.Array: ...

    def end_epoch(self, state: Any) -> Any: ...


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
    return Objective(method, dict(hp), stats, tuple(starts), num_epochs)
