"""Tiny ImageNet-LT loader: the real IF-100 copy in ../shared/data, and small generated folders for the rest."""
import pathlib
import re

import numpy as np
import pytest

from ltjax.data import tiny_imagenet
from ltjax.data.longtail import longtail_counts
from ltjax.data.tiny_imagenet import load_tiny_imagenet


@pytest.fixture(scope="module")
def real_train(tiny_imagenet_root):
    return load_tiny_imagenet(tiny_imagenet_root, "train", imbalance_factor=100)


@pytest.fixture(scope="module")
def real_test(tiny_imagenet_root):
    return load_tiny_imagenet(tiny_imagenet_root, "test")


def test_real_train_is_the_if100_subset(tiny_imagenet_root, real_train):
    wnids = sorted((tiny_imagenet_root / "wnids.txt").read_text().split())
    assert real_train.class_names == tuple(wnids)
    assert real_train.num_classes == 200
    counts = np.bincount(real_train.labels, minlength=200)
    np.testing.assert_array_equal(counts, longtail_counts(500, 200, 100))
    assert len(real_train) == counts.sum() == 21_549
    assert (counts[0], counts[1], counts[-1]) == (500, 488, 5)
    # Every path sits in its class's folder and follows the numbering <wnid>_0 .. <wnid>_{n_c - 1}.
    assert all(path.parent.parent.name == wnids[label] for path, label in zip(real_train.paths, real_train.labels))
    class_1 = [path.name for path, label in zip(real_train.paths, real_train.labels) if label == 1]
    assert class_1 == [f"{wnids[1]}_{k}.JPEG" for k in range(488)]


def test_real_test_is_the_official_val_folder(tiny_imagenet_root, real_test):
    assert len(real_test) == 10_000
    np.testing.assert_array_equal(np.bincount(real_test.labels, minlength=200), np.full(200, 50))
    wnids = sorted((tiny_imagenet_root / "wnids.txt").read_text().split())
    # The first lines of val_annotations.txt, and the classes' positions in sorted wnid order.
    for index, wnid in [(0, "n03444034"), (1, "n04067472"), (2, "n04070727")]:
        assert real_test.paths[index] == tiny_imagenet_root / "val" / "images" / f"val_{index}.JPEG"
        assert real_test.labels[index] == wnids.index(wnid)
        assert real_test.class_names[real_test.labels[index]] == wnid


def test_real_images_decode_to_64x64_rgb(real_train, real_test):
    for source, index in [(real_train, 0), (real_train, len(real_train) - 1), (real_test, 0), (real_test, 9_999)]:
        image, label = source[index]
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert label == source.labels[index]


def test_real_copy_refuses_if10_naming_the_short_class(tiny_imagenet_root):
    # IF 10 needs n01629819_0 .. _493 for class 1; the IF-100 copy stops at _487.
    with pytest.raises(ValueError, match=r"class 1 \(n01629819\) lacks 6 of the 494 .*imbalance_factor=10") as error:
        load_tiny_imagenet(tiny_imagenet_root, "train", imbalance_factor=10)
    assert "full dataset" in str(error.value)


def test_real_copy_has_no_heldout_images(tiny_imagenet_root):
    with pytest.raises(ValueError, match=r"class 1 \(n01629819\) lacks .*validation_per_class=20"):
        load_tiny_imagenet(tiny_imagenet_root, "val", validation_per_class=20)


def _fake_tiny_imagenet(root: pathlib.Path, wnids, images_per_class: int) -> pathlib.Path:
    """A folder in the official layout with empty image files (never decoded) and two annotated val images."""
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")
    for wnid in wnids:
        image_dir = root / "train" / wnid / "images"
        image_dir.mkdir(parents=True)
        for k in range(images_per_class):
            (image_dir / f"{wnid}_{k}.JPEG").touch()
    (root / "val" / "images").mkdir(parents=True)
    for k in range(2):
        (root / "val" / "images" / f"val_{k}.JPEG").touch()
    annotations = [f"val_0.JPEG\t{wnids[1]}\t0\t0\t9\t9", f"val_1.JPEG\t{wnids[0]}\t1\t1\t8\t8"]
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root


