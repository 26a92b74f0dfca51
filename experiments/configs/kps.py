"""KPS loss with gradient adjustment (Li, Cheung, Hu, TPAMI 2022; `Keke921/KPSLoss`): cosine head, max margin 0.2,
scale 15, GA from epoch 120, batch 64, LR x0.1 at 160 and x0.01 at 180, split seed 666; predicts with raw cosines.

    ltjax-train --config experiments/configs/kps.py:cifar10-if100

Expected top-1 (%), from the authors' slides (errors 18.77 / 15.41 and 54.97 / 50.82):
CIFAR-10-LT IF 100/50: 81.23 / 84.59; CIFAR-100-LT IF 100/50: 45.03 / 49.18.
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar10-if100"):
    loss = {"name": "kps", "max_margin": 0.2, "scale": 15.0, "ga_start": 0.6}
    return recipes.reference_config(argument, loss, batch_size=64, head="normed", seed=666, split_seed=666)
