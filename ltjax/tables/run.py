"""Running a table: cells grouped into ensembles that share a backbone, each group one resumable run.

Cells that may share a compiled step (same data, model, head, optimizer and schedule; any methods and seeds) are
grouped, in row order, into ensembles of at most `max_members`. Each group trains in its own workdir,
`<root>/<table>/cells/<head>-<hash of its members' configs>/`, with full provenance and one folder per member (a cell).
A group whose members all have a report (or have diverged) is finished and not run again; an interrupted group
resumes from its checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable

import ml_collections

from ltjax import methods, multihost
from ltjax.configs import schema
from ltjax.tables.spec import METRICS, Row, Table
from ltjax.train.build import SHARED_KEYS
from ltjax.train.loop import train_ensemble


@dataclasses.dataclass(frozen=True)
class Cell:
    row: Row
    seed: int
    config: ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Group:
    cells: tuple[Cell, ...]
    workdir: pathlib.Path

    def member_dir(self, member: int) -> pathlib.Path:
        return self.workdir / "members" / str(member)

    def finished(self) -> bool:
        return all((self.member_dir(k) / "report.json").exists() or (self.member_dir(k) / "diverged.json").exists()
                   for k in range(len(self.cells)))

    def training_seconds(self) -> float:
        """The group's training time, whenever it ran: the wall time `run_table` recorded (set-up, compilation and
        evaluation included), else the epochs' time its logs record."""
        if self.seconds_file.exists():
            return json.loads(self.seconds_file.read_text())["seconds"]

        def logged(member: int) -> float:
            log = self.member_dir(member) / "log.jsonl"
            lines = log.read_text().splitlines() if log.exists() else []
            return sum(json.loads(line)["seconds"] for line in lines)

        return max(logged(member) for member in range(len(self.cells)))

    def add_seconds(self, seconds: float) -> None:
        """Adds a run's wall time to the group's record (an interrupted group's time adds up over its runs)."""
        if not self.workdir.is_dir():  # the run stopped before it made its workdir
            return
        previous = json.loads(self.seconds_file.read_text())["seconds"] if self.seconds_file.exists() else 0.0
        self.seconds_file.write_text(json.dumps({"seconds": previous + seconds}) + "\n")

    @property
    def seconds_file(self) -> pathlib.Path:
        return self.workdir / "table_seconds.json"


def _head(config: ml_collections.ConfigDict) -> str:
    return config.model.head or methods.get(config.loss.name).head


def _shared(config: ml_collections.ConfigDict) -> str:
    """What cells of one ensemble must share: the program's shape (the network a method declares, with its options,
    and its partner sampler among it), and a second stage's trainable parameters."""
    record = json.loads(schema.to_json(config))
    method = methods.get(config.loss.name)
    network = method.network_of(record["loss"])
    return json.dumps({key: record[key] for key in SHARED_KEYS} | {"head": _head(config),
                                                                    "stage": repr(method.second_stage)}
                      | ({"network": network, "partners": method.partners} if method.network else {}),
                      sort_keys=True)


def plan_groups(table: Table, root: pathlib.Path, max_members: int) -> list[Group]:
    """The table's cells, grouped into ensembles (see the module docstring); second stages' groups come last, each
    cell starting from the first-stage cell of its seed."""
    first = _grouped([Cell(row, seed, table.cell_config(row, seed)) for row in table.rows if row.after is None
                      for seed in table.seeds], table, root, max_members)
    cell_dirs = {(cell.row.label, cell.seed): str(group.member_dir(member))
                 for group in first for member, cell in enumerate(group.cells)}
    second = [Cell(row, seed, table.cell_config(row, seed, init_from=cell_dirs[(row.after, seed)]))
              for row in table.rows if row.after is not None for seed in table.seeds]
    return first + _grouped(second, table, root, max_members)


def _grouped(cells: list[Cell], table: Table, root: pathlib.Path, max_members: int) -> list[Group]:
    by_shared: dict[str, list[Cell]] = {}
    for cell in cells:
        by_shared.setdefault(_shared(cell.config), []).append(cell)
    groups = []
    for members in by_shared.values():
        for start in range(0, len(members), max_members):
            chunk = tuple(members[start:start + max_members])
            digest = schema.ensemble_fingerprint([cell.config for cell in chunk])[:10]
            groups.append(Group(chunk, root / table.name / "cells" / f"{_head(chunk[0].config)}-{digest}"))
    return groups


def epoch_protocols(log: pathlib.Path) -> dict[str, float | None]:
    """Test top-1 (percent) at the epoch each of `PROTOCOLS` selects, from a run's `log.jsonl`: the best over all
    epochs, and at the first epoch of the best validation top-1 (None where the log has no test, or no validation)."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    tested = [line for line in lines if "test" in line]
    validated = [line for line in tested if "validation" in line]
    best = max((line["test"]["top1_accuracy"] for line in tested), default=None)
    selected = max(validated, key=lambda line: line["validation"]["top1_accuracy"], default=None)
    return {"best_epoch_top1_accuracy": None if best is None else 100 * best,
            "validation_selected_top1_accuracy": None if selected is None else 100 * selected["test"]["top1_accuracy"]}


def run_table(table: Table, root: pathlib.Path, *, max_members: int = 64,
              say: Callable[[str], None] = print) -> dict:
    """Trains every unfinished group of `table` and returns the cells' results.

    Returns:
      `{"cells": [{"row", "seed", "workdir", "metrics" (percent) or "diverged"}...], "seconds": training time of the
      groups run now, "total_seconds": the training time of every group, whenever it ran, "groups": number of groups,
      "fingerprint": a hash of every cell's config}`.
    """
    groups = plan_groups(table, pathlib.Path(root), max_members)
    say = multihost.primary_only(say)
    seconds = 0.0
    for index, group in enumerate(groups):
        labels = sorted({cell.row.label for cell in group.cells})
        if group.finished():
            say(f"group {index + 1}/{len(groups)} ({', '.join(labels)}) is finished: {group.workdir}")
            continue
        say(f"group {index + 1}/{len(groups)}: {len(group.cells)} members ({', '.join(labels)}) in {group.workdir}")
        started = time.perf_counter()
        try:
            train_ensemble([cell.config for cell in group.cells], group.workdir, say=say)
        finally:
            if multihost.is_primary():
                group.add_seconds(time.perf_counter() - started)
        seconds += time.perf_counter() - started
    multihost.barrier("ltjax-table-trained")  # process 0 has written the groups' times
    results = []
    for group in groups:
        for member, cell in enumerate(group.cells):
            folder = group.member_dir(member)
            result = {"row": cell.row.label, "seed": cell.seed, "workdir": str(folder)}
            if (folder / "diverged.json").exists():
                result["diverged"] = json.loads((folder / "diverged.json").read_text())
            else:
                report = json.loads((folder / "report.json").read_text())
                result["metrics"] = {key: None if report[key] is None else 100 * report[key] for key in METRICS}
                result["protocols"] = epoch_protocols(folder / "log.jsonl")
            results.append(result)
    configs = [cell.config for group in groups for cell in group.cells]
    return {"cells": results, "seconds": seconds, "groups": len(groups),
            "total_seconds": sum(group.training_seconds() for group in groups),
            "fingerprint": schema.ensemble_fingerprint(configs)[:12]}