@pytest.fixture
def small_dataset(tmp_path, monkeypatch):
    """3 classes of 10 images: the same code paths as 200 x 500, at a size a test can write."""
    monkeypatch.setattr(tiny_imagenet, "NUM_CLASSES", 3)
    monkeypatch.setattr(tiny_imagenet, "IMAGES_PER_CLASS", 10)
    return _fake_tiny_imagenet(tmp_path / "tiny-imagenet-200", ["n02", "n01", "n03"], 10)


def test_heldout_val_is_balanced_and_disjoint_from_train(small_dataset):
    train = load_tiny_imagenet(small_dataset, "train", imbalance_factor=4, validation_per_class=2)
    val = load_tiny_imagenet(small_dataset, "val", validation_per_class=2)
    assert train.class_names == val.class_names == ("n01", "n02", "n03")
    # The train head shrinks to 10 - 2 = 8: counts int(8 * 4 ** (-c / 2)) = 8, 4, 2.
    np.testing.assert_array_equal(np.bincount(train.labels), [8, 4, 2])
    np.testing.assert_array_equal(np.bincount(val.labels), [2, 2, 2])
    assert [path.name for path in val.paths[:2]] == ["n01_8.JPEG", "n01_9.JPEG"]
    assert not set(train.paths) & set(val.paths)


def test_test_split_labels_follow_sorted_wnids(small_dataset):
    test = load_tiny_imagenet(small_dataset, "test")
    assert test.labels.tolist() == [0, 1]  # val_0 is n01, val_1 is n02


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(split="val"), "needs validation_per_class > 0"),
        (dict(split="training"), "split must be"),
        (dict(validation_per_class=10), r"validation_per_class must be an integer in \[0, 10\)"),
        (dict(imbalance_factor=0.5), "imbalance_factor must be >= 1"),
    ],
)
def test_bad_arguments(small_dataset, arguments, message):
    with pytest.raises(ValueError, match=message):
        load_tiny_imagenet(small_dataset, **arguments)


@pytest.mark.parametrize(
    "remove, split",
    [
        ("wnids.txt", "train"),
        ("val/val_annotations.txt", "test"),
        ("train/n02", "train"),
    ],
)
def test_missing_pieces_name_the_path(small_dataset, remove, split):
    path = small_dataset / remove
    if path.is_dir():
        for file in (path / "images").iterdir():
            file.unlink()
        (path / "images").rmdir()
        path.rmdir()
    else:
        path.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_tiny_imagenet(small_dataset, split, imbalance_factor=2)


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        load_tiny_imagenet(tmp_path / "nowhere")


def test_damaged_wnids_file(tmp_path):
    (tmp_path / "wnids.txt").write_text("n01\nn02\n")
    with pytest.raises(ValueError, match="lists 2 wnids"):
        load_tiny_imagenet(tmp_path)


def test_random_resized_crop_keeps_the_64px_cache_and_crops_on_the_device(tiny_imagenet_root):
    """The 224-px fine-tuning recipes' augmentation: the stored 64-px images go to the device, which crops them to
    image_size (and evaluation resizes to 256 and centre-crops 224); the from-scratch default keeps pad-crop."""
    from runs import digits_config

    from ltjax import datasets

    def loaded(*overrides):
        config = digits_config(("dataset.name", "tiny_imagenet"), ("dataset.data_dir", str(tiny_imagenet_root)),
                               ("dataset.imbalance_factor", "100"), ("dataset.validation_per_class", "0"),
                               *overrides)
        return datasets.get("tiny_imagenet").load(config.dataset)

    crops = loaded(("dataset.augmentation", "random_resized_crop"), ("dataset.image_size", "224"))
    assert (crops.crop_size, crops.eval_resize, crops.crop_padding, crops.image_size) == (224, 256, None, None)
    default = loaded()
    assert (default.crop_size, default.crop_padding, default.image_size) == (None, 8, None)
