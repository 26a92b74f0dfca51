"""Long-tail losses: pure, jit/vmap/grad-safe functions returning per-example values.

Every loss takes floating logits `[..., C]` and integer labels `[...]`, per-class data as arrays, hyper-parameters as
keyword arguments, and returns per-example losses `[...]`. Reduce them with `reduction.mean` or
`reduction.weighted_mean`. A label outside [0, C) yields NaN for its example.

The dtype rule, for every loss and helper: the math runs in `promote(float32, input dtype)` and the output has that
dtype. For a loss the input is the logits: bfloat16, float16 and float32 logits compute in float32, float64 logits
(with `jax_enable_x64`) in float64, and the per-class inputs and hyper-parameters are cast to that dtype. For a
per-class helper (`class_balanced_weights`, `ldam_margins`, ...) the input is its count or coordinate vector
(integer counts compute in float32). So a float64 prototype is checked with `jax.test_util.check_grads` at its
default tolerances.

Every hyper-parameter that is a number may be a traced array, so one compiled program can `vmap` over a sweep of it
(range checks then apply only to concrete values). Options that pick a code path stay static Python values:
`loss_type`, `variant`, `focus_form`, `normalization`/`weight_normalization`, `kernel`, `window_size`, `norm_order`,
and the `stop_gradient_*` flags. Counts are checked for finite, positive values at trace time when concrete and at
run time when traced.
"""
from ltjax.losses.bilateral import bbn_logits, bbn_loss
from ltjax.losses.causal_norm import moving_feature_direction, tde_logits
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
from ltjax.losses.disalign import disalign_logits, grw_class_weights, grw_loss
from ltjax.losses.equalization import eql_drop_mask, eql_tail_classes, softmax_eql_loss
from ltjax.losses.ffds import dynasmooth_probs, ffds_loss
from ltjax.losses.gaussian_cloud import gcl_cloud, gcl_cloud_amplitudes, gcl_loss
from ltjax.losses.iif import iif_logits, iif_loss
from ltjax.losses.influence import influence_balanced_loss
from ltjax.losses.label_aware import label_aware_smoothing_loss, las_smoothing
from ltjax.losses.lade import (
    lade_ce_loss,
    lade_logits,
    lade_loss,
    lade_regularizer,
    lade_regularizer_per_example,
)
from ltjax.losses.logit_adjustment import balanced_softmax_loss, logit_adjusted_loss, posthoc_logit_adjustment
from ltjax.losses.margin import kps_loss, ldam_loss, swrm_loss
from ltjax.losses.reduction import mean, weighted_mean
from ltjax.losses.reslt import reslt_class_groups, reslt_logits, reslt_loss
from ltjax.losses.ride import RideClassVectors, ride_class_vectors, ride_loss
from ltjax.losses.seesaw import seesaw_count_update, seesaw_log_factors, seesaw_loss
from ltjax.losses.similarity_window import swm_margins, swr_weights, tsne_coordinates, window_members
from ltjax.losses.vector_scaling import vs_logit_scales_and_offsets, vs_loss

__all__ = [
    "balanced_softmax_loss",
    "bbn_logits",
    "bbn_loss",
    "class_balanced_loss",
    "class_balanced_weights",
    "disalign_logits",
    "dynasmooth_probs",
    "eql_drop_mask",
    "eql_tail_classes",
    "ffds_loss",
    "focal_loss",
    "freqfocus_gammas",
    "gcl_cloud",
    "gcl_cloud_amplitudes",
    "gcl_loss",
    "grw_class_weights",
    "grw_loss",
    "iif_logits",
    "iif_loss",
    "iif_weights",
    "influence_balanced_loss",
    "inverse_frequency_weights",
    "kps_loss",
    "kps_margins",
    "kps_radii",
    "kps_scales",
    "label_aware_smoothing_loss",
    "lade_ce_loss",
    "lade_logits",
    "lade_loss",
    "lade_regularizer",
    "lade_regularizer_per_example",
    "las_smoothing",
    "ldam_loss",
    "ldam_margins",
    "logit_adjusted_loss",
    "mean",
    "moving_feature_direction",
    "normalize_class_weights",
    "posthoc_logit_adjustment",
    "RideClassVectors",
    "reslt_class_groups",
    "reslt_logits",
    "reslt_loss",
    "ride_class_vectors",
    "ride_loss",
    "seesaw_count_update",
    "seesaw_log_factors",
    "seesaw_loss",
    "softmax_cross_entropy",
    "softmax_eql_loss",
    "swm_margins",
    "swr_weights",
    "swrm_loss",
    "tde_logits",
    "tsne_coordinates",
    "vs_logit_scales_and_offsets",
    "vs_loss",
    "weighted_mean",
    "window_members",
]
