"""The embedded digits benchmark and CIFAR-LT through tfds (`ltjax.data.digits`, `ltjax.data.cifar`).

CIFAR is tested on real prepared data in the real format, only small: tfds's own CIFAR builders, with the download
replaced by generated images, write ArrayRecord shards, `dataset_info.json` and `features.json` into a temporary
data_dir (Pillow encodes the PNGs, so no TensorFlow is needed), and `ltjax.data.cifar` reads them through
`tfds.data_source` as it reads the real thing.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification import cifar as tfds_cifar

from ltjax.data import digits
from ltjax.data.cifar import load_cifar_lt, load_cifar_split
from ltjax.data.digits import digits_source, load_digits_lt
from ltjax.data.longtail import longtail_counts
from ltjax.data.splits import SplitManifest, select_longtail_indices

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Images per class written for the small copies: (train, test).
PER_CLASS = {"cifar10": (40, 8), "cifar100": (6, 2)}


def _generated_split(num_classes: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels in a shuffled order and images whose first pixels spell out their index."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256
    images[:, 0, 0, 1] = np.arange(len(labels)) // 256
    return labels, images


def _prepare(builder_class, data_dir, num_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Prepares a small CIFAR in `data_dir` with tfds's own builder and writer; returns what it wrote."""
    train_per_class, test_per_class = PER_CLASS[builder_class.name]
    generated = {
        "train": _generated_split(num_classes, train_per_class, seed=1),
        "test": _generated_split(num_classes, test_per_class, seed=2),
    }

    class SmallCifar(builder_class, skip_registration=True):
        name = builder_class.name

        def _split_generators(self, dl_manager):
            if num_classes == 10:
                self.info.features["label"].names = CIFAR10_NAMES
            return {split: self._examples(split) for split in generated}

        def _examples(self, split):
            labels, images = generated[split]
            for index, (label, image) in enumerate(zip(labels, images)):
                example = {"id": f"{split}_{index:05d}", "image": Image.fromarray(image), "label": int(label)}
                if num_classes == 100:
                    example["coarse_label"] = int(label) // 5
                yield index, example

    SmallCifar(data_dir=str(data_dir), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    )
    return generated


@pytest.fixture(scope="module")
def cifar_data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    written = {
        "cifar10": _prepare(tfds_cifar.Cifar10, data_dir, 10),
        "cifar100": _prepare(tfds_cifar.Cifar100, data_dir, 100),
    }
    return str(data_dir), written


def test_cifar_split_is_read_back_in_id_order(cifar_data_dir):
    data_dir, written = cifar_data_dir
    for name, num_classes in (("cifar10", 10), ("cifar100", 100)):
        for split in ("train", "test"):
            source, image_ids = load_cifar_split(name, split, data_dir=data_dir)
            labels, images = written[name][split]
            assert source.images.dtype == np.uint8 and source.images.shape == images.shape
            assert source.num_classes == num_classes and len(source.class_names) == num_classes
            np.testing.assert_array_equal(source.labels, labels)
            np.testing.assert_array_equal(source.images, images)
            assert image_ids == tuple(f"{split}_{i:05d}" for i in range(len(labels)))
    assert load_cifar_split("cifar10", "train", data_dir=data_dir)[0].class_names == tuple(CIFAR10_NAMES)


def test_cifar_lt_matches_the_pytorch_recipe(cifar_data_dir):
    data_dir, written = cifar_data_dir
    labels, images = written["cifar10"]["train"]
    splits = load_cifar_lt("cifar10", data_dir=data_dir, imbalance_factor=10)
    counts = longtail_counts(PER_CLASS["cifar10"][0], 10, 10)
    # LDAM-DRW's loop on the images in the original order, with the global generator.
    np.random.seed(0)
    expected = []
    for c in range(10):
        class_indices = np.where(labels == c)[0]
        np.random.shuffle(class_indices)
        expected.append(class_indices[: counts[c]])
    expected = np.concatenate(expected)
    np.testing.assert_array_equal(splits.train.images, images[expected])
    np.testing.assert_array_equal(splits.train.labels, labels[expected])
    assert splits.validation is None and set(splits.manifests) == {"train", "test"}
    test_labels = written["cifar10"]["test"][0]
    np.testing.assert_array_equal(np.bincount(splits.test.labels), [PER_CLASS["cifar10"][1]] * 10)
    assert len(splits.test) == len(test_labels)
    assert splits.manifests["train"].parameters["imbalance_factor"] == 10
    np.testing.assert_array_equal(splits.manifests["train"].class_counts, counts)


