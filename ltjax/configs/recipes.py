"""The reference training recipes, as configs: what `experiments/configs/<method>.py` builds on.

A config argument names the dataset and imbalance factor, e.g. `cifar100-if50` or `tiny_imagenet-if100`:

    ltjax-train --config experiments/configs/ldam_drw.py:cifar10-if100

CIFAR-LT follows the LDAM-DRW split and recipe shared by the FFDS, IB and KPS code: ResNet-32, SGD momentum 0.9,
batch 128, lr 0.1 with a 5-epoch linear warm-up, weight decay 2e-4, 200 epochs, pad-4 crop + flip. Tiny-ImageNet-LT
is trained from scratch (the FFDS code fine-tunes an ImageNet-pretrained ResNet-18, which ltjax does not ship): a
small-input ResNet-18 on 64-px images with the same 200-epoch schedule and switch epochs. Switch epochs and decay
milestones are fractions of the run, so `--config.num_epochs=20` keeps the recipe's shape (decay at 16 and 18).
"""
from __future__ import annotations

import re

import ml_collections

DATASETS = ("cifar10", "cifar100", "tiny_imagenet")
# LR multipliers from a fraction of the run on: LDAM-DRW decays by 0.01 and 0.0001 at 160 and 180 of 200 epochs,
# FFDS and KPS by 0.1 and 0.01.
LDAM_DECAY = ((0.8, 0.01), (0.9, 0.0001))
STEP_DECAY = ((0.8, 0.1), (0.9, 0.01))


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
    """A config for `argument` (dataset and imbalance factor) training `loss` (a dict with the method's `name`)."""
    dataset, imbalance_factor = parse_argument(argument)
    config = ml_collections.ConfigDict()
    # CIFAR-LT and Tiny-ImageNet-LT as the literature uses them select on the test set; ltjax reports the final
    # epoch's test accuracy (a table adds the best epoch's, labelled optimistic), and these recipes hold no
    # validation split out (set validation_per_class for one).
    config.dataset = ml_collections.ConfigDict(
        {"name": dataset, "imbalance_factor": imbalance_factor, "seed": split_seed, "validation_per_class": 0}
    )
    config.model = ml_collections.ConfigDict({"name": "", "head": head, "dtype": "float32"})
    config.loss = ml_collections.ConfigDict(loss)
    config.optimizer = ml_collections.ConfigDict(
        {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": weight_decay, "warmup": 0.025,
         "lr_decay": tuple(lr_decay)}
    )
    config.num_epochs = num_epochs
    config.batch_size = batch_size
    config.seed = seed
    return config
