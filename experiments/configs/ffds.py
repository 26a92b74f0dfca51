"""D-FFDS (Nah et al., ICIP 2023; `nwjun/FFDS-Loss`, `config/DFFDS/*`): CE until epoch 130 of 200, then FFDS with the
released per-dataset hyper-parameters (epsilon 0.1, k 0.9, concave FreqFocus, class-balanced weights summing to 1/C).
One-phase FFDS: `--config.loss.ffds_start=0`.

    ltjax-train --config experiments/configs/ffds.py:cifar100-if100
    ltjax-train --config experiments/configs/ffds.py:tiny_imagenet-if100-pretrained \
        --config.dataset.data_dir=tiny-imagenet-200 --config.model.pretrained=resnet18-f37072fd.safetensors

Expected top-1 (%), FFDS Table 1a, CIFAR-10-LT IF 100/50/10 | CIFAR-100-LT IF 100/50/10:
D-FFDS 79.93 / 82.94 / 88.48 | 43.46 / 48.48 / 58.82; FFDS (one phase) 75.60 / 79.82 / 87.46 | 40.74 / 45.67 / 58.66;
Tiny-ImageNet-LT IF 100: 43.86 with an ImageNet-pretrained ResNet-18 (`tiny_imagenet-if100-pretrained`; the plain
`tiny_imagenet-if100` trains a small-input ResNet-18 from scratch on 64-px images instead).
The published numbers fed DynaSmooth with test-set statistics (a reference bug ltjax does not copy).

The pretrained recipe is the released `config/DFFDS/tiny_imagenet/tiny_imagenet_imb001.yaml` with `train.py`:
torchvision's ImageNet ResNet-18 (`ResNet18_Weights.IMAGENET1K_V1`, converted by ltjax from the `.pth`, or a
`.safetensors` copy, named by `--config.model.pretrained`), its classifier replaced for the 200 classes; random-resized
224-px crops of the 64-px images and flips, evaluation resized to 256 and centre-cropped to 224, ImageNet's mean and
std; 100 epochs, batch 128, SGD lr 0.1 (momentum 0.9, weight decay 2e-4) with a 5-epoch linear warm-up and x0.01
from epoch 16 (1-indexed); FFDS from epoch 11 (`trigger_epoch` 10, 0-indexed), groups of 20 classes.
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


PRETRAINED = "-pretrained"


def get_config(argument: str = "cifar10-if100"):
    pretrained = argument.endswith(PRETRAINED)
    argument = argument.removesuffix(PRETRAINED)
    dataset, imbalance_factor = recipes.parse_argument(argument)
    # Imbalance factors without a released config take the IF-100 values.
    beta, gamma_min, gamma_max, group_ends = RELEASED.get((dataset, int(imbalance_factor)), RELEASED[(dataset, 100)])
    loss = {
        "name": "ffds", "ffds_start": 0.65, "beta": beta, "gamma_min": gamma_min, "gamma_max": gamma_max,
        "focus_form": "concave", "label_smoothing": 0.1, "smoothing_strength": 0.9, "group_ends": group_ends,
    }
    if not pretrained:
        return recipes.reference_config(argument, loss, seed=5)
    if dataset != "tiny_imagenet":
        raise ValueError(f"the pretrained FFDS recipe is Tiny-ImageNet-LT's, not {dataset}'s: tiny_imagenet-if100"
                         f"{PRETRAINED}")
    config = recipes.reference_config(argument, {**loss, "ffds_start": 10}, lr_decay=((15, 0.01),), num_epochs=100,
                                      seed=5)
    config.optimizer.warmup = 5
    config.model.name = "resnet18"
    config.model.pretrained = "resnet18-f37072fd.pth"
    config.dataset.augmentation = "random_resized_crop"
    config.dataset.image_size = 224
    return config
