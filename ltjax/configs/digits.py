"""The default run: a ResNet-8 on the embedded long-tailed digits (imbalance 10), CPU, well under 3 minutes.

    ltjax-train                                    # this config
    ltjax-train --config.loss.name=la              # any loss of ltjax.train.objective.OBJECTIVES

It lists every key a config has; the paper recipes (`experiments/configs/`) change the values.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.dataset = ml_collections.ConfigDict(
        {"name": "digits", "imbalance_factor": 10.0, "validation_per_class": 10, "seed": 0, "data_dir": ""}
    )
    # head "": the head the loss's reference uses (normed cosines for LDAM and KPS, linear otherwise).
    config.model = ml_collections.ConfigDict({"name": "resnet8", "head": "", "dtype": "float32"})
    # name plus the loss's own keys (see ltjax.train.objective); absent keys take the reference CIFAR values.
    config.loss = ml_collections.ConfigDict({"name": "ce", "num_groups": 1})
    config.optimizer = ml_collections.ConfigDict(
        {
            "learning_rate": 0.1,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 5e-4,
            "warmup_epochs": 2,
            "lr_decay": ((20, 0.1),),  # (after 1-indexed epoch, multiplier of the base rate)
        }
    )
    config.num_epochs = 25
    config.batch_size = 64
    config.eval_batch_size = 256
    config.seed = 0
    config.parallel = "shard_map"  # or "pmap"
    config.num_devices = 0  # 0: every local device
    config.checkpoint_every_steps = 0  # 0: at the end of every epoch only
    config.keep_checkpoints = 2
    config.progress_bar = True
    return config
