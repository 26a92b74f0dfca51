"""Tiny ImageNet-LT from the official `tiny-imagenet-200/` folder (Le & Yang 2015; the LT split of FFDS and IB-Loss).

Folder layout, as unpacked from http://cs231n.stanford.edu/tiny-imagenet-200.zip:

    tiny-imagenet-200/
        wnids.txt                               # the 200 WordNet ids, one a line
        train/<wnid>/images/<wnid>_<k>.JPEG     # k = 0 .. 499, 64x64 RGB
        val/images/val_<k>.JPEG                 # k = 0 .. 9999
        val/val_annotations.txt                 # "<file>\t<wnid>\t<x0>\t<y0>\t<x1>\t<y1>"

Classes are the wnids in sorted order (class 0 is the smallest wnid), which is the order torchvision's
`ImageFolder` gives the reference code. Splits:

- `"train"`: the long-tailed subset. Class c keeps `<wnid>_0 .. <wnid>_{n_c - 1}` with the exponential profile
  `n_c = int(n_max * IF ** (-c / 199))`, `n_max = 500 - validation_per_class`. Taking the first n_c images by
  number (instead of the reference code's seeded shuffle) makes the subset a fixed list of files, so a copy of the
  dataset can ship only the images it needs: IF 100 keeps 21,549 images.
- `"val"`: a balanced held-out set for model selection, the last `validation_per_class` training images of every
  class (`<wnid>_{500 - validation_per_class} .. <wnid>_499`). The train subset then shrinks its head to
  `500 - validation_per_class` so the two never share an image. It needs a copy holding those images (the full
  training set).
- `"test"`: the official validation folder, 10,000 images, 50 per class; LT papers report their test accuracy on it.
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ltjax.data.source import FileSource, files_in

NUM_CLASSES = 200
IMAGES_PER_CLASS = 500
DOWNLOAD_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

Split = Literal["train", "val", "test"]


def _read_wnids(root: pathlib.Path) -> tuple[str, ...]:
    wnids_path = root / "wnids.txt"
    if not wnids_path.is_file():
        raise FileNotFoundError(
            f"Tiny ImageNet class list {wnids_path} is missing; `root` must be the unpacked tiny-imagenet-200 folder "
            f"(from {DOWNLOAD_URL})"
        )
    wnids = wnids_path.read_text(encoding="utf-8-sig").split()
    if len(wnids) != NUM_CLASSES or len(set(wnids)) != NUM_CLASSES:
        raise ValueError(
            f"{wnids_path} lists {len(wnids)} wnids ({len(set(wnids))} distinct), Tiny ImageNet has {NUM_CLASSES}; "
            f"the file is damaged, restore it from {DOWNLOAD_URL}"
        )
    return tuple(sorted(wnids))


def _train_image_paths(
    root: pathlib.Path, wnids: Sequence[str], first: np.ndarray, stop: np.ndarray, why: str
) -> tuple[list[pathlib.Path], list[int]]:
    """Paths of `<wnid>_<k>.JPEG`, k in [first[c], stop[c]) for every class c, after checking they exist.

    One directory listing per class keeps the check to 200 system calls instead of one per image.
    """
    paths: list[pathlib.Path] = []
    labels: list[int] = []
    # The first class short of images, for the message, and how many are short.
    first_lacking: tuple[int, str, list[str], int, pathlib.Path] | None = None
    num_lacking = 0
    for class_index, wnid in enumerate(wnids):
        image_dir = root / "train" / wnid / "images"
        present = files_in(
            image_dir,
            f"Tiny ImageNet training folder {image_dir} of class {class_index} ({wnid}) is missing; "
            f"the copy at {root} is incomplete, unpack {DOWNLOAD_URL} again",
        )
        names = [f"{wnid}_{k}.JPEG" for k in range(first[class_index], stop[class_index])]
        missing = [name for name in names if name not in present]
        if missing:
            num_lacking += 1
            first_lacking = first_lacking or (class_index, wnid, missing, len(present), image_dir)
        paths.extend(image_dir / name for name in names)
        labels.extend([class_index] * len(names))
    if first_lacking:
        class_index, wnid, missing, num_present, image_dir = first_lacking
        raise ValueError(
            f"Tiny ImageNet class {class_index} ({wnid}) lacks {len(missing)} of the "
            f"{stop[class_index] - first[class_index]} training images that {why} needs (first missing: "
            f"{image_dir / missing[0]}; the folder holds {num_present} images); {num_lacking} of {NUM_CLASSES} "
            f"classes lack images. This copy holds only part of the training set (for example only the IF-100 "
            f"subset): use the imbalance factor and validation_per_class it was made for, or point `root` at the full "
            f"dataset from {DOWNLOAD_URL}"
        )
    return paths, labels


def _test_image_paths(root: pathlib.Path, wnids: Sequence[str]) -> tuple[list[pathlib.Path], list[int]]:
    annotations_path = root / "val" / "val_annotations.txt"
    image_dir = root / "val" / "images"
    if not annotations_path.is_file():
        raise FileNotFoundError(
            f"Tiny ImageNet validation labels {annotations_path} are missing (the test split needs them); "
            f"unpack {DOWNLOAD_URL} again"
        )
    present = files_in(
        image_dir,
        f"Tiny ImageNet validation images {image_dir} are missing (the test split needs them); "
        f"unpack {DOWNLOAD_URL} again",
    )
    class_of_wnid = {wnid: index for index, wnid in enumerate(wnids)}
    paths: list[pathlib.Path] = []
    labels: list[int] = []
    for line_number, line in enumerate(annotations_path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_of_wnid:
            raise ValueError(
                f"{annotations_path}, line {line_number}: expected '<file>\\t<wnid>\\t<bbox>' with a wnid from "
                f"wnids.txt, got {line!r}; restore the file from {DOWNLOAD_URL}"
            )
        if fields[0] not in present:
            raise FileNotFoundError(
                f"{annotations_path}, line {line_number} names {image_dir / fields[0]}, which is missing; "
                f"the copy at {root} is incomplete, unpack {DOWNLOAD_URL} again"
            )
        paths.append(image_dir / fields[0])
        labels.append(class_of_wnid[fields[1]])
    return paths, labels


def load_tiny_imagenet(
    root: str | os.PathLike,
    split: Split = "train",
    *,
    imbalance_factor: float = 100.0,
    validation_per_class: int = 0,
) -> FileSource:
    """One split of Tiny ImageNet-LT as image files decoded on demand (64x64x3 uint8).

    Args:
      root: the `tiny-imagenet-200` folder.
      split: `"train"` (the long-tailed subset), `"val"` (held-out training images, `validation_per_class` per
        class) or `"test"` (the official validation folder, 50 per class); see the module docstring.
      imbalance_factor: IF = n_0 / n_199 of the train subset (1 keeps every training image); ignored by `"val"`
        and `"test"`.
      validation_per_class: training images per class held out for `"val"`; the train subset then uses at most
        `500 - validation_per_class` per class. 0 (the default) gives the published split and no `"val"`.

    Returns:
      A `FileSource` with 200 classes named by their wnids, in sorted wnid order.

    Raises:
      FileNotFoundError: the folder, `wnids.txt`, a class folder, `val/val_annotations.txt` or a validation image
        is missing.
      ValueError: a bad argument, a damaged list file, or a copy that lacks training images the requested split
        needs (the message names the class).
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Tiny ImageNet folder {root} does not exist; download and unpack {DOWNLOAD_URL} and pass the "
            f"tiny-imagenet-200 folder"
        )
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    is_integer = isinstance(validation_per_class, int) and not isinstance(validation_per_class, bool)
    if not is_integer or not 0 <= validation_per_class < IMAGES_PER_CLASS:
        raise ValueError(
            f"validation_per_class must be an integer in [0, {IMAGES_PER_CLASS}), got {validation_per_class!r}"
        )
    wnids = _read_wnids(root)

    if split == "test":
        paths, labels = _test_image_paths(root, wnids)
    elif split == "val":
        if validation_per_class == 0:
            raise ValueError(
                "split='val' holds out training images, so it needs validation_per_class > 0 (e.g. 20); pass the "
                "same validation_per_class when loading 'train' so the two splits stay disjoint"
            )
        first = np.full(NUM_CLASSES, IMAGES_PER_CLASS - validation_per_class)
        stop = np.full(NUM_CLASSES, IMAGES_PER_CLASS)
        why = f"validation_per_class={validation_per_class}"
        paths, labels = _train_image_paths(root, wnids, first, stop, why)
    else:
        from ltjax.data.longtail import longtail_counts

        counts = longtail_counts(IMAGES_PER_CLASS - validation_per_class, NUM_CLASSES, imbalance_factor, profile="exp")
        why = f"imbalance_factor={imbalance_factor:g}"
        if validation_per_class:
            why += f", validation_per_class={validation_per_class}"
        paths, labels = _train_image_paths(root, wnids, np.zeros(NUM_CLASSES, np.int64), counts, why)
    return FileSource(
        paths=tuple(paths), labels=np.asarray(labels, np.int32), num_classes=NUM_CLASSES, class_names=wnids
    )
