"""The experiment config: every key declared, every section completed and checked, overrides from the command line.

A config file (`get_config()` in `experiments/configs/*.py` or `ltjax/configs/digits.py`) writes what it chooses;
`resolve` completes it: the dataset section takes the keys of the dataset `dataset.name` names (`ltjax.datasets`), the
loss section the keys of the method `loss.name` names (`ltjax.methods`), the model, optimizer and run sections
theirs, each key absent from the file at its default. A key that nothing declares is an error that suggests the
nearest valid key, so a misspelt key never goes unnoticed, and the resolved config shows every key a run reads.

`apply_overrides` applies `--config.<dotted.key>=<value>` overrides: first those that choose a dataset, model or
method (the chosen section's keys then exist), then the rest, each checked against the resolved config. When the
command line switches the method or dataset a file chose, the file's keys the new one also reads are kept and the
others are dropped with a warning naming them.
"""
from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import ml_collections

from ltjax import datasets, methods
from ltjax.keys import SEED_MAX, ConfigError, Key, complete_section, epoch, nearest, number
from ltjax.models import HEAD_NAMES, MODEL_NAMES
from ltjax.schedules import epoch_of

# Sections chosen by a name, and the registry that gives each name's keys.
NAMED_SECTIONS = {"dataset": datasets.get, "loss": methods.get}

MODEL_KEYS = {
    "name": Key("", "backbone (empty: the dataset's default)", choices=("",) + MODEL_NAMES),
    "head": Key("", "classifier head (empty: the method's)", choices=("",) + HEAD_NAMES),
    "dtype": Key("float32", "compute dtype of the convolutions (parameters stay float32)",
                 choices=("float32", "bfloat16")),
    "pretrained": Key("", "torchvision ImageNet weights to start from: a .safetensors file, or a .pth/.pt state dict "
                          "(needs torch), of the model's torchvision layout (empty: train from scratch)"),
    "keep_classifier": Key(False, "with pretrained, also load its classifier (fc), which needs the same number of "
                                  "classes; otherwise the head is re-initialised"),
}

OPTIMIZER_KEYS = {
    "learning_rate": number(0.1, "base learning rate"),
    "momentum": number(0.9, "SGD momentum"),
    "nesterov": Key(False, "Nesterov momentum"),
    "weight_decay": number(2e-4, "L2 added to the gradient, as PyTorch's SGD weight_decay"),
    "warmup": epoch(0.025, "linear warm-up epochs, lr * e / W for the 1-indexed epoch e <= W (reference: 5 of 200)"),
    "lr_decay": Key(((0.8, 0.1), (0.9, 0.01)),
                    "(epoch, multiplier of the base rate) pairs, from that 0-indexed epoch on; epochs as fractions "
                    "of the run (< 1) or absolute"),
    "backbone_lr_factor": number(1.0, "multiplier of the learning rate of every parameter but the classifier head's "
                                      "(OLTR's Places-LT stage 1: 0.01, the backbone at 0.001 under a classifier at "
                                      "0.1)", minimum=0.0),
    "schedule": Key("step", "the rate after the warm-up: step (lr_decay's milestones); cosine, lr (1 + cos(pi e / E)) "
                            "/ 2 for the 0-indexed epoch e of E (PyTorch's CosineAnnealingLR stepped at each epoch's "
                            "end: DisAlign, FFDS); cosine_stepped_at_start, the same at e + 1 (stepped at each "
                            "epoch's start: the OLTR, Decoupling and TDE scripts; the last epoch runs at 0); both "
                            "with lr_decay=()", choices=("step", "cosine", "cosine_stepped_at_start")),
}

RUN_KEYS = {
    "num_epochs": Key(200, "training epochs", minimum=1),
    "batch_size": Key(128, "global batch size over all devices", minimum=1),
    "eval_batch_size": Key(256, "global batch size of evaluation", minimum=1),
    "seed": Key(0, "seed of the initialisation and of the data order", minimum=0, maximum=SEED_MAX),
    "parallel": Key("shard_map", "data parallelism: jax.shard_map under jit, or jax.pmap",
                    choices=("shard_map", "pmap")),
    "num_devices": Key(0, "devices to use on one process (0: all; a run across processes uses all)", minimum=0),
    "checkpoint_every_steps": Key(0, "also checkpoint every N steps (0: at the end of every epoch only)", minimum=0),
    "keep_checkpoints": Key(2, "checkpoints kept; the older ones are the fallback when the newest is damaged",
                            minimum=1),
    "progress_bar": Key(True, "show a progress bar per epoch"),
    "plots": Key(True, "draw the PNG plots at the end (class distribution, per-class accuracy, confusion, curves); "
                       "report.json and the TensorBoard events are written either way"),
    "data_cache_dir": Key("", "folder of the decoded image caches (empty: $LTJAX_CACHE_DIR or ~/.cache/ltjax)"),
    "test_every_epoch": Key(True, "evaluate the test split after every epoch too (logged beside validation): what "
                                  "the papers' best-epoch protocol reads"),
    "mixup_alpha": Key(0.0, "mixup of every training batch with Beta(alpha, alpha) weights, for any method (0: off; "
                            "MiSLAS's first stage: 1 on CIFAR, 0.2 on ImageNet-LT, iNaturalist and Places-LT)",
                       minimum=0.0),
}

