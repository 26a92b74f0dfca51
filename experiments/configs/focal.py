"""Softmax focal loss, gamma 1 (Lin et al.; as `kaidic/LDAM-DRW/losses.py`), the FFDS table's "FL" row.

    ltjax-train --config experiments/configs/focal.py:cifar10-if100

Expected top-1 (%), FFDS Table 1a: CIFAR-10-LT IF 100/50/10: 70.38 / 76.71 / 86.66; CIFAR-100-LT: 38.41 / 44.32 / 55.78.
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar10-if100"):
    return recipes.reference_config(argument, {"name": "focal", "gamma": 1.0}, seed=5)
