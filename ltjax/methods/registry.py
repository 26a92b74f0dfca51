"""One record per method: the names users type, each with its loss, keys, phases, head, prediction rule and state.

Hyper-parameter defaults are read from the loss functions' signatures (`signature_defaults`), so each is written
once, in `ltjax.losses`; phase starts are fractions of the run equal to the reference's switch epoch out of 200.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ltjax import dynasmooth, losses, schedules
from ltjax import stats as class_stats
from ltjax.keys import Key, epoch, number, signature_defaults
from ltjax.losses.class_vectors import FREQFOCUS_FORMS, IIF_VARIANTS, WEIGHT_NORMALIZATIONS
from ltjax.losses.cross_entropy import CLASS_BALANCED_LOSS_TYPES
from ltjax.losses.gaussian_cloud import GCL_CLASSIFIER_DEFAULTS
from ltjax.losses.influence import INFLUENCE_BALANCED_VARIANTS
from ltjax.losses.label_aware import LAS_SHAPES
from ltjax.losses.similarity_window import SIMILARITY_KERNELS
from ltjax.methods.base import Inputs, Method, Network, PerExample, Phase, SecondStage, cross_entropy
from ltjax.schedules import drw_class_weights


def _numbers(inputs: Inputs, *names: str) -> dict:
    return {name: inputs.hp[name] for name in names}


# --- one-phase losses -------------------------------------------------------------------------------------------

CE = Method(
    name="ce",
    summary="softmax cross-entropy, the baseline every table compares with",
    keys=signature_defaults(losses.softmax_cross_entropy, {"label_smoothing": "label smoothing alpha"}),
    phases=(Phase("CE", lambda x: PerExample(
        losses.softmax_cross_entropy(x.logits, x.labels, label_smoothing=x.hp["label_smoothing"]))),),
)

FOCAL = Method(
    name="focal",
    summary="softmax focal loss (Lin et al., ICCV 2017), as kaidic/LDAM-DRW; the FFDS table's FL row",
    keys=signature_defaults(
        losses.focal_loss,
        {"gamma": "focusing exponent", "stop_gradient_modulator": "detach (1 - p_y)^gamma, as the KPS repository"},
        static=("stop_gradient_modulator",),
    ),
    phases=(Phase("focal", lambda x: PerExample(losses.focal_loss(
        x.logits, x.labels, gamma=x.hp["gamma"], stop_gradient_modulator=x.hp["stop_gradient_modulator"]))),),
)

CLASS_BALANCED = Method(
    name="cb",
    summary="class-balanced loss (Cui et al., CVPR 2019): softmax, sigmoid or sigmoid-focal with effective-number "
            "weights; the FFDS table's CB-FL row is loss_type=focal",
    keys=signature_defaults(
        losses.class_balanced_loss,
        {"loss_type": "softmax, sigmoid or focal (sigmoid focal)", "beta": "effective-number beta",
         "gamma": "focusing exponent of the focal type", "normalization": "class weights sum to C, 1/C, or as is"},
        static=("loss_type", "normalization"),
        choices={"loss_type": CLASS_BALANCED_LOSS_TYPES, "normalization": WEIGHT_NORMALIZATIONS},
    ),
    phases=(Phase("CB", lambda x: PerExample(losses.class_balanced_loss(
        x.logits, x.labels, class_counts=x.stats.counts, loss_type=x.hp["loss_type"],
        normalization=x.hp["normalization"], **_numbers(x, "beta", "gamma")))),),
    notes="The CB reference initialises sigmoid models' final bias to -log(C - 1); ltjax's heads keep theirs.",
)

LOGIT_ADJUSTED = Method(
    name="la",
    summary="logit-adjusted loss (Menon et al., ICLR 2021): CE on z + tau log prior",
    keys=signature_defaults(losses.logit_adjusted_loss, {"tau": "temperature of the prior (0: CE)"}),
    phases=(Phase("LA", lambda x: PerExample(losses.logit_adjusted_loss(
        x.logits, x.labels, class_priors=x.stats.prior, tau=x.hp["tau"]))),),
)

BALANCED_SOFTMAX = Method(
    name="bs",
    summary="balanced softmax (Ren et al., NeurIPS 2020): CE on z + log n",
    keys={},
    phases=(Phase("BS", lambda x: PerExample(
        losses.balanced_softmax_loss(x.logits, x.labels, class_counts=x.stats.counts))),),
)

IIF = Method(
    name="iif",
    summary="inverse image frequency (Alexandridis et al., IEEE TIP 2023): CE on z * iif, predicting with z * iif, "
            "on IIF's cosine classifier",
    keys=signature_defaults(
        losses.iif_loss, {"variant": "which IIF vector", "norm_order": "p-norm normalisation of the vector (0: off)"},
        static=("variant", "norm_order"), choices={"variant": IIF_VARIANTS},
    ),
    phases=(Phase("IIF", lambda x: PerExample(losses.iif_loss(
        x.logits, x.labels, class_counts=x.stats.counts, variant=x.hp["variant"],
        norm_order=x.hp["norm_order"]))),),
    head="cosine",
    predict=lambda logits, hp, stats: losses.iif_logits(
        logits, class_counts=stats.counts, variant=hp["variant"], norm_order=hp["norm_order"]),
    notes="The authors train the representation with plain CE (SE-ResNet-32, 400 epochs, mixup, AutoAugment) and "
          "apply IIF afterwards: decoupled classifier retraining at lr 1e-4, or post-hoc (ltjax-eval --posthoc iif). "
          "Trained from scratch at lr 0.1, as this method does, it collapsed on the reduced Tiny-ImageNet-LT table "
          "(2.4% top-1 on either head, CE 9.1%).",
)

# --- deferred (two-phase) methods -------------------------------------------------------------------------------


def _ldam(inputs: Inputs, drw: bool) -> PerExample:
    weights = drw_class_weights(inputs.stats.counts, drw, beta=inputs.hp["beta"])
    per_example = losses.ldam_loss(
        inputs.logits, inputs.labels, class_counts=inputs.stats.counts, class_weights=weights,
        **_numbers(inputs, "max_margin", "scale"),
    )
    return PerExample(per_example, weights[inputs.labels])


LDAM_DRW = Method(
    name="ldam_drw",
    summary="LDAM margins on cosine logits, deferred class-balanced re-weighting (Cao et al., NeurIPS 2019)",
    keys={
        **signature_defaults(losses.ldam_loss, {"max_margin": "margin of the rarest class", "scale": "logit scale s"}),
        **signature_defaults(drw_class_weights, {"beta": "DRW effective-number beta"}),
        "drw_start": epoch(0.8, "epoch DRW starts (reference: 160 of 200)"),
    },
    phases=(
        Phase("LDAM", lambda x: _ldam(x, drw=False)),
        Phase("LDAM-DRW", lambda x: _ldam(x, drw=True), start="drw_start"),
    ),
    head="normed",
    notes="Reduces with PyTorch's weighted mean sum(w_y l) / sum(w_y), as the reference's cross_entropy(weight=w).",
)


def _kps(inputs: Inputs, gradient_adjustment: bool) -> PerExample:
    return PerExample(losses.kps_loss(
        inputs.logits, inputs.labels, class_counts=inputs.stats.counts, gradient_adjustment=gradient_adjustment,
        **_numbers(inputs, "max_margin", "scale", "max_scale"),
    ))


KPS = Method(
    name="kps",
    summary="key point sensitive loss with gradient adjustment (Li, Cheung, Hu, TPAMI 2022); predicts with raw "
            "cosines",
    keys={
        **signature_defaults(losses.kps_loss, {"max_margin": "margin of the rarest class", "scale": "scale s",
                                               "max_scale": "upper clip of the GA scales"}),
        "ga_start": epoch(0.6, "epoch gradient adjustment starts (reference: 120 of 200)"),
    },
    phases=(Phase("KPS", lambda x: _kps(x, False)), Phase("KPS-GA", lambda x: _kps(x, True), start="ga_start")),
    head="normed",
)


def _influence_balanced(inputs: Inputs) -> PerExample:
    return PerExample(losses.influence_balanced_loss(
        inputs.logits, inputs.labels, jnp.sum(jnp.abs(inputs.features), axis=-1), class_counts=inputs.stats.counts,
        variant=inputs.hp["variant"], stop_gradient_influence=inputs.hp["stop_gradient_influence"],
        **_numbers(inputs, "alpha", "epsilon", "beta", "gamma"),
    ))


INFLUENCE_BALANCED = Method(
    name="ib",
    summary="influence-balanced loss after CE (Park et al., ICCV 2021); variants ib, ib_cb, ib_focal",
    keys={
        **signature_defaults(
            losses.influence_balanced_loss,
            {"variant": "ib (1/n weights), ib_cb (class-balanced weights) or ib_focal", "alpha": "influence scale",
             "epsilon": "keeps the influence finite", "beta": "class-balanced beta of ib_cb",
             "gamma": "focusing exponent of ib_focal",
             "stop_gradient_influence": "treat the influence as a constant weight (the paper's reading)"},
            static=("variant", "stop_gradient_influence"), choices={"variant": INFLUENCE_BALANCED_VARIANTS},
        ),
        "ib_start": epoch(0.5, "epoch the influence-balanced loss starts (reference: 100 of 200)"),
    },
    phases=(Phase("CE", cross_entropy), Phase("IB", _influence_balanced, start="ib_start")),
    notes="The reference drops the learning rate to 1e-3 when IB starts; its recipe (experiments/configs/ib.py) "
          "does, a bare --config.loss.name=ib does not.",
)


def _ffds_state(stats, hp):
    group_ends = tuple(hp["group_ends"]) or None
    groups = class_stats.frequency_groups(stats.counts, num_groups=hp["num_groups"], group_ends=group_ends)
    return dynasmooth.init(groups, len(group_ends) if group_ends else hp["num_groups"])


def _ffds(inputs: Inputs) -> PerExample:
    state = inputs.state
    return PerExample(losses.ffds_loss(
        inputs.logits, inputs.labels, class_counts=inputs.stats.counts,
        class_mean_probs=dynasmooth.class_mean_probs(state), has_means=state.has_means,
        focus_form=inputs.hp["focus_form"], weight_normalization=inputs.hp["weight_normalization"],
        **_numbers(inputs, "beta", "gamma_min", "gamma_max", "label_smoothing", "smoothing_strength"),
    ))


def _collect_true_class_probs(state, inputs: Inputs, axis_name):
    probs = jnp.exp(-losses.softmax_cross_entropy(inputs.logits, inputs.labels))
    return dynasmooth.accumulate(state, probs, inputs.labels, valid=inputs.mask, axis_name=axis_name)


FFDS = Method(
    name="ffds",
    summary="D-FFDS (Nah et al., ICIP 2023): CE, then frequency-focused, dynamically smoothed label-smoothing CE",
    keys={
        **signature_defaults(
            losses.ffds_loss,
            {"beta": "class-balanced beta", "gamma_min": "FreqFocus exponent of the rarest class",
             "gamma_max": "FreqFocus exponent of the most frequent class", "focus_form": "FreqFocus curve",
             "weight_normalization": "class weights sum to 1/C (reference), C, or as is",
             "label_smoothing": "epsilon", "smoothing_strength": "DynaSmooth's k"},
            static=("focus_form", "weight_normalization"),
            choices={"focus_form": FREQFOCUS_FORMS, "weight_normalization": WEIGHT_NORMALIZATIONS},
        ),
        "num_groups": Key(1, "DynaSmooth frequency groups: M near-equal blocks of the classes sorted by count"),
        "group_ends": Key((), "DynaSmooth groups as exclusive block ends in count order, e.g. (3, 6, 10); "
                              "overrides num_groups"),
        "ffds_start": epoch(0.65, "epoch FFDS starts collecting group means (reference: 130 of 200); 0 is one-phase "
                                  "FFDS"),
    },
    phases=(
        Phase("CE", cross_entropy),
        Phase("FFDS", _ffds, start="ffds_start", collect=_collect_true_class_probs, min_epochs=2,
              why="its first epoch trains with CE while DynaSmooth collects the group means"),
    ),
    init_state=_ffds_state,
    end_epoch=dynasmooth.end_epoch,
    notes="DynaSmooth is fed from training batches only; the reference also feeds its test pass.",
)


def _similarity_window(inputs: Inputs, coordinates: jax.Array) -> PerExample:
    window = min(inputs.hp["window_size"], inputs.stats.num_classes)
    return PerExample(losses.swrm_loss(
        inputs.logits, inputs.labels,
        class_weights=losses.swr_weights(inputs.stats.counts, coordinates, window_size=window,
                                         normalization=inputs.hp["normalization"]),
        margins=losses.swm_margins(coordinates, window_size=window, beta=inputs.hp["beta"],
                                   kernel=inputs.hp["kernel"]),
    ))


def _tsne_coordinates(state, hp, hooks):
    """SWRM's similarity model: 1-D t-SNE of the class prototypes of the model trained so far (with CE)."""
    return {"coordinates": jnp.asarray(losses.tsne_coordinates(hooks.class_mean_features(), seed=hooks.seed))}


