"""`ltjax-train`: train and evaluate one experiment config.

    ltjax-train                                          # ResNet-8 on the embedded long-tailed digits
    ltjax-train --config experiments/configs/ffds.py:cifar100-if100 --workdir runs/ffds
    ltjax-train --config experiments/configs/ldam_drw.py:cifar10-if100 --config.batch_size=256

Running again with the same workdir resumes from its last checkpoint.
"""
from __future__ import annotations

import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

from ltjax import metrics

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "digits.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEFAULT_CONFIG), "Experiment config file (path[:argument]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, report and plots; default runs/<config name>.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", None, "Stop with a checkpoint at this global step; rerun to resume.")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint file operation at INFO
    from ltjax.train.loop import train_and_evaluate  # after flag parsing: importing JAX is slow

    config = _CONFIG.value
    config_path = pathlib.Path(flags.FLAGS["config"].config_filename)
    workdir = pathlib.Path(_WORKDIR.value or pathlib.Path("runs") / config_path.stem)
    report = train_and_evaluate(config, workdir, max_steps=_MAX_STEPS.value)
    if report is None:
        print(f"stopped at step {_MAX_STEPS.value}; run the same command again to resume from {workdir}")
        return
    print(f"\n{config.loss.name} on {config.dataset.name}: balanced test split, {workdir}/report.json")
    print(metrics.format_shot_table(report))
    print(f"plots and log in {workdir}/")


def run() -> None:
    app.run(main)
