"""The training extra: `pip install ltjax` is the core (losses, statistics, state, post-hoc rules: JAX and NumPy);
training, data, evaluation, tables, plots and the commands need `pip install 'ltjax[train]'`. A module of those
calls `require_train_extra` before its imports, so a core install gets one message naming the extra instead of the
first missing import."""
from __future__ import annotations

import importlib.util

# import name -> distribution of `[train]` in pyproject.toml
TRAIN_MODULES = {
    "flax": "flax",
    "optax": "optax",
    "orbax": "orbax-checkpoint",
    "tensorflow_datasets": "tensorflow-datasets",
    "sklearn": "scikit-learn",
    "ml_collections": "ml_collections",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "PIL": "pillow",
    "tensorboardX": "tensorboardX",
}


def missing_train_distributions() -> list[str]:
    return [distribution for module, distribution in TRAIN_MODULES.items() if importlib.util.find_spec(module) is None]


def require_train_extra(module: str) -> None:
    """Raises ImportError naming the extra when a distribution of `[train]` is not installed."""
    missing = missing_train_distributions()
    if missing:
        raise ImportError(f"{module} needs ltjax's training extra, which is not installed here (missing: "
                          f"{', '.join(missing)}); install it with: pip install 'ltjax[train]' (from a checkout: "
                          "pip install -e '.[train]')")
