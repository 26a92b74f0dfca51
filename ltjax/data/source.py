"""Random-access image sources: the one interface every dataset loader returns and the input pipeline reads.

A source is a labelled split held either as decoded arrays in memory (CIFAR, digits, a decoded cache) or as image
files decoded on demand (Tiny ImageNet, ImageNet-LT, Places-LT, iNaturalist, ICText). Both expose the labels as one
NumPy array so samplers and class statistics never touch the pixels.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image


class ImageSource(Protocol):
    """A labelled split: `len(source)` images, `source[i]` is `(uint8 [H, W, 3] image, int label)`."""

    labels: np.ndarray  # int32 [N]
    num_classes: int
    class_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...


def files_in(folder: pathlib.Path, missing_message: str) -> set[str]:
    """The names in `folder` (one directory listing); a missing folder raises `FileNotFoundError(missing_message)`."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        raise FileNotFoundError(missing_message) from None


def check_labels(labels: np.ndarray, num_classes: int, class_names: Sequence[str], what: str) -> np.ndarray:
    """The labels as int32, after checking they are a 1-D integer array in [0, num_classes) with a name per class.

    Raises:
      ValueError: naming `what`, and the first label out of range with its index.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if len(class_names) != num_classes:
        raise ValueError(f"{what}: {len(class_names)} class names for num_classes={num_classes}")
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if outside.size:
        first = int(outside[0])
        raise ValueError(
            f"{what}: labels must lie in [0, {num_classes}), but {outside.size} do not (the first: label "
            f"{labels[first]} of example {first}); the labels or num_classes do not belong to this dataset"
        )
    return labels.astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
    """Decoded images in memory: `images` uint8 [N, H, W, C]."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self):
        labels = check_labels(self.labels, self.num_classes, self.class_names, "ArraySource")
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"ArraySource: images must be uint8 [N, H, W, C], got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(labels):
            raise ValueError(f"ArraySource: {len(self.images)} images but {len(labels)} labels")
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])

    def subset(self, indices: np.ndarray) -> ArraySource:
        return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices])


@dataclasses.dataclass(frozen=True, eq=False)
class FileSource:
    """Image files decoded on demand (JPEG/PNG through Pillow, converted to RGB)."""

    paths: tuple[pathlib.Path, ...]
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self):
        labels = check_labels(self.labels, self.num_classes, self.class_names, "FileSource")
        if len(self.paths) != len(labels):
            raise ValueError(f"FileSource: {len(self.paths)} paths but {len(labels)} labels")
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                # convert() copies even an RGB image; skipping it decodes Tiny ImageNet JPEGs about 1.5x faster.
                pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as error:
            raise OSError(f"cannot decode image {path}: {error}; check that the dataset copy is complete") from error
        return pixels, int(self.labels[index])

    def subset(self, indices: np.ndarray) -> FileSource:
        return dataclasses.replace(
            self, paths=tuple(self.paths[i] for i in indices), labels=self.labels[indices]
        )
