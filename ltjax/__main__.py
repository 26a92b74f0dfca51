"""`python -m ltjax`: a quick demo of the loss library on the embedded long-tailed digits, no download needed.

It fits a linear classifier on the long-tailed digits (scikit-learn's real 8x8 images, imbalance 10) with several
losses of `ltjax.losses`, and prints the balanced test accuracy overall and on many/medium/few-shot classes. The
training command (`ltjax-train`) replaces this demo once the training loop lands.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltjax import losses
from ltjax.data.digits import load_digits_lt
from ltjax.stats import ClassStats


def _features(source) -> tuple[jax.Array, jax.Array]:
    pixels = np.stack([source[i][0][..., 0] for i in range(len(source))]).reshape(len(source), -1)
    return jnp.asarray(pixels / 255.0 - 0.5, jnp.float32), jnp.asarray(source.labels)


def _demo_losses(stats: ClassStats) -> dict:
    return {
        "cross-entropy": lambda z, y: losses.softmax_cross_entropy(z, y),
        "focal (gamma 1)": lambda z, y: losses.focal_loss(z, y, gamma=1.0),
        "class-balanced softmax": lambda z, y: losses.class_balanced_loss(z, y, class_counts=stats.counts, beta=0.99),
        "logit-adjusted (tau 1)": lambda z, y: losses.logit_adjusted_loss(z, y, class_priors=stats.prior),
        "balanced softmax": lambda z, y: losses.balanced_softmax_loss(z, y, class_counts=stats.counts),
        "IIF (smooth)": lambda z, y: losses.iif_loss(z, y, class_counts=stats.counts, variant="smooth"),
    }


def _fit_linear(loss_fn, features, labels, num_classes: int, steps: int) -> tuple[jax.Array, jax.Array]:
    params = (jnp.zeros((features.shape[1], num_classes)), jnp.zeros((num_classes,)))
    optimizer = optax.sgd(0.5, momentum=0.9)

    def objective(params):
        weights, bias = params
        return losses.mean(loss_fn(features @ weights + bias, labels)) + 1e-4 * jnp.sum(weights**2)

    @jax.jit
    def step(carry, _):
        params, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(objective)(params), opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="full-batch SGD steps per loss")
    parser.add_argument("--imbalance-factor", type=float, default=10.0)
    args = parser.parse_args()

    splits = load_digits_lt(imbalance_factor=args.imbalance_factor)
    stats = ClassStats.from_counts(np.bincount(splits.train.labels, minlength=splits.train.num_classes))
    train_x, train_y = _features(splits.train)
    test_x, test_y = _features(splits.test)
    groups = {"many": stats.many_shot, "medium": stats.medium_shot, "few": stats.few_shot}
    print(f"long-tailed digits: {len(train_y)} train images, counts {stats.counts.astype(int).tolist()}")
    print(f"balanced test: {len(test_y)} images; classes many/medium/few = "
          + "/".join(str(int(mask.sum())) for mask in groups.values()))
    print(f"| {'loss':24} | overall | " + " | ".join(f"{name:>6}" for name in groups) + " |")
    print("|" + "-" * 26 + "|--------:|" + "-------:|" * len(groups))
    for name, loss_fn in _demo_losses(stats).items():
        weights, bias = _fit_linear(loss_fn, train_x, train_y, stats.num_classes, args.steps)
        correct = jnp.argmax(test_x @ weights + bias, axis=-1) == test_y
        per_class = np.array([float(jnp.mean(correct[test_y == c])) for c in range(stats.num_classes)])
        cells = " | ".join(
            f"{100 * per_class[np.asarray(mask)].mean():6.1f}" if mask.any() else "     -" for mask in groups.values()
        )
        print(f"| {name:24} | {100 * float(jnp.mean(correct)):7.1f} | {cells} |")


if __name__ == "__main__":
    main()
