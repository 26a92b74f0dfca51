"""Decoupling's representation stage on ImageNet-LT (Kang et al., ICLR 2020; facebookresearch/classifier-balancing,
`config/ImageNet_LT/feat_uniform.yaml`): a ResNeXt-50 (32x4d) trained from scratch with cross-entropy and
instance-balanced sampling, the backbone its classifier stages (cRT, LWS) and most later ImageNet-LT papers start from.

    ltjax-train --config experiments/configs/decoupling.py:imagenet_lt \\
        --config.dataset.data_dir=IMAGENET --config.dataset.split_dir=SPLITS --workdir=runs/imagenet_lt-joint
    ltjax-train --config experiments/configs/decoupling.py:imagenet_lt --config.loss.name=crt \\
        --config.loss.init_from=runs/imagenet_lt-joint --config.dataset.sampler=class_balanced \\
        --config.num_epochs=10 --config.optimizer.learning_rate=0.2

Expected top-1 (%), the repository's README (ResNeXt-50, many / medium / few / all): joint 65.9 / 37.5 / 7.7 / 44.4;
cRT 61.8 / 46.2 / 27.4 / 49.6; tau-normalisation 59.1 / 46.9 / 30.7 / 49.4; LWS 60.2 / 47.2 / 30.3 / 49.9.

The recipe as its code runs it: 90 epochs of batch 512, SGD with momentum 0.9 (not Nesterov), lr 0.2 and weight decay
5e-4 on every parameter, cosine annealing to 0 stepped at the start of each epoch (`coslr`, `endlr` 0; the first epoch
already runs at the once-stepped rate, the last at 0), no warm-up; RandomResizedCrop(224) and flips, Resize(256) and
CenterCrop(224) in evaluation, ImageNet's mean and std (`data/dataloader.py`); the official 20-per-class validation
split evaluated after every epoch. Differences: the reference also jitters brightness, contrast and saturation by 0.4,
which ltjax's device augmentation does not; ltjax crops from the 256-px centre square it caches, the reference from the
whole image. The classifier stages of the README (cRT: 10 epochs, class-balanced batches, cosine from lr 0.2) start
from this run as above.
"""
from __future__ import annotations

import ml_collections

ARGUMENTS = ("imagenet_lt",)


def get_config(argument: str = "imagenet_lt"):
    if argument not in ARGUMENTS:
        raise ValueError(f"config argument {argument!r}: this recipe is Decoupling's {', '.join(ARGUMENTS)} stage")
    config = ml_collections.ConfigDict()
    config.dataset = ml_collections.ConfigDict({"name": "imagenet_lt", "validation": True})
    config.model = ml_collections.ConfigDict({"name": "resnext50_32x4d", "head": "linear"})
    config.loss = ml_collections.ConfigDict({"name": "ce"})
    config.optimizer = ml_collections.ConfigDict({
        "learning_rate": 0.2, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "warmup": 0,
        "lr_decay": (), "schedule": "cosine_stepped_at_start",
    })
    config.num_epochs = 90
    config.batch_size = 512
    return config
