"""Balanced softmax (Ren et al., NeurIPS 2020; `jiawei-ren/BalancedMetaSoftmax-Classification`).

    ltjax-train --config experiments/configs/balanced_softmax.py:cifar100-if100

Expected: the authors report IF 200 only (CIFAR-10 79.8, CIFAR-100 46.7, batch 512, 13,000 iterations, wd 5e-4);
try `balanced_softmax.py:cifar100-if200`. This config uses the shared 200-epoch recipe.
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar100-if100"):
    return recipes.reference_config(argument, {"name": "bs"}, lr_decay=recipes.LDAM_DECAY)
