"""A decoded-image cache: decode a source's images once into a uint8 `.npy` file, then read it memory-mapped.

JPEG decoding is the input pipeline's bottleneck (on a 2-core host it reaches a few thousand images per second,
far below what one GPU consumes); reading decoded pixels from a memory map costs a copy. The cache holds the images
exactly as the source returns them, so augmentation still runs per epoch on the original pixels.

Files: `<name>.npy` (uint8 [N, H, W, C], NumPy's format, memory-mappable) and `<name>.npy.json` beside it, the
manifest of the source it was built from: length, label digest, class names and, for file sources, a digest of the
file paths relative to their common folder (so moving the dataset folder keeps the cache valid, while adding,
removing, renaming or relabelling images invalidates it). The manifest is written last, after the array is
complete, so a cache interrupted while writing is detected as incomplete instead of being read half-filled.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import pathlib
from typing import Any

import numpy as np

from ltjax.data.augment import ResizeCenterCrop
from ltjax.data.source import ArraySource, ImageSource

_FORMAT_VERSION = 1


class StaleCacheError(ValueError):
    """The cache on disk was built from a different source (or is incomplete)."""


def _manifest_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".json")


def source_manifest(source: ImageSource) -> dict[str, Any]:
    """What identifies a source's contents without decoding it: length, labels, class names and file paths.

    Args:
      source: any image source; file paths are included when it has a `paths` attribute.

    Returns:
      A JSON-serialisable dict; two sources with equal manifests hold the same images (up to edited files).
    """
    manifest: dict[str, Any] = {
        "length": len(source),
        "num_classes": int(source.num_classes),
        "class_names_sha256": hashlib.sha256("\n".join(source.class_names).encode()).hexdigest(),
        "labels_sha256": hashlib.sha256(np.asarray(source.labels, dtype="<i4").tobytes()).hexdigest(),
    }
    paths = getattr(source, "paths", None)
    if paths is not None:
        root = os.path.commonpath([str(p) for p in paths]) if len(paths) > 1 else str(pathlib.Path(paths[0]).parent)
        relative = "\n".join(os.path.relpath(str(p), root) for p in paths)
        manifest["paths_sha256"] = hashlib.sha256(relative.encode()).hexdigest()
    return manifest


def write_cache(
    source: ImageSource, path: str | os.PathLike, *, image_size: int | None = None, num_workers: int = 2
) -> ArraySource:
    """Decodes every image of `source` into `path` (a `.npy` file) and its manifest; returns the cached source.

    Args:
      source: the split to cache, usually a `FileSource`.
      path: the array file to write (e.g. `cache/tiny_imagenet_train.npy`); its folder is created.
      image_size: None stores images as decoded, which needs them all the same size; an int stores each resized
        (shorter side) and centre-cropped to image_size x image_size, for sources of mixed sizes. That changes what
        later random-resized crops see, so prefer None where the sizes agree.
      num_workers: decoding threads.

    Returns:
      An `ArraySource` over the memory-mapped cache, with the source's labels and class names.
    """
    path = pathlib.Path(path)
    if len(source) == 0:
        raise ValueError("cannot cache an empty source")
    path.parent.mkdir(parents=True, exist_ok=True)
    resize = ResizeCenterCrop(image_size, resize_size=image_size) if image_size is not None else None

    def decode(index: int) -> np.ndarray:
        image = source[index][0]
        return resize([image])[0] if resize is not None else image

    first = decode(0)
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    _manifest_path(path).unlink(missing_ok=True)
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(source), *first.shape))
    executor = concurrent.futures.ThreadPoolExecutor(num_workers)
    try:
        for index, image in enumerate(executor.map(decode, range(len(source)))):
            if image.shape != first.shape:
                raise ValueError(
                    f"image {index} has shape {image.shape} but image 0 has {first.shape}; "
                    "pass image_size= to store every image at one size"
                )
            array[index] = image
        array.flush()
        del array
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        # On an error, skip decoding the images still queued.
        executor.shutdown(cancel_futures=True)
    manifest = source_manifest(source) | {
        "format_version": _FORMAT_VERSION, "image_size": image_size, "image_shape": list(first.shape)
    }
    _manifest_path(path).write_text(json.dumps(manifest, indent=1))
    return load_cache(source, path, image_size=image_size)


def load_cache(source: ImageSource, path: str | os.PathLike, *, image_size: int | None = None) -> ArraySource:
    """Opens the cache at `path` memory-mapped, after checking it was built from `source`.

    Args:
      source: the split the cache must hold (its labels and class names are used as they are).
      path: the `.npy` file written by `write_cache`.
      image_size: the `image_size` it was written with.

    Returns:
      An `ArraySource` whose images are the read-only memory map.

    Raises:
      FileNotFoundError: no cache at `path`.
      StaleCacheError: the cache is incomplete or was built from a different source.
    """
    path = pathlib.Path(path)
    manifest_path = _manifest_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no image cache at {path}; build it with ltjax.data.cache.write_cache")
    if not manifest_path.exists():
        raise StaleCacheError(
            f"image cache {path} has no manifest {manifest_path.name}: it was interrupted while being written; "
            "delete it and rebuild it with write_cache"
        )
    stored = json.loads(manifest_path.read_text())
    expected = source_manifest(source) | {"format_version": _FORMAT_VERSION, "image_size": image_size}
    mismatched = sorted(key for key, value in expected.items() if stored.get(key) != value)
    if mismatched:
        raise StaleCacheError(
            f"image cache {path} does not match the source (differs in: {', '.join(mismatched)}); it was built "
            "from another dataset copy or split: delete it (or pass rebuild=True to cached_source)"
        )
    images = np.load(path, mmap_mode="r")
    if images.shape != (len(source), *stored["image_shape"]):
        raise StaleCacheError(f"image cache {path} holds shape {images.shape}, its manifest says otherwise; rebuild it")
    return ArraySource(images, source.labels, source.num_classes, tuple(source.class_names))


def cached_source(
    source: ImageSource,
    path: str | os.PathLike,
    *,
    image_size: int | None = None,
    rebuild: bool = False,
    num_workers: int = 2,
) -> ArraySource:
    """The cache at `path` if it matches `source`; built first when absent (or when `rebuild`).

    A stale cache raises `StaleCacheError` rather than being overwritten silently: a mismatch usually means a
    wrong path or a changed dataset, which the user should see.

    Args:
      source: the split to cache.
      path: the `.npy` cache file.
      image_size: see `write_cache`.
      rebuild: overwrite whatever is at `path`.
      num_workers: decoding threads when building.

    Returns:
      An `ArraySource` over the memory-mapped cache.
    """
    path = pathlib.Path(path)
    if rebuild or not path.exists():
        return write_cache(source, path, image_size=image_size, num_workers=num_workers)
    return load_cache(source, path, image_size=image_size)
