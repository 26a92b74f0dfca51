"""D-FFDS (Nah et al., ICIP 2023; `nwjun/FFDS-Loss`, `config/DFFDS/*`): CE until epoch 130 of 200, then FFDS with the
released per-dataset hyper-parameters (epsilon 0.1, k 0.9, concave FreqFocus, class-balanced weights summing to 1/C).
One-phase FFDS: `--config.loss.ffds_start=0`.

    ltjax-train --config experiments/configs/ffds.py:cifar100-if100

Expected top-1 (%), FFDS Table 1a, CIFAR-10-LT IF 100/50/10 | CIFAR-100-LT IF 100/50/10:
D-FFDS 79.93 / 82.94 / 88.48 | 43.46 / 48.48 / 58.82; FFDS (one phase) 75.60 / 79.82 / 87.46 | 40.74 / 45.67 / 58.66;
Tiny-ImageNet-LT IF 100: 43.86 with an ImageNet-pretrained ResNet-18 (ltjax trains from scratch).
The published numbers fed DynaSmooth with test-set statistics (a reference bug ltjax does not copy).
"""
from ltjax.configs import recipes

# (beta, gamma_min, gamma_max, group block ends) per released config. CIFAR-10 IF 50's released groups,
# [10, 20, ..., 100] with C = 10, act as a single group.
RELEASED = {
    ("cifar10", 100): (0.9999, 0.0, 3.0, (3, 6, 10)),
    ("cifar10", 50): (0.9999, 1.0, 4.5, (10,)),
    ("cifar10", 10): (0.9999, 2.5, 4.5, (5, 10)),
    ("cifar100", 100): (0.9999, 0.0, 4.5, tuple(range(10, 101, 10))),
    ("cifar100", 50): (0.9999, 1.5, 5.0, tuple(range(20, 101, 20))),
    ("cifar100", 10): (0.999, 2.5, 4.0, tuple(range(20, 101, 20))),
    ("tiny_imagenet", 100): (0.9999, 0.0, 3.0, tuple(range(20, 201, 20))),
}


def get_config(argument: str = "cifar10-if100"):
    dataset, imbalance_factor = recipes.parse_argument(argument)
    # Imbalance factors without a released config take the IF-100 values.
    beta, gamma_min, gamma_max, group_ends = RELEASED.get((dataset, int(imbalance_factor)), RELEASED[(dataset, 100)])
    loss = {
        "name": "ffds", "ffds_start": 0.65, "beta": beta, "gamma_min": gamma_min, "gamma_max": gamma_max,
        "focus_form": "concave", "label_smoothing": 0.1, "smoothing_strength": 0.9, "group_ends": group_ends,
    }
    return recipes.reference_config(argument, loss, seed=5)
