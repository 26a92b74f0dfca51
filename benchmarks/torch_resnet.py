"""The PyTorch reference train step that `train_throughput.py` measures ltjax against (needs the `bench` extra).

Written after the code the long-tail papers trained with, so the comparison is with what their users run:

- the network of kaidic/LDAM-DRW `models/resnet_cifar.py` (`resnet32`): BasicBlocks with the parameter-free
  option-A shortcut, 16/32/64 channels, [5, 5, 5] blocks, kaiming-normal init of every convolution and linear
  weight; a `NormedLinear` cosine head for LDAM-DRW and a plain `nn.Linear` for cross-entropy and FFDS;
- the step of its `cifar_train.py`: uint8 images normalised on the fly, forward, loss, backward, and
  `torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=2e-4)`;
- the losses: cross-entropy; LDAM (margins proportional to n^-1/4 with maximum 0.5, scale 30) with the DRW
  class-balanced weights (beta 0.9999, summing to C) and PyTorch's weighted mean; FFDS as nwjun/FFDS-Loss
  `losses/ffds.py` computes it, in its active phase, group statistics
  accumulated under `no_grad` as in training.

bf16 runs the forward pass and the loss under `torch.autocast(device, dtype=torch.bfloat16)`; the parameters, the
gradients and the optimizer stay float32. The step runs on the CPU or on a CUDA device (`make_step(..., device=)`);
the losses' per-class tensors are buffers, so they follow the module to the device.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def option_a_shortcut(x: torch.Tensor, planes: int) -> torch.Tensor:
    """Every other row and column, then planes // 4 zero channels on each side (He et al. option A)."""
    return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.planes = planes
        self.changes_shape = stride != 1 or in_planes != planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = option_a_shortcut(x, self.planes) if self.changes_shape else x
        return F.relu(out + shortcut)


class NormedLinear(nn.Module):
    """Cosines between the features and the columns of a `[D, C]` weight (LDAM's cosine head)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        # uniform(-1, 1) columns rescaled to unit norm.
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


class ResNet32(nn.Module):
    def __init__(self, num_classes: int, normed_head: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(5):
                blocks.append(BasicBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.head = NormedLinear(64, num_classes) if normed_head else nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.blocks(out)
        out = F.avg_pool2d(out, out.size(3)).flatten(1)
        return self.head(out)


def class_balanced_weights(counts: np.ndarray, beta: float) -> torch.Tensor:
    """(1 - beta) / (1 - beta^n), before normalisation."""
    return torch.tensor((1.0 - beta) / (1.0 - np.power(beta, counts)), dtype=torch.float32)


class LDAMLoss(nn.Module):
    """LDAM with DRW weights: `cross_entropy(s * (cos - m_y onehot(y)), y, weight=w)`, a weighted mean."""

    def __init__(self, counts: np.ndarray, max_margin: float = 0.5, scale: float = 30.0, beta: float = 0.9999):
        super().__init__()
        margins = 1.0 / np.sqrt(np.sqrt(counts))
        self.register_buffer("margins", torch.tensor(margins * (max_margin / margins.max()), dtype=torch.float32))
        weights = class_balanced_weights(counts, beta)
        self.register_buffer("weights", weights / weights.sum() * len(counts))
        self.scale = scale

    def forward(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = F.one_hot(labels, cosines.shape[1]).to(cosines.dtype)
        shifted = cosines - target * self.margins[labels][:, None].to(cosines.dtype)
        return F.cross_entropy(self.scale * shifted, labels, weight=self.weights.to(cosines.dtype))


class FFDSLoss(nn.Module):
    """FFDS in its active phase: class-balanced weights (sum 1/C), FreqFocus exponents (concave), DynaSmooth.

    `loss_i = w_y * (1 - p_hat)^gamma_y * sum_j -Q_j log clip(p)_j`, the modulator without gradient; the batch's
    clipped true-class probabilities are added to per-group sums, and `group_means` holds the previous epoch's.
    """

    EPS = 1e-6

    def __init__(self, counts: np.ndarray, group_of_class: np.ndarray, *, beta: float = 0.9999,
                 gamma_min: float = 0.0, gamma_max: float = 3.0, smoothing: float = 0.1, strength: float = 0.9):
        super().__init__()
        weights = class_balanced_weights(counts, beta)
        self.register_buffer("weights", weights / (weights.sum() * len(counts)))
        x = (counts - counts.min()) / max(counts.max() - counts.min(), 1)
        self.register_buffer(
            "gammas", torch.tensor(gamma_min + (gamma_max - gamma_min) * np.tanh(4.0 * x), dtype=torch.float32))
        self.register_buffer("group_of_class", torch.tensor(group_of_class, dtype=torch.long))
        num_groups = int(group_of_class.max()) + 1
        self.register_buffer("group_prob_sums", torch.zeros(num_groups))
        self.register_buffer("group_counts", torch.zeros(num_groups))
        # A finished epoch's means: the FFDS branch runs.
        self.register_buffer("group_means", torch.full((num_groups,), 0.5))
        self.smoothing, self.strength = smoothing, strength

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        num_classes = logits.shape[1]
        probs = torch.softmax(logits - logits.max(dim=1, keepdim=True).values, dim=1).clamp(self.EPS, 1 - self.EPS)
        with torch.no_grad():
            true_probs = probs.gather(1, labels[:, None]).squeeze(1)
            groups = self.group_of_class[labels]
            self.group_prob_sums.index_add_(0, groups, true_probs)
            self.group_counts.index_add_(0, groups, torch.ones_like(true_probs))
            means = self.group_means[groups]
            distance = true_probs.sqrt() - means.sqrt()
            pull = (self.strength * distance) ** 2
            smoothed = true_probs - pull * (true_probs - means)
            modulator = (1.0 - smoothed) ** self.gammas[labels]
        targets = torch.full_like(probs, self.smoothing / (num_classes - 1))
        targets.scatter_(1, labels[:, None], 1.0 - self.smoothing)
        smoothed_ce = -(targets * probs.log()).sum(dim=1)
        return (smoothed_ce * modulator * self.weights[labels]).mean()


def make_step(loss_name: str, counts: np.ndarray, group_of_class: np.ndarray, bf16: bool, seed: int = 0,
              device: str = "cpu"):
    """`(model, step)` with `step(images_uint8_nchw, labels) -> loss`, one SGD step of the reference recipe on
    `device` (the batch must be there too)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    model = ResNet32(len(counts), normed_head=loss_name == "ldam_drw").to(device)
    criterion = {
        "ce": lambda: nn.CrossEntropyLoss(),
        "ldam_drw": lambda: LDAMLoss(counts),
        "ffds": lambda: FFDSLoss(counts, group_of_class),
    }[loss_name]().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1)
    model.train()

    def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        inputs = (images.float() / 255.0 - mean) / std
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return model, step


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matmul_flops(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Convolution and matrix-product FLOPs of (forward, forward + backward), as `torch.utils.flop_counter` counts
    them (2 per multiply-add, padding included)."""
    from torch.utils.flop_counter import FlopCounterMode

    inputs = images.float() / 255.0
    with FlopCounterMode(display=False) as forward_counter:
        with torch.no_grad():
            model(inputs)
    with FlopCounterMode(display=False) as step_counter:
        logits = model(inputs)
        F.cross_entropy(logits, labels).backward()
    model.zero_grad(set_to_none=True)
    return forward_counter.get_total_flops(), step_counter.get_total_flops()

