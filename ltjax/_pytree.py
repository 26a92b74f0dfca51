"""Frozen dataclasses that are JAX pytrees, built on JAX alone: the core install (losses, statistics, state) has no
Flax. Each field is a leaf unless `static_field` marks it part of the tree's structure."""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax

T = TypeVar("T")


def static_field(**kwargs: Any) -> Any:
    """A field that is part of the pytree's structure (hashable, never traced), e.g. a number of groups."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls: type[T]) -> type[T]:
    """`cls` as a frozen dataclass registered as a pytree, with `replace(**changes)` (as `flax.struct.dataclass`)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    cls.replace = lambda self, **changes: dataclasses.replace(self, **changes)
    return jax.tree_util.register_dataclass(
        cls,
        data_fields=[field.name for field in fields if not field.metadata.get("static")],
        meta_fields=[field.name for field in fields if field.metadata.get("static")],
    )
