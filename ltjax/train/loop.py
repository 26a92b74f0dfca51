"""`train_and_evaluate(config, workdir)`: the whole run, top to bottom; `train_ensemble(configs, workdir)`: several
runs that share a backbone, trained side by side in one compiled step.

Resolve the config -> hold the workdir -> check and load the data -> build the program (`ltjax.train.build`) ->
record what produced the run -> restore the newest good checkpoint -> epochs of data-parallel train steps, each
epoch ending with the method's epoch hook, a log line and a checkpoint -> the final test report, its
many/medium/few table and plots.

Nothing here knows which method runs: phase switches happen inside the compiled step, phase-entry hooks (a
similarity model built from class prototypes) come from the objective. A loss or gradient that stops being finite
stops a single run before anything computed from it is saved (`NonFiniteError`); in an ensemble it marks that member
diverged (`members/<k>/diverged.json`, no report) and the others train on, untouched. SIGTERM or SIGINT stops the run
at a step with a checkpoint there (`multihost.Interrupted`); running it again resumes from that step.

Across processes (`ltjax.multihost`) every process runs this same loop over one global mesh, reading only its
share of each global batch; process 0 alone holds the workdir lock and writes the run's files (config, plan,
provenance, logs, TensorBoard events, reports, plots), checkpoints are saved and restored by all (orbax), and every
decision that could differ (a config error, a damaged checkpoint, where to stop) is taken together.

An ensemble's workdir holds the shared record (config.json listing every member, plan, provenance, manifests,
checkpoints) and a folder per member, `members/<k>/`, with the member's own config.json, log.jsonl, report.json and
plots.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import pathlib
import socket
import time
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from ltjax import datasets, methods, metrics, multihost, plots
from ltjax.configs import schema
from ltjax.data import samplers
from ltjax.data.pipeline import Batch, TrainPipeline, eval_batches
from ltjax.data.prefetch import device_prefetch
from ltjax.data.source import ImageSource
from ltjax.errors import UserError
from ltjax.train.build import DataSpec, Trainer, build, build_ensemble, format_plan, run_devices
from ltjax.train.checkpoint import Checkpointer
from ltjax.train.stages import start_from_first_stage, start_from_pretrained
from ltjax.train.state import TrainState
from ltjax.train.step import place
from ltjax.train.workdir import EpochLog, Workdir

# Panels of `curves.png`: keys of the JSON-lines log, nested keys dotted. The gap panel gets a zero line.
GAP_PANEL = "Train - validation accuracy"
CURVE_PANELS = {
    "Loss": ("train_loss",),
    "Accuracy": ("train.top1_accuracy", "validation.top1_accuracy", "validation.many_shot_accuracy",
                 "validation.medium_shot_accuracy", "validation.few_shot_accuracy", "test.top1_accuracy"),
    GAP_PANEL: ("gap.overall", "gap.many", "gap.medium", "gap.few"),
}


class NonFiniteError(UserError, RuntimeError):
    """The loss or a gradient stopped being finite: the run diverged."""


def _member(tree, member: int | None):
    """Member `member`'s slice of a stacked pytree (the tree itself for a single run)."""
    return tree if member is None else jax.tree.map(lambda leaf: leaf[member], tree)


def evaluate(trainer: Trainer, state: TrainState, source: ImageSource, *, keep_features: bool = False
             ) -> tuple[metrics.EvalStats, np.ndarray | None]:
    """Sums the eval statistics over a split (with a leading member axis for an ensemble); with `keep_features`,
    also fetches every example's features (for class prototypes), which otherwise never leave the device."""
    total, features = None, []
    batches = eval_batches(source, global_batch_size=trainer.config.eval_batch_size, num_workers=2,
                           process_index=jax.process_index(), process_count=jax.process_count())
    for batch in device_prefetch(batches, trainer.eval_sharding):
        stats, batch_features = trainer.eval_step(state, batch.images, batch.labels, batch.mask)
        total = stats if total is None else total.merge(stats)
        if keep_features:
            features.append(multihost.gather(batch_features)[..., multihost.gather(batch.mask), :])
    return jax.device_get(total), np.concatenate(features, axis=-2) if keep_features else None


