"""Split-file loaders (ImageNet-LT, Places-LT, iNaturalist 2018): the official lists in ../shared/data/splits, their
SHA-256 check, and decoding through a small generated image root (the real image folders are not available)."""
import functools
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from ltjax.data.split_files import OFFICIAL_SPLIT_FILES, load_split, read_split_file, verify_split_file

OFFICIAL_ON_DISK = [key for key, official in OFFICIAL_SPLIT_FILES.items() if official.sha256 is not None]


@pytest.fixture(scope="module")
def official(splits_dir, tmp_path_factory):
    """Loads an official split once per module; the image root is an empty folder (paths are only built)."""
    image_root = tmp_path_factory.mktemp("image_root")

    @functools.cache
    def load(dataset, split):
        split_file = splits_dir / OFFICIAL_SPLIT_FILES[dataset, split].file_name
        if not split_file.is_file():
            pytest.skip(f"official split file {split_file} is absent")
        return load_split(dataset, split, split_file, image_root)

    load.image_root = image_root
    return load


@pytest.mark.parametrize(
    "dataset, split, num_lines, num_classes, per_class",
    [
        ("imagenet_lt", "test", 50_000, 1000, 50),
        ("imagenet_lt", "val", 20_000, 1000, 20),
        ("places_lt", "val", 7_300, 365, 20),
        ("places_lt", "test", 36_500, 365, 100),
        ("inaturalist2018", "val", 24_426, 8142, 3),
    ],
)
def test_balanced_official_splits(official, dataset, split, num_lines, num_classes, per_class):
    source = official(dataset, split)
    assert len(source) == num_lines == OFFICIAL_SPLIT_FILES[dataset, split].num_lines
    assert source.num_classes == num_classes
    np.testing.assert_array_equal(np.bincount(source.labels, minlength=num_classes), np.full(num_classes, per_class))


def test_places_lt_train_is_long_tailed(official):
    source = official("places_lt", "train")
    assert len(source) == 62_500
    counts = np.bincount(source.labels, minlength=365)
    assert (counts.max(), counts.min()) == (4980, 5)
    # The many / medium / few groups of the LT literature: > 100, 20 .. 100, < 20 training images.
    assert (np.sum(counts > 100), np.sum((counts >= 20) & (counts <= 100)), np.sum(counts < 20)) == (131, 163, 71)


def test_paths_and_class_names_come_from_the_lists(official):
    imagenet = official("imagenet_lt", "test")
    assert imagenet.paths[0] == official.image_root / "val/n01440764/ILSVRC2012_val_00029930.JPEG"
    assert imagenet.paths[-1] == official.image_root / "val/n15075141/ILSVRC2012_val_00007556.JPEG"
    assert (imagenet.class_names[0], imagenet.class_names[999]) == ("n01440764", "n15075141")
    # Places-LT val is drawn from the Places-365 training images; test from its val images.
    assert official("places_lt", "val").paths[0] == official.image_root / "train/airfield/00002049.jpg"
    assert official("places_lt", "test").class_names[364] == "zen_garden"
    inaturalist = official("inaturalist2018", "val")
    assert inaturalist.labels[0] == 7291 and inaturalist.class_names[7291] == "Plantae/7291"


@pytest.mark.parametrize("dataset, split", OFFICIAL_ON_DISK)
def test_official_files_match_their_digests(splits_dir, dataset, split):
    split_file = splits_dir / OFFICIAL_SPLIT_FILES[dataset, split].file_name
    if not split_file.is_file():
        pytest.skip(f"official split file {split_file} is absent")
    verify_split_file(dataset, split, split_file)


def test_modified_copy_fails_verification(splits_dir, tmp_path):
    lines = (splits_dir / "Places_LT_val.txt").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]  # same images, other order: still not the official file
    copy = tmp_path / "Places_LT_val.txt"
    copy.write_text("\n".join(lines) + "\n")
    expected = OFFICIAL_SPLIT_FILES["places_lt", "val"].sha256
    with pytest.raises(ValueError, match=f"not the official Places_LT_val.txt .*expected {expected}.*verify=False"):
        load_split("places_lt", "val", copy, tmp_path)
    assert len(load_split("places_lt", "val", copy, tmp_path, verify=False)) == 7_300


def _write_split(path: pathlib.Path, lines: list[str]) -> pathlib.Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_unrecorded_official_file_warns(tmp_path):
    lines = ["train/n01440764/a.JPEG 0", "train/n01443537/b.JPEG 1"]
    split_file = _write_split(tmp_path / "ImageNet_LT_train.txt", lines)
    with pytest.warns(UserWarning, match=r"not verified.* 115,846 lines, this one 2"):
        source = load_split("imagenet_lt", "train", split_file, tmp_path)
    assert source.class_names[:3] == ("n01440764", "n01443537", "2")  # a class without images keeps its number


