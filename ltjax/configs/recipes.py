"""The reference training recipes, as configs: what `experiments/configs/<method>.py` builds on.

A config argument names the dataset and imbalance factor, e.g. `cifar100-if50` or `tiny_imagenet-if100`:

    ltjax-train --config experiments/configs/ldam_drw.py:cifar10-if100

CIFAR-LT follows the LDAM-DRW split and recipe shared by the FFDS, IB and KPS code: ResNet-32, SGD momentum 0.9,
batch 128, lr 0.1 with a 5-epoch linear warm-up, weight decay 2e-4, 200 epochs, pad-4 crop + flip. Tiny-ImageNet-LT
is trained from scratch (the FFDS code fine-tunes an ImageNet-pretrained ResNet-18, which ltjax does not ship): a
small-input ResNet-18 on 64-px images with the same 200-epoch schedule and switch epochs.
"""
from __future__ import annotations

import re

import ml_collections

from ltjax.configs import digits

DATASETS = ("cifar10", "cifar100", "tiny_imagenet")
# LR multipliers after a 1-indexed epoch: LDAM-DRW decays by 0.01 and 0.0001, FFDS and KPS by 0.1 and 0.01.
LDAM_DECAY = ((160, 0.01), (180, 0.0001))
STEP_DECAY = ((160, 0.1), (180, 0.01))


def parse_argument(argument: str) -> tuple[str, float]:
    """`"cifar100-if50"` -> `("cifar100", 50.0)`."""
    match = re.fullmatch(r"([a-z_0-9]+)-if(\d+(?:\.\d+)?)", argument)
    if not match or match.group(1) not in DATASETS:
        raise ValueError(
            f"config argument {argument!r} must be <dataset>-if<imbalance factor> with a dataset of "
            f"{', '.join(DATASETS)}, e.g. cifar10-if100"
        )
    return match.group(1), float(match.group(2))


def reference_config(
    argument: str,
    loss: dict,
    *,
    lr_decay=STEP_DECAY,
    batch_size: int = 128,
    weight_decay: float = 2e-4,
    head: str = "",
    seed: int = 0,
    split_seed: int = 0,
    num_epochs: int = 200,
) -> ml_collections.ConfigDict:
    """A full config for `argument` (dataset and imbalance factor) training `loss` (a dict with `name`)."""
    dataset, imbalance_factor = parse_argument(argument)
    config = digits.get_config()
    config.dataset.name = dataset
    config.dataset.imbalance_factor = imbalance_factor
    config.dataset.seed = split_seed
    # CIFAR-LT and Tiny-ImageNet-LT as the literature uses them select on the test set; ltjax reports the test
    # set once, at the end, and needs no validation split for these recipes (set it to hold one out).
    config.dataset.validation_per_class = 0
    config.dataset.data_dir = ""
    if dataset == "tiny_imagenet":
        config.model = ml_collections.ConfigDict(
            {"name": "resnet18", "head": head, "dtype": "float32", "small_input": True}
        )
    else:
        config.model = ml_collections.ConfigDict({"name": "resnet32", "head": head, "dtype": "float32"})
    config.loss = ml_collections.ConfigDict({"num_groups": 1, **loss})
    config.optimizer = ml_collections.ConfigDict(
        {
            "learning_rate": 0.1,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": weight_decay,
            "warmup_epochs": 5,
            "lr_decay": tuple(lr_decay),
        }
    )
    config.num_epochs = num_epochs
    config.batch_size = batch_size
    config.seed = seed
    return config
