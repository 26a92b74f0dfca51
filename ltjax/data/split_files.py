"""ImageNet-LT, Places-LT and iNaturalist 2018 from their official split files plus a folder of images.

A split file lists one image a line, `<path relative to the image root> <integer label>`, e.g.
`train/n01440764/n01440764_762.JPEG 0`. ImageNet-LT and Places-LT (Liu et al. 2019, "Large-Scale Long-Tailed
Recognition in an Open World") come from the OLTR release; the iNaturalist 2018 lists are those of the
classifier-balancing release (Kang et al. 2020), the usual ones in LT papers. The images are the original ImageNet
2012, Places-365 (256x256) and iNaturalist 2018 downloads, unpacked under one root so that the relative paths resolve.

The SHA-256 of every official file ltjax had a copy of is recorded below and checked on load, because results are
only comparable on the exact published splits. Two official files were not at hand, `ImageNet_LT_train.txt` and
`iNaturalist18_train.txt`: their digest is `None` and loading them warns that the copy is unverified. iNaturalist
2018 has no test list; LT papers report on its `val` split.

Class names are read from the paths, every folder between the top folder and the file: the wnid for ImageNet-LT
(`n01440764`), the scene for Places-LT (`airfield`), supercategory and category id for iNaturalist (`Plantae/7291`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import warnings
from typing import Literal

import numpy as np

from ltjax.data.source import FileSource

Dataset = Literal["imagenet_lt", "places_lt", "inaturalist2018"]
Split = Literal["train", "val", "test"]

NUM_CLASSES: dict[str, int] = {"imagenet_lt": 1000, "places_lt": 365, "inaturalist2018": 8142}


@dataclasses.dataclass(frozen=True)
class OfficialSplitFile:
    """One official split file: its released name, SHA-256 (None: not recorded) and number of lines."""

    file_name: str
    sha256: str | None
    num_lines: int


OFFICIAL_SPLIT_FILES: dict[tuple[str, str], OfficialSplitFile] = {
    ("imagenet_lt", "train"): OfficialSplitFile("ImageNet_LT_train.txt", None, 115_846),
    ("imagenet_lt", "val"): OfficialSplitFile(
        "ImageNet_LT_val.txt", "9af7ba688acf9532ff5845a8fb14a1e97fdc4c51ac48bc72c08ea9c3f7ff142e", 20_000
    ),
    ("imagenet_lt", "test"): OfficialSplitFile(
        "ImageNet_LT_test.txt", "d1590191cf8a71fada7b1aaedaa2d139a2aea93ff2f1b755319d0bd8dbaa55d5", 50_000
    ),
    ("places_lt", "train"): OfficialSplitFile(
        "Places_LT_train.txt", "726c4871dcbf07ce2f857703bfe32e9a83ffbf52d704239f6d95c4f4f4c247f7", 62_500
    ),
    ("places_lt", "val"): OfficialSplitFile(
        "Places_LT_val.txt", "719e3cf3766c09134ea28f56f1036c78def511ac1ed2c2532a6beef78f2439ba", 7_300
    ),
    ("places_lt", "test"): OfficialSplitFile(
        "Places_LT_test.txt", "44eee8441c8098c59195465abede425721bc35525d75209f9433b161a6eb37bc", 36_500
    ),
    ("inaturalist2018", "train"): OfficialSplitFile("iNaturalist18_train.txt", None, 437_513),
    ("inaturalist2018", "val"): OfficialSplitFile(
        "iNaturalist18_val.txt", "efaeff65f80641b60864470e6f255aa69453406ef5717eec8c6681748f3a61f3", 24_426
    ),
}


def read_split_file(path: str | os.PathLike) -> tuple[tuple[str, ...], np.ndarray]:
    """Parses a `<relative path> <label>` list.

    Args:
      path: the split file (UTF-8; a byte-order mark, CRLF line ends and blank lines closing the file are read past).

    Returns:
      `(relative_paths, labels)`: the paths as written, and int32 `[N]` labels, in file order.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: a line that is not a relative path and a non-negative integer separated by whitespace (the
        message gives the line number and its content).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    relative_paths: list[str] = []
    labels: list[int] = []
    for line_number, line in enumerate(lines, start=1):
        fields = line.split()
        problem = None
        if len(fields) != 2:
            problem = f"{len(fields)} fields instead of 2"
        elif not (fields[1].isascii() and fields[1].isdigit()):
            problem = f"label {fields[1]!r} is not a non-negative integer"
        elif fields[0].startswith(("/", "\\")) or "/../" in f"/{fields[0]}/":
            problem = f"path {fields[0]!r} is not relative to the image root"
        if problem:
            raise ValueError(
                f"{path}, line {line_number}: {problem}; expected '<relative path> <label>', got {line!r}. "
                f"Fix or remove the line (an official split file never has one)"
            )
        relative_paths.append(fields[0])
        labels.append(int(fields[1]))
    return tuple(relative_paths), np.asarray(labels, np.int32)


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _official_split_file(dataset: str, split: str) -> OfficialSplitFile:
    if dataset not in NUM_CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(NUM_CLASSES)}")
    official = OFFICIAL_SPLIT_FILES.get((dataset, split))
    if official is None:
        valid = [s for d, s in OFFICIAL_SPLIT_FILES if d == dataset]
        hint = " (LT papers report iNaturalist 2018 results on 'val')" if dataset == "inaturalist2018" else ""
        raise ValueError(f"{dataset} has no split {split!r}; valid splits: {', '.join(valid)}{hint}")
    return official