_WINDOW_KEYS = {
    **signature_defaults(
        losses.swr_weights, {"window_size": "classes per window, W", "normalization": "SWR weight normalisation"},
        static=("window_size", "normalization"), choices={"normalization": WEIGHT_NORMALIZATIONS},
    ),
    **signature_defaults(
        losses.swm_margins, {"beta": "margin exponent (CIFAR 1, ImageNet-LT 10)", "kernel": "similarity kernel"},
        static=("kernel",), choices={"kernel": SIMILARITY_KERNELS},
    ),
    "swrm_start": epoch(0.7, "epoch the similarity-window loss starts (reference: the last 60 of 200)"),
}

SWRM = Method(
    name="swrm",
    summary="similarity window reweighting and margin (SWRM submission): CE, then window weights and margins from "
            "a 1-D t-SNE of the class prototypes",
    keys=_WINDOW_KEYS,
    phases=(
        Phase("CE", cross_entropy),
        Phase("SWRM", lambda x: _similarity_window(x, x.state["coordinates"]), start="swrm_start",
              enter=_tsne_coordinates),
    ),
    init_state=lambda stats, hp: {"coordinates": jnp.zeros((stats.num_classes,), jnp.float32)},
    notes="No public code exists; the paper's open points are settled as ltjax.losses.similarity_window says. A "
          "window larger than the number of classes holds every class.",
)

