"""Epoch samplers: their class statistics, exact counts, determinism, and the data-parallel split."""
import numpy as np
import pytest

from ltjax.data import samplers

# A long-tailed label vector: 10 classes from 400 down to 4 examples, plus an empty class 10 (absent label).
COUNTS = np.array([400, 240, 144, 86, 52, 31, 19, 11, 7, 4, 0])
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(len(COUNTS)), COUNTS))
PRESENT = COUNTS > 0

ALL_SAMPLERS = {
    "instance": samplers.make_sampler("instance"),
    "class_balanced": samplers.make_sampler("class_balanced"),
    "square_root": samplers.make_sampler("square_root"),
    "progressive": samplers.make_sampler("progressive", total_epochs=10),
    "oversample": samplers.make_sampler("oversample"),
    "undersample": samplers.make_sampler("undersample"),
}


def assert_class_frequencies(order: np.ndarray, expected_probs: np.ndarray) -> None:
    """Class counts of `order` within 5 binomial standard deviations of `len(order) * p_c` (false alarm ~1e-6)."""
    draws = len(order)
    counts = np.bincount(LABELS[order], minlength=len(expected_probs))
    expected = draws * expected_probs
    tolerance = 5 * np.sqrt(draws * expected_probs * (1 - expected_probs)) + 1e-9
    np.testing.assert_array_less(np.abs(counts - expected), tolerance + 1e-9)


def test_instance_uniform_is_a_permutation():
    order = samplers.instance_uniform_order(LABELS, epoch=3, seed=1)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(LABELS)))
    assert order.dtype == np.int64


def test_class_balanced_gives_uniform_class_frequencies():
    order = samplers.class_balanced_order(LABELS, epoch=0, seed=0, num_samples=200_000)
    expected = PRESENT / PRESENT.sum()
    assert_class_frequencies(order, expected)
    assert len(samplers.class_balanced_order(LABELS, epoch=0, seed=0)) == len(LABELS)


def test_class_balanced_draws_instances_uniformly_within_a_class():
    order = samplers.class_balanced_order(LABELS, epoch=0, seed=0, num_samples=200_000)
    head = np.flatnonzero(LABELS == 0)
    draws = np.isin(order, head).sum()
    per_instance = np.bincount(order, minlength=len(LABELS))[head]
    p = 1 / len(head)
    assert np.abs(per_instance - draws * p).max() < 5 * np.sqrt(draws * p * (1 - p))


def test_square_root_frequencies_follow_sqrt_counts():
    order = samplers.square_root_order(LABELS, epoch=0, seed=0, num_samples=200_000)
    expected = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()
    assert_class_frequencies(order, expected)


def test_class_probabilities_powers():
    np.testing.assert_allclose(samplers.class_probabilities(COUNTS, 1.0), COUNTS / COUNTS.sum())
    np.testing.assert_allclose(samplers.class_probabilities(COUNTS, 0.0), PRESENT / PRESENT.sum())
    assert samplers.class_probabilities(COUNTS, 0.0)[-1] == 0.0


def test_progressive_interpolates_from_instance_to_class_balanced():
    total = 10
    start = samplers.progressive_class_probabilities(COUNTS, 0, total)
    end = samplers.progressive_class_probabilities(COUNTS, total, total)
    middle = samplers.progressive_class_probabilities(COUNTS, 5, total)
    np.testing.assert_allclose(start, COUNTS / COUNTS.sum())
    np.testing.assert_allclose(end, PRESENT / PRESENT.sum())
    np.testing.assert_allclose(middle, 0.5 * start + 0.5 * end)
    order = samplers.progressively_balanced_order(LABELS, epoch=0, seed=0, total_epochs=total, num_samples=100_000)
    assert_class_frequencies(order, start)
    order = samplers.progressively_balanced_order(LABELS, epoch=total, seed=0, total_epochs=total, num_samples=100_000)
    assert_class_frequencies(order, end)


def test_progressive_rejects_epochs_outside_the_run():
    with pytest.raises(ValueError, match="epoch must lie in"):
        samplers.progressively_balanced_order(LABELS, epoch=11, seed=0, total_epochs=10)


def test_oversample_gives_n_max_per_class_with_least_repetition():
    order = samplers.oversample_order(LABELS, epoch=0, seed=0)
    np.testing.assert_array_equal(np.bincount(LABELS[order], minlength=len(COUNTS)), COUNTS.max() * PRESENT)
    per_instance = np.bincount(order, minlength=len(LABELS))
    expected_repeats = COUNTS.max() / COUNTS[LABELS]
    assert ((per_instance == np.floor(expected_repeats)) | (per_instance == np.ceil(expected_repeats))).all()


def test_undersample_gives_n_min_per_class_without_duplicates():
    order = samplers.undersample_order(LABELS, epoch=0, seed=0)
    n_min = COUNTS[PRESENT].min()
    np.testing.assert_array_equal(np.bincount(LABELS[order], minlength=len(COUNTS)), n_min * PRESENT)
    assert len(np.unique(order)) == len(order)


@pytest.mark.parametrize("name", sorted(ALL_SAMPLERS))
def test_samplers_are_deterministic_and_change_with_epoch_and_seed(name):
    sampler = ALL_SAMPLERS[name]
    np.testing.assert_array_equal(sampler(LABELS, 2, 7), sampler(LABELS, 2, 7))
    assert not np.array_equal(sampler(LABELS, 2, 7), sampler(LABELS, 3, 7))
    assert not np.array_equal(sampler(LABELS, 2, 7), sampler(LABELS, 2, 8))


def test_make_sampler_errors():
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.make_sampler("balanced")
    with pytest.raises(ValueError, match="total_epochs"):
        samplers.make_sampler("progressive")


def test_process_shares_reassemble_the_global_batch():
    batch = np.arange(48)
    shares = [samplers.process_share(batch, p, 4) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(shares), batch)
    with pytest.raises(ValueError, match="process count 5"):
        samplers.process_share(batch, 0, 5)
