"""`prepare_split`: check a split before training reads it, and give file splits their decoded uint8 cache.

Call it once per split a run will read (train, validation, test) before the first step, so that a bad file fails
the run at its start rather than at the test evaluation after the last epoch. Every error names the split and,
for files, every bad file (up to `max_reported`, all counted), with what was expected of it.

What is checked:

- every split: it is not empty, its labels are integers in [0, num_classes), and, when `image_shape` is given,
  every image has that shape (pass the train split's shape for the others, so that a test split of another
  resolution fails at once);
- array splits (digits, CIFAR, a cache): a uint8 [N, H, W, C] array of one image per label. Nothing to decode;
  the source is returned as it is;
- file splits: every file present (one `stat` each, all missing files in one error), then every image decoded once
  while the decoded uint8 cache (`ltjax.data.cache`) is built: a file that does not decode, or an image whose
  shape differs from the split's most common shape (or from `image_shape`), fails the build, with every bad file
  named. The cache is returned, memory-mapped, and the pipeline reads it instead of decoding JPEGs every epoch.

The cache. `<cache_dir>/<name>-<digest>.npy` (and `.npy.json`, its manifest), where the digest is the SHA-256 of
the split's manifest (`cache.source_manifest`: length, labels, class names, file paths relative to their common
folder, file sizes) with the cache format and `image_size`. A run on a split already cached finds the file,
checks the manifest and memory-maps it: no decoding, one `stat` per file. A changed split (an image added, removed,
renamed, relabelled or rewritten to another size) has another digest and gets its own cache, built once; runs on
the same split share one cache wherever they use the same `cache_dir`. Two processes building the same cache at
once both succeed: each writes temporary files and renames them into place (see `ltjax.data.cache`). Nothing is
ever deleted: remove old `<name>-*` files (and any `*.partial-*` left by a killed build) to reclaim space.

`cache_pixels=False` checks a file split the same way (each image decoded once) without storing the pixels, for
splits too large to cache or of mixed sizes that the transform resizes; it records the check in
`<cache_dir>/<name>-<digest>.checked.json`, so a later run over the unchanged split does not decode again, and
returns the file source.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from ltjax.data import cache
from ltjax.data.source import ImageSource, check_labels
from ltjax.data.verify import checked_images, format_shape

CACHE_DIR_VARIABLE = "LTJAX_CACHE_DIR"


def default_cache_dir() -> pathlib.Path:
    """Where prepared splits are cached by default: `$LTJAX_CACHE_DIR`, else `$XDG_CACHE_HOME/ltjax`, else
    `~/.cache/ltjax`."""
    if os.environ.get(CACHE_DIR_VARIABLE):
        return pathlib.Path(os.environ[CACHE_DIR_VARIABLE]).expanduser()
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "ltjax"


def _check_array(images: np.ndarray, source: ImageSource, image_shape: Sequence[int] | None, what: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(source):
        raise ValueError(
            f"{what}: images must be uint8 [N, H, W, C] with N = {len(source)} labels, got {images.dtype} "
            f"{images.shape}"
        )
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        raise ValueError(
            f"{what} holds {format_shape(images.shape[1:])} images (height x width x channels), expected "
            f"{format_shape(image_shape)} (image_shape): it is another resolution than the split it should match; "
            "check the dataset and its loader's arguments"
        )


def _make_folder(cache_dir: pathlib.Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"cannot create the cache folder {cache_dir}: {error.strerror or error}; pass cache_dir= or set "
            f"${CACHE_DIR_VARIABLE} to a writable folder"
        ) from error


def prepare_split(
    source: ImageSource,
    *,
    cache_dir: str | os.PathLike | None = None,
    name: str = "split",
    image_shape: Sequence[int] | None = None,
    image_size: int | None = None,
    cache_pixels: bool = True,
    num_workers: int = 2,
    max_reported: int = 20,
    progress: bool = False,
) -> ImageSource:
    """Checks a split and returns it ready for the pipeline: array splits as they are, file splits decoded and cached.

    Args:
      source: the split, as a loader returns it (`ArraySource` or `FileSource`).
      cache_dir: folder of the decoded caches; None: `default_cache_dir()` (`$LTJAX_CACHE_DIR`, else
        `~/.cache/ltjax`). Array splits never write to it.
      name: names the split in errors and the cache files (e.g. `"tiny_imagenet-test"`); any characters but
        letters, digits, `.`, `_` and `-` become `_` in file names.
      image_shape: (height, width, channels) every image must have (after `image_size`); None: the split's most
        common shape for cached file splits, and any shape for array splits.
      image_size: cache every image resized (shorter side) and centre-cropped to image_size x image_size, for
        file splits of mixed sizes; None stores them as decoded (they must then agree in shape).
      cache_pixels: file splits only: False checks every image without caching it and returns the file source.
      num_workers: decoding threads.
      max_reported: bad files named in an error; all are counted.
      progress: show a progress bar while decoding.

    Returns:
      An `ArraySource` (an array split as given, or a file split's memory-mapped cache), or with
      `cache_pixels=False` the file source itself.

    Raises:
      ValueError: an empty split, labels outside [0, num_classes), an array of the wrong type or of another shape
        than `image_shape`, or `image_size` with `cache_pixels=False`.
      DataError: (a `ValueError`) files missing, undecodable or of another shape, every one counted, the first
        `max_reported` named.
      OSError: the cache folder cannot be created, or has too little free space.
    """
    what = f"split {name!r}"
    if len(source) == 0:
        raise ValueError(f"{what} is empty; check the arguments of the loader that made it")
    check_labels(source.labels, source.num_classes, source.class_names, what)
    images = getattr(source, "images", None)
    if isinstance(images, np.ndarray):
        _check_array(images, source, image_shape, what)
        return source
    if image_size is not None and not cache_pixels:
        raise ValueError("image_size resizes the cached images; with cache_pixels=False nothing is cached")
    cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    _make_folder(cache_dir)
    # Missing files fail here, after one stat each.
    manifest = cache.source_manifest(source, what=what, max_reported=max_reported)
    stem = f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-{cache.manifest_digest(manifest, image_size)[:16]}"
    options = dict(what=what, image_shape=image_shape, num_workers=num_workers, max_reported=max_reported,
                   progress=progress)
    if not cache_pixels:
        # The record holds what was checked: the same split checked against another image_shape is checked again.
        checked = manifest | {"image_shape": list(image_shape) if image_shape is not None else None}
        record = cache_dir / f"{stem}.checked.json"
        if not (record.is_file() and json.loads(record.read_text()) == checked):
            for _ in checked_images(source, same_shape=False, **options):
                pass
            cache.write_json_atomically(record, checked)
        return source
    path = cache_dir / f"{stem}.npy"
    try:
        prepared = cache.load_cache(source, path, image_size=image_size)
    except (FileNotFoundError, cache.StaleCacheError):
        # Not built yet, or a build killed before its manifest was written: build it, replacing any leftovers.
        prepared = cache.write_cache(source, path, image_size=image_size, **options)
    _check_array(prepared.images, prepared, image_shape, what)
    return prepared
