"""SWRM (seed paper; no public code): CE for 140 epochs, then the similarity class prototypes -> 1-D t-SNE ->
window weights and margins (W 15, beta 1) for the last 60 epochs; weight decay 1e-4, LR x0.1 at 140 and x0.01 at 180.
DySWRM: `--config.loss.name=dyswrm` (a trainable coordinate vector instead of the t-SNE one).

    ltjax-train --config experiments/configs/swrm.py:cifar100-if100

Expected top-1 (%), CIFAR-100-LT IF 100/50/10: SWRM 46.86 / 51.70 / 62.19; DySWRM 46.82 / 51.92 / 62.28.
The open points the paper leaves (window edges, similarity kernel, scaling) are settled in
`ltjax.losses.similarity_window`.
"""
from ltjax.configs import recipes


def get_config(argument: str = "cifar100-if100"):
    loss = {"name": "swrm", "swrm_start": 0.7, "window_size": 15, "beta": 1.0, "kernel": "student_t"}
    return recipes.reference_config(argument, loss, lr_decay=((0.7, 0.1), (0.9, 0.01)), weight_decay=1e-4)
