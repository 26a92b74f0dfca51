"""Mixup (Zhang et al., ICLR 2018) as MiSLAS's first stage uses it: one mixing weight per batch and a random partner
for each example, drawn on the device from the run's seed and the step.

MiSLAS (`dvlab-research/MiSLAS`, `methods.py`): `lam ~ Beta(alpha, alpha)` once per batch (1 when alpha <= 0), a random
permutation of the batch, `x = lam x + (1 - lam) x[perm]`, and the loss `lam L(z, y) + (1 - lam) L(z, y[perm])`. The
train step (`ltjax.train.step`) mixes the normalised images after the augmentation and combines the method's loss on
both label sets; these functions give the draws. They are pure functions of (seed, step), so a resumed run draws what
the uninterrupted one drew, and the partners are drawn over the global batch, so the mixed batch does not depend on
the number of devices (a device mixes its shard with partners from the whole batch).

A padded last batch (`mask`) permutes its real examples among themselves; each padding example is its own partner.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_MIXUP_STREAM = 0x6D6978  # "mix": draws apart from the augmentation's and the losses'


def mixup_keys(seed: int | jax.Array, step: int | jax.Array) -> tuple[jax.Array, jax.Array]:
    """The keys of `(mixup_lambda, mixup_partners)` at global step `step` of a run seeded `seed`."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _MIXUP_STREAM), step)
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def mixup_lambda(key: jax.Array, alpha: float) -> jax.Array:
    """The batch's mixing weight, `Beta(alpha, alpha)`, float32; 1 (no mixing) for `alpha <= 0` (a Python number)."""
    if alpha <= 0:
        return jnp.ones((), jnp.float32)
    return jax.random.beta(key, alpha, alpha, dtype=jnp.float32)


def mixup_partners(key: jax.Array, mask: jax.Array) -> jax.Array:
    """`[N]` int32: each position's partner, a uniformly random permutation of the positions `mask [N]` marks real;
    every other position is its own partner.

    Two independent random orders of the positions, real ones first, matched rank for rank, give a uniform
    permutation of the real positions whatever their number (traced) and wherever they lie.
    """
    first, second = jax.random.split(key)
    rank_keys = jnp.where(mask, 0.0, 2.0)  # real positions first in both orders
    order = jnp.argsort(rank_keys + jax.random.uniform(first, mask.shape))
    partner_order = jnp.argsort(rank_keys + jax.random.uniform(second, mask.shape))
    rank = jnp.argsort(order)
    partners = partner_order[rank]
    return jnp.where(mask, partners, jnp.arange(mask.shape[0])).astype(jnp.int32)
