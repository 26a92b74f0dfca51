"""Float64 NumPy re-statements of the reference computations, written step by step as the authors' code does them.

They are deliberately naive (explicit softmax, explicit one-hot, explicit L1 sums) so a test comparing them with
ltjax checks the JAX code against an independent derivation, not against itself.
"""
import numpy as np


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def onehot(y, c):
    return np.eye(c)[y]


def ce(z, y):
    return -np.log(softmax(z)[np.arange(len(y)), y])


def cb_weights(counts, beta, total):
    w = (1 - beta) / (1 - np.power(beta, counts.astype(np.float64)))
    return w / w.sum() * total


def focal(z, y, gamma, w=None):
    p = softmax(z)[np.arange(len(y)), y]
    loss = (1 - p) ** gamma * -np.log(p)
    return loss if w is None else loss * w[y]


def cb_sigmoid(z, y, counts, beta, gamma=None):
    """The TF reference: sigmoid BCE per class, times the CB weight, optionally times the focal modulator."""
    t = onehot(y, z.shape[1])
    bce = -(t * np.log(1 / (1 + np.exp(-z))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-z))))
    if gamma is not None:
        bce = bce * np.exp(-gamma * t * z - gamma * np.log1p(np.exp(-z)))
    return cb_weights(counts, beta, len(counts))[y] * bce.sum(1)


def ldam(cos, y, counts, max_m, s, w=None):
    m = 1.0 / np.sqrt(np.sqrt(counts.astype(np.float64)))
    m = m * (max_m / m.max())
    out = np.where(onehot(y, cos.shape[1]) > 0, cos - m[y][:, None], cos) * s
    loss = ce(out, y)
    return loss if w is None else loss * w[y]


def kps(cos, y, counts, max_m, s, ga, max_s=50.0):
    n = counts.astype(np.float64)
    r = np.log(n * 50 / n.min())
    r = r / r.min()
    cm = np.log(50 * n.max())
    m = max_m * (cm - np.log(n)) / (cm - np.log(n.min()))
    scale = np.clip(s * (1 + (np.log(n.max()) - np.log(n)) / np.log(50)), s, max_s)[y] if ga else np.full(len(y), s)
    cos_adj = cos * r
    out = np.where(onehot(y, cos.shape[1]) > 0, cos_adj - m[y][:, None], cos_adj) * scale[:, None]
    return ce(out, y)


def ib(z, y, feature_norms, counts, alpha, eps, variant, beta=0.9999, gamma=1.0):
    p = softmax(z)
    grads = np.abs(p - onehot(y, z.shape[1])).sum(1)
    influence = alpha / (grads * feature_norms + eps)
    n = counts.astype(np.float64)
    w = cb_weights(counts, beta, len(n)) if variant == "ib_cb" else (1 / n) / (1 / n).sum() * len(n)
    loss = ce(z, y) * influence
    if variant == "ib_focal":
        loss = loss * (1 - p[np.arange(len(y)), y]) ** gamma
    return loss * w[y]


def ffds(z, y, counts, class_means, beta, gamma_min, gamma_max, eps, k, normalization_total):
    """`losses/ffds.py` of the reference, with classes sorted by descending count as it assumes."""
    c = z.shape[1]
    probs = np.clip(softmax(z), 1e-6, 1 - 1e-6)
    gt = probs[np.arange(len(y)), y]
    q = np.where(onehot(y, c) > 0, 1 - eps, eps / (c - 1))
    ls = -(q * np.log(probs)).sum(1)
    mu = class_means[y]
    f = (k * (np.sqrt(gt) - np.sqrt(mu))) ** 2
    p_hat = gt - f * (gt - mu)
    n = counts.astype(np.float64)
    x = (n - n[-1]) / (n[0] - n[-1])
    gamma = gamma_min + (gamma_max - gamma_min) * np.tanh(4 * x)
    w = cb_weights(counts, beta, normalization_total)
    return ls * (1 - p_hat) ** gamma[y] * w[y]


def iif_raw(z, y, counts):
    n = counts.astype(np.float64)
    return ce(z * np.log(n.sum() / n), y)


def longtail_case(seed, batch, num_classes, scale=3.0):
    """Random logits and labels, and CIFAR-like counts (imbalance 100) in a shuffled class order with the rarest class
    of a single image; some classes are absent from the batch when B is small."""
    rng = np.random.default_rng(seed)
    counts = np.round(500 * 0.01 ** (np.arange(num_classes) / max(num_classes - 1, 1))).astype(np.int64)
    counts[-1] = 1
    counts = counts[rng.permutation(num_classes)]
    z = scale * rng.standard_normal((batch, num_classes))
    y = rng.integers(0, num_classes, size=batch)
    return z, y, counts
