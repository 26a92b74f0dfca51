"""The datasets a config can name: each with its keys, loader, augmentation, normalisation and default model.

    --config.dataset.name=digits          # embedded, no download (the default)
    --config.dataset.name=cifar10         # tensorflow-datasets, prepared ArrayRecord data (see ltjax.data.cifar)
    --config.dataset.name=cifar100
    --config.dataset.name=tiny_imagenet   # the official tiny-imagenet-200 folder (--config.dataset.data_dir)
    --config.dataset.name=imagenet_lt     # the official split files over an image folder (data_dir, split_dir)
    --config.dataset.name=places_lt

Augmentation follows each reference recipe and runs on the device, inside the train step: none for digits (flipping a
digit changes it), pad-4 crop + flip for CIFAR, pad-8 crop + flip at 64 px for Tiny ImageNet from scratch,
random-resized 224-px crops + flip for the 224-px recipes (ImageNet-LT, Places-LT, pretrained Tiny ImageNet).
"""
from __future__ import annotations

from ltjax._extras import require_train_extra

require_train_extra(__name__)

import dataclasses
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
import numpy as np

from ltjax.data import augment, samplers
from ltjax.data.digits import load_digits_lt
from ltjax.data.prepare import prepare_split
from ltjax.data.source import ImageSource
from ltjax.data.split_files import NUM_CLASSES, load_split
from ltjax.data.splits import SplitManifest
from ltjax.data.tiny_imagenet import load_tiny_imagenet
from ltjax.keys import SEED_MAX, ConfigError, Key, nearest, number

SAMPLERS = ("instance", "class_balanced", "square_root", "progressive", "oversample", "undersample")

