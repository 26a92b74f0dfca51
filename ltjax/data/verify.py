"""Checks of a split's files and images that name every bad file: `DataError`, `file_sizes`, `checked_images`.

A split is checked as a whole and fails once, listing every bad file it found (up to a reporting limit), so that a
user fixes them in one go instead of one per run. Each line names the file and what was expected of it.
`ltjax.data.prepare_split` runs these checks before training; `ltjax.data.cache` builds its decoded cache from
`checked_images`, so the check and the decoding are one pass.
"""
from __future__ import annotations

import collections
import concurrent.futures
import os
import stat
from collections.abc import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ltjax.data.augment import ResizeCenterCrop
from ltjax.data.source import ImageSource
from ltjax.errors import UserError


class DataError(UserError, ValueError):
    """Bad files of a split (missing, undecodable, of the wrong shape): every one found, the first few named.

    Attributes:
      problems: one line per listed file, naming it and what was expected of it.
      count: bad files found in all; more than `len(problems)` when the list stopped at the reporting limit.
    """

    def __init__(self, summary: str, problems: Sequence[str], count: int, fix: str):
        self.problems, self.count = tuple(problems), count
        lines = [summary, *(f"  {problem}" for problem in self.problems)]
        if count > len(self.problems):
            lines.append(f"  ... and {count - len(self.problems)} more")
        lines.append(fix)
        super().__init__("\n".join(lines))


def format_shape(shape: Sequence[int]) -> str:
    """(64, 48, 3) -> "64x48x3" (height x width x channels)."""
    return "x".join(str(size) for size in shape)


def image_name(source: ImageSource, index: int) -> str:
    """How messages name an image: its file where the source has files, else its index."""
    paths = getattr(source, "paths", None)
    return str(paths[index]) if paths is not None else f"image {index}"


def file_sizes(paths: Sequence[os.PathLike | str], *, what: str, max_reported: int = 20) -> np.ndarray:
    """The byte size of every file (one `stat` each), after checking that every one is present.

    Args:
      paths: the split's image files.
      what: the split, as error messages name it (e.g. "split 'tiny_imagenet-test'").
      max_reported: missing files named in the error; all are counted.

    Returns:
      int64 [len(paths)] sizes in bytes.

    Raises:
      DataError: files are missing, are not regular files, or cannot be read; all counted, the first named.
    """
    sizes = np.zeros(len(paths), np.int64)
    problems: list[str] = []
    for index, path in enumerate(paths):
        try:
            status = os.stat(path)
        except OSError as error:
            problems.append(f"{path}: {error.strerror.lower() if error.strerror else error}")
            continue
        if not stat.S_ISREG(status.st_mode):
            problems.append(f"{path}: not a regular file")
            continue
        sizes[index] = status.st_size
    if problems:
        raise DataError(
            f"{what}: {len(problems)} of {len(paths)} image files are missing or unreadable:",
            problems[:max_reported],
            len(problems),
            "The dataset copy is incomplete: restore these files (unpack the download again), or point the loader "
            "at a complete copy.",
        )
    return sizes


def checked_images(
    source: ImageSource,
    *,
    what: str,
    image_shape: Sequence[int] | None = None,
    same_shape: bool = True,
    image_size: int | None = None,
    num_workers: int = 2,
    max_reported: int = 20,
    progress: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decodes every image of `source` once, in order; after the last, fails naming every bad one.

    Yields every image that decodes, whatever its shape, so a consumer can store them as they come; the verdict
    on shapes needs the whole split (the expected shape is the most common one), so it comes after the last image.

    Args:
      source: the split; file sources decode their files here.
      what: the split, as error messages name it.
      image_shape: every image must have this (height, width, channels) shape (after `image_size`).
      same_shape: without `image_shape`, every image must have the split's most common shape; False accepts
        any size (for splits of mixed sizes whose transform resizes).
      image_size: resize each image (shorter side) and centre-crop it to image_size x image_size before checking
        and yielding it.
      num_workers: decoding threads (Pillow releases the GIL while decoding).
      max_reported: bad images named in the error; all are counted.
      progress: show a progress bar.

    Yields:
      `(index, image)`: uint8 [H, W, C] for every image that decodes, in index order.

    Raises:
      DataError: after the last image, when images failed to decode or have an unexpected shape.
    """
    resize = ResizeCenterCrop(image_size, resize_size=image_size) if image_size is not None else None

    def decode(index: int) -> np.ndarray | str:
        try:
            image = source[index][0]
        except (OSError, ValueError) as error:
            # FileSource wraps Pillow's error in one naming the file; the line below names the file itself.
            return f"{image_name(source, index)}: cannot decode: {error.__cause__ or error}"
        return resize([image])[0] if resize is not None else image

    shapes: dict[int, tuple[int, ...]] = {}
    decode_problems: list[tuple[int, str]] = []
    executor = concurrent.futures.ThreadPoolExecutor(num_workers, thread_name_prefix="ltjax-check")
    try:
        results = executor.map(decode, range(len(source)))
        for index, image in enumerate(tqdm(results, total=len(source), desc=what, unit="img", disable=not progress)):
            if isinstance(image, str):
                decode_problems.append((index, image))
                continue
            shapes[index] = image.shape
            yield index, image
    finally:
        # Stopped early (an error, or a consumer that closed us): skip decoding the images still queued.
        executor.shutdown(cancel_futures=True)

    if image_shape is not None:
        expected, like = tuple(image_shape), "as asked for (image_shape)"
    elif same_shape and shapes:
        expected, like = collections.Counter(shapes.values()).most_common(1)[0][0], "like the rest of the split"
    else:
        expected = None
    shape_problems = [
        (index, f"{image_name(source, index)}: is {format_shape(shape)}, expected {format_shape(expected)} {like}")
        for index, shape in shapes.items()
        if expected is not None and shape != expected
    ]
    problems = sorted(decode_problems + shape_problems)
    if problems:
        fix = "Replace or remove these files (and their lines in the split's list), then run again."
        if shape_problems and image_shape is None:
            fix += (
                " If the split's images are meant to differ in size, pass image_size= to store every image at one "
                "size, or cache_pixels=False to check them without storing them."
            )
        raise DataError(
            f"{what}: {len(problems)} of {len(source)} images cannot be used (shapes are height x width x channels):",
            [line for _, line in problems[:max_reported]],
            len(problems),
            fix,
        )
