"""The default run: a ResNet-8 on the embedded long-tailed digits (imbalance 10), CPU, well under a minute.

    ltjax-train                                    # this config
    ltjax-train --config.loss.name=la              # any method: `ltjax-methods` lists them and their keys

Keys it does not write take their defaults (`ltjax.configs.schema`); `ltjax-train --plan` prints them all.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.dataset = ml_collections.ConfigDict(
        {"name": "digits", "imbalance_factor": 10.0, "validation_per_class": 10, "seed": 0}
    )
    # model name "": the dataset's model (ResNet-8 here); head "": the method's head.
    config.model = ml_collections.ConfigDict({"name": "", "head": "", "dtype": "float32"})
    config.loss = ml_collections.ConfigDict({"name": "ce"})
    config.optimizer = ml_collections.ConfigDict(
        {
            "learning_rate": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "warmup": 0.08,  # 2 of 25 epochs
            "lr_decay": ((0.8, 0.1),),  # x0.1 from 80% of the run on
        }
    )
    config.num_epochs = 25
    config.batch_size = 64
    config.eval_batch_size = 256
    config.seed = 0
    return config
