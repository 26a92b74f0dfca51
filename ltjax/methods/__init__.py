"""Methods: what a researcher compares (loss, phases, head, prediction rule, state, hooks), one record each.

    from ltjax import methods
    methods.names()                       # ('ce', 'focal', 'cb', 'ldam_drw', ...)
    method = methods.get("ffds")          # its keys with defaults, phases, head, ...
    objective = methods.bind(method, hp, stats, num_epochs)   # what the train step calls

`ltjax-methods` lists them on the command line; `ltjax-methods ffds` shows one method's keys.
"""
from ltjax._extras import require_train_extra

require_train_extra(__name__)

from ltjax.keys import ConfigError, nearest
from ltjax.methods.base import (
    Collect,
    EndEpoch,
    Enter,
    Hooks,
    InitParams,
    InitState,
    Inputs,
    Method,
    Network,
    Objective,
    PerExample,
    Phase,
    PhaseLoss,
    Predict,
    SecondStage,
    TrainObjective,
    bind,
    cross_entropy,
)
from ltjax.methods.registry import METHODS


def names() -> tuple[str, ...]:
    return tuple(METHODS)


def get(name: str) -> Method:
    """The method called `name`; a ConfigError with the nearest name for an unknown one."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}{nearest(name, METHODS).replace('valid keys', 'methods')}")
    return METHODS[name]


__all__ = ["Collect", "EndEpoch", "Enter", "Hooks", "InitParams", "InitState", "Inputs", "METHODS", "Method",
           "Network", "Objective", "PerExample", "Phase", "PhaseLoss", "Predict", "SecondStage", "TrainObjective",
           "bind", "cross_entropy", "get", "names"]