_TINY_IMAGENET_SIDE = 64
# The digits' pixels are 0..255 after scaling 0..16; centre them with half-range statistics.
DIGITS_NORMALIZATION = augment.Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The splits of a run and how its images are prepared.

    Attributes:
      train: the long-tailed training split.
      validation: the held-out model-selection split evaluated every epoch, or None.
      test: the balanced test split, evaluated once at the end.
      manifests: a `SplitManifest` per split present (`"train"`, `"validation"`, `"test"`).
      crop_padding: the training augmentation, random pad-crop + horizontal flip with this zero border, on the
        device (`ltjax.data.device_augment`); None: none.
      normalization: applied on device inside the steps.
      image_size: file splits are resized (shorter side) and centre-cropped to this side when cached; None: as
        stored.
      crop_size: instead of `crop_padding`, random-resized crops of this side with a flip in training and a resize
        of the shorter side to `eval_resize` with a centred crop of this side in evaluation, on the device
        (`ltjax.data.device_crops`, torchvision's `RandomResizedCrop` and `Resize` + `CenterCrop`); None: off.
      eval_resize: the shorter side evaluation resizes to before its centred crop (with `crop_size`).
    """

    train: ImageSource
    validation: ImageSource | None
    test: ImageSource
    manifests: Mapping[str, SplitManifest]
    crop_padding: int | None
    normalization: augment.Normalization
    image_size: int | None = None
    crop_size: int | None = None
    eval_resize: int | None = None

    @property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.train.labels, minlength=self.train.num_classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.train.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of a training image as the steps receive it: the cache's square, or the first image's."""
        if self.image_size is not None:
            return (self.image_size, self.image_size, 3)
        return tuple(self.train[0][0].shape)

    def prepared(self, *, dataset: str, cache_dir: str | None) -> TrainingData:
        """Every split checked before training, file splits decoded once into the uint8 cache (`prepare_split`).

        Raises:
          DataError: files missing, undecodable or of another shape than the training images, each named.
        """
        train = prepare_split(self.train, cache_dir=cache_dir, name=f"{dataset}-train", image_size=self.image_size)
        shape = train[0][0].shape

        def other(source, split):
            return prepare_split(source, cache_dir=cache_dir, name=f"{dataset}-{split}", image_shape=shape,
                                 image_size=self.image_size)

        validation = other(self.validation, "validation") if self.validation is not None else None
        return dataclasses.replace(self, train=train, validation=validation, test=other(self.test, "test"))


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset a config can name.

    Attributes:
      name: the `dataset.name` value.
      summary: one line.
      keys: its config keys with defaults (`imbalance_factor`, `validation_per_class`, `seed`, ...).
      load: `dataset_config -> TrainingData`.
      model: the model its recipes train (`model.name = ""` takes it).
    """

    name: str
    summary: str
    keys: Mapping[str, Key]
    load: Callable[[ml_collections.ConfigDict], TrainingData]
    model: str


# How every dataset's training split is ordered and batched.
_ORDER_KEYS = {
    "sampler": Key("instance", "training order: instance-uniform or a re-balancing sampler", choices=SAMPLERS),
    "drop_remainder": Key(False, "drop each epoch's last partial batch (the reference scripts train on it: kept, "
                                 "padded to the batch and masked)"),
}


def _common_keys(imbalance_factor: float, *, data_dir_help: str | None = None) -> dict[str, Key]:
    keys = {
        "imbalance_factor": number(imbalance_factor, "n_max / n_min of the long-tailed train split", minimum=1),
        "validation_per_class": Key(0, "balanced validation images per class held out of train (0: none)",
                                    minimum=0),
        "seed": Key(0, "seed of the long-tailed draw (the reference repositories' rand_number)", minimum=0,
                    maximum=SEED_MAX),
        **_ORDER_KEYS,
    }
    if data_dir_help:
        keys["data_dir"] = Key("", data_dir_help)
    return keys


def _digits(config: ml_collections.ConfigDict) -> TrainingData:
    splits = load_digits_lt(
        imbalance_factor=config.imbalance_factor, seed=config.seed, validation_per_class=config.validation_per_class
    )
    return TrainingData(splits.train, splits.validation, splits.test, splits.manifests, None, DIGITS_NORMALIZATION)


def _cifar(name: str) -> Callable[[ml_collections.ConfigDict], TrainingData]:
    def load(config: ml_collections.ConfigDict) -> TrainingData:
        from ltjax.data.cifar import load_cifar_lt  # imports tensorflow-datasets only when CIFAR is asked for

        splits = load_cifar_lt(
            name, data_dir=config.data_dir or None, imbalance_factor=config.imbalance_factor, seed=config.seed,
            validation_per_class=config.validation_per_class,
        )
        return TrainingData(
            splits.train, splits.validation, splits.test, splits.manifests, 4, augment.NORMALIZATIONS[name]
        )

    return load


def file_manifest(source, *, dataset: str, split: str, parameters: Mapping[str, Any],
                  root: pathlib.Path | str | None = None) -> SplitManifest:
    """The manifest of a file source: its images identified by file name (by their path under `root`, where names
    repeat across class folders, as Places-LT's do), class by class."""
    image_ids = [path.name if root is None else path.relative_to(root).as_posix() for path in source.paths]
    return SplitManifest.from_indices(
        dataset=dataset, split=split, labels=source.labels, image_ids=image_ids,
        indices=np.argsort(source.labels, kind="stable"), num_classes=source.num_classes,
        class_names=source.class_names, parameters=parameters,
    )


def _tiny_imagenet(config: ml_collections.ConfigDict) -> TrainingData:
    if not config.data_dir:
        raise ConfigError(
            "dataset tiny_imagenet needs --config.dataset.data_dir=<path to the tiny-imagenet-200 folder>"
        )
    held_out = config.validation_per_class
    parameters = {"imbalance_factor": config.imbalance_factor, "validation_per_class": held_out,
                  "image_size": config.image_size}
    splits = {
        "train": load_tiny_imagenet(config.data_dir, "train", imbalance_factor=config.imbalance_factor,
                                    validation_per_class=held_out),
        "test": load_tiny_imagenet(config.data_dir, "test"),
    }
    if held_out:
        splits["validation"] = load_tiny_imagenet(config.data_dir, "val", validation_per_class=held_out)
    manifests = {
        split: file_manifest(source, dataset="tiny_imagenet", split=split, parameters=parameters)
        for split, source in splits.items()
    }
    if config.augmentation == "random_resized_crop":
        # The cache keeps the 64-px images; the device crops and resizes them to image_size (ImageNet's 224 of 256).
        return TrainingData(
            splits["train"], splits.get("validation"), splits["test"], manifests, crop_padding=None,
            normalization=augment.TINY_IMAGENET_NORMALIZATION, crop_size=config.image_size,
            eval_resize=round(config.image_size * 256 / 224),
        )
    native = config.image_size == _TINY_IMAGENET_SIDE
    return TrainingData(
        splits["train"], splits.get("validation"), splits["test"], manifests,
        crop_padding=config.image_size // 8,  # pad-8 crops at 64 px, as the recipe; the same fraction when resized
        normalization=augment.TINY_IMAGENET_NORMALIZATION, image_size=None if native else config.image_size,
    )


_SPLIT_FILE_NAMES = {"imagenet_lt": "ImageNet_LT", "places_lt": "Places_LT"}
_CROP_SIDE, _CACHE_SIDE = 224, 256


def _split_file_dataset(name: str) -> Callable[[ml_collections.ConfigDict], TrainingData]:
    """ImageNet-LT or Places-LT from the official split files (`ltjax.data.split_files`, SHA-256 verified) over the
    image folder their paths start from: train, the official 20-per-class val split when `validation`, test."""

    def load(config: ml_collections.ConfigDict) -> TrainingData:
        if not config.data_dir:
            raise ConfigError(f"dataset {name} needs --config.dataset.data_dir=<the folder the paths of "
                              f"{_SPLIT_FILE_NAMES[name]}_train.txt start from>")
        split_dir = pathlib.Path(config.split_dir or config.data_dir)

        def split(which: str) -> ImageSource:
            return load_split(name, which, split_dir / f"{_SPLIT_FILE_NAMES[name]}_{which}.txt", config.data_dir)

        splits = {"train": split("train"), "test": split("test"), **({"validation": split("val")}
                                                                      if config.validation else {})}
        parameters = {"cache_size": config.cache_size, "image_size": config.image_size}
        manifests = {which: file_manifest(source, dataset=name, split=which, parameters=parameters,
                                          root=config.data_dir) for which, source in splits.items()}
        return TrainingData(
            splits["train"], splits.get("validation"), splits["test"], manifests, crop_padding=None,
            normalization=augment.IMAGENET_NORMALIZATION, image_size=config.cache_size, crop_size=config.image_size,
            eval_resize=config.cache_size,
        )

    return load


def _split_file_keys(name: str) -> dict[str, Key]:
    files = _SPLIT_FILE_NAMES[name]
    return {
        "data_dir": Key("", f"the folder the paths of the official {files}_*.txt split files start from"),
        "split_dir": Key("", f"the folder holding {files}_train.txt, _val.txt and _test.txt (empty: data_dir)"),
        "validation": Key(True, "evaluate the official validation split (20 images per class) every epoch"),
        "image_size": Key(_CROP_SIDE, "side of the random-resized training crops and of evaluation's centre crop"),
        "cache_size": Key(_CACHE_SIDE, "images are cached resized (shorter side) and centre-cropped to this side; "
                                       "training crops come from that square, evaluation centre-crops it "
                                       "(torchvision's Resize(256) + CenterCrop(224))"),
        **_ORDER_KEYS,
    }


_CIFAR_DIR_HELP = "tfds data_dir holding the prepared data (empty: tfds's default, $TFDS_DATA_DIR)"

DATASETS: dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset("digits", "scikit-learn's 1,797 digits, long-tailed, embedded (no download)",
                {**_common_keys(10.0),
                 "validation_per_class": Key(10, "balanced validation images per class", minimum=0)},
                _digits, "resnet8"),
        Dataset("cifar10", "CIFAR-10-LT (tensorflow-datasets, the LDAM-DRW split)",
                _common_keys(100.0, data_dir_help=_CIFAR_DIR_HELP), _cifar("cifar10"), "resnet32"),
        Dataset("cifar100", "CIFAR-100-LT (tensorflow-datasets, the LDAM-DRW split)",
                _common_keys(100.0, data_dir_help=_CIFAR_DIR_HELP), _cifar("cifar100"), "resnet32"),
        Dataset("tiny_imagenet", "Tiny-ImageNet-LT from the official tiny-imagenet-200 folder, trained from scratch",
                {**_common_keys(100.0, data_dir_help="the tiny-imagenet-200 folder"),
                 "image_size": Key(_TINY_IMAGENET_SIDE, "image side in pixels the network sees: with pad_crop_flip "
                                                        "resized once into the cache (64: as stored), with "
                                                        "random_resized_crop the crop's side"),
                 "augmentation": Key("pad_crop_flip", "training augmentation on the device: pad-crop + flip at "
                                                      "image_size (the from-scratch recipe), or random-resized crops "
                                                      "+ flip, evaluation resizing to 8/7 and centre-cropping (the "
                                                      "224-px fine-tuning recipes)",
                                     choices=("pad_crop_flip", "random_resized_crop"))},
                _tiny_imagenet, "resnet18"),
        Dataset("imagenet_lt", f"ImageNet-LT (Liu et al., CVPR 2019): {NUM_CLASSES['imagenet_lt']} classes from the "
                               "official split files", _split_file_keys("imagenet_lt"), _split_file_dataset(
                                   "imagenet_lt"), "resnext50_32x4d"),
        Dataset("places_lt", f"Places-LT (Liu et al., CVPR 2019): {NUM_CLASSES['places_lt']} classes from the official "
                             "split files", _split_file_keys("places_lt"), _split_file_dataset("places_lt"),
                "resnet152"),
    )
}


def get(name: str) -> Dataset:
    """The dataset called `name`; a ConfigError with the nearest name for an unknown one."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}{nearest(name, DATASETS).replace('valid keys', 'datasets')}")
    return DATASETS[name]


def make_sampler(dataset_config: ml_collections.ConfigDict, num_epochs: int) -> samplers.Sampler:
    """The training order `dataset.sampler` names (the progressive sampler reaches balance at the run's end)."""
    options = {"total_epochs": num_epochs} if dataset_config.sampler == "progressive" else {}
    return samplers.make_sampler(dataset_config.sampler, **options)
