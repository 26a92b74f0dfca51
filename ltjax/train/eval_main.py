"""`ltjax-eval`: evaluate a trained workdir on any split, optionally with a post-hoc correction.

    ltjax-eval --workdir runs/ce-digits-if10-seed0-278313bb                         # its newest checkpoint, test split
    ltjax-eval --workdir DIR --posthoc la --value 1.0                                # logit adjustment, tau = 1
    ltjax-eval --workdir DIR --posthoc tau_norm --select-on validation               # tau chosen on validation
    ltjax-eval --workdir DIR --posthoc iif --value smooth                            # post-hoc IIF, smooth variant
    ltjax-eval --workdir DIR --split validation --step 140
    ltjax-eval --workdir DIR --config.dataset.imbalance_factor=50                    # another factor's test split
    ltjax-eval --workdir DIR --member 3                                              # one member of an ensemble

Writes `report.json` and plots to `<workdir>/eval/<name>/` (with `--select-on`, also `selection.json`: every value
tried on validation and the one chosen). The run's checkpoints and logs are never written to. Across processes
(the flags of `ltjax-train`), every process evaluates its share of each batch and process 0 writes. Corrections:
`la` (z - tau log prior, Menon et al.), `tau_norm` (class weights / norm^tau, Kang et al.; linear head),
`iif` (z * iif, Alexandridis et al.); `none` predicts with the method's own rule.
"""
from __future__ import annotations

import argparse
import json
import sys

from ltjax import commands, multihost
from ltjax.configs import files
from ltjax.keys import ConfigError

CORRECTION_NAMES = ("none", "la", "tau_norm", "iif")
SPLITS = ("test", "validation", "train")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltjax-eval", allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--workdir", required=True, help="a run's workdir (what ltjax-train wrote)")
    parser.add_argument("--member", type=int, help="the member to evaluate, for an ensemble's workdir")
    parser.add_argument("--step", type=int, help="the checkpoint step (default: the newest good one)")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--posthoc", choices=CORRECTION_NAMES, default="none", help="post-hoc correction")
    parser.add_argument("--value", help="the correction's tau (la, tau_norm) or variant (iif); default 1.0 / raw")
    parser.add_argument("--select-on", choices=("validation",), help="choose the value on the validation split")
    parser.add_argument("--name", help="the output folder's name under <workdir>/eval (default from the options)")
    commands.add_debug_flag(parser)
    multihost.add_flags(parser)
    return parser


def _value(correction: str, text: str | None):
    from ltjax import posthoc

    spec = posthoc.CORRECTIONS[correction]
    if text is None:
        return spec.default
    if isinstance(spec.default, str):
        if text not in spec.grid:
            raise ConfigError(f"--value for {correction} is one of {', '.join(spec.grid)}, got {text!r}")
        return text
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--value for {correction} is a number (its {spec.value_name}), got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """`ltjax-eval` on `argv` (default: the command line); its exit code (`ltjax.commands`)."""
    return commands.run("ltjax-eval", _evaluate, argv)


def _evaluate(argv: list[str]) -> int:
    arguments, extra = _parser().parse_known_args(argv)
    from ltjax import metrics
    from ltjax.configs import schema
    from ltjax.train import evaluate

    multihost.initialize_from(arguments)
    overrides = files.parse_overrides(extra)
    if any(not key.startswith("dataset.") for key, _ in overrides):
        raise ConfigError("ltjax-eval takes only --config.dataset.<key> overrides (the split to evaluate on); "
                          "the model and method are the run's")
    if arguments.posthoc == "none" and (arguments.value or arguments.select_on):
        raise ConfigError("--value and --select-on choose a post-hoc correction's strength: add --posthoc")
    run = evaluate.load_run(arguments.workdir, member=arguments.member, step=arguments.step)
    data = run.data
    if overrides:
        eval_config, _ = schema.apply_overrides(run.config, overrides)
        data = evaluate.load_data(eval_config)[0]
    source = {"test": data.test, "validation": data.validation, "train": data.train}[arguments.split]
    if source is None:
        raise ConfigError(f"this run has no {arguments.split} split (set dataset.validation_per_class when "
                          "training to hold one out)")
    selection = None
    if arguments.select_on:
        value, tried = evaluate.select_on_validation(run, arguments.posthoc)
        selection = {"selected_on": "validation", "value": value, "tried": tried}
    elif arguments.posthoc != "none":
        value = _value(arguments.posthoc, arguments.value)
    else:
        value = None
    outputs = evaluate.split_outputs(run.trainer, run.state, source)
    logits = evaluate.corrected_logits(run, outputs, arguments.posthoc, value)
    report = evaluate.report_of(logits, outputs.labels, run.data.class_counts)
    if not multihost.is_primary():
        return 0
    name = arguments.name or "-".join(
        [arguments.split, f"step{run.step}"] + ([] if arguments.posthoc == "none" else
                                                [arguments.posthoc, "selected" if selection else str(value)]))
    folder = run.folder / "eval" / name
    manifest = data.manifests.get(arguments.split)
    report["evaluation"] = {"split": arguments.split, "step": run.step, "posthoc": arguments.posthoc, "value": value,
                            "split_sha256": manifest.sha256 if manifest else None}
    evaluate.write_report(report, run.data, folder)
    if selection:
        (folder / "selection.json").write_text(json.dumps(selection, indent=1) + "\n")
        best = max(tried["top1_accuracy"] for tried in selection["tried"])
        print(f"{arguments.posthoc}: {value} chosen on validation (validation top-1 {100 * best:.1f}%)")
    print(f"{arguments.split} split, step {run.step}, {arguments.posthoc}"
          f"{'' if value is None else f' ({value})'}: {folder}/report.json")
    print(metrics.format_shot_table(report))
    return 0


def run() -> None:
    sys.exit(main())
