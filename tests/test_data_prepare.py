"""Checking splits before training and the decoded cache: `prepare_split`, `ltjax.data.cache`, `ltjax.data.verify`.

File splits are small folders of generated PNGs, or copies of real Tiny ImageNet JPEGs from ../shared/data
(corrupted in tmp_path, never in place); array splits are the embedded digits.
"""
import os
import pathlib
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from ltjax.data import cache
from ltjax.data.digits import load_digits_lt
from ltjax.data.prepare import default_cache_dir, prepare_split
from ltjax.data.source import ArraySource, FileSource
from ltjax.data.tiny_imagenet import load_tiny_imagenet
from ltjax.data.verify import DataError


def write_images(folder: pathlib.Path, shapes, seed: int = 0, suffix: str = ".png") -> list[pathlib.Path]:
    """Random RGB images of the given (height, width) shapes, `<i><suffix>` in `folder`."""
    generator = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, shape in enumerate(shapes):
        path = folder / f"{i}{suffix}"
        Image.fromarray(generator.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def file_split(paths, num_classes: int = 2) -> FileSource:
    labels = np.arange(len(paths)) % num_classes
    return FileSource(tuple(paths), labels, num_classes, tuple(f"class{c}" for c in range(num_classes)))


def cache_files(cache_dir: pathlib.Path) -> list[str]:
    return sorted(path.name for path in cache_dir.iterdir())


def blank_keeping_sizes(paths) -> None:
    """Overwrites every file with zeros of its own length: undecodable, yet the split's manifest is unchanged."""
    for path in paths:
        path.write_bytes(bytes(path.stat().st_size))


def test_file_split_is_cached_once_and_reused(tmp_path):
    paths = write_images(tmp_path / "images", [(12, 10)] * 6)
    files = file_split(paths)
    prepared = prepare_split(files, cache_dir=tmp_path / "cache", name="toy/train")
    assert isinstance(prepared, ArraySource) and isinstance(prepared.images, np.memmap)
    assert prepared.images.shape == (6, 12, 10, 3)
    for i in range(len(files)):
        np.testing.assert_array_equal(prepared[i][0], files[i][0])
    np.testing.assert_array_equal(prepared.labels, files.labels)
    built = cache_files(tmp_path / "cache")
    assert len(built) == 2 and built[0].startswith("toy_train-") and built[0].endswith(".npy")
    # A second run must not decode: blanked files of unchanged sizes would fail to decode if it did.
    blank_keeping_sizes(paths)
    again = prepare_split(files, cache_dir=tmp_path / "cache", name="toy/train")
    np.testing.assert_array_equal(again.images, prepared.images)
    assert cache_files(tmp_path / "cache") == built


def test_a_changed_split_gets_its_own_cache(tmp_path):
    paths = write_images(tmp_path / "images", [(8, 8)] * 6)
    cache_dir = tmp_path / "cache"
    prepare_split(file_split(paths), cache_dir=cache_dir)
    (first,) = [cache_dir / name for name in cache_files(cache_dir) if name.endswith(".npy")]
    relabelled = FileSource(tuple(paths), np.array([1, 1, 0, 0, 1, 0]), 2, ("class0", "class1"))
    with pytest.raises(cache.StaleCacheError, match="differs in: labels_sha256"):
        cache.load_cache(relabelled, first)
    prepare_split(relabelled, cache_dir=cache_dir)
    fewer = prepare_split(file_split(paths[:5]), cache_dir=cache_dir)
    assert len(fewer) == 5
    # The image file 0 rewritten at another size: the split is no longer the cached one.
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(paths[0])
    rewritten = prepare_split(file_split(paths), cache_dir=cache_dir)
    assert (rewritten.images[0] == 0).all()
    assert len([name for name in cache_files(cache_dir) if name.endswith(".npy")]) == 4


def test_moving_the_dataset_keeps_the_cache(tmp_path):
    paths = write_images(tmp_path / "data" / "images", [(8, 8)] * 4)
    prepare_split(file_split(paths), cache_dir=tmp_path / "cache")
    (tmp_path / "data").rename(tmp_path / "moved")
    moved = [tmp_path / "moved" / "images" / path.name for path in paths]
    blank_keeping_sizes(moved)  # proves that the cache is read, not rebuilt
    prepare_split(file_split(moved), cache_dir=tmp_path / "cache")
    assert len(cache_files(tmp_path / "cache")) == 2


def test_missing_files_are_all_named_before_decoding(tmp_path):
    paths = write_images(tmp_path / "images", [(8, 8)] * 6)
    for index in (1, 4):
        paths[index].unlink()
    with pytest.raises(DataError) as error:
        prepare_split(file_split(paths), cache_dir=tmp_path / "cache", name="toy-test")
    message = str(error.value)
    assert "split 'toy-test': 2 of 6 image files are missing" in message
    assert f"{paths[1]}: no such file or directory" in message and str(paths[4]) in message
    assert "restore these files" in message and error.value.count == 2
    assert cache_files(tmp_path / "cache") == []


def test_undecodable_and_odd_sized_real_jpegs_fail_together(tiny_imagenet_root, tmp_path):
    """Real Tiny ImageNet JPEGs, copied: one truncated, one re-encoded at 64x48, one not an image at all."""
    originals = sorted((tiny_imagenet_root / "val" / "images").glob("val_1*.JPEG"))[:8]
    paths = [pathlib.Path(shutil.copy(path, tmp_path / path.name)) for path in originals]
    paths[2].write_bytes(paths[2].read_bytes()[:300])
    with Image.open(paths[5]) as image:
        image.crop((0, 0, 48, 64)).save(paths[5])  # 48 wide, 64 high
    paths[6].write_text("not a JPEG")
    with pytest.raises(DataError) as error:
        prepare_split(file_split(paths), cache_dir=tmp_path / "cache", name="tiny-test")
    assert error.value.count == 3
    problems = error.value.problems
    assert problems[0].startswith(f"{paths[2]}: cannot decode: ")
    assert problems[1] == f"{paths[5]}: is 64x48x3, expected 64x64x3 like the rest of the split"
    assert problems[2].startswith(f"{paths[6]}: cannot decode: cannot identify image file")
    assert "split 'tiny-test': 3 of 8 images cannot be used" in str(error.value)
    assert "pass image_size=" in str(error.value)
    # Nothing is left behind: no cache, no temporary file.
    assert cache_files(tmp_path / "cache") == []


def test_the_report_stops_at_max_reported_but_counts_all(tmp_path):
    paths = write_images(tmp_path / "images", [(8, 8)] * 3 + [(9, 8)] * 5)
    with pytest.raises(DataError) as error:
        prepare_split(file_split(paths), cache_dir=tmp_path / "cache", max_reported=2)
    # The most common shape, 9x8x3, is the expected one: the three 8x8 images are the bad ones.
    assert error.value.count == 3 and len(error.value.problems) == 2
    assert error.value.problems[0] == f"{paths[0]}: is 8x8x3, expected 9x8x3 like the rest of the split"
    assert "... and 1 more" in str(error.value)


def test_image_shape_is_checked_for_file_and_array_splits(tmp_path):
    paths = write_images(tmp_path / "images", [(8, 8)] * 4)
    with pytest.raises(DataError, match=r"is 8x8x3, expected 16x16x3 as asked for \(image_shape\)"):
        prepare_split(file_split(paths), cache_dir=tmp_path / "cache", image_shape=(16, 16, 3))
    prepare_split(file_split(paths), cache_dir=tmp_path / "cache", image_shape=(8, 8, 3))
    # A cache built earlier is checked against image_shape too.
    with pytest.raises(ValueError, match=r"split 'split' holds 8x8x3 images .* expected 16x16x3"):
        prepare_split(file_split(paths), cache_dir=tmp_path / "cache", image_shape=(16, 16, 3))
    digits = load_digits_lt()
    assert prepare_split(digits.test, name="digits-test", image_shape=(8, 8, 3)) is digits.test
    with pytest.raises(ValueError, match=r"split 'digits-test' holds 8x8x3 images .* expected 32x32x3"):
        prepare_split(digits.test, name="digits-test", image_shape=(32, 32, 3))


def test_array_splits_get_the_cheap_checks_and_write_nothing(tmp_path):
    digits = load_digits_lt()
    assert prepare_split(digits.train, cache_dir=tmp_path / "cache") is digits.train
    assert not (tmp_path / "cache").exists()
    broken = digits.validation.subset(np.arange(len(digits.validation)))
    broken.labels[7] = 10
    with pytest.raises(ValueError, match=r"split 'digits-validation': labels must lie in \[0, 10\), but 1 do not "
                                         r"\(the first: label 10 of example 7\)"):
        prepare_split(broken, name="digits-validation")
    with pytest.raises(ValueError, match="split 'empty' is empty"):
        prepare_split(digits.test.subset(np.arange(0)), name="empty")


def test_check_without_caching_pixels(tmp_path):
    paths = write_images(tmp_path / "images", [(8, 8), (12, 10), (9, 9)])
    files = file_split(paths)
    assert prepare_split(files, cache_dir=tmp_path / "cache", cache_pixels=False, name="mixed") is files
    (record,) = cache_files(tmp_path / "cache")
    assert record.startswith("mixed-") and record.endswith(".checked.json")
    blank_keeping_sizes(paths)  # recorded as checked: not decoded again
    prepare_split(files, cache_dir=tmp_path / "cache", cache_pixels=False, name="mixed")
    # Another image_shape is another check: decoded again, the blanked files now fail.
    with pytest.raises(DataError, match="cannot decode"):
        prepare_split(files, cache_dir=tmp_path / "cache", cache_pixels=False, name="mixed", image_shape=(8, 8, 3))
    more = write_images(tmp_path / "more", [(8, 8)])
    more[0].write_text("damaged")
    with pytest.raises(DataError, match="cannot decode"):
        prepare_split(file_split(more), cache_dir=tmp_path / "cache", cache_pixels=False)
    with pytest.raises(ValueError, match="with cache_pixels=False nothing is cached"):
        prepare_split(files, cache_dir=tmp_path / "cache", cache_pixels=False, image_size=8)


def test_mixed_sizes_are_cached_at_image_size(tmp_path):
    paths = write_images(tmp_path / "images", [(12, 16), (20, 10), (12, 12)])
    with pytest.raises(DataError, match="pass image_size="):
        prepare_split(file_split(paths), cache_dir=tmp_path / "cache")
    prepared = prepare_split(file_split(paths), cache_dir=tmp_path / "cache", image_size=8)
    assert prepared.images.shape == (3, 8, 8, 3)
    with pytest.raises(cache.StaleCacheError, match="image_size"):
        cache.load_cache(file_split(paths), tmp_path / "cache" / cache_files(tmp_path / "cache")[0])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(tmp_path / "from_variable"))
    assert default_cache_dir() == tmp_path / "from_variable"
    paths = write_images(tmp_path / "images", [(8, 8)] * 2)
    prepare_split(file_split(paths), name="toy")
    assert len(cache_files(tmp_path / "from_variable")) == 2
    monkeypatch.delenv("LTJAX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ltjax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == pathlib.Path.home() / ".cache" / "ltjax"


def test_unwritable_cache_folder_says_how_to_choose_another(tmp_path):
    paths = write_images(tmp_path / "images", [(8, 8)] * 2)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError, match=r"cannot create the cache folder .*a_file/cache.*LTJAX_CACHE_DIR"):
        prepare_split(file_split(paths), cache_dir=tmp_path / "a_file" / "cache")


