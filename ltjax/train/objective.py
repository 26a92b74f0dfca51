"""The training objective named by a config: a loss of `ltjax.losses` with its deferred schedule and state.

`make_objective(loss_config, stats)` returns a pure per-device function

    objective(outputs, labels, epoch, loss_state, loss_params) -> BatchLoss(total, normalizer, true_class_probs)

`total / normalizer`, both summed over devices, is the batch loss the reference code minimises: `normalizer` is
the number of examples for a plain mean, and the sum of the examples' class weights for PyTorch's
`cross_entropy(weight=...)` mean (LDAM-DRW). Deferred phases switch with `lax.cond` on the traced epoch, so one
compiled step serves every phase.

Each loss is a builder in `OBJECTIVES`: `builder(loss_config, stats, num_epochs)` returns
`fn(outputs, labels, epoch, loss_state, loss_params) -> (per_example_losses, sample_weights or None)`. Register a
new loss by adding a builder.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from ltjax import dynasmooth, losses, schedules
from ltjax.losses._checks import check_choice
from ltjax.models import ModelOutput
from ltjax.stats import ClassStats


@flax.struct.dataclass
class LossState:
    """Loss state carried in the train state and checkpointed with it.

    Attributes:
      dynasmooth: FFDS's group means (every loss carries one, so all train states share one structure).
      swrm_coordinates: `[C]` SWRM's 1-D class coordinates (t-SNE of the prototypes), set when its phase 2 starts.
    """

    dynasmooth: dynasmooth.DynaSmoothState
    swrm_coordinates: jax.Array


class BatchLoss(NamedTuple):
    total: jax.Array  # sum of this device's per-example losses
    normalizer: jax.Array  # what the reference divides the global sum by
    true_class_probs: jax.Array  # [B] softmax probability of each label, for DynaSmooth


PerExample = Callable[..., tuple[jax.Array, jax.Array | None]]


def init_loss_state(stats: ClassStats) -> LossState:
    return LossState(
        dynasmooth=dynasmooth.init(stats.group_of_class, stats.num_groups),
        swrm_coordinates=jnp.zeros((stats.num_classes,), jnp.float32),
    )


def init_loss_params(loss_config: ml_collections.ConfigDict, num_classes: int, seed: int) -> dict:
    """Trainable parameters of the loss itself: DySWRM's coordinate vector; empty for every other loss."""
    if loss_config.name != "dyswrm":
        return {}
    return {"coordinates": jax.random.normal(jax.random.key(seed), (num_classes,), jnp.float32)}


def _deferred(active: jax.Array, phase_two: Callable[[], jax.Array], logits, labels) -> jax.Array:
    """Cross-entropy before a deferred phase, `phase_two()` from it on (one program, one branch executed)."""
    return jax.lax.cond(active, lambda _: phase_two(), lambda _: losses.softmax_cross_entropy(logits, labels), None)


def _cross_entropy(cfg, stats, num_epochs) -> PerExample:
    return lambda out, y, epoch, state, params: (losses.softmax_cross_entropy(out.logits, y), None)


def _focal(cfg, stats, num_epochs) -> PerExample:
    return lambda out, y, epoch, state, params: (losses.focal_loss(out.logits, y, gamma=cfg.get("gamma", 1.0)), None)


def _class_balanced(cfg, stats, num_epochs) -> PerExample:
    def fn(out, y, epoch, state, params):
        per_example = losses.class_balanced_loss(
            out.logits, y, class_counts=stats.counts, beta=cfg.get("beta", 0.9999),
            loss_type=cfg.get("type", "focal"), gamma=cfg.get("gamma", 1.0),
        )
        return per_example, None
    return fn


def _ldam_drw(cfg, stats, num_epochs) -> PerExample:
    def fn(out, y, epoch, state, params):
        weights = schedules.drw_class_weights(
            stats.counts, epoch, switch_epoch=cfg.get("drw_epoch", 160), beta=cfg.get("beta", 0.9999)
        )
        per_example = losses.ldam_loss(
            out.logits, y, class_counts=stats.counts, max_margin=cfg.get("max_margin", 0.5),
            scale=cfg.get("scale", 30.0), class_weights=weights,
        )
        return per_example, weights[y]
    return fn


def _influence_balanced(cfg, stats, num_epochs) -> PerExample:
    def fn(out, y, epoch, state, params):
        def influence_balanced():
            return losses.influence_balanced_loss(
                out.logits, y, jnp.sum(jnp.abs(out.features), axis=-1), class_counts=stats.counts,
                variant=cfg.get("variant", "ib"), alpha=cfg.get("alpha", 1000.0), beta=cfg.get("beta", 0.9999),
                gamma=cfg.get("gamma", 1.0),
            )
        active = schedules.ib_active(epoch, start_epoch=cfg.get("start_epoch", 100))
        return _deferred(active, influence_balanced, out.logits, y), None
    return fn


