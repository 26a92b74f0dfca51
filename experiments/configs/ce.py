"""Cross-entropy baseline, the FFDS paper's recipe (Nah et al., ICIP 2023, Table 1a, "CE").

    ltjax-train --config experiments/configs/ce.py:cifar10-if100

Expected top-1 (%), from FFDS Table 1a: CIFAR-10-LT IF 100/50/10: 70.47 / 77.21 / 86.40;
CIFAR-100-LT: 38.85 / 43.24 / 56.09; Tiny-ImageNet-LT IF 100: 38.19 (pretrained ResNet-18 there).
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar10-if100"):
    return recipes.reference_config(argument, {"name": "ce"}, seed=5)
