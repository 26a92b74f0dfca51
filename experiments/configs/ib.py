"""Influence-balanced loss (Park et al., ICCV 2021; `pseulki/IB-Loss`): CE for 100 epochs, then IB (alpha 1000,
inverse-frequency weights) with the learning rate dropped to 1e-3, 1e-5 after 160 and 1e-7 after 180.

    ltjax-train --config experiments/configs/ib.py:cifar10-if100
    ltjax-train --config experiments/configs/ib.py:cifar10-if100 --config.loss.variant=ib_cb      # IB-CB
    ltjax-train --config experiments/configs/ib.py:cifar10-if100 --config.loss.variant=ib_focal   # IB-FL

Expected top-1 (%), FFDS Table 1a, CIFAR-10-LT IF 100/50/10 | CIFAR-100-LT IF 100/50/10:
IB 78.26 / 81.70 / 88.25 | 42.14 / 46.22 / 57.13; IB-CB 78.04 / 81.54 / 88.09 | 41.31 / 46.16 / 56.78;
IB-FL 79.76 / 81.51 / 88.04 | 42.06 / 47.49 / 58.20.
"""
from ltjax.configs import recipes

# x0.01 from IB's start (100 of 200 epochs), x1e-4 from 160, x1e-6 from 180.
IB_DECAY = ((0.5, 0.01), (0.8, 0.0001), (0.9, 0.000001))


def get_config(argument: str = "cifar10-if100"):
    loss = {"name": "ib", "variant": "ib", "alpha": 1000.0, "ib_start": 0.5, "beta": 0.9999, "gamma": 1.0}
    return recipes.reference_config(argument, loss, lr_decay=IB_DECAY)