def test_generated_image_root_decodes_end_to_end(tmp_path):
    image_root = tmp_path / "images"
    lines = ["train/n01440764/a.JPEG 0", "train/n01443537/b.JPEG 1", "train/n01443537/c.JPEG 1"]
    for index, line in enumerate(lines):
        path = image_root / line.split()[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24 + index, 16), color=(40 * index, 100, 200)).save(path, quality=95)
    split_file = _write_split(tmp_path / "custom.txt", lines)
    source = load_split("imagenet_lt", "train", split_file, image_root, verify=False)
    assert source.labels.tolist() == [0, 1, 1]
    for index in range(3):
        image, label = source[index]
        assert image.shape == (16, 24 + index, 3) and image.dtype == np.uint8
        assert label == source.labels[index]
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), (40 * index, 100, 200), atol=3)


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("train/a.jpg", "1 fields instead of 2"),
        ("train/a b.jpg 3", "3 fields instead of 2"),
        ("train/a.jpg -1", "label '-1' is not a non-negative integer"),
        ("train/a.jpg x", "label 'x' is not a non-negative integer"),
        ("/data/a.jpg 1", "path '/data/a.jpg' is not relative to the image root"),
        ("train/../../a.jpg 1", "path 'train/../../a.jpg' is not relative to the image root"),
        ("", "0 fields instead of 2"),
    ],
)
def test_malformed_line_names_line_and_content(tmp_path, bad_line, problem):
    split_file = _write_split(tmp_path / "bad.txt", ["train/ok.jpg 0", bad_line, "train/ok2.jpg 1"])
    expected = re.escape(f"bad.txt, line 2: {problem}") + ".*got " + re.escape(repr(bad_line))
    with pytest.raises(ValueError, match=expected):
        read_split_file(split_file)


def test_trailing_blank_lines_are_allowed(tmp_path):
    split_file = tmp_path / "split.txt"
    split_file.write_text("train/a.jpg 0\ntrain/b.jpg 7\n\n\n")
    paths, labels = read_split_file(split_file)
    assert paths == ("train/a.jpg", "train/b.jpg") and labels.tolist() == [0, 7] and labels.dtype == np.int32


def test_label_outside_the_dataset(tmp_path):
    split_file = _write_split(tmp_path / "split.txt", ["val/a.jpg 0", "val/b.jpg 365"])
    with pytest.raises(ValueError, match=r"line 2: label 365 is outside places_lt's 365 classes"):
        load_split("places_lt", "test", split_file, tmp_path, verify=False)


@pytest.mark.parametrize(
    "dataset, split, message",
    [
        ("imagenet", "test", "unknown dataset 'imagenet'"),
        ("inaturalist2018", "test", r"no split 'test'; valid splits: train, val \(LT papers report"),
        ("places_lt", "training", "no split 'training'"),
    ],
)
def test_unknown_dataset_or_split(tmp_path, dataset, split, message):
    split_file = _write_split(tmp_path / "split.txt", ["val/a.jpg 0"])
    with pytest.raises(ValueError, match=message):
        load_split(dataset, split, split_file, tmp_path)


def test_missing_split_file_or_image_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="split file .*absent.txt does not exist"):
        load_split("places_lt", "test", tmp_path / "absent.txt", tmp_path)
    split_file = _write_split(tmp_path / "split.txt", ["val/a.jpg 0"])
    with pytest.raises(FileNotFoundError, match="image root .*no_images does not exist"):
        load_split("places_lt", "test", split_file, tmp_path / "no_images", verify=False)


def test_places_lt_and_imagenet_lt_are_config_datasets_of_the_official_files(splits_dir, tmp_path):
    """`--config.dataset.name=places_lt`: the official train/val/test files over an image folder (images are read when
    the splits are prepared), cached at 256 and cropped to 224 on the device; ImageNet-LT names a missing file."""
    from runs import digits_config

    from ltjax import datasets

    def loaded(name):
        config = digits_config(("dataset.name", name), ("dataset.data_dir", str(tmp_path)),
                               ("dataset.split_dir", str(splits_dir)))
        return datasets.get(name).load(config.dataset)

    places = loaded("places_lt")
    counts = places.class_counts
    assert (len(counts), int(counts.sum()), int(counts.max()), int(counts.min())) == (365, 62_500, 4_980, 5)
    assert (len(places.validation.labels), len(places.test.labels)) == (365 * 20, 365 * 100)
    assert (places.crop_size, places.eval_resize, places.image_shape) == (224, 256, (256, 256, 3))
    assert places.normalization.mean == (0.485, 0.456, 0.406)
    ids = [image_id for class_ids in places.manifests["train"].image_ids for image_id in class_ids]
    assert len(set(ids)) == len(ids) == 62_500  # file names repeat across classes: ids are paths
    assert datasets.get("places_lt").model == "resnet152" and datasets.get("imagenet_lt").model == "resnext50_32x4d"
    with pytest.raises(FileNotFoundError, match="ImageNet_LT_train.txt"):
        loaded("imagenet_lt")
