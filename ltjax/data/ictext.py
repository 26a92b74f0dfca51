"""ICText-LT (Nah et al. 2023, the FFDS paper): character crops from integrated-circuit images, 36 classes.

The authors' folder format (FFDS-Loss repository, `datasets/ictext.py` and README):

    ictext2021/
        char_2_idx.json       # character -> class index (optional here, see below)
        train/imgs/<file>     # one character crop per image
        train/train.txt       # "<file> <char>" a line
        val/imgs/<file>
        val/val.txt

ICText labels 62 characters (A-Z, a-z, 0-9); ICText-LT drops the lower-case letters, so list lines with a lower-case
character are skipped and 36 classes remain. Class indices follow the dataset's `char_2_idx.json` when the folder
has one, which must give the 36 characters the indices 0..35 (the reference code keeps the first 36 indices);
without it class index = position in `"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"`. The exponential profile and the
many/medium/few groups go by class index, so results match the paper's only with the authors' mapping.

Splits, as the reference code builds them from the two lists (reference numbers from the paper):

- `"train"`, `imbalance_factor=None`: every listed image, the natural distribution (IF about 18, 68,307 images).
- `"train"`, `imbalance_factor=IF`: class c keeps `n_c = int(3200 * IF ** (-c / 35))` images (IF 100: 25,711).
- `"test"` (the authors' `val` folder): every class cut to the size of the smallest (175 each, 6,300 images).

Which images a cut keeps is the reference code's draw: `numpy.random.seed(seed)`, then for each class in index
order a shuffle of its images (in list order) and the first n_c, so the default `seed=0` gives the published subset
when the lists and the class mapping are the authors'.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import string
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ltjax.data.source import FileSource, files_in

CLASS_CHARACTERS = string.ascii_uppercase + string.digits
NUM_CLASSES = len(CLASS_CHARACTERS)
# The head class of the exponential train profile in the reference code (`img_max`).
HEAD_CLASS_IMAGES = 3200
# Split name -> the authors' folder name.
_SPLIT_FOLDERS = {"train": "train", "test": "val"}

Split = Literal["train", "test"]


def _class_characters(root: pathlib.Path) -> str:
    """The 36 characters in class-index order, from `char_2_idx.json` when present."""
    mapping_path = root / "char_2_idx.json"
    if not mapping_path.is_file():
        return CLASS_CHARACTERS
    try:
        mapping = json.loads(mapping_path.read_text(encoding="utf-8"))
        index_of = {character: int(mapping[character]) for character in CLASS_CHARACTERS}
    except (KeyError, TypeError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise ValueError(
            f"{mapping_path} must be a JSON object giving every character of {CLASS_CHARACTERS} an integer class "
            f"index ({type(error).__name__}: {error}); restore the file from the ICText-LT download, or delete it "
            f"to use the order {CLASS_CHARACTERS}"
        ) from error
    if sorted(index_of.values()) != list(range(NUM_CLASSES)):
        raise ValueError(
            f"{mapping_path} gives the 36 ICText-LT characters (upper case and digits) the indices "
            f"{sorted(index_of.values())}, not 0..35; restore the file from the ICText-LT download, or delete it to "
            f"use the order {CLASS_CHARACTERS}"
        )
    return "".join(sorted(CLASS_CHARACTERS, key=index_of.__getitem__))


def _read_list(
    list_path: pathlib.Path, image_dir: pathlib.Path, class_characters: str
) -> tuple[list[pathlib.Path], np.ndarray]:
    """Image paths and labels of every upper-case or digit line of a `<file> <char>` list, after checking the files."""
    class_of_character = {character: index for index, character in enumerate(class_characters)}
    present = files_in(
        image_dir,
        f"ICText-LT image folder {image_dir} is missing; the split's images must sit beside its list "
        f"{list_path}",
    )
    paths: list[pathlib.Path] = []
    labels: list[int] = []
    for line_number, line in enumerate(list_path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        # The README writes the format as "file_name, char_class"; the released lists separate by a space.
        fields = re.split(r"[\s,]+", line.strip())
        if len(fields) != 2:
            raise ValueError(f"{list_path}, line {line_number}: expected '<file> <char>', got {line!r}")
        file_name, character = fields
        if character in string.ascii_lowercase:
            continue  # ICText-LT leaves the lower-case classes out
        if character not in class_of_character:
            raise ValueError(
                f"{list_path}, line {line_number}: unknown character {character!r} in {line!r}; ICText labels are "
                f"single characters A-Z, a-z or 0-9"
            )
        # Most names are plain files found in the listing; a name with folders is checked on its own.
        if file_name not in present and not (image_dir / file_name).is_file():
            raise FileNotFoundError(
                f"{list_path}, line {line_number} names {image_dir / file_name}, which is missing; the copy of "
                f"ICText-LT is incomplete"
            )
        paths.append(image_dir / file_name)
        labels.append(class_of_character[character])
    return paths, np.asarray(labels, np.int32)


def _reference_draw(labels: np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """Indices the reference code keeps: per class in index order, a seeded shuffle of its images, the first n_c."""
    # The legacy generator, seeded like `np.random.seed(seed)`, so the draw equals the reference code's.
    generator = np.random.RandomState(seed)
    kept = []
    for class_index, count in enumerate(counts):
        members = np.flatnonzero(labels == class_index)
        generator.shuffle(members)
        kept.append(members[:count])
    return np.concatenate(kept)


def load_ictext_lt(
    root: str | os.PathLike,
    split: Split = "train",
    *,
    imbalance_factor: float | None = None,
    seed: int = 0,
    list_file: str | os.PathLike | None = None,
) -> FileSource:
    """One split of ICText-LT as image files decoded on demand.

    Args:
      root: the dataset folder (`ictext2021` in the authors' layout).
      split: `"train"` or `"test"` (read from the authors' `val` folder).
      imbalance_factor: for `"train"`, None keeps the natural distribution (IF about 18); a number resamples it to
        the exponential profile with a head of 3200 images. Must be None for `"test"`.
      seed: seed of the reference code's draw for a resampled train split and for the balanced test split.
      list_file: the `<file> <char>` list, if not `<root>/<folder>/<folder>.txt` (an earlier release named it
        `<folder>_with_rot.txt`).

    Returns:
      A `FileSource` with 36 classes named by their characters; the images are `<root>/<folder>/imgs/<file>`.

    Raises:
      FileNotFoundError: the folder, the list, the image folder or a listed image is missing.
      ValueError: a bad argument, a malformed line or unknown character (with its line number), a damaged
        `char_2_idx.json`, or a class with fewer images than the requested split needs.
    """
    root = pathlib.Path(root)
    if split not in _SPLIT_FOLDERS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if split == "test" and imbalance_factor is not None:
        raise ValueError("imbalance_factor applies to the train split only; the test split is balanced")
    if not root.is_dir():
        raise FileNotFoundError(
            f"ICText-LT folder {root} does not exist; it is distributed by the ICText authors "
            f"(https://github.com/chunchet-ng/ICText-AGCL, after signing their NDA)"
        )
    folder = _SPLIT_FOLDERS[split]
    list_path = pathlib.Path(list_file) if list_file is not None else root / folder / f"{folder}.txt"
    if not list_path.is_file():
        raise FileNotFoundError(
            f"ICText-LT list {list_path} is missing; pass list_file= if your copy names it differently "
            f"(an earlier release used {folder}_with_rot.txt)"
        )
    class_characters = _class_characters(root)
    paths, labels = _read_list(list_path, root / folder / "imgs", class_characters)

    available = np.bincount(labels, minlength=NUM_CLASSES)
    if split == "test":
        if available.min() == 0:
            raise ValueError(
                f"class {class_characters[available.argmin()]!r} has no images in {list_path}, so no balanced "
                f"test split can be drawn"
            )
        counts = np.full(NUM_CLASSES, available.min())
    elif imbalance_factor is not None:
        from ltjax.data.longtail import longtail_counts

        counts = longtail_counts(HEAD_CLASS_IMAGES, NUM_CLASSES, imbalance_factor, profile="exp")
        short = np.flatnonzero(available < counts)
        if short.size:
            class_index = int(short[0])
            raise ValueError(
                f"class {class_index} ({class_characters[class_index]!r}) has {available[class_index]} images in "
                f"{list_path} but imbalance_factor={imbalance_factor:g} needs {counts[class_index]} "
                f"({short.size} classes are short); is the list the full ICText-LT training list, and is the class "
                f"mapping the authors' char_2_idx.json?"
            )
    else:
        counts = None

    if counts is not None:
        kept = _reference_draw(labels, counts, seed)
        paths = [paths[index] for index in kept]
        labels = labels[kept]
    return FileSource(
        paths=tuple(paths), labels=labels, num_classes=NUM_CLASSES, class_names=tuple(class_characters)
    )
