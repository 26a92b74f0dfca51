"""The runs the tests train: the default digits config with command-line style overrides (and a workdir held by
another run).

Most tests check how a run is wired (a method's phases and state, checkpoints and resume, ensembles, tables, the
command line), not how well its network learns. They train ResNet-2, the stem and the head alone, whose train step
compiles in about a third of ResNet-8's time on CPU; compiling those steps is most of the suite's time. Tests whose
assertions need a network that learns pass `model=DATASET_MODEL`, the digits' own ResNet-8. Drawing a run's plots
takes about a second, as long as the rest of such a run: they are off unless a test looks at them
(("plots", "true")).
"""
import contextlib
import pathlib
import subprocess
import sys
from collections.abc import Iterator

from ltjax.configs import files, schema

SMOKE_MODEL = "resnet2"
DATASET_MODEL = ""  # the config's empty model name: the dataset's default
# The same, for runs started through the command line.
SMOKE_ARGS = [f"--config.model.name={SMOKE_MODEL}", "--config.progress_bar=false", "--config.plots=false"]


def digits_config(*overrides: tuple[str, str], model: str = SMOKE_MODEL):
    """The default config with `overrides` applied after `model` and the plots switch, resolved."""
    written = files.load_config_file(files.DEFAULT_CONFIG)
    pairs = [("progress_bar", "false"), ("plots", "false"), ("model.name", model), *overrides]
    return schema.apply_overrides(written, pairs)[0]


@contextlib.contextmanager
def workdir_locked_elsewhere(workdir: pathlib.Path) -> Iterator[None]:
    """While entered, another process (recorded as "pid test") holds `workdir`'s lock, as a run in it would."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); f.write('pid test'); "
         "f.flush(); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)",
         str(workdir / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()
