"""Config keys declared once: default, meaning, kind; completing and checking a config section against them.

Every section of an experiment config (the dataset, the model, the method's loss, the optimizer, the run) is declared
as a mapping `name -> Key`. `complete_section` turns what a config file or the command line wrote into the full
section: every declared key present with its default, an unknown key an error that suggests the nearest valid one,
a value of the wrong type an error naming the key. A `Key` also says what kind of value it holds, which decides how
ensembles may vary it:

- `"number"`: a number that may be traced (a hyper-parameter swept over ensemble members under `vmap`);
- `"static"`: picks a code path or a shape (a variant, a window size); it must be a Python value;
- `"epoch"`: when something starts, as a fraction of the run (`0 <= x < 1`) or an absolute epoch (`x >= 1`), see
  `ltjax.schedules.epoch_of`.
"""
from __future__ import annotations

from ltjax._extras import require_train_extra

require_train_extra(__name__)

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from ltjax.errors import ConfigError

KINDS = ("number", "static", "epoch")
# Seeds enter the train state as int32 and NumPy's generators as non-negative integers.
SEED_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key.

    Attributes:
      default: its value when the config does not set it; its type is the key's type.
      help: one line saying what it means (shown by `ltjax-methods`).
      kind: one of `KINDS`.
      choices: the allowed values of a key that picks a code path; None for any value of the type.
      minimum, maximum: the bounds of a number (None: unbounded).
    """

    default: Any
    help: str
    kind: str = "static"
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Key kind must be one of {KINDS}, got {self.kind!r}")


def number(default: float, help: str, **bounds: float) -> Key:
    return Key(float(default), help, "number", **bounds)


def epoch(default: float, help: str) -> Key:
    return Key(float(default), help + " (fraction of the run if < 1, else an absolute epoch)", "epoch")


def signature_defaults(fn: Callable, helps: Mapping[str, str], *, static: tuple[str, ...] = (),
                       choices: Mapping[str, tuple] | None = None) -> dict[str, Key]:
    """Keys whose defaults are the keyword defaults of `fn`, so each default is written once, in the loss.

    Args:
      fn: a loss or helper with keyword arguments.
      helps: key name -> meaning, for the keyword arguments to expose (in this order).
      static: names among them that pick a code path (the others are numbers).
      choices: allowed values of static keys.

    Returns:
      `name -> Key`.
    """
    parameters = inspect.signature(fn).parameters
    keys = {}
    for name, help_text in helps.items():
        default = parameters[name].default
        if default is inspect.Parameter.empty:
            raise ValueError(f"{fn.__name__} has no default for {name!r}")
        if name in static:
            keys[name] = Key(default, help_text, "static", (choices or {}).get(name))
        elif isinstance(default, bool) or not isinstance(default, (int, float)):
            raise ValueError(f"{fn.__name__}'s {name!r} defaults to {default!r}, not a number: a key that picks a "
                             f"code path is static; add {name!r} to signature_defaults(..., static=(...))")
        else:
            keys[name] = number(default, help_text)
    return keys


def nearest(name: str, candidates) -> str:
    """`"; did you mean 'x'?"` for the closest candidate, or a list of the valid ones."""
    candidates = sorted(candidates)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys: {', '.join(candidates)}" if candidates else "; this section takes no keys"


def _coerce(value: Any, key: Key, where: str) -> Any:
    """The value converted to the key's type (ints to floats, lists to tuples), or a ConfigError."""
    default = key.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{where} must be an integer, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
    elif isinstance(default, tuple):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{where} must be a sequence, got {value!r}")
        value = _plain(value)
    if key.choices is not None and value not in key.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, key.choices))}, got {value!r}")
    if key.minimum is not None and value < key.minimum or key.maximum is not None and value > key.maximum:
        low, high = (None if bound is None else f"{bound:g}" if bound % 1 else str(int(bound))
                     for bound in (key.minimum, key.maximum))
        bounds = f"between {low} and {high}" if low and high else f">= {low}" if low else f"<= {high}"
        raise ConfigError(f"{where} must be {bounds}, got {value!r} ({key.help})")
    return value


def _plain(value: Any) -> Any:
    """Lists (as JSON and ConfigDicts return them) back to tuples, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(item) for item in value)
    return value


def complete_section(
    written: Mapping[str, Any] | ml_collections.ConfigDict | None,
    keys: Mapping[str, Key],
    section: str,
    *,
    fixed: Mapping[str, Any] | None = None,
) -> ml_collections.ConfigDict:
    """The full section: every key of `keys` with the written value or its default, `fixed` entries first.

    Args:
      written: what the config set in this section (a ConfigDict, a dict, or None).
      keys: the declared keys.
      section: the section's dotted name, for messages (`"loss"`, `"optimizer"`).
      fixed: entries that are not declared keys but select the keys (the section's `name`), kept as written.

    Raises:
      ConfigError: a written key that is not declared (with the nearest valid key), or a value of the wrong type
        or outside its choices.
    """
    written = dict(written.items()) if written is not None else {}
    fixed = dict(fixed or {})
    completed: dict[str, Any] = dict(fixed)
    for name in written:
        if name not in keys and name not in fixed:
            raise ConfigError(f"unknown key {section}.{name}{nearest(name, list(keys) + list(fixed))}")
    for name, key in keys.items():
        value = written.get(name, key.default)
        completed[name] = _coerce(value, key, f"{section}.{name}")
    return ml_collections.ConfigDict(completed)