DYSWRM = Method(
    name="dyswrm",
    summary="DySWRM: SWRM with a trainable coordinate vector, learned with the model",
    keys=_WINDOW_KEYS,
    phases=(
        Phase("CE", cross_entropy),
        Phase("DySWRM", lambda x: _similarity_window(x, x.params["coordinates"]), start="swrm_start"),
    ),
    init_params=lambda stats, hp, key: {"coordinates": jax.random.normal(key, (stats.num_classes,), jnp.float32)},
    notes=SWRM.notes,
)

# --- the baselines the seed papers compare against ---------------------------------------------------------------


def _lade(inputs: Inputs) -> PerExample:
    return PerExample(losses.lade_loss(inputs.logits, inputs.labels, class_counts=inputs.stats.counts,
                                       mask=inputs.mask, axis_name=inputs.axis_name,
                                       **_numbers(inputs, "alpha", "remine_lambda")))


LADE = Method(
    name="lade",
    summary="LADE (Hong et al., CVPR 2021): LADE-CE (CE on z + log p_s) plus alpha times the LADE regulariser of the "
            "global batch; predicts with z + log p_t (on a uniform test set: the logits)",
    keys=signature_defaults(losses.lade_loss, {
        "alpha": "weight of the LADE regulariser (reference --alpha; ImageNet-LT 0.05, Places-LT 0.005)",
        "remine_lambda": "ReMINE penalty on the log-partition estimate (CIFAR README 0.01; configs 0.1)"}),
    phases=(Phase("LADE", _lade),),
    notes="The regulariser is a function of the whole batch: ltjax computes it over the global batch (psum over the "
          "devices), padding left out, and gives each example its share. The evaluation sets are balanced, where "
          "the post-compensated prediction is the argmax of the logits; losses.lade_logits gives it for other "
          "target priors. Reference recipe (CIFAR-100-LT): BBN's ResNet-32, lr 0.2, batch 256, 200 epochs, 5-epoch "
          "warm-up, x0.01 at epochs 120 and 160.",
)


