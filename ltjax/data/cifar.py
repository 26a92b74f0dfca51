"""CIFAR-10-LT and CIFAR-100-LT, read from TensorFlow Datasets' prepared ArrayRecord files.

Reading needs no TensorFlow: `tfds.data_source` reads ArrayRecord shards and decodes the PNGs with Pillow. Preparing
them once does need TensorFlow (to parse the downloaded archive) and the network:

    pip install 'ltjax[tf]'
    tfds build cifar10 --file_format=array_record [--data_dir=DIR]
    # or, in Python:
    tfds.builder("cifar10", data_dir=DIR).download_and_prepare(file_format="array_record")

`file_format="array_record"` matters: tfds's default, TFRecord, has no random access, so `tfds.data_source` cannot
read it. `DIR` defaults to `$TFDS_DATA_DIR` or `~/tensorflow_datasets`; pass the same directory as `data_dir`, or
leave `data_dir` empty (`None` or `""`, as configs write it) to read from tfds's own default the same way.

A whole split is decoded into one uint8 array (CIFAR is 180 MB). tfds shuffles records when it prepares them; the
loader puts them back in the order of their ids (`train_00000`, ...), which number the images in the order of the
original batch files, the order torchvision reads. That is what makes `select_longtail_indices`, LDAM-DRW's
recipe, pick the same images as the PyTorch repositories for the same seed.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from ltjax.data.longtail import longtail_counts
from ltjax.data.source import ArraySource
from ltjax.data.splits import (
    LongTailSplits,
    SplitManifest,
    held_out_validation_indices,
    select_longtail_indices,
)

CIFAR_DATASETS = ("cifar10", "cifar100")
# Records fetched per ArrayRecord read: large enough to batch the reads, small enough to keep the decoded list small.
_READ_BATCH = 4096


def _tfds_data_dir(data_dir: str | None) -> str | None:
    # tfds reads an empty string as the current folder (`./cifar10`); None is what makes it use its own default.
    return data_dir or None


def _check_prepared(name: str, data_dir: str | None) -> None:
    builder = tfds.builder(name, data_dir=data_dir)
    prepare = (
        f"prepare it once (needs TensorFlow and the network): pip install 'ltjax[tf]', then "
        f"`tfds build {name} --file_format=array_record --data_dir=DIR` or "
        f"`tfds.builder({name!r}, data_dir=DIR).download_and_prepare(file_format='array_record')`, "
        f"and pass data_dir=DIR (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)"
    )
    where = str(builder.data_dir)
    if data_dir is None:
        where += " (tfds's default, as no data_dir was given: $TFDS_DATA_DIR, else ~/tensorflow_datasets)"
    if not builder.is_prepared():
        raise FileNotFoundError(f"{name} is not prepared in {where}; {prepare}")
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise FileNotFoundError(
            f"{name} in {builder.data_dir} is prepared as {builder.info.file_format.value}, which has no random "
            f"access; ltjax reads ArrayRecord: {prepare}"
        )


def load_cifar_split(
    name: str, split: str, *, data_dir: str | None = None
) -> tuple[ArraySource, tuple[str, ...]]:
    """One whole CIFAR split, decoded, in the original file order.

    Args:
      name: `"cifar10"` or `"cifar100"`.
      split: `"train"` or `"test"`.
      data_dir: tfds data directory holding the prepared data; None or `""`: tfds's own default
        (`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`).

    Returns:
      `(source, image_ids)`: uint8 `[N, 32, 32, 3]` images with their (fine) labels and class names, and each
      image's tfds id (`"train_00000"`, ...), sorted by id.

    Raises:
      ValueError: an unknown dataset name.
      FileNotFoundError: the data is not prepared in ArrayRecord format under `data_dir` (the message says how).
    """
    if name not in CIFAR_DATASETS:
        raise ValueError(f"unknown CIFAR dataset {name!r}; valid names: {', '.join(CIFAR_DATASETS)}")
    data_dir = _tfds_data_dir(data_dir)
    _check_prepared(name, data_dir)
    records = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    num_records = len(records)
    images = np.empty((num_records, 32, 32, 3), np.uint8)
    labels = np.empty(num_records, np.int32)
    image_ids = []
    for start in range(0, num_records, _READ_BATCH):
        keys = list(range(start, min(start + _READ_BATCH, num_records)))
        for key, example in zip(keys, records.__getitems__(keys)):
            images[key] = example["image"]
            labels[key] = example["label"]
            image_id = example["id"]
            image_ids.append(image_id.decode() if isinstance(image_id, bytes) else str(image_id))
    # Ids are zero-padded, so their string order is the original file order.
    order = np.argsort(np.array(image_ids), kind="stable")
    label_feature = records.dataset_info.features["label"]
    source = ArraySource(images[order], labels[order], label_feature.num_classes, tuple(label_feature.names))
    return source, tuple(image_ids[i] for i in order)


def load_cifar_lt(
    name: str = "cifar10",
    *,
    data_dir: str | None = None,
    imbalance_factor: float = 100,
    profile: str = "exp",
    seed: int = 0,
    n_max: int | None = None,
    validation_per_class: int = 0,
    **profile_options: float,
) -> LongTailSplits:
    """CIFAR-10-LT / CIFAR-100-LT: long-tailed train, optional held-out validation, full balanced test split.

    With the defaults this is the literature split (LDAM-DRW, IB, FFDS, KPS): exponential profile, IF 100, seed 0,
    `n_max` = train images per class (5000 / 500), giving 12,406 (CIFAR-10) and 10,847 (CIFAR-100) images.

    A held-out validation split (`validation_per_class > 0`) is drawn from the train images the long-tailed subset
    leaves out. The literature split uses every image of the head class, so by default `n_max` then drops to
    `images per class - validation_per_class` and every count is computed from it: the train split is then not the
    literature one (its manifest records `n_max`). Pass `n_max` to choose otherwise.

    Args:
      name: `"cifar10"` or `"cifar100"`.
      data_dir: tfds data directory holding the prepared data; None or `""`: tfds's own default (see the module
        docstring).
      imbalance_factor: n_max / n_min of the train split.
      profile: `"exp"`, `"step"` or `"pareto"` (see `ltjax.data.longtail`).
      seed: seed of the long-tailed draw (the repositories' `rand_number`) and of the validation draw.
      n_max: train images of the head class; default as above.
      validation_per_class: balanced validation images per class; 0 (default) for none.
      **profile_options: passed to `longtail_counts`.

    Returns:
      `LongTailSplits` of `ArraySource`s (train in the repositories' order, class by class; validation and test
      class by class) and their manifests, keyed `"train"`, `"validation"` (when asked for) and `"test"`.

    Raises:
      FileNotFoundError: the data is not prepared (the message says how to prepare it).
      ValueError: counts that do not fit the data, or bad arguments.
    """
    if validation_per_class < 0:
        raise ValueError(f"validation_per_class must be >= 0, got {validation_per_class}")
    data_dir = _tfds_data_dir(data_dir)
    train, train_ids = load_cifar_split(name, "train", data_dir=data_dir)
    test, test_ids = load_cifar_split(name, "test", data_dir=data_dir)
    # As LDAM-DRW: img_max = len(train) / num_classes.
    images_per_class = len(train) // train.num_classes
    if n_max is None:
        n_max = images_per_class - validation_per_class
    class_counts = longtail_counts(n_max, train.num_classes, imbalance_factor, profile, **profile_options)
    train_indices = select_longtail_indices(train.labels, class_counts, seed, class_names=train.class_names)
    parameters = {
        "imbalance_factor": float(imbalance_factor),
        "n_max": n_max,
        "profile": profile,
        "profile_options": dict(profile_options),
        "seed": seed,
        "selection": "shuffle",
        "validation_per_class": validation_per_class,
        "tfds_version": str(tfds.builder(name, data_dir=data_dir).version),
    }

    def manifest(split: str, labels: np.ndarray, ids: tuple[str, ...], indices: np.ndarray) -> SplitManifest:
        return SplitManifest.from_indices(
            dataset=name,
            split=split,
            labels=labels,
            image_ids=ids,
            indices=indices,
            num_classes=train.num_classes,
            class_names=train.class_names,
            parameters=parameters,
        )

    test_indices = np.argsort(test.labels, kind="stable")
    manifests = {
        "train": manifest("train", train.labels, train_ids, train_indices),
        "test": manifest("test", test.labels, test_ids, test_indices),
    }
    validation = None
    if validation_per_class:
        validation_indices = held_out_validation_indices(
            train.labels,
            train_indices,
            validation_per_class,
            seed,
            num_classes=train.num_classes,
            class_names=train.class_names,
        )
        manifests["validation"] = manifest("validation", train.labels, train_ids, validation_indices)
        validation = train.subset(validation_indices)
    return LongTailSplits(
        train=train.subset(train_indices),
        validation=validation,
        test=test.subset(test_indices),
        manifests=manifests,
    )
