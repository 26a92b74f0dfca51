"""SWRM's similarity windows: class weights (SWR) and margins (SWM) from a 1-D embedding of the classes.

The seed paper (SWRM/DySWRM) projects the class prototypes to one dimension with t-SNE and averages over a window of
W classes around each class. It leaves several points open; ltjax settles them so (`methods.md`, Decision 5):

- the window is taken in the order of the 1-D coordinate: the W classes closest in rank to c, c included, shifted
  inward at the edges so every class averages exactly W terms (for even W the extra member is on the lower side);
- `sim(i, c) = 1 / (1 + d^2)` (the t-SNE kernel, default) or `exp(-d^2)`, with d the distance between the
  standardised (zero-mean, unit-variance) coordinates;
- window membership comes from the stop-gradient ranks, so for DySWRM's trainable coordinates the margins are
  differentiable in the coordinates while the windows are piecewise constant.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses import _math
from ltjax.losses._checks import check_choice, check_class_vector, check_counts
from ltjax.losses.class_vectors import normalize_class_weights

SIMILARITY_KERNELS = ("student_t", "gaussian")


def _check_window(window_size: int, num_classes: int) -> None:
    if not 1 <= window_size <= num_classes:
        raise ValueError(
            f"window_size must lie in [1, {num_classes}] (the number of classes), got {window_size}"
        )


def standardize_coordinates(coordinates: jax.Array) -> jax.Array:
    """Zero mean, unit variance over classes (left centred only, when all coordinates are equal)."""
    coordinates = _math.as_compute(coordinates)
    centred = coordinates - jnp.mean(coordinates, axis=-1, keepdims=True)
    std = jnp.sqrt(jnp.mean(centred**2, axis=-1, keepdims=True))
    return centred / jnp.where(std > 0, std, 1.0)


def window_members(coordinates: jax.Array, window_size: int) -> jax.Array:
    """For each class, the `window_size` classes closest to it in rank along the 1-D coordinate.

    Args:
      coordinates: `[C]` 1-D class coordinates (ties are ranked by class index).
      window_size: W, static.

    Returns:
      `[C, W]` int32 class indices, in coordinate order; row c contains c.
    """
    num_classes = jnp.shape(coordinates)[-1]
    _check_window(window_size, num_classes)
    order = jnp.argsort(jax.lax.stop_gradient(coordinates), stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(num_classes, dtype=order.dtype))
    start = jnp.clip(rank - window_size // 2, 0, num_classes - window_size)
    return order[start[:, None] + jnp.arange(window_size)]


def swr_weights(
    class_counts: jax.Array, coordinates: jax.Array, *, window_size: int = 15, normalization: str = "none"
) -> jax.Array:
    r"""Similarity Window Reweighting (seed paper eq. 2).

    .. math:: w_c = \log\Big(1 + \frac{n_{max}}{n_c} \cdot \frac{1}{W} \sum_{i \in \mathrm{win}(c)} \frac{n_i}{n_c}\Big)

    Args:
      class_counts: `[C]` training examples per class.
      coordinates: `[C]` 1-D class coordinates (t-SNE of the prototypes, or DySWRM's vector).
      window_size: W (CIFAR: 15).
      normalization: `"none"` (ltjax default; the paper is silent), `"num_classes"` or `"inverse_num_classes"`.

    Returns:
      `[C]` weights (no gradient flows to the coordinates: they enter only through window membership).
    """
    check_counts(class_counts)
    check_class_vector(coordinates, jnp.shape(class_counts)[0], "coordinates")
    counts = _math.as_compute(class_counts)
    members = window_members(coordinates, window_size)
    window_ratio = jnp.mean(counts[members], axis=-1) / counts
    weights = jnp.log1p(jnp.max(counts) / counts * window_ratio)
    return normalize_class_weights(weights, normalization)


def swm_margins(
    coordinates: jax.Array, *, window_size: int = 15, beta: float = 1.0, kernel: str = "student_t"
) -> jax.Array:
    r"""Similarity Window Margins (seed paper eq. 3), differentiable in the coordinates.

    .. math:: m_c = \log\Big(\frac{1}{W} \sum_{i \in \mathrm{win}(c)} \mathrm{sim}(i, c)^{-\beta}\Big)

    computed as a log-mean-exp of :math:`-\beta \log \mathrm{sim}`, so :math:`m_c \ge 0`.

    Args:
      coordinates: `[C]` 1-D class coordinates; standardised before use.
      window_size: W.
      beta: CIFAR 1, ImageNet-LT/Places-LT 10.
      kernel: `"student_t"` (`1 / (1 + d^2)`) or `"gaussian"` (`exp(-d^2)`).

    Returns:
      `[C]` margins.
    """
    check_choice(kernel, SIMILARITY_KERNELS, "kernel")
    standardized = standardize_coordinates(coordinates)
    members = window_members(coordinates, window_size)
    squared_distance = (standardized[members] - standardized[:, None]) ** 2
    neg_log_similarity = jnp.log1p(squared_distance) if kernel == "student_t" else squared_distance
    return jax.nn.logsumexp(beta * neg_log_similarity, axis=-1) - jnp.log(float(window_size))


def tsne_coordinates(class_prototypes: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """SWRM's similarity model: a 1-D t-SNE of the class prototypes (mean penultimate feature per class).

    Perplexity is `min(30, (C - 1) / 3)` (t-SNE needs it below C), the seed fixed. Exact t-SNE with PCA
    initialisation: for the few hundred classes of a long-tail benchmark it takes under a second, and in 1-D it keeps
    clusters of prototypes contiguous where the Barnes-Hut approximation interleaves them. Runs on the host
    (scikit-learn).

    Args:
      class_prototypes: `[C, D]` class-mean features of a cross-entropy-trained model.
      seed: t-SNE random state.

    Returns:
      `[C]` float32 coordinates.
    """
    from sklearn.manifold import TSNE

    prototypes = np.asarray(class_prototypes, dtype=np.float64)
    if prototypes.ndim != 2 or prototypes.shape[0] < 4:
        raise ValueError(f"class_prototypes must be [C, D] with C >= 4 classes, got shape {prototypes.shape}")
    perplexity = min(30.0, (prototypes.shape[0] - 1) / 3.0)
    tsne = TSNE(n_components=1, perplexity=perplexity, random_state=seed, init="pca", method="exact")
    embedding = tsne.fit_transform(prototypes)
    return embedding[:, 0].astype(np.float32)