def class_mean_features(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """`[C, D]` each class's mean feature: the class prototypes."""
    return np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])


@dataclasses.dataclass
class _Run:
    """What one training run (a single config or an ensemble) holds while it trains."""

    trainer: Trainer
    data: datasets.TrainingData
    pipelines: list[TrainPipeline]
    folder: Workdir
    checkpointer: Checkpointer
    record: dict
    say: Callable[[str], None]
    diverged: dict[int, dict] = dataclasses.field(default_factory=dict)  # member -> where it diverged

    @property
    def members(self) -> list[int | None]:
        return [None] if self.trainer.members is None else list(range(self.trainer.members))

    @property
    def steps_per_epoch(self) -> int:
        return self.pipelines[0].steps_per_epoch()

    def member_dir(self, member: int | None) -> pathlib.Path:
        return self.folder.member(member)

    def read_diverged(self) -> None:
        """The members that diverged in an earlier session of the run (their files are complete by now)."""
        for member in self.members:
            path = self.member_dir(member) / "diverged.json"
            if member is not None and path.exists():
                self.diverged[member] = json.loads(path.read_text())

    def batches(self, epoch: int, first_step: int):
        iterators = [pipeline.batches(start_epoch=epoch, start_step=first_step, end_epoch=epoch + 1)
                     for pipeline in self.pipelines]
        if self.trainer.members is None:
            host = iterators[0]
        else:  # each member its own order, as the single run of its seed: stacked along a leading member axis
            host = (Batch(np.stack([b.images for b in group]), np.stack([b.labels for b in group]),
                          np.stack([b.mask for b in group]), np.stack([b.indices for b in group]), group[0].epoch,
                          group[0].step) for group in zip(*iterators))
        return device_prefetch(host, self.trainer.batch_sharding)

    def check_finite(self, state: TrainState) -> None:
        """Raises `NonFiniteError` for a single run; marks diverged members of an ensemble."""
        totals = jax.device_get(state.totals)
        for member in self.members:
            bad = int(_member(totals, member).first_nonfinite_step)
            if bad < 0 or member in self.diverged:
                continue
            epoch, step = divmod(bad, self.steps_per_epoch)
            if member is None:
                last = self.checkpointer.latest_step()
                kept = (f"the last good checkpoint, step {last}, is in {self.checkpointer.directory}"
                        if last is not None else "no checkpoint had been written yet")
                raise NonFiniteError(
                    f"training diverged: the loss or a gradient was not finite at global step {bad} (epoch {epoch}, "
                    f"step {step} of the epoch). Nothing computed from it was saved and no report was written; "
                    f"{kept}. The run is deterministic, so resuming repeats the divergence: lower "
                    "optimizer.learning_rate, or check the method's keys and the data, in a new workdir."
                )
            self.diverged[member] = {"global_step": bad, "epoch": epoch, "step": step}
            if multihost.is_primary():
                (self.member_dir(member) / "diverged.json").write_text(json.dumps(self.diverged[member]) + "\n")
            self.say(f"member {member} diverged at global step {bad} (epoch {epoch}); the other members train on")

    def save(self, state: TrainState) -> None:
        self.check_finite(state)
        self.checkpointer.save(state, self.record)

    def enter_phases(self, state: TrainState, epoch: int) -> TrainState:
        """Runs the host-side hooks of the phases that begin at `epoch` (class prototypes -> similarity model)."""
        objective = self.trainer.objective
        entering = {member: (objective.phases_entered_at(epoch) if member is None
                             else objective.phases_entered_at(member, epoch)) for member in self.members}
        if not any(entering.values()):
            return state
        _, features = evaluate(self.trainer, state, self.data.train, keep_features=True)
        loss_state = state.loss_state
        for member, phases in entering.items():
            hooks = methods.Hooks(functools.partial(class_mean_features, _member(features, member),
                                                    self.data.train.labels, self.data.train.num_classes),
                                  self.trainer.configs[member or 0].seed)
            for phase in phases:
                if member is None:
                    loss_state = phase.enter(loss_state, objective.hp, hooks)
                else:
                    updated = objective.enter(member, phase, _member(loss_state, member), hooks)
                    loss_state = jax.tree.map(lambda all_, one, i=member: all_.at[i].set(one), loss_state, updated)
        return state.replace(loss_state=multihost.broadcast(loss_state))  # the hooks ran on the host of each process


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, max_steps: int | None = None,
    extend: bool = False, say: Callable[[str], None] = print,
) -> dict | None:
    """Trains and evaluates as `config` says, recording the run in `workdir` and resuming from it.

    Args:
      config: an experiment config (resolved here; see `ltjax/configs/digits.py`).
      workdir: the run's folder (see `ltjax.train.workdir`).
      max_steps: stop (with a checkpoint) once the global step reaches this, e.g. to fit a time slot; running
        again resumes. None trains to the end.
      extend: continue the workdir's (finished or not) run into the longer `config.num_epochs`; its epoch specs
        (phase starts, learning-rate milestones) follow the new length. Only `num_epochs` may differ.
      say: where the plan and the notes about damaged checkpoints go.

    Returns:
      The final test report (also written to `report.json`), or None when stopped by `max_steps`.

    Raises:
      ConfigError: a config that cannot run, or one that differs from the run the workdir holds.
      WorkdirBusyError: another run holds the workdir.
      DataError: a split with missing, undecodable or odd-sized images (named).
      CheckpointError: the workdir has checkpoints but none is good.
      NonFiniteError: the run diverged.
      Interrupted: SIGTERM or SIGINT stopped the run at a step, with a checkpoint there; running again resumes.
    """
    reports = _train([config], workdir, ensemble=False, max_steps=max_steps, extend=extend, say=say)
    return None if reports is None else reports[0]


