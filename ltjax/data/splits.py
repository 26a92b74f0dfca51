"""Drawing long-tailed and held-out splits from a balanced split, and recording them as hashed manifests.

`select_longtail_indices` is the recipe of the PyTorch long-tail repositories (LDAM-DRW's
`IMBALANCECIFAR10.gen_imbalanced_data`, copied by IB, FFDS, KPS and most CIFAR-LT code): seed NumPy's generator once,
then for each class in label order shuffle that class's indices and keep the first `n_c`. Given the images in the
same order as torchvision's CIFAR (see `ltjax.data.cifar`), it picks the same images.

A `SplitManifest` lists the image ids of a split per class, with the parameters that drew it, in canonical JSON with
its SHA-256: the split can be rebuilt from the file on another dataset copy, and a changed file is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ltjax.data.source import ImageSource
from ltjax.errors import UserError

SELECTION_ORDERS = ("shuffle", "first")
_MANIFEST_FORMAT = "ltjax.split_manifest"
_MANIFEST_VERSION = 1


class ManifestError(UserError, ValueError):
    """A split manifest is corrupt, was edited after it was written, or does not fit the dataset copy."""


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found [{labels.min()}, {labels.max()}]")
    return labels


def _class_label(c: int, class_names: Sequence[str] | None) -> str:
    return f"class {c} ({class_names[c]!r})" if class_names is not None else f"class {c}"


def select_longtail_indices(
    labels: np.ndarray,
    class_counts: Sequence[int] | np.ndarray,
    seed: int = 0,
    *,
    order: str = "shuffle",
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Indices of a long-tailed subset keeping `class_counts[c]` images of each class c.

    With `order="shuffle"` this is LDAM-DRW's recipe: `RandomState(seed)` is created once, then for c = 0, 1, ...
    the indices of class c (ascending) are shuffled in place and the first `class_counts[c]` kept. Every class is
    shuffled, so the stream, and the images picked, match `np.random.seed(seed)` followed by the repositories'
    loop; the global NumPy generator is left untouched. `order="first"` keeps each class's first images in file
    order (the Tiny-ImageNet-LT recipe).

    Args:
      labels: int `[N]` labels of the balanced source split, in the source's order.
      class_counts: int `[C]` images to keep per class (e.g. from `longtail_counts`); C is the number of classes.
      seed: seed of the shuffle (the repositories' `rand_number`, 0 by default); unused with `order="first"`.
      order: `"shuffle"` or `"first"`.
      class_names: optional `[C]` names, used in error messages.

    Returns:
      int64 `[sum(class_counts)]` indices into `labels`, class by class (class 0 first), within a class in the
      order picked: `source.subset(indices)` holds the images in the same order as the repositories' `self.data`.

    Raises:
      ValueError: a class has fewer images than asked for (the message names it and the numbers), a negative
        count, labels outside `[0, C)`, or an unknown order.
    """
    if order not in SELECTION_ORDERS:
        raise ValueError(f"unknown order {order!r}; valid orders: {', '.join(SELECTION_ORDERS)}")
    class_counts = np.asarray(class_counts)
    if class_counts.ndim != 1 or not np.issubdtype(class_counts.dtype, np.integer):
        raise ValueError(f"class_counts must be a 1-D integer array, got {class_counts!r}")
    if (class_counts < 0).any():
        raise ValueError(f"class_counts must be >= 0, got {class_counts.tolist()}")
    num_classes = len(class_counts)
    labels = _check_labels(labels, num_classes)
    rng = np.random.RandomState(seed)
    selected = []
    for c, count in enumerate(class_counts.tolist()):
        class_indices = np.flatnonzero(labels == c)
        if len(class_indices) < count:
            raise ValueError(
                f"{_class_label(c, class_names)} has {len(class_indices)} images but the long-tailed split asks "
                f"for {count}; check that the dataset copy is complete, or ask for fewer images "
                f"(a smaller n_max; a larger imbalance factor shrinks every class but the head)"
            )
        if order == "shuffle":
            rng.shuffle(class_indices)
        selected.append(class_indices[:count])
    return np.concatenate(selected).astype(np.int64) if selected else np.zeros(0, np.int64)


