"""LDAM-DRW (Cao et al., NeurIPS 2019; `kaidic/LDAM-DRW`): margins max 0.5, scale 30 on a cosine head, class-balanced
re-weighting (beta 0.9999) from epoch 160, PyTorch weighted-mean reduction, LR x0.01 at 160 and x0.0001 at 180.

    ltjax-train --config experiments/configs/ldam_drw.py:cifar10-if100

Expected top-1 (%): CIFAR-10-LT IF 100/50/10: 77.03 / 81.53 / 88.16; CIFAR-100-LT: 42.04 / 47.71 / 58.71
(LDAM paper, as quoted in FFDS Table 1a).
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar10-if100"):
    loss = {"name": "ldam_drw", "max_margin": 0.5, "scale": 30.0, "drw_start": 0.8, "beta": 0.9999}
    return recipes.reference_config(argument, loss, lr_decay=recipes.LDAM_DECAY, head="normed")