def _seesaw_counts(state, inputs: Inputs, axis_name: str | None):
    return {"cumulative_counts": losses.seesaw_count_update(state["cumulative_counts"], inputs.labels, inputs.mask,
                                                            axis_name=axis_name)}


def _seesaw(inputs: Inputs) -> PerExample:
    # The reference counts the batch before its loss; `collect` runs after the loss and stores the same sum.
    counts = _seesaw_counts(inputs.state, inputs, inputs.axis_name)["cumulative_counts"]
    return PerExample(losses.seesaw_loss(inputs.logits, inputs.labels, cumulative_counts=counts,
                                         **_numbers(inputs, "p", "q", "eps")))


SEESAW = Method(
    name="seesaw",
    summary="Seesaw loss (Wang et al., CVPR 2021), as mmpretrain's classification port: non-target logits scaled by "
            "a mitigation factor from cumulative class counts and a compensation factor from detached probabilities",
    keys=signature_defaults(losses.seesaw_loss, {"p": "mitigation exponent (0: off)",
                                                 "q": "compensation exponent (0: off)",
                                                 "eps": "lower clamp of the target probability in the compensation"}),
    phases=(Phase("Seesaw", _seesaw, collect=lambda state, *, inputs, axis_name: _seesaw_counts(state, inputs,
                                                                                                axis_name)),),
    init_state=lambda stats, hp: {"cumulative_counts": jnp.zeros((stats.num_classes,), jnp.float32)},
    notes="The counts start at zero and count every training batch, the current one before its loss; they are summed "
          "over devices (the authors keep one copy per process). The authors give no classification recipe: the CE "
          "recipe with Seesaw in place of CE is ltjax's choice.",
)


def _eql(inputs: Inputs) -> PerExample:
    num_classes = inputs.logits.shape[-1]
    drop = jax.vmap(lambda key: losses.eql_drop_mask(key, (num_classes,), gamma=inputs.hp["gamma"]))(inputs.keys)
    return PerExample(losses.softmax_eql_loss(inputs.logits, inputs.labels, drop, class_counts=inputs.stats.counts,
                                              tail_threshold=inputs.hp["tail_threshold"]))