def held_out_validation_indices(
    labels: np.ndarray,
    used_indices: np.ndarray,
    per_class: int,
    seed: int = 0,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """A balanced validation split drawn from the images a long-tailed subset left out.

    This is the model-selection set for CIFAR-LT and Tiny-ImageNet-LT, which ship no validation split: choose
    epochs and hyper-parameters on it, and evaluate on the test split once, at the end, so the reported test
    accuracy is not tuned on the test images. Its images are disjoint from `used_indices` by construction.

    For each class (in label order) the unused indices, ascending, are shuffled by one `RandomState(seed)` and the
    first `per_class` kept.

    Args:
      labels: int `[N]` labels of the source split the long-tailed subset was drawn from.
      used_indices: int indices already taken (the long-tailed train subset).
      per_class: validation images per class, >= 1.
      seed: seed of the shuffle.
      num_classes: number of classes; by default `labels.max() + 1` (pass it when the last classes might be absent).
      class_names: optional names, used in error messages.

    Returns:
      int64 `[num_classes * per_class]` indices into `labels`, class by class.

    Raises:
      ValueError: a class has fewer than `per_class` unused images (the message names it and the numbers).
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = np.asarray(labels)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    labels = _check_labels(labels, num_classes)
    unused = np.ones(len(labels), bool)
    unused[np.asarray(used_indices, np.int64)] = False
    rng = np.random.RandomState(seed)
    selected = []
    for c in range(num_classes):
        candidates = np.flatnonzero(unused & (labels == c))
        if len(candidates) < per_class:
            raise ValueError(
                f"{_class_label(c, class_names)} has {len(candidates)} images left after the long-tailed split "
                f"but the validation split asks for {per_class}; ask for fewer validation images per class, or "
                f"leave more images out of the train split (a smaller n_max)"
            )
        rng.shuffle(candidates)
        selected.append(candidates[:per_class])
    return np.concatenate(selected).astype(np.int64) if selected else np.zeros(0, np.int64)


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclasses.dataclass(frozen=True)
class SplitManifest:
    """The image ids of one split, per class, with the parameters that drew it.

    Attributes:
      dataset: dataset name, e.g. `"cifar10"`.
      split: split name, e.g. `"train_lt"`, `"validation"`, `"test"`.
      num_classes: number of classes C.
      class_names: `[C]` class names.
      image_ids: `[C]` tuples of image ids (strings unique within the dataset copy), class c's images in order.
      parameters: JSON-serialisable parameters of the split (imbalance factor, profile, seed, ...), stored as they
        read back from JSON (tuples become lists).
    """

    dataset: str
    split: str
    num_classes: int
    class_names: tuple[str, ...]
    image_ids: tuple[tuple[str, ...], ...]
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(name) for name in self.class_names))
        object.__setattr__(self, "image_ids", tuple(tuple(ids) for ids in self.image_ids))
        try:
            parameters = json.loads(_canonical_json(dict(self.parameters)))
        except (TypeError, ValueError) as error:
            raise ManifestError(f"manifest parameters must be JSON-serialisable: {error}") from error
        object.__setattr__(self, "parameters", parameters)
        if len(self.class_names) != self.num_classes or len(self.image_ids) != self.num_classes:
            raise ManifestError(
                f"manifest {self.dataset}/{self.split}: num_classes={self.num_classes} but "
                f"{len(self.class_names)} class names and {len(self.image_ids)} per-class id lists"
            )
        all_ids = [image_id for ids in self.image_ids for image_id in ids]
        if not all(isinstance(image_id, str) for image_id in all_ids):
            raise ManifestError(f"manifest {self.dataset}/{self.split}: image ids must be strings")
        if len(set(all_ids)) != len(all_ids):
            raise ManifestError(f"manifest {self.dataset}/{self.split}: image ids repeat")

    @classmethod
    def from_indices(
        cls,
        *,
        dataset: str,
        split: str,
        labels: np.ndarray,
        image_ids: Sequence[str],
        indices: np.ndarray,
        num_classes: int,
        class_names: Sequence[str],
        parameters: Mapping[str, Any],
    ) -> SplitManifest:
        """The manifest of `indices` into a source whose images have ids `image_ids` and labels `labels`.

        Within a class, ids keep the order of `indices`, so applying the manifest returns class-major indices in
        that order: exactly `indices` when they are class-major already, as the selection functions return them.
        """
        labels = _check_labels(labels, num_classes)
        per_class: list[list[str]] = [[] for _ in range(num_classes)]
        for index in np.asarray(indices).tolist():
            per_class[labels[index]].append(str(image_ids[index]))
        return cls(dataset, split, num_classes, tuple(class_names), tuple(map(tuple, per_class)), parameters)

    def _content(self) -> dict[str, Any]:
        return {
            "format": _MANIFEST_FORMAT,
            "version": _MANIFEST_VERSION,
            "dataset": self.dataset,
            "split": self.split,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "image_ids": [list(ids) for ids in self.image_ids],
            "parameters": self.parameters,
        }

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the canonical JSON content (sorted keys, no whitespace, ASCII)."""
        return hashlib.sha256(_canonical_json(self._content()).encode("ascii")).hexdigest()

    @property
    def class_counts(self) -> np.ndarray:
        """int64 `[C]` images per class."""
        return np.array([len(ids) for ids in self.image_ids], np.int64)

    def to_json(self, path: str | pathlib.Path) -> pathlib.Path:
        """Writes `{"content": ..., "sha256": ...}` as canonical JSON; returns the path."""
        path = pathlib.Path(path)
        path.write_text(_canonical_json({"content": self._content(), "sha256": self.sha256}) + "\n")
        return path

    @classmethod
    def load(cls, path: str | pathlib.Path) -> SplitManifest:
        """Reads a manifest written by `to_json`, refusing it if its content no longer matches its SHA-256.

        Raises:
          ManifestError: unreadable JSON, a missing field, or a SHA-256 mismatch (the file was edited or damaged);
            the message names the file.
        """
        path = pathlib.Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ManifestError(f"cannot read split manifest {path}: {error}") from error
        try:
            document = json.loads(text)
            content, stored_sha256 = document["content"], document["sha256"]
            if content["format"] != _MANIFEST_FORMAT or content["version"] != _MANIFEST_VERSION:
                raise ManifestError(f"unsupported format {content['format']!r} version {content['version']!r}")
            manifest = cls(
                dataset=content["dataset"],
                split=content["split"],
                num_classes=content["num_classes"],
                class_names=content["class_names"],
                image_ids=content["image_ids"],
                parameters=content["parameters"],
            )
        except KeyError as error:
            raise ManifestError(f"split manifest {path} is corrupt: missing field {error}") from error
        # ValueError covers malformed JSON and a ManifestError from the checks above.
        except (ValueError, TypeError) as error:
            raise ManifestError(f"split manifest {path} is corrupt: {error}") from error
        if manifest.sha256 != stored_sha256:
            raise ManifestError(
                f"split manifest {path} fails its SHA-256 check (stored {stored_sha256}, content hashes to "
                f"{manifest.sha256}): it was edited or damaged after it was written; restore or regenerate it"
            )
        return manifest

    def indices(self, image_ids: Sequence[str]) -> np.ndarray:
        """Positions of the manifest's images in a dataset copy whose images have ids `image_ids`.

        Args:
          image_ids: `[N]` id of each image of the full source split, in the source's order.

        Returns:
          int64 indices, class by class, each class in the manifest's order.

        Raises:
          ManifestError: an id of the manifest is not in `image_ids` (this copy lacks those images).
        """
        position = {str(image_id): i for i, image_id in enumerate(image_ids)}
        wanted = [image_id for ids in self.image_ids for image_id in ids]
        missing = [image_id for image_id in wanted if image_id not in position]
        if missing:
            raise ManifestError(
                f"manifest {self.dataset}/{self.split} lists {len(missing)} image ids that this copy of the dataset "
                f"lacks (first: {missing[:5]}); use a complete copy, or the copy the manifest was made from"
            )
        return np.array([position[image_id] for image_id in wanted], np.int64)

    def apply(self, source: ImageSource, image_ids: Sequence[str]) -> ImageSource:
        """The split as a subset of `source`, after checking that the labels agree with the manifest's classes.

        Args:
          source: the full source split (an `ArraySource` or `FileSource`).
          image_ids: `[len(source)]` id of each image of `source`.

        Returns:
          `source.subset(self.indices(image_ids))`.

        Raises:
          ManifestError: a missing id, a different number of classes, or an image whose label in `source` is not
            the class the manifest lists it under.
        """
        if len(image_ids) != len(source):
            raise ManifestError(f"{len(image_ids)} image ids for a source of {len(source)} images")
        if source.num_classes != self.num_classes:
            raise ManifestError(
                f"manifest {self.dataset}/{self.split} has {self.num_classes} classes, the source {source.num_classes}"
            )
        indices = self.indices(image_ids)
        expected_labels = np.repeat(np.arange(self.num_classes), self.class_counts)
        disagree = np.flatnonzero(source.labels[indices] != expected_labels)
        if disagree.size:
            first = int(indices[disagree[0]])
            raise ManifestError(
                f"manifest {self.dataset}/{self.split}: {disagree.size} images have other labels in this source "
                f"(image {image_ids[first]!r} is class {expected_labels[disagree[0]]} in the manifest, "
                f"{source.labels[first]} here); the copy uses another label order"
            )
        return source.subset(indices)


@dataclasses.dataclass(frozen=True, eq=False)
class LongTailSplits:
    """A long-tailed benchmark: long-tailed train, optional balanced validation held out of train, balanced test.

    Attributes:
      train: the long-tailed train split.
      validation: the held-out validation split (model selection), or None when none was asked for.
      test: the balanced test split, to evaluate once, at the end.
      manifests: a `SplitManifest` per split, keyed `"train"`, `"validation"` (when present) and `"test"`.
    """

    train: ImageSource
    validation: ImageSource | None
    test: ImageSource
    manifests: Mapping[str, SplitManifest]