def test_readers_never_see_a_cache_being_rebuilt(tmp_path):
    paths = write_images(tmp_path / "images", [(16, 16)] * 64)
    files = file_split(paths)
    path = tmp_path / "cache" / "train.npy"
    expected = np.asarray(cache.write_cache(files, path).images)
    stop, failures = threading.Event(), []

    def rebuild():
        while not stop.is_set():
            cache.write_cache(files, path)

    writer = threading.Thread(target=rebuild)
    writer.start()
    try:
        for _ in range(200):
            try:
                np.testing.assert_array_equal(cache.load_cache(files, path).images, expected)
            except (cache.StaleCacheError, FileNotFoundError, ValueError) as error:
                failures.append(error)
    finally:
        stop.set()
        writer.join()
    assert not failures, failures[:3]
    assert cache_files(path.parent) == ["train.npy", "train.npy.json"]


def test_concurrent_builders_of_one_split_both_succeed(tmp_path):
    paths = write_images(tmp_path / "images", [(16, 16)] * 200)
    files = file_split(paths)
    results, errors = [], []

    def build():
        try:
            results.append(np.asarray(prepare_split(files, cache_dir=tmp_path / "cache").images))
        except Exception as error:  # reported below; a thread would swallow it
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    np.testing.assert_array_equal(results[0], results[1])
    assert len(cache_files(tmp_path / "cache")) == 2  # one array, one manifest, no temporary file left