SOFTMAX_EQL = Method(
    name="eql",
    summary="softmax equalization loss (Tan et al., CVPR 2020) as BagofTricks-LT's SEQL: tail-class negatives left "
            "out of the softmax at random",
    keys={
        **signature_defaults(losses.softmax_eql_loss,
                             {"tail_threshold": "lambda: frequency below which a class is a tail class"}),
        **signature_defaults(losses.eql_drop_mask, {"gamma": "probability that a tail negative is left out"}),
    },
    phases=(Phase("EQL", _eql),),
    notes="No authors' classification code exists; ltjax follows the paper as BagofTricks-LT computes it (one "
          "Bernoulli draw per example and class, fresh each step, from the run's seed, the step and the example's "
          "position in the global batch).",
)

VECTOR_SCALING = Method(
    name="vs",
    summary="vector-scaling loss (Kini et al., NeurIPS 2021): CE on (n_c / n_max)^gamma z + tau log prior",
    keys=signature_defaults(losses.vs_loss, {
        "gamma": "exponent of the multiplicative factor (n_c / n_max)^gamma (0: logit adjustment)",
        "tau": "weight of the additive tau * log prior (0: CDT)"}),
    phases=(Phase("VS", lambda x: PerExample(losses.vs_loss(x.logits, x.labels, class_counts=x.stats.counts,
                                                            **_numbers(x, "gamma", "tau")))),),
    notes="The reference's learning rate decays x0.01 after epoch 160 and x0.0001 after 180 (LDAM-DRW: x0.1, x0.01), "
          "after a 5-epoch linear warm-up; its --train_rule DRW variant (deferred class-balanced weights) is not a "
          "method here. Its loss_type LA is gamma=0, CDT tau=0.",
)


def _gcl(inputs: Inputs, names: tuple[str, ...]) -> PerExample:
    num_classes = inputs.logits.shape[-1]
    cloud = jax.vmap(lambda key: losses.gcl_cloud(key, (num_classes,)))(inputs.keys)
    return PerExample(losses.gcl_loss(inputs.logits, inputs.labels, cloud, class_counts=inputs.stats.counts,
                                      **_numbers(inputs, *names)))


_GCL_HELP = {"margin": "margin m on the target cosine", "scale": "logit scale s",
             "noise_mul": "size of the Gaussian cloud (amplitude 1 for the rarest class, 0 for the largest)"}
_GCL_NO_MIXUP = ("The reference trains both stages on mixup batches (lam ~ Beta(1, 1), a cloud for each mixed "
                 "label); ltjax has no mixup, so its GCL trains on the plain batches.")

GAUSSIAN_CLOUDED_LOGITS = Method(
    name="gcl",
    summary="Gaussian clouded logits, stage 1 (Li, Cheung, Lu, CVPR 2022): target cosines lowered by a half-normal "
            "cloud scaled per class (most for rare classes), then scaled CE; stage 2 is gcl_cls",
    keys=signature_defaults(losses.gcl_loss, _GCL_HELP),
    phases=(Phase("GCL", lambda x: _gcl(x, ("margin", "scale", "noise_mul"))),),
    head="normed",
    notes="Defaults are the authors' CIFAR stage-1 script (m=0, s=30, noise_mul=0.5; batch 64 in their recipe). One "
          "cloud row per example, fresh each step, from the run's seed, the step and the example's position in the "
          "global batch. " + _GCL_NO_MIXUP,
)


# --- methods that train a network with branches (`ltjax.models.branched`) ----------------------------------------

_TDE_KEYS = {
    **signature_defaults(
        losses.tde_logits,
        {"alpha": "strength of the counterfactual removed at inference (CIFAR-100-LT 1.5, CIFAR-10-LT 1.0, "
                  "ImageNet-LT and Places-LT 3.0; 0: de-confounded training alone)",
         "num_heads": "K, slices of the feature and of every class weight (the feature size must divide by it)",
         "tau": "total logit scale, tau / K per head", "gamma": "added to each class slice's norm"},
        static=("alpha", "num_heads", "tau", "gamma")),
    **signature_defaults(losses.moving_feature_direction, {"momentum": "decay of the moving feature sum"},
                         static=("momentum",)),
}

