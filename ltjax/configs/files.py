"""Config files and command-line overrides: `path[:argument]` -> the file's `get_config`, `--config.a.b=v` pairs."""
from __future__ import annotations

import importlib.util
import pathlib
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar

import ml_collections

from ltjax.keys import ConfigError

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent / "digits.py"
PACKAGE = pathlib.Path(__file__).resolve().parents[1]
# Where a relative spec is looked for after the working directory: the checkout (or, installed from a wheel,
# site-packages, which holds ltjax/configs/...), then the package, which installs experiments/ as ltjax/experiments.
SEARCHED = (PACKAGE.parent, PACKAGE)
T = TypeVar("T")


def load_config_file(spec: str | pathlib.Path) -> ml_collections.ConfigDict:
    """Runs `get_config(argument)` of the file `spec` names (`path` or `path:argument`), as written (unresolved).

    Raises:
      ConfigError: the file is missing or has no `get_config`.
    """
    path, _, argument = str(spec).partition(":")
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config()")
    return run_user_code(pathlib.Path(module.__file__), lambda: module.get_config(argument) if argument
                         else module.get_config())


def load_module(path: str | pathlib.Path):
    """Imports a Python file (a config or table spec) as a module.

    Raises:
      ConfigError: the file does not exist, is not a `.py` file, or fails as it runs (its error named).
    """
    path = pathlib.Path(path)
    if not path.is_file() and not path.is_absolute():
        # Specs name configs relative to the checkout, wherever the command runs.
        path = next((root / path for root in SEARCHED if (root / path).is_file()), path)
    if not path.is_file():
        raise ConfigError(f"file {path} does not exist (expected e.g. experiments/configs/ce.py:cifar10-if100)")
    module_spec = importlib.util.spec_from_file_location(f"ltjax_spec_{path.stem}", path)
    if path.suffix != ".py" or module_spec is None:
        raise ConfigError(f"{path} is not a Python file: a config (or table spec) is a .py file that defines "
                          "get_config() (get_table()), e.g. experiments/configs/ce.py")
    module = importlib.util.module_from_spec(module_spec)
    run_user_code(path, lambda: module_spec.loader.exec_module(module))
    return module


def run_user_code(path: pathlib.Path, fn: Callable[[], T]) -> T:
    """`fn()`, which runs code of the user's file `path` (a config or table spec); its error is a ConfigError naming
    the file and the line, as the user's to fix.

    Raises:
      ConfigError: `fn` raised (the original error is its cause; `--debug` shows its traceback).
    """
    try:
        return fn()
    except ConfigError:
        raise
    except Exception as error:
        if isinstance(error, SyntaxError):
            line, text = error.lineno, error.msg
        else:
            line, text = next((frame.lineno for frame in reversed(traceback.extract_tb(error.__traceback__))
                               if pathlib.Path(frame.filename).resolve() == path.resolve()), None), str(error)
        where = f"{path}, line {line}" if line else str(path)
        raise ConfigError(f"{where} fails as it runs: {type(error).__name__}: {text} (--debug shows the "
                          "traceback)") from error


def parse_overrides(arguments: Sequence[str]) -> list[tuple[str, str]]:
    """`["--config.loss.gamma=2", "--config.seed", "3"]` -> `[("loss.gamma", "2"), ("seed", "3")]`.

    Raises:
      ConfigError: an argument that is not a `--config.<key>` override.
    """
    overrides, index = [], 0
    arguments = list(arguments)
    while index < len(arguments):
        argument = arguments[index]
        if not argument.startswith("--config."):
            raise ConfigError(f"unrecognised argument {argument!r}; config keys are set as --config.<key>=<value>")
        key, equals, value = argument[len("--config."):].partition("=")
        if not equals:
            if index + 1 >= len(arguments):
                raise ConfigError(f"{argument} needs a value: {argument}=<value>")
            index += 1
            value = arguments[index]
        overrides.append((key, value))
        index += 1
    return overrides