def train_ensemble(
    configs: Sequence[ml_collections.ConfigDict], workdir: str | pathlib.Path, *, max_steps: int | None = None,
    say: Callable[[str], None] = print,
) -> list[dict | None] | None:
    """Trains every config as a member of one ensemble (see `build_ensemble`), recording it in `workdir`.

    Returns:
      One report per member (None for a member that diverged), or None when stopped by `max_steps`.

    Raises:
      As `train_and_evaluate`.
    """
    return _train(list(configs), workdir, ensemble=True, max_steps=max_steps, extend=False, say=say)


def _fingerprint_of(record: dict) -> str:
    """The fingerprint of a workdir's config record (an ensemble's: of its members)."""
    if "members" in record:
        return schema.ensemble_fingerprint([ml_collections.ConfigDict(member) for member in record["members"]])
    return schema.fingerprint(ml_collections.ConfigDict(record))


def _train(configs: list, workdir, *, ensemble: bool, max_steps: int | None, extend: bool,
           say) -> list[dict | None] | None:
    configs = [schema.resolve(config) for config in configs]
    config = configs[0]
    say = multihost.primary_only(say)
    folder = Workdir(workdir)
    with contextlib.ExitStack() as held:
        multihost.on_primary(lambda: held.enter_context(folder.lock()))
        data = multihost.on_every(lambda: datasets.get(config.dataset.name).load(config.dataset).prepared(
            dataset=config.dataset.name, cache_dir=config.data_cache_dir or None))
        sampler = datasets.make_sampler(config.dataset, config.num_epochs)
        partners = methods.get(config.loss.name).partners  # ensemble members share them (checked by build)
        pipelines = [TrainPipeline(data.train, global_batch_size=member.batch_size, seed=member.seed, sampler=sampler,
                                   num_workers=1 if ensemble else 2, process_index=jax.process_index(),
                                   process_count=jax.process_count(), drop_remainder=config.dataset.drop_remainder,
                                   partners=samplers.PARTNER_SAMPLERS[partners] if partners else None,
                                   device_blocks=len(run_devices(config)))
                     for member in configs]
        spec = DataSpec.of(data, pipelines[0].steps_per_epoch())
        trainer = build_ensemble(configs, spec) if ensemble else build(config, spec)
        records = [json.loads(schema.to_json(member)) for member in configs]
        hosts = multihost.exchange(socket.gethostname())
        previous = multihost.on_primary(lambda: _record(folder, trainer, data, records, extend, hosts))
        fingerprint = schema.fingerprint(config) if not ensemble else schema.ensemble_fingerprint(configs)
        checkpointer = Checkpointer(folder.checkpoints, max_to_keep=config.keep_checkpoints)
        run = _Run(trainer, data, pipelines, folder, checkpointer, {"fingerprint": fingerprint, "config": records},
                   say)
        say(format_plan(trainer.plan))
        if previous is not None:
            say(f"extending the run from {previous['num_epochs']} to {config.num_epochs} epochs; its phases and "
                "learning-rate milestones follow the new length")
        run.read_diverged()
        accepted = (fingerprint,) if previous is None else (fingerprint, _fingerprint_of(previous))
        fresh = trainer.init_state()
        state = checkpointer.restore(fresh, accepted, say=say)
        if state is None:  # every process starts from process 0's initialisation, bit for bit
            state, pretrained = start_from_pretrained(fresh, trainer, say=say)
            multihost.on_primary(lambda: folder.record_pretrained(pretrained))
            state = multihost.broadcast(start_from_first_stage(state, trainer, say=say))
        try:
            with multihost.Interruption() as interruption:
                state = _epochs(run, state, max_steps, interruption)
        finally:
            checkpointer.close()
        return None if state is None else _final_reports(run, state)


