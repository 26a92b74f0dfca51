"""Class-balanced sigmoid focal loss, beta 0.9999, gamma 1 (Cui et al., CVPR 2019), the FFDS table's "CB-FL" row.

    ltjax-train --config experiments/configs/cb_focal.py:cifar10-if100

Expected top-1 (%), FFDS Table 1a: CIFAR-10-LT IF 100/50/10: 74.57 / 79.27 / 85.73; CIFAR-100-LT: 39.60 / 41.66 / 57.99.
The CB paper reports errors 25.43 / 20.73 (CIFAR-10-LT IF 100/50) and 60.40 / 53.79 (CIFAR-100-LT).
Difference: the CB reference initialises the sigmoid models' final bias to -log(C - 1); ltjax's head keeps its default.
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar10-if100"):
    loss = {"name": "cb", "loss_type": "focal", "beta": 0.9999, "gamma": 1.0}
    return recipes.reference_config(argument, loss, seed=5)