def test_cifar_lt_validation_and_manifest_round_trip(cifar_data_dir, tmp_path):
    data_dir, _ = cifar_data_dir
    splits = load_cifar_lt("cifar100", data_dir=data_dir, imbalance_factor=2, validation_per_class=2, seed=3)
    # n_max drops to 6 - 2 = 4 so that the head class has images left for validation.
    np.testing.assert_array_equal(np.bincount(splits.train.labels, minlength=100), longtail_counts(4, 100, 2))
    np.testing.assert_array_equal(np.bincount(splits.validation.labels), [2] * 100)
    train_source, train_ids = load_cifar_split("cifar100", "train", data_dir=data_dir)
    for split_name, split in (("train", splits.train), ("validation", splits.validation)):
        manifest = SplitManifest.load(splits.manifests[split_name].to_json(tmp_path / f"{split_name}.json"))
        assert manifest.parameters["n_max"] == 4 and manifest.parameters["seed"] == 3
        rebuilt = manifest.apply(train_source, train_ids)
        np.testing.assert_array_equal(rebuilt.images, split.images)
        np.testing.assert_array_equal(rebuilt.labels, split.labels)
    train_ids_used = {i for ids in splits.manifests["train"].image_ids for i in ids}
    validation_ids = {i for ids in splits.manifests["validation"].image_ids for i in ids}
    assert not train_ids_used & validation_ids


def test_cifar_errors(cifar_data_dir, tmp_path):
    data_dir, _ = cifar_data_dir
    with pytest.raises(FileNotFoundError, match=r"cifar10 is not prepared in .*cifar10.*pip install 'ltjax\[tf\]'.*"
                                                r"tfds build cifar10 --file_format=array_record"):
        load_cifar_lt("cifar10", data_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"unknown CIFAR dataset 'cifar20'; valid names: cifar10, cifar100"):
        load_cifar_split("cifar20", "train", data_dir=data_dir)
    with pytest.raises(ValueError, match=r"class 0 \('airplane'\) has 40 images but the long-tailed split asks for 41"):
        load_cifar_lt("cifar10", data_dir=data_dir, n_max=41, imbalance_factor=10)
    with pytest.raises(ValueError, match=r"class 0 \('airplane'\) has 0 images left after the long-tailed split"):
        load_cifar_lt("cifar10", data_dir=data_dir, n_max=40, imbalance_factor=10, validation_per_class=1)



def _load_in_fresh_process(tfds_data_dir, working_dir) -> subprocess.CompletedProcess:
    """Runs `load_cifar_lt("cifar10", data_dir="")` in a new Python, since tfds reads $TFDS_DATA_DIR on import."""
    script = (
        "import json; from ltjax.data.cifar import load_cifar_lt; "
        "splits = load_cifar_lt('cifar10', data_dir='', imbalance_factor=10); "
        "print(json.dumps([splits.manifests['train'].sha256, int(splits.train.images.sum())]))"
    )
    environment = dict(os.environ, TFDS_DATA_DIR=str(tfds_data_dir), PYTHONPATH=str(REPOSITORY))
    return subprocess.run(
        [sys.executable, "-c", script], env=environment, cwd=working_dir, capture_output=True, text=True, timeout=120
    )


