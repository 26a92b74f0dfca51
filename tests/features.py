"""The features a multi-process test gathers: a 2-member ResNet-2 ensemble, at initialisation, on the digits'
training split (what SWRM's phase entry builds its class prototypes from), computed by whichever processes run it."""
from runs import digits_config

from ltjax import datasets
from ltjax.train.build import DataSpec, build_ensemble
from ltjax.train.loop import evaluate


def features():
    """`(EvalStats, [2, N, D] features)` of the training split."""
    configs = [digits_config(("seed", "0")), digits_config(("seed", "1"), ("loss.name", "focal"))]
    data = datasets.get("digits").load(configs[0].dataset)
    trainer = build_ensemble(configs, DataSpec(data.class_counts, data.image_shape, data.normalization, 7))
    return evaluate(trainer, trainer.init_state(), data.train, keep_features=True)