def verify_split_file(dataset: Dataset, split: Split, split_file: str | os.PathLike) -> None:
    """Checks that `split_file` is byte for byte the official list of `dataset`'s `split`.

    Args:
      dataset: `"imagenet_lt"`, `"places_lt"` or `"inaturalist2018"`.
      split: `"train"`, `"val"` or `"test"` (iNaturalist 2018: `"train"` or `"val"`).
      split_file: the copy to check.

    Raises:
      ValueError: an unknown dataset or split, or a digest that differs from the recorded one (the message gives
        both digests).

    Warns:
      UserWarning: no digest is recorded for this official file, so the copy cannot be verified.
    """
    official = _official_split_file(dataset, split)
    split_file = pathlib.Path(split_file)
    if not split_file.is_file():
        raise FileNotFoundError(f"split file {split_file} does not exist; pass your copy of {official.file_name}")
    if official.sha256 is None:
        num_lines = len(read_split_file(split_file)[0])
        warnings.warn(
            f"{split_file} is not verified: ltjax records no SHA-256 for the official {official.file_name} "
            f"({dataset} {split}). The official file has {official.num_lines:,} lines, this one {num_lines:,}; "
            f"compare it with the OLTR / classifier-balancing release yourself",
            stacklevel=2,
        )
        return
    actual = _sha256(split_file)
    if actual != official.sha256:
        raise ValueError(
            f"{split_file} is not the official {official.file_name} ({dataset} {split}): SHA-256 {actual}, "
            f"expected {official.sha256}. The copy was edited, truncated, re-ordered or comes from another release, "
            f"so results on it are not comparable with published ones. Use the official file, or pass verify=False "
            f"to load this one anyway"
        )


def _class_names(relative_paths: tuple[str, ...], labels: np.ndarray, num_classes: int) -> tuple[str, ...]:
    """The folders between the top folder and the file name of each class's first image; the label if none."""
    names = [str(label) for label in range(num_classes)]
    present, first_index = np.unique(labels, return_index=True)
    for label, index in zip(present.tolist(), first_index.tolist()):
        folders = relative_paths[index].split("/")[1:-1]
        if folders:
            names[label] = "/".join(folders)
    return tuple(names)


def load_split(
    dataset: Dataset,
    split: Split,
    split_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    verify: bool = True,
) -> FileSource:
    """One split of ImageNet-LT, Places-LT or iNaturalist 2018 as image files decoded on demand.

    Args:
      dataset: `"imagenet_lt"` (1000 classes), `"places_lt"` (365) or `"inaturalist2018"` (8142).
      split: `"train"`, `"val"` or `"test"` (iNaturalist 2018: `"train"` or `"val"`).
      split_file: the official list for this split, e.g. `ImageNet_LT_test.txt`.
      image_root: the folder the relative paths start from (holding `train/`, `val/` or `train_val2018/`). Images
        are not opened here; a missing one fails when it is read.
      verify: check the file's SHA-256 against the official one (see `verify_split_file`); False loads an edited
        or custom split.

    Returns:
      A `FileSource` with paths `image_root / relative_path`, in file order, and class names read from the paths.

    Raises:
      FileNotFoundError: no split file or no image root.
      ValueError: an unknown dataset or split, a malformed line, a label outside the dataset's classes, or (with
        `verify`) a file that is not the official one.
    """
    official = _official_split_file(dataset, split)
    if verify:
        verify_split_file(dataset, split, split_file)
    image_root = pathlib.Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(
            f"image root {image_root} does not exist; pass the folder the paths in {official.file_name} start from"
        )
    relative_paths, labels = read_split_file(split_file)
    num_classes = NUM_CLASSES[dataset]
    out_of_range = np.flatnonzero(labels >= num_classes)
    if out_of_range.size:
        line_number = int(out_of_range[0]) + 1
        raise ValueError(
            f"{split_file}, line {line_number}: label {labels[out_of_range[0]]} is outside {dataset}'s "
            f"{num_classes} classes [0, {num_classes}); is this the split file of another dataset?"
        )
    return FileSource(
        paths=tuple(image_root / relative_path for relative_path in relative_paths),
        labels=labels,
        num_classes=num_classes,
        class_names=_class_names(relative_paths, labels, num_classes),
    )