def _ffds(cfg, stats, num_epochs) -> PerExample:
    def fn(out, y, epoch, state, params):
        def ffds():
            return losses.ffds_loss(
                out.logits, y, class_counts=stats.counts,
                class_mean_probs=dynasmooth.class_mean_probs(state.dynasmooth), has_means=state.dynasmooth.has_means,
                beta=cfg.get("beta", 0.9999), gamma_min=cfg.get("gamma_min", 0.0),
                gamma_max=cfg.get("gamma_max", 3.0), focus_form=cfg.get("focus_form", "concave"),
                label_smoothing=cfg.get("label_smoothing", 0.1), smoothing_strength=cfg.get("smoothing_strength", 0.9),
            )
        active = schedules.dffds_active(epoch, trigger_epoch=cfg.get("trigger_epoch", 130))
        return _deferred(active, ffds, out.logits, y), None
    return fn


def _kps(cfg, stats, num_epochs) -> PerExample:
    def fn(out, y, epoch, state, params):
        per_example = losses.kps_loss(
            out.logits, y, class_counts=stats.counts, max_margin=cfg.get("max_margin", 0.2),
            scale=cfg.get("scale", 15.0),
            gradient_adjustment=schedules.kps_ga_active(epoch, start_epoch=cfg.get("ga_epoch", 120)),
        )
        return per_example, None
    return fn


def _iif(cfg, stats, num_epochs) -> PerExample:
    return lambda out, y, epoch, state, params: (
        losses.iif_loss(out.logits, y, class_counts=stats.counts, variant=cfg.get("variant", "raw")), None
    )


def _logit_adjusted(cfg, stats, num_epochs) -> PerExample:
    return lambda out, y, epoch, state, params: (
        losses.logit_adjusted_loss(out.logits, y, class_priors=stats.prior, tau=cfg.get("tau", 1.0)), None
    )


def _balanced_softmax(cfg, stats, num_epochs) -> PerExample:
    return lambda out, y, epoch, state, params: (
        losses.balanced_softmax_loss(out.logits, y, class_counts=stats.counts), None
    )


def _similarity_window(cfg, stats, num_epochs, *, trainable: bool) -> PerExample:
    window = cfg.get("window_size", 15)

    def fn(out, y, epoch, state, params):
        coordinates = params["coordinates"] if trainable else state.swrm_coordinates

        def swrm():
            return losses.swrm_loss(
                out.logits, y,
                class_weights=losses.swr_weights(stats.counts, coordinates, window_size=window),
                margins=losses.swm_margins(coordinates, window_size=window, beta=cfg.get("beta", 1.0),
                                           kernel=cfg.get("kernel", "student_t")),
            )
        # SWRM trains its last `active_epochs` (CIFAR: 60 of 200) with the similarity loss; DySWRM learns its
        # coordinates with the model, by default over the same phase.
        active = schedules.swrm_active(epoch, num_epochs=num_epochs, active_epochs=cfg.get("active_epochs", 60))
        return _deferred(active, swrm, out.logits, y), None
    return fn


OBJECTIVES: dict[str, Callable[[ml_collections.ConfigDict, ClassStats, int], PerExample]] = {
    "ce": _cross_entropy,
    "focal": _focal,
    "cb": _class_balanced,
    "ldam_drw": _ldam_drw,
    "ib": _influence_balanced,
    "ffds": _ffds,
    "kps": _kps,
    "iif": _iif,
    "la": _logit_adjusted,
    "bs": _balanced_softmax,
    "swrm": functools.partial(_similarity_window, trainable=False),
    "dyswrm": functools.partial(_similarity_window, trainable=True),
}

# The classifier head each reference trains with; a config may override it.
REFERENCE_HEADS = {"ldam_drw": "normed", "kps": "normed"}


def make_objective(
    loss_config: ml_collections.ConfigDict, stats: ClassStats, num_epochs: int
) -> Callable[..., BatchLoss]:
    """The per-device objective of `loss_config.name` (a key of `OBJECTIVES`) for a training set with `stats`,
    in a run of `num_epochs`.

    The other keys of `loss_config` are the loss's hyper-parameters and switch epochs (see each builder); missing
    ones take the reference CIFAR values.
    """
    check_choice(loss_config.name, OBJECTIVES, "loss name")
    per_example_fn = OBJECTIVES[loss_config.name](loss_config, stats, num_epochs)

    def objective(outputs: ModelOutput, labels, epoch, state: LossState, params: dict) -> BatchLoss:
        per_example, sample_weights = per_example_fn(outputs, labels, epoch, state, params)
        normalizer = jnp.sum(sample_weights) if sample_weights is not None else jnp.float32(labels.shape[0])
        true_class_probs = jnp.exp(-losses.softmax_cross_entropy(outputs.logits, labels))
        return BatchLoss(jnp.sum(per_example), normalizer, true_class_probs)

    return objective


def predict_logits(loss_config: ml_collections.ConfigDict, stats: ClassStats, outputs: ModelOutput) -> jax.Array:
    """Logits whose argmax is the prediction, as each reference evaluates (IIF: `z * iif`; KPS: raw cosines)."""
    if loss_config.name == "iif":
        return losses.iif_logits(outputs.logits, class_counts=stats.counts, variant=loss_config.get("variant", "raw"))
    return outputs.logits


def reference_head(loss_config: ml_collections.ConfigDict) -> str:
    return REFERENCE_HEADS.get(loss_config.name, "linear")