TDE = Method(
    name="tde",
    summary="de-confounded training with TDE inference (Tang et al., NeurIPS 2020): CE on a multi-head causal-norm "
            "classifier over BBN's bilateral trunk; predicts with each head's projection on the moving mean feature "
            "removed",
    keys=_TDE_KEYS,
    phases=(Phase("CE", cross_entropy),),
    head="causal_norm",
    network=Network("bilateral", options=tuple(_TDE_KEYS)),
    notes="The moving feature sum is kept with BatchNorm's running statistics (batch_stats/head/feature_direction), "
          "updated from every training batch's global mean feature; evaluation (and the reported accuracy) uses "
          "TDE inference, the training accuracy the plain logits, as the reference. alpha is static: it is the "
          "network's evaluation rule. The reference ties the momentum to the learning rate outside CIFAR "
          "(1 - 0.1 min(50 lr, 1), once per epoch); ltjax keeps it constant. Reference recipe (CIFAR-100-LT): batch "
          "256, lr 0.2, 200 epochs, 5-epoch warm-up, x0.01 at epochs 120 and 160, weight decay 5e-4.",
)


def _bilateral_branches(inputs: Inputs) -> PerExample:
    alpha = schedules.bbn_alpha(inputs.epoch, inputs.num_epochs)
    return PerExample(losses.bbn_loss(inputs.branches[:, 0], inputs.partner.branches[:, 1], inputs.labels,
                                      inputs.partner.labels, alpha=alpha))


BBN = Method(
    name="bbn",
    summary="bilateral-branch network with cumulative learning (Zhou et al., CVPR 2020): a uniform batch through "
            "the conventional branch, its partners from the reversed sampler through the re-balancing branch, one "
            "classifier mixing them by alpha = 1 - (epoch / epochs)^2",
    keys={},
    phases=(Phase("BBN", _bilateral_branches),),
    head="bilateral",
    network=Network("bilateral"),
    partners="reversed",
    notes="Each step loads the batch and as many partners (a class drawn with probability n_max / n_c, then an "
          "image), and passes the two through the network separately, so BatchNorm normalises each with its own "
          "statistics and updates its running ones twice, as the reference. Evaluation predicts with both branches "
          "on the same image (alpha = 1/2). Reference recipe (CIFAR-LT): batch 128, 200 epochs, SGD with Nesterov "
          "momentum, lr 0.1 with a 5-epoch warm-up, x0.01 at epochs 120 and 160, weight decay 2e-4.",
)


def _ride(inputs: Inputs, reweight: bool) -> PerExample:
    # The experts' normed heads give cosines; the loss sees them scaled, as the reference's NormedLinear gives them.
    return PerExample(losses.ride_loss(
        inputs.hp["scale"] * inputs.branches, inputs.labels, class_counts=inputs.stats.counts, reweight=reweight,
        mask=inputs.mask, axis_name=inputs.axis_name,
        **_numbers(inputs, "diversity_factor", "base_temperature", "scale", "max_margin", "drw_beta",
                   "diversity_prior_weight")))


RIDE = Method(
    name="ride",
    summary="RIDE (Wang et al., ICLR 2021), stage 1: experts with their own later stages and normed heads, each "
            "trained with LDAM (DRW after reweight_start) plus a negatively weighted KL from the detached ensemble; "
            "predicts with the experts' mean",
    keys={
        **signature_defaults(losses.ride_loss, {
            "diversity_factor": "weight of each expert's KL from the detached ensemble (negative rewards diversity; "
                                "CIFAR config -0.45, class default -0.2; 0 trains every expert's CE on the ensemble)",
            "base_temperature": "temperature of the diversity KL (times v_c per class once re-weighting)",
            "scale": "logit scale s of the normed expert heads (the margin enters as s * m_y)",
            "max_margin": "LDAM margin of the rarest class",
            "drw_beta": "effective-number beta of the deferred class weights",
            "diversity_prior_weight": "gamma of the temperature weights v_c = (gamma C p_c + 1 - gamma) / max"}),
        "num_experts": Key(3, "experts K (CIFAR config 3)", minimum=1),
        "reweight_start": epoch(0.8, "epoch DRW and the per-class diversity temperature start (reference: after "
                                     "epoch 160 of 200)"),
    },
    phases=(Phase("RIDE", lambda x: _ride(x, False)),
            Phase("RIDE-DRW", lambda x: _ride(x, True), start="reweight_start")),
    head="normed",
    network=Network("experts", options=("num_experts",)),
    notes="Each example gets its share of the batch-level means: the global batch's weighted mean of the "
          "cross-entropy while re-weighting, its size for the rest, padding left out. The experts' terms are summed, "
          "not averaged. The expert router (stage 2) and distillation are not built. Reference recipe "
          "(CIFAR-100-LT IF100): batch 128, 200 epochs, SGD with Nesterov momentum 0.9, weight decay 5e-4, lr 0.1 "
          "with a 5-epoch warm-up, x0.01 from epoch 161, x1e-4 from 181, RandomRotation(15) in the augmentation.",
)


