"""`ltjax-table`: train every cell of a table spec (seeds x methods, grouped into ensembles) and write the table.

    ltjax-table experiments/tables/digits_lt.py                       # the embedded digits, every method, 5 seeds
    ltjax-table experiments/tables/tiny_imagenet_lt_reduced.py --out experiments/tables/results/tiny_imagenet_lt_reduced

Finished cells are not trained again: running the same command after an interruption resumes the unfinished
groups and rewrites the table. Across processes (the flags of `ltjax-train`), every group trains on all of them and
process 0 writes the table. Outputs: `table.json`, `table.md` and `table.png` in `--out` (default
`<root>/<table name>/`); every cell keeps its workdir under `<root>/<table name>/cells/`.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

from ltjax import commands, multihost


def main(argv: list[str] | None = None) -> int:
    """`ltjax-table` on `argv` (default: the command line); its exit code (`ltjax.commands`)."""
    return commands.run("ltjax-table", _table, argv)


def _table(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ltjax-table", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("spec", help="a table spec file, e.g. experiments/tables/digits_lt.py")
    parser.add_argument("--root", default="runs/tables", help="where the cells' workdirs go (default runs/tables)")
    parser.add_argument("--out", help="where table.json/.md/.png go (default <root>/<table name>)")
    parser.add_argument("--max-members", type=int, default=64, help="largest ensemble trained in one step")
    commands.add_debug_flag(parser)
    multihost.add_flags(parser)
    arguments = parser.parse_args(argv)

    from ltjax.tables import render, run, spec

    started = time.perf_counter()
    multihost.initialize_from(arguments)
    table = spec.load_table(arguments.spec)
    results = run.run_table(table, pathlib.Path(arguments.root), max_members=arguments.max_members)
    if not multihost.is_primary():
        return 0
    out = pathlib.Path(arguments.out or pathlib.Path(arguments.root) / table.name)
    out.mkdir(parents=True, exist_ok=True)
    summary = render.summarize(table, results)
    elapsed = time.perf_counter() - started
    summary["wall_seconds"] = elapsed
    summary["fingerprint"] = results["fingerprint"]
    command = shlex.join(["ltjax-table", *argv])
    runtime = (f"{results['total_seconds'] / 60:.1f} min training {results['groups']} ensemble groups in all, "
               f"whenever they ran; this command: {elapsed / 60:.1f} min wall, {results['seconds'] / 60:.1f} min of it "
               "training the groups that were not finished")
    (out / "table.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "table.md").write_text(render.markdown(summary, command=command, runtime=runtime))
    render.plot(summary, out / "table.png")
    print((out / "table.md").read_text())
    return 0


def run() -> None:
    sys.exit(main())
