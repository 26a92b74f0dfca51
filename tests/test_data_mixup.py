"""Mixup's draws: a uniform permutation of the real examples of the global batch, one Beta weight per batch, pure
functions of (seed, step)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.data import mixup


def test_partners_permute_the_real_examples_and_leave_the_padding_in_place():
    mask = jnp.asarray(np.r_[np.ones(11, bool), np.zeros(5, bool)])
    for step in range(20):
        _, key = mixup.mixup_keys(3, step)
        partners = np.asarray(mixup.mixup_partners(key, mask))
        assert sorted(partners[:11]) == list(range(11)) and list(partners[11:]) == list(range(11, 16))
    scattered = jnp.asarray([True, False, True, True, False, True])  # padding anywhere
    partners = np.asarray(mixup.mixup_partners(mixup.mixup_keys(0, 0)[1], scattered))
    assert sorted(partners[[0, 2, 3, 5]]) == [0, 2, 3, 5] and partners[1] == 1 and partners[4] == 4


def test_partners_are_uniform_over_permutations():
    """Each example's partner is uniform over the real positions (8 of them, 4000 draws: 500 expected per cell)."""
    mask = jnp.ones(8, bool)
    draws = jax.vmap(lambda step: mixup.mixup_partners(mixup.mixup_keys(0, step)[1], mask))(jnp.arange(4000))
    counts = np.stack([np.bincount(np.asarray(draws[:, position]), minlength=8) for position in range(8)])
    assert counts.min() > 400 and counts.max() < 600, counts


def test_the_weight_is_beta_distributed_and_one_without_mixup():
    weights = jax.vmap(lambda step: mixup.mixup_lambda(mixup.mixup_keys(1, step)[0], 1.0))(jnp.arange(4000))
    assert abs(float(jnp.mean(weights)) - 0.5) < 0.02 and abs(float(jnp.var(weights)) - 1 / 12) < 0.01
    concentrated = jax.vmap(lambda step: mixup.mixup_lambda(mixup.mixup_keys(1, step)[0], 0.2))(jnp.arange(4000))
    assert float(jnp.mean((concentrated < 0.1) | (concentrated > 0.9))) > 0.5  # Beta(0.2, 0.2): mostly near 0 or 1
    assert float(mixup.mixup_lambda(jax.random.key(0), 0.0)) == 1.0


@pytest.mark.parametrize("seed, step", [(0, 0), (5, 17)])
def test_the_draws_are_pure_functions_of_seed_and_step(seed, step):
    first, second = mixup.mixup_keys(seed, step), mixup.mixup_keys(seed, step)
    mask = jnp.ones(16, bool)
    np.testing.assert_array_equal(mixup.mixup_partners(first[1], mask), mixup.mixup_partners(second[1], mask))
    assert float(mixup.mixup_lambda(first[0], 1.0)) == float(mixup.mixup_lambda(second[0], 1.0))
    assert not np.array_equal(mixup.mixup_partners(first[1], mask),
                              mixup.mixup_partners(mixup.mixup_keys(seed, step + 1)[1], mask))