def _reslt(inputs: Inputs) -> PerExample:
    groups = losses.reslt_class_groups(inputs.stats.counts, **_numbers(inputs, "medium_from", "tail_from"))
    return PerExample(losses.reslt_loss(inputs.branches, inputs.labels, class_groups=groups, beta=inputs.hp["beta"],
                                        mask=inputs.mask, axis_name=inputs.axis_name))


RESLT = Method(
    name="reslt",
    summary="ResLT (Cui et al., TPAMI 2022): head, medium and tail branches (three BatchNorms on the trunk's last "
            "map, one shared classifier), each trained on its class groups, plus CE of their sum; predicts with the "
            "sum",
    keys={
        **signature_defaults(losses.reslt_loss, {
            "beta": "weight of the branch losses against the fused CE (the paper's alpha; CIFAR-100-LT 0.995 IF100, "
                    "0.99 IF50, 0.72 IF10; CIFAR-10-LT 0.998 IF100 and IF50, 0.96 IF10)"}),
        **signature_defaults(losses.reslt_class_groups, {
            "medium_from": "fraction of the classes, the most frequent, that only the head branch trains on "
                           "(CIFAR-10 0.2, ImageNet-LT 0.175)",
            "tail_from": "fraction of the classes outside the tail branch (CIFAR-10 0.4, ImageNet-LT 0.78)"}),
    },
    phases=(Phase("ResLT", _reslt),),
    network=Network("reslt"),
    notes="The branch term is normalised by the global batch's branch memberships, the fused CE by its examples "
          "(summed over the devices, padding left out); each example gets its share. The CIFAR form: the ImageNet "
          "code's channel-split branches, smoothed fused loss and normalised evaluation classifier are not built. "
          "Reference recipe (CIFAR-100-LT IF100): ResNet-32, batch 128, 200 epochs, SGD with Nesterov momentum, lr "
          "0.1 with a 5-epoch warm-up, x0.1 at epochs 160 and 180, weight decay 5e-4.",
)


# --- second stages: decoupled classifier training from a first-stage run (Kang et al., ICLR 2020) ---------------

_FIRST_STAGE = {
    "init_from": Key("", "workdir of the first-stage run to start from (an ensemble member: <workdir>/members/<k>); "
                         "it must have finished"),
    "init_step": Key(0, "start from this checkpoint step of init_from on purpose (0: its last, once it finished)",
                     minimum=0),
}
_CLASS_BALANCED = {"dataset.sampler": "class_balanced"}

CLASSIFIER_RETRAINING = Method(
    name="crt",
    summary="classifier re-training (cRT, Kang et al., ICLR 2020): a first stage's backbone, frozen; its classifier "
            "re-initialised and trained with CE on class-balanced batches",
    keys=_FIRST_STAGE,
    phases=(Phase("cRT", cross_entropy),),
    second_stage=SecondStage(trains=("model/head",), fresh=("model/head",), requires=_CLASS_BALANCED),
    notes="As the reference, the frozen backbone's BatchNorm runs in training mode, so its statistics follow the "
          "class-balanced batches.",
)

LEARNABLE_WEIGHT_SCALING = Method(
    name="lws",
    summary="learnable weight scaling (LWS, Kang et al., ICLR 2020): a first stage's backbone and linear classifier, "
            "frozen; a scale per class trained with CE on class-balanced batches",
    keys=_FIRST_STAGE,
    phases=(Phase("LWS", cross_entropy),),
    head="scaled_linear",
    second_stage=SecondStage(trains=("model/head/scales",), fresh=("model/head/scales",), requires=_CLASS_BALANCED),
    notes=CLASSIFIER_RETRAINING.notes,
)

GCL_CLASSIFIER = Method(
    name="gcl_cls",
    summary="GCL stage 2: a gcl run's backbone frozen (BatchNorm on its running statistics), its cosine classifier "
            "trained on with the clouded loss plus a margin and a detached focal term, on class-balanced batches",
    keys={
        **_FIRST_STAGE,
        **{name: number(GCL_CLASSIFIER_DEFAULTS[name], help_text) for name, help_text in _GCL_HELP.items()},
        "gamma": number(GCL_CLASSIFIER_DEFAULTS["gamma"], "focal exponent on the weighted CE (detached p)"),
    },
    phases=(Phase("GCL-cls", lambda x: _gcl(x, ("margin", "scale", "noise_mul", "gamma"))),),
    head="normed",
    second_stage=SecondStage(trains=("model/head",), fresh=(), requires=_CLASS_BALANCED, frozen_batch_norm=True),
    notes="The reference keeps the stage-1 classifier (not re-initialised) and its BatchNorm statistics (eval mode), "
          "and trains 30 epochs at batch 64 with lr 0.01 * lr_max * (1 + cos(pi e / E)), reporting the best epoch. "
          + _GCL_NO_MIXUP,
)