def test_an_interrupted_build_is_rebuilt(tmp_path):
    paths = write_images(tmp_path / "images", [(8, 8)] * 4)
    prepared = prepare_split(file_split(paths), cache_dir=tmp_path / "cache")
    array_name = cache_files(tmp_path / "cache")[0]
    # A build killed between its two renames leaves the array without its manifest.
    (tmp_path / "cache" / f"{array_name}.json").unlink()
    with pytest.raises(cache.StaleCacheError, match="interrupted"):
        cache.load_cache(file_split(paths), tmp_path / "cache" / array_name)
    again = prepare_split(file_split(paths), cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.images, prepared.images)
    with pytest.raises(FileNotFoundError, match="prepare_split"):
        cache.load_cache(file_split(paths), tmp_path / "missing.npy")


def test_real_tiny_imagenet_test_split_is_cached_and_checked(tiny_imagenet_root, tmp_path):
    test = load_tiny_imagenet(tiny_imagenet_root, "test")
    prepared = prepare_split(test, cache_dir=tmp_path, name="tiny_imagenet-test", image_shape=(64, 64, 3))
    assert prepared.images.shape == (10_000, 64, 64, 3)
    for index in (0, 4_321, 9_999):
        np.testing.assert_array_equal(prepared.images[index], test[index][0])
    np.testing.assert_array_equal(prepared.labels, test.labels)
    assert os.stat(tmp_path / cache_files(tmp_path)[0]).st_size > 10_000 * 64 * 64 * 3
