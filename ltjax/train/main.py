"""`ltjax-train`: train and evaluate one experiment config.

    ltjax-train                                            # ResNet-8 on the embedded long-tailed digits
    ltjax-train --config.loss.name=ffds                    # any method: `ltjax-methods` lists them and their keys
    ltjax-train --config experiments/configs/ffds.py:cifar100-if100 --config.num_epochs=20
    ltjax-train --plan --config.loss.name=ldam_drw         # print the resolved config and plan, train nothing
    ltjax-train --workdir DIR --config.num_epochs=50 --extend   # continue DIR's run into a longer schedule
    ltjax-train --coordinator_address=HOST:PORT --num_processes=2 --process_id=0   # and =1: one run, 2 processes

Every key of the resolved config can be set with `--config.<key>=<value>`; an unknown key is an error that names the
nearest valid one. The default workdir, `runs/<method>-<dataset>-if<IF>-seed<seed>-<config hash>`, differs for every
config; running the same command again resumes from its newest good checkpoint. SIGTERM or SIGINT (Ctrl-C) stops
the run at the next step with a checkpoint there and exit code 75; a second Ctrl-C stops at once. An error the user
can fix is one message and exit code 2 (`--debug` adds its traceback; `ltjax.commands` lists the exit codes).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from ltjax import commands, multihost
from ltjax.configs import files, schema
from ltjax.keys import ConfigError


def _parser() -> argparse.ArgumentParser:
    from ltjax import datasets, methods

    parser = argparse.ArgumentParser(
        prog="ltjax-train", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        usage="ltjax-train [--config FILE[:ARG]] [--workdir DIR] [--max_steps N] [--plan] [--extend] "
              "[--coordinator_address HOST:PORT --num_processes N --process_id I] [--config.KEY=VALUE ...]",
        epilog=(
            f"methods (--config.loss.name): {', '.join(methods.names())}\n"
            f"datasets (--config.dataset.name): {', '.join(datasets.DATASETS)}\n"
            "`ltjax-methods NAME` shows a method's keys, defaults and meaning."
        ),
    )
    parser.add_argument("--config", default=str(files.DEFAULT_CONFIG),
                        help="experiment config file, path[:argument] (default: the digits config)")
    parser.add_argument("--workdir", help="the run's folder (default: runs/<method>-<dataset>-...-<config hash>)")
    parser.add_argument("--max_steps", type=int, help="stop with a checkpoint at this global step; rerun to resume")
    parser.add_argument("--plan", action="store_true", help="print the resolved config and the plan, then exit")
    parser.add_argument("--extend", action="store_true",
                        help="continue --workdir's run into a longer --config.num_epochs (milestones follow it)")
    commands.add_debug_flag(parser)
    multihost.add_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`ltjax-train` on `argv` (default: the command line); its exit code (`ltjax.commands`)."""
    return commands.run("ltjax-train", _train, argv)


def _train(argv: list[str]) -> int:
    arguments, extra = _parser().parse_known_args(argv)
    multihost.initialize_from(arguments)
    written = files.load_config_file(arguments.config)
    config, warnings = schema.apply_overrides(written, files.parse_overrides(extra))
    for warning in warnings if multihost.is_primary() else ():
        print(f"ltjax-train: warning: {warning}", file=sys.stderr)
    if arguments.plan:
        return _print_plan(config)
    from ltjax.train.loop import train_and_evaluate
    from ltjax.train.workdir import default_name

    if arguments.extend and not arguments.workdir:
        raise ConfigError("--extend continues an existing run: name it with --workdir")
    workdir = pathlib.Path(arguments.workdir or pathlib.Path("runs") / default_name(config))
    report = train_and_evaluate(config, workdir, max_steps=arguments.max_steps, extend=arguments.extend)
    if not multihost.is_primary():
        return 0
    if report is None:
        print(f"stopped at step {arguments.max_steps}; run the same command again to resume from {workdir}")
        return 0
    from ltjax import metrics

    print(f"\n{config.loss.name} on {config.dataset.name}: balanced test split, {workdir}/report.json")
    print(metrics.format_shot_table(report))
    print(f"{'plots and log' if config.plots else 'log'} in {workdir}/")
    return 0


def _print_plan(config) -> int:
    """The resolved config and the plan, without loading more than the training labels (process 0 prints)."""
    from ltjax import datasets
    from ltjax.data.pipeline import TrainPipeline
    from ltjax.train.build import DataSpec, build, format_plan

    if multihost.is_primary():
        print(schema.to_json(config))
    data = datasets.get(config.dataset.name).load(config.dataset)
    steps = TrainPipeline(data.train, global_batch_size=config.batch_size, drop_remainder=config.dataset.drop_remainder,
                          sampler=datasets.make_sampler(config.dataset, config.num_epochs)).steps_per_epoch()
    spec = DataSpec.of(data, steps)
    trainer = build(config, spec)
    if multihost.is_primary():
        print(format_plan(trainer.plan))
    return 0


def run() -> None:
    sys.exit(main())
