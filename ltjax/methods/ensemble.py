"""Several methods, or one method's hyper-parameter grid, as ensemble members of one compiled train step.

Members that share the backbone and head train side by side under `jax.vmap`, so every member's pytrees must have one
structure. A *variant* is a method with its static keys and phase starts (`Objective`); members differ in their
variant and in the variant's numeric keys. A numeric key that differs between members of a variant is *swept*: it
is carried per member and traced; one that all its members share stays a constant, as in a single run. Each member's
method state is then

    {"variant": int32, "numbers": {variant: {key: float32}}, "states": {variant: that variant's state}}

with a slot for every variant of the ensemble (only its own is used), and its loss parameters likewise
`{variant: params}`. Inside the vmapped step a member's loss is `lax.switch` on its variant index, with its numbers
(traced, per member) in place of the variant's defaults; under `vmap` XLA evaluates every variant's loss and selects,
which costs a few losses per member (cheap next to the backbone) and keeps one program for the whole ensemble.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.methods.base import Objective, Phase


@dataclasses.dataclass(frozen=True)
class EnsembleObjective:
    """The objectives of an ensemble's variants, and which variant and numbers each member uses."""

    variants: tuple[Objective, ...]
    member_variants: tuple[int, ...]
    member_numbers: tuple[dict, ...]  # each member's values of its variant's swept keys

    @classmethod
    def of(cls, member_objectives: Sequence[Objective]) -> EnsembleObjective:
        """Groups members' objectives into variants (same method, static keys and phase starts)."""
        variants, indices = [], []
        for objective in member_objectives:
            key = _variant_key(objective)
            found = next((i for i, variant in enumerate(variants) if _variant_key(variant) == key), None)
            if found is None:
                variants.append(objective)
                found = len(variants) - 1
            indices.append(found)
        swept = [
            {key for key in variant.numbers()
             if len({member_objectives[m].hp[key] for m, v in enumerate(indices) if v == index}) > 1}
            for index, variant in enumerate(variants)
        ]
        numbers = tuple({key: objective.hp[key] for key in swept[index]}
                        for objective, index in zip(member_objectives, indices))
        return cls(tuple(variants), tuple(indices), numbers)

    def swept_keys(self, index: int) -> tuple[str, ...]:
        """The numeric keys of variant `index` that its members vary."""
        return tuple(sorted(next(numbers for numbers, v in zip(self.member_numbers, self.member_variants)
                                 if v == index)))

    @property
    def num_classes(self) -> int:
        return self.variants[0].num_classes

    def _slot(self, index: int) -> str:
        return str(index)

    def _bound(self, index: int, state) -> Objective:
        return self.variants[index].with_numbers(state["numbers"][self._slot(index)])

    def _switch(self, state, branch):
        branches = [functools.partial(branch, index) for index in range(len(self.variants))]
        if len(branches) == 1:
            return branches[0]()
        return jax.lax.switch(state["variant"], branches)

    def phase_at(self, epoch: int) -> np.ndarray:
        """`[members]` each member's phase index at `epoch` (its variant's phase starts)."""
        return np.asarray([self.variants[index].phase_at(epoch) for index in self.member_variants], np.int32)

    def loss(self, outputs, labels, phase, state, params, mask=None, keys=None, axis_name=None, epoch=None,
             partner=None):
        """One member's loss (under the step's `vmap`): `phase` is that member's phase index."""
        def branch(index):
            slot = self._slot(index)
            return self._bound(index, state).loss(outputs, labels, phase, state["states"][slot], params[slot], mask,
                                                  keys, axis_name, epoch, partner)
        return self._switch(state, branch)

    def collect(self, state, outputs, labels, phase, axis_name, mask=None):
        def branch(index):
            slot = self._slot(index)
            updated = self._bound(index, state).collect(state["states"][slot], outputs, labels, phase, axis_name,
                                                        mask)
            return {**state["states"], slot: updated}
        return {**state, "states": self._switch(state, branch)}

    def predict(self, outputs, state) -> jax.Array:
        return self._switch(state, lambda index: self._bound(index, state).predict(outputs))

    def end_epoch(self, state):
        states = {self._slot(i): variant.end_epoch(state["states"][self._slot(i)])
                  for i, variant in enumerate(self.variants)}
        return {**state, "states": states}

    def member_state(self, member: int) -> dict[str, Any]:
        """Member `member`'s initial method state (unstacked)."""
        own = self.member_variants[member]

        def numbers(index: int, variant: Objective) -> dict:
            values = self.member_numbers[member] if index == own else variant.numbers()
            return {key: jnp.asarray(values[key], jnp.float32) for key in self.swept_keys(index)}

        return {
            "variant": jnp.asarray(own, jnp.int32),
            "numbers": {self._slot(i): numbers(i, variant) for i, variant in enumerate(self.variants)},
            "states": {self._slot(i): variant.init_state() for i, variant in enumerate(self.variants)},
        }

    def member_params(self, member: int, key: jax.Array) -> dict[str, Any]:
        return {self._slot(i): variant.init_params(key) for i, variant in enumerate(self.variants)}

    def phases_entered_at(self, member: int, epoch: int) -> tuple[Phase, ...]:
        return self.variants[self.member_variants[member]].phases_entered_at(epoch)

    def enter(self, member: int, phase: Phase, state, hooks):
        """Runs a host-side phase hook on member `member`'s own slot of its (unstacked) method state."""
        index = self.member_variants[member]
        slot = self._slot(index)
        objective = self.variants[index].with_numbers(self.member_numbers[member])
        updated = phase.enter(state["states"][slot], objective.hp, hooks)
        return {**state, "states": {**state["states"], slot: updated}}

    def plan(self, num_epochs: int) -> list:
        return [self.variants[index].plan(num_epochs) for index in self.member_variants]


def _variant_key(objective: Objective) -> tuple:
    """What members of one variant share: the method, its non-numeric keys, its phase starts."""
    static = tuple(sorted((key, repr(value)) for key, value in objective.hp.items()
                          if objective.method.keys[key].kind != "number"))
    return objective.method.name, static, objective.phase_starts