SECTION_KEYS = {"model": MODEL_KEYS, "optimizer": OPTIMIZER_KEYS}
SECTIONS = ("dataset", "model", "loss", "optimizer")

# Keys that may differ between an interrupted run and its resumption without changing what is computed.
RUN_ONLY_KEYS = ("checkpoint_every_steps", "keep_checkpoints", "progress_bar", "plots", "parallel", "num_devices",
                 "data_cache_dir", "test_every_epoch")

# Keys added after release 0.1.0, with the default that computes what runs computed before the key existed. A record
# without such a key means that default, so a run made before it (its fingerprint, its workdir, a table's finished
# cells) is the same run after it. A new key whose default keeps the old behaviour belongs here.
ADDED_KEYS: dict[tuple[str, str], object] = {
    ("model", "pretrained"): "",
    ("model", "keep_classifier"): False,
    ("dataset", "augmentation"): "pad_crop_flip",
    ("optimizer", "schedule"): "step",
    ("optimizer", "backbone_lr_factor"): 1.0,
}


def _without_added_defaults(record: dict) -> dict:
    """`record` (a config's JSON record) without the `ADDED_KEYS` that hold their default."""
    record = {key: dict(value) if isinstance(value, dict) else value for key, value in record.items()}
    for (section, key), default in ADDED_KEYS.items():
        if key in record.get(section, {}) and record[section][key] == default:
            del record[section][key]
    return record


def _named_keys(section: str, name: str) -> dict[str, Key]:
    return dict(NAMED_SECTIONS[section](name).keys)


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The complete, checked config (see the module docstring).

    Raises:
      ConfigError: an unknown key (with the nearest valid one), a value of the wrong type or outside its choices,
        an unknown dataset, model or method, or a learning-rate milestone outside the run.
    """
    written = dict(config.items())
    for name in written:
        if name not in RUN_KEYS and name not in SECTIONS:
            raise ConfigError(f"unknown config key {name}{nearest(name, list(RUN_KEYS) + list(SECTIONS))}")
    resolved = complete_section({k: v for k, v in written.items() if k in RUN_KEYS}, RUN_KEYS, "config")
    for section in NAMED_SECTIONS:
        values = dict(written.get(section) or {})
        if "name" not in values:
            raise ConfigError(f"config.{section}.name is missing; choose one of {sorted(_registry_names(section))}")
        resolved[section] = complete_section(
            values, _named_keys(section, values["name"]), section, fixed={"name": values["name"]}
        )
    for section, keys in SECTION_KEYS.items():
        resolved[section] = complete_section(written.get(section), keys, section)
    _check_schedule(resolved)
    return resolved


def _registry_names(section: str) -> tuple[str, ...]:
    return tuple(datasets.DATASETS) if section == "dataset" else methods.names()


def _check_schedule(config: ml_collections.ConfigDict) -> None:
    """Every learning-rate decay applies: each falls within the run, on an epoch of its own (in a short run, 0.8 and
    0.9 of it can fall on one epoch, where the later multiplier would replace the earlier)."""
    epochs = {}
    for index, pair in enumerate(config.optimizer.lr_decay):
        if len(pair) != 2:
            raise ConfigError(f"optimizer.lr_decay entries are (epoch, multiplier) pairs, got {pair!r}")
        key = f"optimizer.lr_decay[{index}]"
        epoch = epoch_of(pair[0], config.num_epochs, key=key)
        if epoch >= config.num_epochs:
            raise ConfigError(
                f"{key} = {tuple(pair)!r} starts at epoch {pair[0]:g}, after the {config.num_epochs}-epoch run ends; "
                f"write it as a fraction of the run (e.g. {min(pair[0] / 200, 0.9):.3g}) or drop it"
            )
        if epoch in epochs:
            other, other_pair = epochs[epoch]
            longer = _epochs_to_separate(config.optimizer.lr_decay, config.num_epochs)
            raise ConfigError(
                f"{other} = {tuple(other_pair)!r} and {key} = {tuple(pair)!r} both start at epoch {epoch} of this "
                f"{config.num_epochs}-epoch run, so one of the two decays would never apply: "
                + (f"train at least {longer} epochs, or keep one decay" if longer else "keep one decay")
            )
        epochs[epoch] = (key, pair)


def _epochs_to_separate(lr_decay, num_epochs: int) -> int | None:
    """The shortest run from `num_epochs` on in which every decay starts on an epoch of its own (None: none does,
    as two decays name one absolute epoch)."""
    return next((length for length in range(num_epochs, 100 * num_epochs + 100)
                 if len({epoch_of(when, length, key="") for when, _ in lr_decay}) == len(lr_decay)), None)


def parse_value(text: str, current: Any, where: str) -> Any:
    """A command-line value read as the type of the key's current value."""
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{where} takes true or false, got {text!r}")
    if isinstance(current, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(f"{where}={text!r} is not a valid {type(current).__name__} value") from None


def _lookup(config: ml_collections.ConfigDict, dotted: str) -> tuple[ml_collections.ConfigDict, str]:
    """The section holding `dotted`'s last part, and that part; a ConfigError with a suggestion if absent."""
    *path, leaf = dotted.split(".")
    node = config
    walked = []
    for part in path:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            raise ConfigError(f"unknown config key {'.'.join(walked + [part])}{nearest(part, keys)}")
        node = node[part]
        walked.append(part)
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        hint = nearest(leaf, keys)
        if path and path[0] == "loss":
            hint += f" (keys of method {config.loss.name!r}; list them with `ltjax-methods {config.loss.name}`)"
        raise ConfigError(f"unknown config key {dotted}{hint}")
    return node, leaf


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]
) -> tuple[ml_collections.ConfigDict, list[str]]:
    """Applies `(dotted key, text value)` overrides to a written config and resolves it.

    Returns:
      The resolved config, and warnings about keys the file set that a switched method or dataset does not read.

    Raises:
      ConfigError: an unknown key (with a suggestion) or a bad value.
    """
    written = ml_collections.ConfigDict(config.to_dict())
    warnings = []
    remaining = []
    for dotted, text in overrides:
        section, _, leaf = dotted.partition(".")
        if leaf == "name" and section in NAMED_SECTIONS:
            new_keys = _named_keys(section, text)
            old = dict(written.get(section) or {})
            dropped = sorted(k for k in old if k != "name" and k not in new_keys)
            if dropped and old.get("name") != text:
                warnings.append(
                    f"--config.{section}.name={text} replaces {old.get('name')!r}: the config file's "
                    f"{', '.join(f'{section}.{k}={old[k]!r}' for k in dropped)} "
                    f"{'is' if len(dropped) == 1 else 'are'} not read by {text!r} and dropped"
                )
            written[section] = ml_collections.ConfigDict(
                {"name": text, **{k: v for k, v in old.items() if k in new_keys}}
            )
        else:
            remaining.append((dotted, text))
    resolved = resolve(written)
    for dotted, text in remaining:
        node, leaf = _lookup(resolved, dotted)
        value = parse_value(text, node[leaf], dotted)
        node[leaf] = _assignable(value, node[leaf], dotted)
    return resolve(resolved), warnings


