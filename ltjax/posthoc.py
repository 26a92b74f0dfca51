"""Post-hoc corrections of a trained model's predictions, and the choice of their strength on held-out data.

    logit adjustment (Menon et al., ICLR 2021):   z - tau * log(prior)                    (tau = 0: none)
    tau-normalisation (Kang et al., ICLR 2020):   f . w_c / ||w_c||^tau, no bias           (tau = 0: raw weights)
    IIF (Alexandridis et al., IEEE TIP 2023):     z * iif(counts, variant)

Each is a pure function of a split's logits or features and the training set's counts; `CORRECTIONS` names them
with the values `ltjax-eval --select-on validation` tries (the grid of the references: tau-normalisation's
`tau_norm.py` sweeps 0..2 in steps of 0.1). tau-normalisation follows `classifier-balancing/tau_norm.py`: the
normalised weights' dot product with the features, without the bias, so it needs a linear head.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from ltjax import losses
from ltjax.losses.class_vectors import IIF_VARIANTS


@dataclasses.dataclass(frozen=True)
class Outputs:
    """A split's model outputs, on the host.

    Attributes:
      logits: `[N, C]` the head's logits.
      features: `[N, D]` penultimate features.
      labels: `[N]` int labels.
    """

    logits: np.ndarray
    features: np.ndarray
    labels: np.ndarray


def logit_adjustment(outputs: Outputs, head: dict, class_counts: np.ndarray, tau: float) -> np.ndarray:
    """`z - tau * log(prior)` (with the reference's 1e-12 inside the log)."""
    prior = np.asarray(class_counts, np.float64) / np.sum(class_counts)
    return np.asarray(losses.posthoc_logit_adjustment(outputs.logits, class_priors=prior, tau=tau))


def tau_normalization(outputs: Outputs, head: dict, class_counts: np.ndarray, tau: float) -> np.ndarray:
    """`dot(features, w_c) / ||w_c||^tau` with the linear head's kernel `[D, C]` (columns are class weights)."""
    if "bias" not in head or "kernel" not in head:
        raise ValueError("tau-normalisation rescales a linear head's class weights; this model's head has "
                         f"parameters {sorted(head)} (train with --config.model.head=linear)")
    kernel = np.asarray(head["kernel"], np.float64)
    norms = np.linalg.norm(kernel, axis=0, keepdims=True)
    return np.asarray(outputs.features, np.float64) @ (kernel / norms**tau)


def inverse_image_frequency(outputs: Outputs, head: dict, class_counts: np.ndarray, variant: str) -> np.ndarray:
    """`z * iif(counts, variant)`: IIF applied to a model trained with plain cross-entropy."""
    return np.asarray(losses.iif_logits(outputs.logits, class_counts=class_counts, variant=variant))


@dataclasses.dataclass(frozen=True)
class Correction:
    """A post-hoc correction: `apply(outputs, head_params, class_counts, value) -> logits`, the value's name, its
    default and the values selection tries."""

    apply: Callable[[Outputs, dict, np.ndarray, object], np.ndarray]
    value_name: str
    default: object
    grid: Sequence


CORRECTIONS = {
    "la": Correction(logit_adjustment, "tau", 1.0, tuple(np.round(np.linspace(0.0, 3.0, 13), 4))),
    "tau_norm": Correction(tau_normalization, "tau", 1.0, tuple(np.round(np.linspace(0.0, 2.0, 21), 4))),
    "iif": Correction(inverse_image_frequency, "variant", "raw", IIF_VARIANTS),
}