def test_cifar_without_data_dir_reads_the_tfds_default(cifar_data_dir, tmp_path):
    data_dir, _ = cifar_data_dir
    expected = load_cifar_lt("cifar10", data_dir=data_dir, imbalance_factor=10)
    # Run from an empty folder: an empty data_dir must not mean "./cifar10".
    found = _load_in_fresh_process(data_dir, tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == [expected.manifests["train"].sha256, int(expected.train.images.sum())]
    # Where tfds's default folder holds no CIFAR: tests/test_faults.py.


@pytest.mark.parametrize("packaged_file", [True, False])
def test_digits_are_scikit_learns_read_with_or_without_its_packaged_file(packaged_file, monkeypatch):
    """The default run reads the file scikit-learn ships (no scikit-learn import); where a release keeps it
    elsewhere, `load_digits` gives the same digits."""
    from sklearn.datasets import load_digits

    if not packaged_file:
        monkeypatch.setattr(digits, "_PACKAGED_FILE", ("datasets", "data", "moved", "digits.csv.gz"))
    levels, labels = digits._grey_digits()
    reference = load_digits()
    np.testing.assert_array_equal(levels, reference.images)
    np.testing.assert_array_equal(labels, reference.target)
    assert labels.dtype == np.int32


def test_digits_source():
    source, image_ids = digits_source()
    assert source.images.shape == (1797, 8, 8, 3) and source.images.dtype == np.uint8
    assert source.images.max() == 255 and (source.images[..., 0] == source.images[..., 2]).all()
    assert source.class_names == tuple("0123456789") and len(set(image_ids)) == 1797


def test_digits_lt_splits():
    splits = load_digits_lt()
    np.testing.assert_array_equal(np.bincount(splits.train.labels), longtail_counts(120, 10, 10))
    assert len(splits.train) == 486
    np.testing.assert_array_equal(np.bincount(splits.validation.labels), [10] * 10)
    np.testing.assert_array_equal(np.bincount(splits.test.labels), [30] * 10)
    assert splits.train.images.shape[1:] == (8, 8, 3)
    ids = {name: {i for ids in manifest.image_ids for i in ids} for name, manifest in splits.manifests.items()}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]


def test_digits_lt_is_deterministic_with_a_fixed_test_split():
    first, again, other_seed = load_digits_lt(seed=0), load_digits_lt(seed=0), load_digits_lt(seed=1)
    for name in ("train", "validation", "test"):
        assert first.manifests[name].sha256 == again.manifests[name].sha256
    assert first.manifests["test"].image_ids == other_seed.manifests["test"].image_ids
    assert first.manifests["train"].image_ids != other_seed.manifests["train"].image_ids
    assert load_digits_lt(validation_per_class=0).validation is None


def test_digits_manifest_round_trip(tmp_path):
    splits = load_digits_lt(imbalance_factor=20, profile="pareto", seed=4)
    source, image_ids = digits_source()
    for name in ("train", "validation", "test"):
        manifest = SplitManifest.load(splits.manifests[name].to_json(tmp_path / f"{name}.json"))
        rebuilt = manifest.apply(source, image_ids)
        split = getattr(splits, name)
        np.testing.assert_array_equal(rebuilt.labels, split.labels)
        np.testing.assert_array_equal(rebuilt.images, split.images)
    assert splits.manifests["train"].parameters["profile"] == "pareto"


def test_digits_errors():
    with pytest.raises(ValueError, match=r"class 0 \('0'\) has 148 images but the long-tailed split asks for 150"):
        load_digits_lt(n_max=150)
    with pytest.raises(ValueError, match=r"class 0 \('0'\) has 8 images left after the long-tailed split but the "
                                         r"validation split asks for 10"):
        load_digits_lt(n_max=140)
    with pytest.raises(ValueError, match=r"test_per_class must lie in \[1, 174\)"):
        load_digits_lt(test_per_class=200)


def test_select_longtail_on_digits_uses_the_given_order():
    source, _ = digits_source()
    selected = select_longtail_indices(source.labels, [3] * 10, order="first")
    np.testing.assert_array_equal(selected[:3], np.flatnonzero(source.labels == 0)[:3])