def _assignable(value: Any, current: Any, where: str) -> Any:
    """A value the ConfigDict accepts for the field (its type is fixed); the full check follows in `resolve`."""
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if type(value) is not type(current) and not (isinstance(current, tuple) and isinstance(value, tuple)):
        raise ConfigError(f"{where} takes a {type(current).__name__}, got {value!r}")
    return value


def to_json(config: ml_collections.ConfigDict) -> str:
    """The resolved config as sorted, indented JSON (what a workdir's `config.json` holds)."""
    return json.dumps(json.loads(config.to_json_best_effort()), indent=1, sort_keys=True)


def fingerprint(config: ml_collections.ConfigDict) -> str:
    """SHA-256 of the resolved config without the run-only keys: equal for runs that compute the same thing."""
    record = _without_added_defaults(json.loads(config.to_json_best_effort()))
    for key in RUN_ONLY_KEYS:
        record.pop(key, None)
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def ensemble_fingerprint(configs) -> str:
    """SHA-256 of the members' fingerprints, in member order."""
    return hashlib.sha256("".join(fingerprint(config) for config in configs).encode()).hexdigest()


def differences(old: dict, new: dict, prefix: str = "", *, top_level: bool = True) -> list[str]:
    """`key: old -> new` lines between two config records (nested dicts, or an ensemble's `{"members": [configs]}`),
    the run-only keys of each config left out, and an `ADDED_KEYS` key at its default the same as an absent one."""
    if top_level and "members" not in old and "members" not in new:
        old, new = _without_added_defaults(old), _without_added_defaults(new)
    lines = []
    for key in sorted(set(old) | set(new)):
        if top_level and key in RUN_ONLY_KEYS:
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += differences(a, b, f"{prefix}{key}.", top_level=False)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
                isinstance(x, dict) for x in a + b):
            for index, (x, y) in enumerate(zip(a, b)):
                lines += differences(x, y, f"{prefix}{key}[{index}].")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return lines
