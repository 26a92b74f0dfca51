"""Long-tail losses: pure, jit/vmap/grad-safe functions returning per-example values.

Every loss takes logits `[..., C]` (float32 or bfloat16; the math runs in float32) and integer labels `[...]`,
per-class data as arrays, hyper-parameters as keyword arguments, and returns float32 losses `[...]`. Reduce them
with `reduction.mean` or `reduction.weighted_mean`. A label outside [0, C) yields NaN for its example.
"""
from ltjax.losses.class_vectors import (
    class_balanced_weights,
    freqfocus_gammas,
    iif_weights,
    inverse_frequency_weights,
    kps_margins,
    kps_radii,
    kps_scales,
    ldam_margins,
    normalize_class_weights,
)
from ltjax.losses.cross_entropy import class_balanced_loss, focal_loss, softmax_cross_entropy
from ltjax.losses.ffds import dynasmooth_probs, ffds_loss
from ltjax.losses.iif import iif_logits, iif_loss
from ltjax.losses.influence import influence_balanced_loss
from ltjax.losses.logit_adjustment import balanced_softmax_loss, logit_adjusted_loss, posthoc_logit_adjustment
from ltjax.losses.margin import kps_loss, ldam_loss, swrm_loss
from ltjax.losses.reduction import mean, weighted_mean
from ltjax.losses.similarity_window import swm_margins, swr_weights, tsne_coordinates, window_members

__all__ = [
    "balanced_softmax_loss",
    "class_balanced_loss",
    "class_balanced_weights",
    "dynasmooth_probs",
    "ffds_loss",
    "focal_loss",
    "freqfocus_gammas",
    "iif_logits",
    "iif_loss",
    "iif_weights",
    "influence_balanced_loss",
    "inverse_frequency_weights",
    "kps_loss",
    "kps_margins",
    "kps_radii",
    "kps_scales",
    "ldam_loss",
    "ldam_margins",
    "logit_adjusted_loss",
    "mean",
    "normalize_class_weights",
    "posthoc_logit_adjustment",
    "softmax_cross_entropy",
    "swm_margins",
    "swr_weights",
    "swrm_loss",
    "tsne_coordinates",
    "weighted_mean",
    "window_members",
]
