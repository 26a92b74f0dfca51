"""A decoded-image cache: decode a split's images once into a uint8 `.npy` file, then read it memory-mapped.

JPEG decoding is the input pipeline's bottleneck (on a 2-core host it reaches a few thousand images per second,
far below what one GPU consumes); reading decoded pixels from a memory map costs a copy. The cache holds the images
exactly as the source returns them, so augmentation still runs per epoch on the original pixels.

Building the cache is also the check of a file split: every image is decoded once (`verify.checked_images`), and the
build fails with one `DataError` naming every file that is missing, cannot be decoded or differs in shape from the
rest of the split. `ltjax.data.prepare_split` is the usual entry point; it picks the file name.

Files: `<name>.npy` (uint8 [N, H, W, C], NumPy's format, memory-mappable) and `<name>.npy.json` beside it, the
manifest of the source it was built from (`source_manifest`). Both are written under temporary names in the same
folder and renamed into place (atomic on POSIX), the array first and the manifest last: a reader never finds a
half-written file, a manifest only ever sits beside a complete array, and a first build interrupted at any point
leaves no manifest (so it is built again).
Two processes writing the same cache at once both succeed, each renaming complete files over the other's; the
readers of the replaced files keep their open memory maps. A given path must hold one source: `prepare_split`
names each file after the digest of its source's manifest, so different splits never share a path.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np

from ltjax.data.source import ArraySource, ImageSource
from ltjax.data.verify import checked_images, file_sizes
from ltjax.errors import UserError

FORMAT_VERSION = 2


class StaleCacheError(UserError, ValueError):
    """The cache on disk was built from a different source (or is incomplete)."""


def _manifest_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".json")


def _sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def source_manifest(source: ImageSource, *, what: str = "split", max_reported: int = 20) -> dict[str, Any]:
    """What identifies a source's contents without decoding it: length, labels, class names, files and their sizes.

    File paths enter relative to their common folder, so moving the dataset folder keeps the manifest, while adding,
    removing, renaming, relabelling or resizing (in bytes) a file changes it. An edit that keeps a file's byte size
    is not seen.

    Args:
      source: any image source; file paths and sizes are included when it has a `paths` attribute.
      what: the split, as the error for missing files names it.
      max_reported: missing files named in that error.

    Returns:
      A JSON-serialisable dict; two sources with equal manifests hold the same images (up to same-size edits).

    Raises:
      DataError: files of the source are missing (one `stat` per file; all counted, the first named).
    """
    manifest: dict[str, Any] = {
        "length": len(source),
        "num_classes": int(source.num_classes),
        "class_names_sha256": _sha256("\n".join(source.class_names)),
        "labels_sha256": _sha256(np.asarray(source.labels, dtype="<i4").tobytes()),
    }
    paths = getattr(source, "paths", None)
    if paths is not None:
        root = os.path.commonpath([str(p) for p in paths]) if len(paths) > 1 else str(pathlib.Path(paths[0]).parent)
        manifest["paths_sha256"] = _sha256("\n".join(os.path.relpath(str(p), root) for p in paths))
        sizes = file_sizes(paths, what=what, max_reported=max_reported)
        manifest["file_sizes_sha256"] = _sha256(sizes.astype("<i8").tobytes())
    return manifest


def manifest_digest(manifest: dict[str, Any], image_size: int | None) -> str:
    """Hex SHA-256 naming the cache of a source with this manifest, stored at `image_size`, in this cache format."""
    content = manifest | {"format_version": FORMAT_VERSION, "image_size": image_size}
    return _sha256(json.dumps(content, sort_keys=True))


def _no_room(folder: pathlib.Path, num_bytes: int, why: str) -> OSError:
    return OSError(errno.ENOSPC, f"the image cache needs {num_bytes / 2**20:,.0f} MiB in {folder} and {why}: free "
                                 "some space, or choose another cache folder (--config.data_cache_dir, "
                                 "$LTJAX_CACHE_DIR, or cache_dir=)")


class _ArrayFile:
    """A `.npy` file of uint8 images written image by image with `pwrite`, its room reserved up front.

    Written through a memory map, a file whose disk fills before it is complete kills the process with SIGBUS; here
    the room is reserved when the file is created (`posix_fallocate`, where the file system has it), and a write the
    disk refuses anyway is an `OSError` (ENOSPC).
    """

    def __init__(self, path: str, shape: tuple[int, ...]):
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)  # a sparse file
        self.offset, self.item_bytes = header.offset, int(np.prod(shape[1:]))
        del header
        self.shape = shape
        self.descriptor = os.open(path, os.O_WRONLY)
        try:
            os.posix_fallocate(self.descriptor, 0, self.offset + shape[0] * self.item_bytes)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
        except AttributeError:  # no posix_fallocate on this platform: the writes find a full disk
            pass

    def write(self, index: int, image: np.ndarray) -> None:
        os.pwrite(self.descriptor, np.ascontiguousarray(image, np.uint8).tobytes(),
                  self.offset + index * self.item_bytes)

    def close(self) -> None:
        """Flushes the file to the disk and closes it."""
        try:
            os.fsync(self.descriptor)
        finally:
            self.abandon()

    def abandon(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


def _publish(temporary: str | os.PathLike, path: pathlib.Path) -> None:
    """Renames a complete temporary file to `path` (atomic), readable by all like a file written normally."""
    # mkstemp creates files readable by their owner only; a cache folder may be shared.
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def write_json_atomically(path: pathlib.Path, content: dict[str, Any]) -> None:
    """Writes `content` to a temporary file beside `path`, then renames it to `path` (atomic)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".partial-")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(content, file, indent=1)
        _publish(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def write_cache(
    source: ImageSource,
    path: str | os.PathLike,
    *,
    image_size: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    what: str | None = None,
    num_workers: int = 2,
    max_reported: int = 20,
    progress: bool = False,
) -> ArraySource:
    """Decodes and checks every image of `source` into `path` (a `.npy` file) and its manifest.

    Args:
      source: the split to cache, usually a `FileSource`.
      path: the array file to write (e.g. `cache/tiny_imagenet_train.npy`); its folder is created.
      image_size: None stores images as decoded, which needs them all the same size; an int stores each resized
        (shorter side) and centre-cropped to image_size x image_size, for sources of mixed sizes. That changes what
        later random-resized crops see, so prefer None where the sizes agree.
      image_shape: every stored image must have this (height, width, channels); None: the split's most common.
      what: the split, as error messages name it; default: the cache file.
      num_workers: decoding threads.
      max_reported: bad files named in an error (all are counted).
      progress: show a progress bar while decoding.

    Returns:
      An `ArraySource` over the memory-mapped cache, with the source's labels and class names.

    Raises:
      ValueError: an empty source.
      DataError: files missing, undecodable or of another shape (nothing is written then).
      OSError: too little space for the cache in its folder (ENOSPC, saying how much it needs): found before
        writing, or when the disk fills up during the build; nothing is left behind then.
    """
    path = pathlib.Path(path)
    what = what or f"split cached at {path}"
    if len(source) == 0:
        raise ValueError(f"{what}: cannot cache an empty split")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Missing files fail here, after one stat each, before any decoding.
    manifest = source_manifest(source, what=what, max_reported=max_reported) | {
        "format_version": FORMAT_VERSION, "image_size": image_size
    }
    array, partial, num_bytes = None, None, 0
    try:
        for index, image in checked_images(
            source, what=what, image_shape=image_shape, image_size=image_size, num_workers=num_workers,
            max_reported=max_reported, progress=progress,
        ):
            if array is None:
                shape = (len(source), *(image_shape or image.shape))
                num_bytes = int(np.prod(shape))
                free = shutil.disk_usage(path.parent).free
                if free < num_bytes:
                    raise _no_room(path.parent, num_bytes, f"has {free / 2**20:,.0f} MiB free")
                descriptor, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".partial-")
                os.close(descriptor)
                array = _ArrayFile(partial, shape)
            # An image of another shape is left out here; checked_images fails on it after the last image.
            if image.shape == array.shape[1:]:
                array.write(index, image)
        # Some image decoded: checked_images raises when none does.
        manifest["image_shape"] = list(array.shape[1:])
        array.close()
        _publish(partial, path)
        partial = None
        write_json_atomically(_manifest_path(path), manifest)
    except BaseException as error:
        if array is not None:
            array.abandon()
        if partial is not None:
            pathlib.Path(partial).unlink(missing_ok=True)
        elif array is not None and not _manifest_path(path).exists():  # published, but its manifest failed
            path.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) and \
                error.strerror == os.strerror(error.errno):  # the disk's own refusal, not our free-space check
            raise _no_room(path.parent, num_bytes, "the disk filled up while it was written") from error
        raise
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
      DataError: files of `source` are missing (see `source_manifest`).
    """
    path = pathlib.Path(path)
    manifest_path = _manifest_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no image cache at {path}; build it with ltjax.data.prepare_split (or write_cache)")
    if not manifest_path.exists():
        raise StaleCacheError(
            f"image cache {path} has no manifest {manifest_path.name}: it was interrupted while being written; "
            "delete it and build it again (ltjax.data.prepare_split rebuilds it by itself)"
        )
    stored = json.loads(manifest_path.read_text())
    expected = source_manifest(source) | {"format_version": FORMAT_VERSION, "image_size": image_size}
    mismatched = sorted(key for key, value in expected.items() if stored.get(key) != value)
    if mismatched:
        raise StaleCacheError(
            f"image cache {path} does not match the source (differs in: {', '.join(mismatched)}); it was built "
            "from another dataset copy or split: delete it, or let ltjax.data.prepare_split name the cache files"
        )
    images = np.load(path, mmap_mode="r")
    if images.shape != (len(source), *stored["image_shape"]):
        raise StaleCacheError(f"image cache {path} holds shape {images.shape}, its manifest says otherwise; rebuild it")
    return ArraySource(images, source.labels, source.num_classes, tuple(source.class_names))
