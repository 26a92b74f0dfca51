"""A results table as a spec: the recipe, the rows (methods with their keys), the seeds, the papers' numbers.

A table spec is a Python file in `experiments/tables/` whose `get_table()` returns a `Table`. Its cells are
(row, seed) pairs; each cell is one training run of the recipe with the row's changes and the seed.
"""
from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections

from ltjax.configs import files, schema
from ltjax.keys import ConfigError

# The report entries a table shows, and their column titles.
METRICS = {"top1_accuracy": "Top-1", "many_shot_accuracy": "Many", "medium_shot_accuracy": "Medium",
           "few_shot_accuracy": "Few"}
# Test top-1 at an epoch other than the last, read from the runs' logs: the best over all epochs (the papers' scripts
# report it: selected on the test split itself, so optimistic), and the epoch the validation split selects.
PROTOCOLS = {"best_epoch_top1_accuracy": "Top-1, best epoch (optimistic)",
             "validation_selected_top1_accuracy": "Top-1, validation-selected epoch"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One method of a table.

    Attributes:
      label: the row's name in the table (e.g. "LDAM-DRW").
      loss: the `loss` section: `{"name": method, key: value, ...}`; empty: the recipe's own.
      overrides: other config changes of this row, dotted keys (e.g. `{"model.head": "normed"}`).
      paper: the papers' numbers for this cell, percent, keyed by `METRICS` keys (e.g. `{"top1_accuracy": 43.86}`).
      source: where the paper's numbers come from.
      after: for a second stage (cRT, LWS), the label of the row whose cell of the same seed it starts from.
      recipe: this row's own config file (`path[:argument]`), e.g. the method's reference recipe; None: the table's.
    """

    label: str
    loss: Mapping[str, Any]
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    paper: Mapping[str, float] = dataclasses.field(default_factory=dict)
    source: str = ""
    after: str | None = None
    recipe: str | None = None


@dataclasses.dataclass(frozen=True)
class Table:
    """A table: every row trained with every seed on one recipe.

    Attributes:
      name: names the output folder and files.
      title: the table's heading.
      recipe: a config file (`path[:argument]`) every cell starts from.
      overrides: changes to the recipe shared by every cell, dotted keys (e.g. `{"num_epochs": 20}`).
      rows: the methods.
      seeds: the seeds of every row; statistics are over them.
      baseline: the label of the row the gains are measured against (CE).
      notes: what the table is and is not (printed under it).
    """

    name: str
    title: str
    recipe: str
    rows: tuple[Row, ...]
    seeds: tuple[int, ...]
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    baseline: str = "CE"
    notes: str = ""

    def __post_init__(self):
        labels = [row.label for row in self.rows]
        if len(set(labels)) != len(labels):
            raise ValueError(f"table {self.name}: row labels repeat: {labels}")
        if self.baseline not in labels:
            raise ValueError(f"table {self.name}: baseline {self.baseline!r} is not a row ({labels})")
        if not self.seeds:
            raise ValueError(f"table {self.name}: give at least one seed")
        for row in self.rows:
            first = next((other for other in self.rows if other.label == row.after), None)
            if row.after is not None and (first is None or first.after is not None):
                raise ValueError(f"table {self.name}: row {row.label!r} starts after {row.after!r}, which must be a "
                                 "first-stage row of the table")

    def cell_config(self, row: Row, seed: int, init_from: str | None = None) -> ml_collections.ConfigDict:
        """The resolved config of the cell (row, seed); a second stage's with its first stage's workdir."""
        written = files.load_config_file(row.recipe or self.recipe)
        changes = {**self.overrides, **row.overrides, "seed": seed}
        if init_from is not None:
            changes["loss.init_from"] = init_from
        overrides = [("loss.name", row.loss["name"])] if row.loss else []
        overrides += [(f"loss.{key}", _as_text(value)) for key, value in row.loss.items() if key != "name"]
        overrides += [(key, _as_text(value)) for key, value in changes.items()]
        return schema.apply_overrides(written, overrides)[0]


def _as_text(value: Any) -> str:
    """A value as the command line writes it (strings bare, the rest as Python literals)."""
    return value if isinstance(value, str) else repr(value)


def load_table(path: str) -> Table:
    """The `Table` a spec file's `get_table()` returns."""
    module = files.load_module(path)
    if not hasattr(module, "get_table"):
        raise ConfigError(f"table spec {path} defines no get_table()")
    return files.run_user_code(pathlib.Path(module.__file__), module.get_table)
