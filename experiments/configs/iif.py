"""IIF loss (Alexandridis et al., IEEE TIP 2023; `kostas1515/iif`): CE on logits scaled by the inverse image
frequency, predicting with the scaled logits, on IIF's cosine classifier (scale 16).

    ltjax-train --config experiments/configs/iif.py:cifar100-if100
    ltjax-train --config experiments/configs/iif.py:cifar100-if100 --config.loss.variant=smooth

Expected: the poster reports CIFAR-100-LT (IF 100) 48.8 % with the authors' recipe, not this one; expect lower
numbers here. This recipe is the shared LDAM-style one that the other methods train with, so that IIF is compared
with them on one recipe. Every difference from the authors' CIFAR recipe (`classification/README.md`, `train.py`,
`initialisers.py` of their repository):

| | this recipe | the IIF authors' |
|---|---|---|
| backbone | ResNet-32 with IIF's cosine classifier (scale 16) | SE-ResNet-32 with the same classifier |
| epochs, batch | 200 epochs, batch 128 | 400 epochs, batch 64 (4 GPUs x 16) |
| weight decay | 2e-4 | 1e-4 |
| learning rate | 0.1, x0.1 from epoch 160 and x0.01 from 180 | 0.1, x0.01 at epochs 360 and 380 |
| warm-up | linear over 5 epochs, per epoch | linear in epoch 0, per iteration (min(1000, iterations - 1), from 1e-3) |
| augmentation | pad-4 crop and flip | crop and flip, AutoAugment (CIFAR10Policy), Cutout (1 hole, 16 px), mixup 0.2 |
| training | the IIF loss end to end | plain CE, then stage 2 (next row), or post-hoc IIF |
| stage 2 | none | 20 epochs of decoupled classifier retraining with IIF-smooth (xavier re-init, lr 1e-4, no mixup) |
| reported | the final epoch; a table adds the best epoch | the best test accuracy over the epochs |

The authors' two-stage pipeline is also in reach here: CE, then `ltjax-eval --posthoc iif --value smooth`, or cRT.
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar100-if100"):
    return recipes.reference_config(argument, {"name": "iif", "variant": "raw"}, head="cosine")
