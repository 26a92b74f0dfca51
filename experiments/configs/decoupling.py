"""Decoupling's representation stages (Kang et al., ICLR 2020; facebookresearch/classifier-balancing): cross-entropy
with instance-balanced sampling, the backbones its classifier stages (cRT, LWS) and most later papers start from.

`imagenet_lt` (`config/ImageNet_LT/feat_uniform.yaml`): a ResNeXt-50 (32x4d) trained from scratch.
`places_lt`: an ImageNet-pretrained ResNet-152 fine-tuned on Places-LT, OLTR's stage 1 (Liu et al., CVPR 2019;
zhmiao/OpenLongTailRecognition-OLTR, `config/Places_LT/stage_1.py`), which Decoupling follows for Places-LT.

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

    ltjax-train --config experiments/configs/decoupling.py:places_lt --config.dataset.data_dir=PLACES \
        --config.dataset.split_dir=SPLITS --config.model.pretrained=resnet152-394f9c45.pth

Places-LT (OLTR's stage 1 as its code runs it): ResNet-152 from ImageNet weights, batch 128, 30 epochs, SGD momentum
0.9, weight decay 5e-4, the classifier at lr 0.1 and the backbone at 0.001 (`backbone_lr_factor` 0.01), both x0.1
every 10 epochs by a StepLR stepped at each epoch's start (so from the 0-indexed epochs 9 and 19); the same crops and
evaluation as ImageNet-LT. Expected top-1 (%), Decoupling's Places-LT table (ResNet-152; not re-checked against the
PDF here): joint 30.2 (many 45.7, medium 27.3, few 8.2), cRT 36.7, tau-normalisation 37.9, LWS 37.6. Differences:
OLTR's backbone adds a 2048-to-512 linear layer before the classifier and starts from Caffe's ImageNet ResNet-152;
ltjax's classifier reads the 2048 pooled features and starts from torchvision's weights
(`ResNet152_Weights.IMAGENET1K_V1`); no colour jitter, crops from the cached 256-px centre square, as above.
"""
from __future__ import annotations

import ml_collections

ARGUMENTS = ("imagenet_lt", "places_lt")


def get_config(argument: str = "imagenet_lt"):
    if argument not in ARGUMENTS:
        raise ValueError(f"config argument {argument!r}: this recipe's stages are {', '.join(ARGUMENTS)}")
    if argument == "places_lt":
        return _places_lt()
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


def _places_lt() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.dataset = ml_collections.ConfigDict({"name": "places_lt", "validation": True})
    config.model = ml_collections.ConfigDict({"name": "resnet152", "head": "linear",
                                              "pretrained": "resnet152-394f9c45.pth"})
    config.loss = ml_collections.ConfigDict({"name": "ce"})
    config.optimizer = ml_collections.ConfigDict({
        "learning_rate": 0.1, "backbone_lr_factor": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
        "warmup": 0, "lr_decay": ((9, 0.1), (19, 0.01)), "schedule": "step",
    })
    config.num_epochs = 30
    config.batch_size = 128
    return config
