"""A table's results as `table.json`, `table.md` and `table.png`: mean ± std over seeds, the paper's number beside
ours, and the gain over the baseline row of the same table."""
from __future__ import annotations

import math
import pathlib

import numpy as np

from ltjax import plots
from ltjax.tables.spec import METRICS, PROTOCOLS, Table


def _stats(values: list[float]) -> dict:
    """Mean and sample standard deviation (n - 1; 0 for one value) of the defined values."""
    defined = [value for value in values if value is not None]
    if not defined:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0
    return {"mean": float(np.mean(defined)), "std": std, "n": len(defined)}


def summarize(table: Table, results: dict) -> dict:
    """The JSON record of a table: its spec, every cell, and per row the statistics over seeds and gains."""
    rows = []
    for row in table.rows:
        cells = [cell for cell in results["cells"] if cell["row"] == row.label]
        finished = [cell for cell in cells if "metrics" in cell]
        rows.append({
            "label": row.label,
            "loss": dict(row.loss),
            "overrides": dict(row.overrides),
            "paper": dict(row.paper),
            "source": row.source,
            "recipe": row.recipe,
            "cells": cells,
            "diverged": len(cells) - len(finished),
            "metrics": {key: _stats([cell["metrics"][key] for cell in finished]) for key in METRICS},
            "protocols": {key: _stats([cell.get("protocols", {}).get(key) for cell in finished]) for key in PROTOCOLS},
        })
    baseline = next(row for row in rows if row["label"] == table.baseline)
    for row in rows:
        row["gain"] = {
            key: None if row["metrics"][key]["mean"] is None or baseline["metrics"][key]["mean"] is None
            else row["metrics"][key]["mean"] - baseline["metrics"][key]["mean"]
            for key in METRICS
        }
    return {
        "name": table.name,
        "title": table.title,
        "recipe": table.recipe,
        "overrides": dict(table.overrides),
        "seeds": list(table.seeds),
        "baseline": table.baseline,
        "notes": table.notes,
        "rows": rows,
        "training_seconds": results["seconds"],
        "total_training_seconds": results["total_seconds"],
        "groups": results["groups"],
    }


def _cell(stats: dict) -> str:
    return "-" if stats["mean"] is None else f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def markdown(summary: dict, *, command: str, runtime: str) -> str:
    """The table as Markdown: top-1 and many/medium/few as mean ± std over the seeds, in percent."""
    seeds = summary["seeds"]
    selected = any(row["protocols"]["validation_selected_top1_accuracy"]["n"] for row in summary["rows"])
    lines = [
        f"# {summary['title']}",
        "",
        f"Mean ± sample std over {len(seeds)} seeds ({', '.join(map(str, seeds))}), accuracy in percent on the "
        f"balanced test split, of the final epoch unless said. Gains are over {summary['baseline']} in this table. "
        "Best epoch: the best test top-1 over all epochs, the protocol of the papers' scripts; it selects on the test "
        "split itself, so it is optimistic, and it is the number to hold a paper's against."
        + (" Val-selected: the test top-1 at the epoch of the best validation top-1." if selected else "")
        + " Paper: the number the method's paper reports (its own recipe; see Source).",
        "",
        "| Method | Top-1 | Many | Medium | Few | Top-1 gain | Few gain | Best epoch (optimistic) "
        + ("| Val-selected " if selected else "") + "| Paper top-1 | Source |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if selected else "") + "---:|---|",
    ]
    for row in summary["rows"]:
        metrics, protocols = row["metrics"], row["protocols"]
        paper = row["paper"].get("top1_accuracy")
        diverged = f" ({row['diverged']} diverged)" if row["diverged"] else ""
        lines.append(
            f"| {row['label']}{diverged} | {_cell(metrics['top1_accuracy'])} | {_cell(metrics['many_shot_accuracy'])} "
            f"| {_cell(metrics['medium_shot_accuracy'])} | {_cell(metrics['few_shot_accuracy'])} "
            f"| {_signed(row['gain']['top1_accuracy'])} | {_signed(row['gain']['few_shot_accuracy'])} "
            f"| {_cell(protocols['best_epoch_top1_accuracy'])} "
            + (f"| {_cell(protocols['validation_selected_top1_accuracy'])} " if selected else "")
            + f"| {'-' if paper is None else f'{paper:.2f}'} | {row['source'] or '-'} |"
        )
    lines += ["", f"Command: `{command}`", "", f"Runtime: {runtime}"]
    if summary["notes"]:
        lines += ["", summary["notes"]]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: pathlib.Path) -> pathlib.Path:
    """Bars of top-1 and few-shot accuracy per method with the seeds' std as error bars, the paper's top-1 marked."""
    from matplotlib.figure import Figure

    rows = summary["rows"]
    positions = np.arange(len(rows))
    figure = Figure(figsize=(max(6.0, 0.8 * len(rows) + 2), 4.0))
    axes = figure.add_subplot()
    width = 0.38
    for offset, key, label in ((-width / 2, "top1_accuracy", "Top-1"), (width / 2, "few_shot_accuracy", "Few-shot")):
        means = [row["metrics"][key]["mean"] for row in rows]
        stds = [row["metrics"][key]["std"] for row in rows]
        axes.bar(positions + offset, [math.nan if m is None else m for m in means], width,
                 yerr=[0.0 if s is None else s for s in stds], capsize=3, label=label)
    papers = [row["paper"].get("top1_accuracy") for row in rows]
    if any(value is not None for value in papers):
        axes.scatter(positions - width / 2, [math.nan if p is None else p for p in papers], marker="_", s=300,
                     color="black", label="paper top-1", zorder=3)
    axes.set_xticks(positions, [row["label"] for row in rows], rotation=30, ha="right")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(summary["title"])
    axes.legend(loc="lower right")
    figure.tight_layout()
    return plots.save_figure(figure, path)
