"""Per-class image counts of a long-tailed split: the head class keeps `n_max` images, the tail `n_max / IF`.

Three profiles, classes ordered from head (class 0) to tail (class C - 1), imbalance factor `IF = n_0 / n_{C-1}`:

- `"exp"` (Cui et al. 2019; the CIFAR-LT and Tiny-ImageNet-LT splits of LDAM-DRW, IB, FFDS, KPS):
  `n_c = int(n_max * IF ** (-c / (C - 1)))`, computed in float64 and truncated exactly as written, so the counts equal
  the published ones (CIFAR-10-LT IF 100: 12,406 images).
- `"step"` (Buda et al. 2018; Cao et al. 2019): the last `floor(minority_fraction * C)` classes keep
  `int(n_max / IF)` images, the others `n_max`. With the default `minority_fraction=0.5` and an even C this is
  LDAM-DRW's `imb_type='step'` split.
- `"pareto"`: the rank-size law of Pareto-distributed class sizes (a power law in the rank, Zipf's law),
  `n_c = int(n_max / IF ** (log(c + 1) / log(C)))`. The exponent is fixed by the two ends: the head keeps `n_max`,
  the tail `int(n_max / IF)`, and the counts fall monotonically in between, steeply at the head and flat at the
  tail. It is deterministic, unlike ImageNet-LT's sampled sizes, so a split is fixed by (n_max, C, IF).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ltjax.keys import ConfigError


def _exp_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    if num_classes == 1:
        return [n_max]
    # The literal expression, evaluated in Python floats (float64): rearranging it (say, 1 / IF ** x) can move a
    # value across an integer and change a published count by one.
    return [int(n_max * imbalance_factor ** (-c / (num_classes - 1))) for c in range(num_classes)]


def _step_counts(
    n_max: int, num_classes: int, imbalance_factor: float, *, minority_fraction: float = 0.5
) -> list[int]:
    if not 0.0 < minority_fraction < 1.0:
        raise ValueError(f"minority_fraction must lie in (0, 1), got {minority_fraction}")
    num_minority = math.floor(minority_fraction * num_classes)
    if num_minority < 1:
        raise ValueError(
            f"minority_fraction={minority_fraction} of {num_classes} classes leaves no minority class; "
            f"use a larger minority_fraction or more classes"
        )
    tail_count = int(n_max / imbalance_factor)
    return [n_max] * (num_classes - num_minority) + [tail_count] * num_minority


def _pareto_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    if num_classes == 1:
        return [n_max]
    # log(C) / log(C) is exactly 1.0, so the tail is exactly int(n_max / IF) with no rounding drift.
    log_num_classes = math.log(num_classes)
    return [
        int(n_max / imbalance_factor ** (math.log(c + 1) / log_num_classes)) for c in range(num_classes)
    ]


_PROFILES: dict[str, tuple[Callable[..., list[int]], tuple[str, ...]]] = {
    "exp": (_exp_counts, ()),
    "step": (_step_counts, ("minority_fraction",)),
    "pareto": (_pareto_counts, ()),
}
PROFILES = tuple(_PROFILES)


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def longtail_counts(
    n_max: int,
    num_classes: int,
    imbalance_factor: float,
    profile: str = "exp",
    **profile_options: float,
) -> np.ndarray:
    """Per-class image counts of a long-tailed split, head class first.

    Args:
      n_max: images of the head class (class 0), e.g. 5000 for CIFAR-10, 500 for CIFAR-100 and Tiny ImageNet.
      num_classes: number of classes C.
      imbalance_factor: IF = n_max / n_min >= 1 (LDAM-DRW's `imb_factor` is its inverse, 0.01 for IF 100).
      profile: `"exp"`, `"step"` or `"pareto"` (formulas in the module docstring).
      **profile_options: `minority_fraction` (default 0.5) for `"step"`; the other profiles take none.

    Returns:
      int64 `[C]`, non-increasing, `counts[0] == n_max`.

    Raises:
      ValueError: n_max, num_classes or imbalance_factor out of range, an unknown profile or option.
      ConfigError (a ValueError): a count that truncates to 0 (n_max too small for this imbalance factor).

    Example:
      >>> longtail_counts(5000, 10, 100).tolist()
      [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    n_max = _check_positive_int(n_max, "n_max")
    num_classes = _check_positive_int(num_classes, "num_classes")
    # `not >=` also rejects NaN.
    if not imbalance_factor >= 1:
        raise ValueError(f"imbalance_factor must be >= 1 (n_max / n_min), got {imbalance_factor}")
    if profile not in _PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    counts_fn, option_names = _PROFILES[profile]
    unknown_options = sorted(set(profile_options) - set(option_names))
    if unknown_options:
        accepted = ", ".join(option_names) if option_names else "none"
        raise ValueError(
            f"profile {profile!r} got unknown options {unknown_options}; it accepts: {accepted}"
        )
    counts = np.asarray(counts_fn(n_max, num_classes, float(imbalance_factor), **profile_options), np.int64)
    if counts.min() < 1:
        empty = np.flatnonzero(counts < 1)
        raise ConfigError(
            f"profile {profile!r} with n_max={n_max} and imbalance_factor={imbalance_factor} gives classes "
            f"{empty.tolist()} no images (n_max / IF = {n_max / imbalance_factor:.3g} < 1); "
            f"use a smaller imbalance factor (dataset.imbalance_factor <= {n_max}) or a larger n_max"
        )
    return counts
