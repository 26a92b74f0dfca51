"""The data a training config names: long-tailed splits, their augmentation and normalisation.

Datasets: `digits` (embedded, no download), `cifar10` / `cifar100` (tensorflow-datasets, prepared ArrayRecord data)
and `tiny_imagenet` (the official folder). Augmentation follows each reference recipe: none for digits (flipping a
digit changes it), pad-4 crop + flip for CIFAR, and for Tiny ImageNet from scratch pad-8 crop + flip at 64 px.
"""
from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from ltjax.data import augment
from ltjax.data.digits import load_digits_lt
from ltjax.data.source import ImageSource
from ltjax.data.tiny_imagenet import load_tiny_imagenet

DATASET_NAMES = ("digits", "cifar10", "cifar100", "tiny_imagenet")

# The digits' pixels are 0..255 after scaling 0..16; centre them with half-range statistics.
DIGITS_NORMALIZATION = augment.Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Attributes:
      train: the long-tailed training split.
      validation: the held-out model-selection split evaluated every epoch, or None.
      test: the balanced test split, evaluated once at the end.
      train_transform: batched augmentation of training images (None: as stored).
      normalization: applied on device inside the steps.
    """

    train: ImageSource
    validation: ImageSource | None
    test: ImageSource
    train_transform: augment.Transform | None
    normalization: augment.Normalization

    @property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.train.labels, minlength=self.train.num_classes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0][0].shape)


def load_training_data(dataset_config: ml_collections.ConfigDict) -> TrainingData:
    """Loads the splits that `dataset_config.name` (one of `DATASET_NAMES`) names.

    Keys: `imbalance_factor`, `validation_per_class` (0: no validation split), `seed` (the split's draw), and
    `data_dir` (CIFAR: the tfds data_dir; Tiny ImageNet: the `tiny-imagenet-200` folder).
    """
    name = dataset_config.name
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    imbalance_factor = dataset_config.get("imbalance_factor", 100)
    validation_per_class = dataset_config.get("validation_per_class", 0)
    if name == "digits":
        splits = load_digits_lt(
            imbalance_factor=imbalance_factor, seed=dataset_config.get("seed", 0),
            validation_per_class=validation_per_class,
        )
        return TrainingData(splits.train, splits.validation, splits.test, None, DIGITS_NORMALIZATION)
    if name in ("cifar10", "cifar100"):
        from ltjax.data.cifar import load_cifar_lt  # imports tensorflow-datasets only when CIFAR is asked for

        splits = load_cifar_lt(
            name, data_dir=dataset_config.get("data_dir"), imbalance_factor=imbalance_factor,
            seed=dataset_config.get("seed", 0), validation_per_class=validation_per_class,
        )
        return TrainingData(
            splits.train, splits.validation, splits.test, augment.PadCropFlip(padding=4), augment.NORMALIZATIONS[name]
        )
    root = dataset_config.get("data_dir")
    if not root:
        raise ValueError("dataset.data_dir must point at the tiny-imagenet-200 folder for dataset 'tiny_imagenet'")
    train = load_tiny_imagenet(root, "train", imbalance_factor=imbalance_factor, val_per_class=validation_per_class)
    validation = load_tiny_imagenet(root, "val", val_per_class=validation_per_class) if validation_per_class else None
    return TrainingData(
        train, validation, load_tiny_imagenet(root, "test"), augment.PadCropFlip(padding=8),
        augment.TINY_IMAGENET_NORMALIZATION,
    )
