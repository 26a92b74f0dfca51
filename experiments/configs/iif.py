"""IIF loss (Alexandridis et al., IEEE TIP 2023; `kostas1515/iif`): CE on logits scaled by the inverse image
frequency, predicting with the scaled logits, on IIF's cosine classifier (scale 16).

    ltjax-train --config experiments/configs/iif.py:cifar100-if100
    ltjax-train --config experiments/configs/iif.py:cifar100-if100 --config.loss.variant=smooth

Expected: the poster reports CIFAR-100-LT (IF 100) 48.8 % with the authors' recipe, which differs from this one:
SE-ResNet-32, 400 epochs, batch 64, mixup 0.2, AutoAugment + Cutout, then 20 epochs of decoupled classifier
retraining with IIF-smooth. ltjax trains IIF end to end on the shared LDAM-style recipe, so expect lower numbers.
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar100-if100"):
    return recipes.reference_config(argument, {"name": "iif", "variant": "raw"}, head="cosine")
