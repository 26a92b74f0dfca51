"""What post-hoc corrections add to a trained table row: every correction applied to each seed's model of the row
(CE by default) on the test split, as `ltjax-eval --posthoc` computes it, summarised as mean ± std over the seeds.

    python experiments/tables/posthoc.py experiments/tables/results/tiny_imagenet_lt_reduced/table.json \
        [--row CE] [--corrections none la:1.0 la:2.0 tau_norm:1.0 iif:raw] [--out posthoc.md]

The values are fixed, not selected: a table whose dataset holds no validation split (the shared Tiny ImageNet copy
keeps every training image of the IF-100 subset) cannot choose them without looking at the test split, which this
script never does. With a validation split, `ltjax-eval --select-on validation` chooses them per run.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

METRICS = ("top1_accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")
DEFAULT_CORRECTIONS = ("none", "la:1.0", "la:2.0", "tau_norm:1.0", "iif:raw")


def parse_correction(text: str) -> tuple[str, object]:
    name, _, value = text.partition(":")
    if name == "none":
        return name, None
    return name, value if name == "iif" else float(value or 1.0)


def evaluate_row(cells: list[dict], corrections: list[tuple[str, object]]) -> dict[str, list[dict]]:
    """`{correction label: [report of each seed]}` on the test split; each model's outputs are computed once."""
    from ltjax.train import evaluate

    reports: dict[str, list[dict]] = {}
    for cell in cells:
        workdir = pathlib.Path(cell["workdir"])
        run = evaluate.load_run(workdir.parent.parent, member=int(workdir.name), say=lambda _: None)
        outputs = evaluate.split_outputs(run.trainer, run.state, run.data.test)
        for name, value in corrections:
            logits = evaluate.corrected_logits(run, outputs, name, value)
            label = name if value is None else f"{name} ({value})"
            reports.setdefault(label, []).append(evaluate.report_of(logits, outputs.labels, run.data.class_counts))
    return reports


def markdown(title: str, row: str, reports: dict[str, list[dict]]) -> str:
    def cell(values: list[float]) -> str:
        values = 100 * np.asarray(values)
        spread = f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
        return f"{np.mean(values):.1f}{spread}"

    baseline = {key: np.mean([report[key] for report in reports["none"]]) for key in METRICS} \
        if "none" in reports else None
    lines = [f"# Post-hoc corrections of {row}: {title}", "",
             "| correction | top-1 | many | medium | few | top-1 gain | few gain |", "|---|---|---|---|---|---|---|"]
    for label, seeds in reports.items():
        values = {key: [report[key] for report in seeds] for key in METRICS}
        gains = ["", ""] if baseline is None else [
            f"{100 * (np.mean(values[key]) - baseline[key]):+.1f}" for key in ("top1_accuracy", "few_shot_accuracy")]
        lines.append(f"| {label} | " + " | ".join(cell(values[key]) for key in METRICS) + " | " + " | ".join(gains)
                     + " |")
    seeds = len(next(iter(reports.values())))
    lines += ["", f"Test split, mean ± std over {seeds} seeds (balanced accuracy in percent; many/medium/few: more "
              "than 100, 20-100, fewer than 20 training images). `none` is the row's own prediction rule; `la (tau)` "
              "is z - tau log prior, `tau_norm (tau)` divides each class's weight vector by its norm^tau, `iif "
              "(variant)` multiplies the logits by the IIF weights. Values fixed in advance, not tuned on test."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=pathlib.Path, help="a table.json written by ltjax-table")
    parser.add_argument("--row", default="CE")
    parser.add_argument("--corrections", nargs="+", default=list(DEFAULT_CORRECTIONS),
                        help="name:value pairs (la, tau_norm: tau; iif: variant) and none")
    parser.add_argument("--out", type=pathlib.Path, help="default: posthoc.md beside the table")
    arguments = parser.parse_args(argv)
    table = json.loads(arguments.table.read_text())
    cells = [cell for row in table["rows"] if row["label"] == arguments.row for cell in row["cells"]
             if "diverged" not in cell]
    if not cells:
        print(f"posthoc: error: the table has no trained cells in row {arguments.row!r}", file=sys.stderr)
        return 1
    reports = evaluate_row(cells, [parse_correction(text) for text in arguments.corrections])
    text = markdown(table["title"], arguments.row, reports)
    out = arguments.out or arguments.table.parent / "posthoc.md"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