def _label_aware_smoothing(inputs: Inputs) -> PerExample:
    return PerExample(losses.label_aware_smoothing_loss(
        inputs.logits, inputs.labels, class_counts=inputs.stats.counts, shape=inputs.hp["shape"],
        **_numbers(inputs, "smooth_head", "smooth_tail", "power")))


MISLAS = Method(
    name="mislas",
    summary="MiSLAS stage 2 (Zhong et al., CVPR 2021): a mixup-trained first stage's linear classifier trained on, "
            "with a fresh LWS scale per class, by label-aware smoothing on class-balanced batches; BatchNorm "
            "statistics re-estimated on them (shift learning)",
    keys={
        **_FIRST_STAGE,
        **signature_defaults(
            losses.label_aware_smoothing_loss,
            {"smooth_head": "smoothing of the largest class (CIFAR-100-LT IF100 0.4, IF50 0.3, IF10 0.2; "
                            "CIFAR-10-LT IF100 0.3, IF50 0.2, IF10 0.1)",
             "smooth_tail": "smoothing of the smallest class (CIFAR-100-LT IF100 0.1; the other configs 0)",
             "shape": "rise of the smoothing from tail to head: concave, linear, convex, exp",
             "power": "exponent of the exp shape (1: linear)"},
            static=("shape",), choices={"shape": LAS_SHAPES}),
    },
    phases=(Phase("LAS", _label_aware_smoothing),),
    head="scaled_linear",
    second_stage=SecondStage(trains=("model/head",), fresh=("model/head/scales",), requires=_CLASS_BALANCED),
    notes="Start from a ce run trained with mixup (--config.mixup_alpha=1 on CIFAR, 0.2 on the large sets). The "
          "reference trains the first stage's classifier on (not re-initialised) with a per-class LWS scale, 10 "
          "epochs at batch 128 with a cosine learning rate; it scales the classifier's rate by lr_factor (CIFAR-100-LT "
          "IF100: 0.2), which ltjax does not split. BatchNorm runs in training mode, so its running statistics follow "
          "the class-balanced batches while its affine parameters stay fixed (the reference's shift_bn; its "
          "CIFAR-10-LT configs turn it off). The reference samples 4 consecutive images per class and stops each "
          "epoch after ceil(N/128) + 1 batches.",
)

_DISALIGN_PARAMETERS = tuple(f"model/head/{name}" for name in ("logit_scale", "logit_bias", "confidence_kernel",
                                                                "confidence_bias"))


def _generalized_reweighting(inputs: Inputs) -> PerExample:
    weights = losses.grw_class_weights(inputs.stats.counts, rho=inputs.hp["rho"])
    return PerExample(losses.grw_loss(inputs.logits, inputs.labels, class_counts=inputs.stats.counts,
                                      rho=inputs.hp["rho"]), weights[inputs.labels])


DISALIGN = Method(
    name="disalign",
    summary="DisAlign (Zhang et al., CVPR 2021): a first stage's linear classifier frozen, its logits calibrated "
            "as (1 + sigma alpha) z + sigma beta with a per-example confidence sigma, trained with the generalized "
            "re-weighting loss",
    keys={**_FIRST_STAGE, **signature_defaults(losses.grw_loss, {"rho": "re-weighting exponent (ImageNet-LT 1.2)"})},
    phases=(Phase("GRW", _generalized_reweighting),),
    head="disalign",
    second_stage=SecondStage(trains=_DISALIGN_PARAMETERS, fresh=_DISALIGN_PARAMETERS),
    notes="As the classification code (cvpods' DisAlignLinear and grw_loss): the calibration starts from (1 + sigma) z "
          "(alpha at ones, the confidence kernel at 0.1), the loss is the weighted mean sum w_y CE / sum w_y, the "
          "sampler the plain one, and the frozen backbone's BatchNorm runs in training mode. The reference recipe "
          "is ImageNet-LT only (ResNeXt-50, 90 + 10 epochs, cosine learning rate); it has no CIFAR configuration.",
)

METHODS: dict[str, Method] = {
    method.name: method
    for method in (CE, FOCAL, CLASS_BALANCED, LDAM_DRW, INFLUENCE_BALANCED, FFDS, KPS, IIF, LOGIT_ADJUSTED,
                   BALANCED_SOFTMAX, SWRM, DYSWRM, LADE, SEESAW, SOFTMAX_EQL, VECTOR_SCALING,
                   GAUSSIAN_CLOUDED_LOGITS, CLASSIFIER_RETRAINING, LEARNABLE_WEIGHT_SCALING, GCL_CLASSIFIER, MISLAS,
                   DISALIGN, TDE, BBN, RIDE, RESLT)
}
