"""The embedded default dataset: scikit-learn's handwritten digits as a small long-tailed benchmark, no download.

`sklearn.datasets.load_digits` ships 1,797 real 8x8 grayscale scans of the digits 0-9 (174-183 per class) inside
the scikit-learn package. They become uint8 `[N, 8, 8, 3]` images: the 17 grey levels 0..16 scaled to 0..255
(`round(v * 255 / 16)`) and repeated over three channels, so models and augmentation built for RGB run unchanged.

Splits, all deterministic (image ids are the positions in scikit-learn's order, `"0000"` to `"1796"`):

- test: a fixed, balanced `test_per_class` images per class (30 by default), drawn with its own fixed seed, so
  every run, whatever its `seed`, is scored on the same images;
- train: the exponential long-tailed subset of the remaining images, `n_max=120` and imbalance factor 10 by default
  (120 down to 12 images per class, 486 in all), drawn with `seed` by the CIFAR-LT recipe;
- validation: `validation_per_class` images per class (10 by default) from the images neither split uses.

The defaults keep every class at a dozen images or more; digit 0, the head class, has 148 images left after the test
split, so `n_max=120` leaves it 28 to draw validation images from. All three splits are class by class.
"""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

from ltjax.data.longtail import longtail_counts
from ltjax.data.source import ArraySource
from ltjax.data.splits import (
    LongTailSplits,
    SplitManifest,
    held_out_validation_indices,
    select_longtail_indices,
)

DATASET_NAME = "digits"
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(digit) for digit in range(NUM_CLASSES))
# The test split does not depend on the run's seed, so runs with different seeds share one test set.
_TEST_SEED = 0
_MAX_GREY_LEVEL = 16
# Where scikit-learn keeps the digits inside its package: 1,797 rows of 64 grey levels and the label.
_PACKAGED_FILE = ("datasets", "data", "digits.csv.gz")


def _grey_digits() -> tuple[np.ndarray, np.ndarray]:
    """`(grey levels [1797, 8, 8] in 0..16, labels [1797])` as `sklearn.datasets.load_digits` gives them.

    Read from the file scikit-learn ships, without importing scikit-learn (seconds of imports for a 57 kB file,
    paid by every run of the default); through `load_digits` where a scikit-learn release keeps it elsewhere.
    """
    package = importlib.util.find_spec("sklearn")
    if package is None:
        raise ModuleNotFoundError("the digits dataset ships with scikit-learn: pip install scikit-learn")
    path = pathlib.Path(package.submodule_search_locations[0]).joinpath(*_PACKAGED_FILE)
    if path.is_file():
        table = np.loadtxt(path, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int32)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int32)


def digits_source() -> tuple[ArraySource, tuple[str, ...]]:
    """All 1,797 digits as one source, with their image ids.

    Returns:
      `(source, image_ids)`: uint8 `[1797, 8, 8, 3]` images with labels 0-9, and the id of each image.
    """
    levels, labels = _grey_digits()
    grey = np.rint(levels * (255.0 / _MAX_GREY_LEVEL)).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    source = ArraySource(images, labels, NUM_CLASSES, CLASS_NAMES)
    image_ids = tuple(f"{i:04d}" for i in range(len(source)))
    return source, image_ids


def load_digits_lt(
    *,
    imbalance_factor: float = 10,
    n_max: int = 120,
    profile: str = "exp",
    seed: int = 0,
    test_per_class: int = 30,
    validation_per_class: int = 10,
    **profile_options: float,
) -> LongTailSplits:
    """Long-tailed train, held-out validation and balanced test splits of the digits.

    Args:
      imbalance_factor: n_max / n_min of the train split.
      n_max: train images of the head class, digit 0, which has `178 - test_per_class` images to share with
        the validation split.
      profile: `"exp"`, `"step"` or `"pareto"` (see `ltjax.data.longtail`).
      seed: seed of the train and validation draws (the test split is fixed).
      test_per_class: balanced test images per class.
      validation_per_class: balanced validation images per class; 0 for no validation split.
      **profile_options: passed to `longtail_counts`.

    Returns:
      `LongTailSplits` of `ArraySource`s with manifests for `"train"`, `"test"` and, when asked for,
      `"validation"`, each split class by class.

    Raises:
      ValueError: the counts do not fit (too large an n_max, too many validation or test images per class).
    """
    source, image_ids = digits_source()
    smallest_class = int(np.bincount(source.labels, minlength=NUM_CLASSES).min())
    if not 1 <= test_per_class < smallest_class:
        raise ValueError(
            f"test_per_class must lie in [1, {smallest_class}) (the smallest digit class has {smallest_class} "
            f"images), got {test_per_class}"
        )
    test_indices = held_out_validation_indices(
        source.labels, np.zeros(0, np.int64), test_per_class, _TEST_SEED, num_classes=NUM_CLASSES
    )
    pool = np.setdiff1d(np.arange(len(source)), test_indices)
    class_counts = longtail_counts(n_max, NUM_CLASSES, imbalance_factor, profile, **profile_options)
    train_indices = pool[
        select_longtail_indices(source.labels[pool], class_counts, seed, class_names=CLASS_NAMES)
    ]
    parameters = {
        "imbalance_factor": float(imbalance_factor),
        "n_max": n_max,
        "profile": profile,
        "profile_options": dict(profile_options),
        "seed": seed,
        "test_per_class": test_per_class,
        "test_seed": _TEST_SEED,
        "validation_per_class": validation_per_class,
    }
    splits = {"train": train_indices, "test": test_indices}
    if validation_per_class:
        # Test images count as used, so validation never overlaps test.
        used = np.concatenate([train_indices, test_indices])
        splits["validation"] = held_out_validation_indices(
            source.labels, used, validation_per_class, seed, num_classes=NUM_CLASSES, class_names=CLASS_NAMES
        )
    manifests = {
        name: SplitManifest.from_indices(
            dataset=DATASET_NAME,
            split=name,
            labels=source.labels,
            image_ids=image_ids,
            indices=indices,
            num_classes=NUM_CLASSES,
            class_names=CLASS_NAMES,
            parameters=parameters,
        )
        for name, indices in splits.items()
    }
    validation = source.subset(splits["validation"]) if validation_per_class else None
    return LongTailSplits(
        train=source.subset(train_indices),
        validation=validation,
        test=source.subset(test_indices),
        manifests=manifests,
    )