def _record(folder: Workdir, trainer: Trainer, data: datasets.TrainingData, records: list[dict], extend: bool,
            hosts: list[str]) -> dict | None:
    """Process 0's record of the run in its workdir (see `Workdir`); the workdir's previous config when `extend`
    lengthened the run."""
    previous = folder.check_config({"members": records} if trainer.members else records[0], extend=extend)
    folder.record_manifests(data.manifests)
    folder.record_session(trainer.plan, trainer.devices, hosts=hosts,
                          extended_from=None if previous is None else previous["num_epochs"])
    for member, record in enumerate(records if trainer.members else []):
        folder.member(member).mkdir(parents=True, exist_ok=True)
        (folder.member(member) / "config.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    return previous


def _epochs(run: _Run, state: TrainState, max_steps: int | None,
            interruption: multihost.Interruption) -> TrainState | None:
    start_epoch, start_step = divmod(int(np.ravel(jax.device_get(state.step))[0]), run.steps_per_epoch)
    with contextlib.ExitStack() as stack:
        logs = {member: stack.enter_context(EpochLog(run.member_dir(member) / "log.jsonl", start_epoch))
                for member in run.members} if multihost.is_primary() else {}
        return _train_epochs(run, state, max_steps, interruption, logs, start_epoch, start_step)


def _train_epochs(run: _Run, state: TrainState, max_steps: int | None, interruption: multihost.Interruption,
                  logs: dict[int | None, EpochLog], start_epoch: int, start_step: int) -> TrainState | None:
    """Trains from (start_epoch, start_step) to the end of the run, or until `max_steps` or a signal stops it (with
    a checkpoint at that step: None, or `Interrupted`). A stop at an epoch's last step first ends the epoch, so that
    the checkpoint is the epoch's own and a resumed run begins the next epoch."""
    trainer, config = run.trainer, run.trainer.config
    steps_per_epoch = run.steps_per_epoch
    for epoch in range(start_epoch, config.num_epochs):
        first_step = start_step if epoch == start_epoch else 0
        if first_step == 0:
            state = run.enter_phases(trainer.start_epoch(state), epoch)
        started = time.perf_counter()
        progress = tqdm(run.batches(epoch, first_step), total=steps_per_epoch - first_step, desc=f"epoch {epoch}",
                        leave=False, disable=not (config.progress_bar and multihost.is_primary()))
        schedule = place(trainer.epoch_inputs(epoch), trainer.replicated)
        stop = None
        for step, batch in enumerate(progress, start=epoch * steps_per_epoch + first_step + 1):
            state = trainer.train_step(state, batch.images, batch.labels, schedule, batch.mask)
            stop = _stop_reason(step, max_steps, interruption)
            if stop is not None and step % steps_per_epoch:
                progress.close()
                run.save(state)
                return _stopped(stop, step, steps_per_epoch)
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and step % steps_per_epoch:
                run.save(state)
        state = trainer.end_epoch(state)
        run.check_finite(state)
        seconds = time.perf_counter() - started
        validation = evaluate(trainer, state, run.data.validation)[0] if run.data.validation is not None else None
        test = evaluate(trainer, state, run.data.test)[0] if config.test_every_epoch else None
        totals = jax.device_get(state.totals)
        for member, log in logs.items():
            if member not in run.diverged:
                log.append(_epoch_record(_member(totals, member), _member(validation, member), _member(test, member),
                                         run.data, epoch, seconds))
        run.save(state)
        if stop is not None:
            return _stopped(stop, (epoch + 1) * steps_per_epoch, steps_per_epoch)
    return state


def _stop_reason(step: int, max_steps: int | None, interruption: multihost.Interruption) -> str | None:
    """Why the run stops after global step `step` ("max_steps", "signal"), or None; asked at every step, since
    the processes' agreement on a signal counts the steps."""
    signalled = interruption.reached(step)
    if max_steps is not None and step >= max_steps:
        return "max_steps"
    return "signal" if signalled else None


def _stopped(reason: str, step: int, steps_per_epoch: int) -> None:
    if reason == "signal":
        raise multihost.Interrupted(*divmod(step, steps_per_epoch), step)
    return None


def _epoch_record(totals: metrics.TrainTotals, validation_stats: metrics.EvalStats | None,
                  test_stats: metrics.EvalStats | None, data: datasets.TrainingData, epoch: int,
                  seconds: float) -> dict:
    """An epoch's line of `log.jsonl`: the training sums, and validation's and (the papers' best-epoch protocol
    reads it) the test split's scalar metrics, where they were evaluated."""
    train = metrics.train_accuracy(totals.class_correct, totals.class_count, data.class_counts)
    record = {
        "epoch": epoch,
        "train_loss": float(totals.loss_sum) / max(int(totals.steps), 1),
        "train": train,
        "seconds": seconds,
        "train_images_per_second": float(np.sum(totals.class_count)) / seconds,
    }
    def scalars(stats: metrics.EvalStats) -> dict:
        return metrics.scalar_metrics(metrics.report(stats, data.class_counts, include_confusion=False))

    if validation_stats is not None:
        record["validation"] = scalars(validation_stats)
        record["gap"] = metrics.accuracy_gap(train, record["validation"])
    if test_stats is not None:
        record["test"] = scalars(test_stats)
    return record


def _final_reports(run: _Run, state: TrainState) -> list[dict | None]:
    data = run.data
    test_stats, _ = evaluate(run.trainer, state, data.test)
    reports = []
    for member in run.members:
        if member in run.diverged:
            reports.append(None)
            continue
        folder = run.member_dir(member)
        report = {
            **metrics.report(_member(test_stats, member), data.class_counts),
            "class_names": list(data.class_names),
            "train_class_counts": data.class_counts.tolist(),
        }
        if multihost.is_primary():
            (folder / "report.json").write_text(json.dumps(report, indent=1))
            if run.trainer.config.plots:
                _plot(folder, report, data.class_counts)
        reports.append(report)
    multihost.barrier("ltjax-reports-written")  # so that every process returns with the run's files complete
    return reports


def _plot(folder: pathlib.Path, report: dict, class_counts: np.ndarray) -> None:
    plots.plot_class_distribution(class_counts, folder / "class_distribution.png")
    plots.plot_accuracy_vs_count(report["per_class_accuracy"], class_counts, folder / "per_class_accuracy.png")
    plots.plot_confusion_matrix(np.asarray(report["confusion"]), folder / "confusion.png")
    if (folder / "log.jsonl").exists():
        plots.plot_training_curves(folder / "log.jsonl", folder / "curves.png", panels=CURVE_PANELS,
                                   zero_line_panels=(GAP_PANEL,))
