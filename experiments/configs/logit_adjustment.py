"""Logit-adjusted loss, tau 1 (Menon et al., ICLR 2021; `google-research/logit_adjustment`).

    ltjax-train --config experiments/configs/logit_adjustment.py:cifar100-if100

Expected top-1 (%): CIFAR-10-LT IF 100: 77.89, CIFAR-100-LT IF 100: 44.06 (repository README; the paper's 43.89 is
the number SWRM quotes). The reference trains 1241 / 1419 epochs with Nesterov momentum and a long step schedule;
this config uses the shared 200-epoch recipe.
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar100-if100"):
    return recipes.reference_config(argument, {"name": "la", "tau": 1.0}, lr_decay=recipes.LDAM_DECAY)
