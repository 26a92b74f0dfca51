"""ClassStats, DynaSmooth state, deferred schedules and SWRM's similarity windows."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from ltjax import dynasmooth, losses, schedules, stats

CIFAR10_IF100 = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])


def exp_counts(n_max, num_classes, imbalance):
    return np.array([int(n_max * imbalance ** (-c / (num_classes - 1))) for c in range(num_classes)])


def test_class_stats_from_counts():
    s = stats.ClassStats.from_counts(CIFAR10_IF100, group_ends=[3, 6, 10])
    np.testing.assert_allclose(s.prior, CIFAR10_IF100 / 12406, rtol=1e-6)
    np.testing.assert_allclose(s.log_prior, np.log(CIFAR10_IF100 / 12406), rtol=1e-5)
    assert s.many_shot.tolist() == [True] * 8 + [False] * 2
    assert s.medium_shot.tolist() == [False] * 8 + [True] * 2  # 83 and 50 lie in 20..100
    assert not s.few_shot.any()
    assert s.group_of_class.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert s.num_groups == 3 and s.num_classes == 10


def test_shot_thresholds_are_inclusive_for_medium():
    many, medium, few = stats.shot_masks(jnp.array([101, 100, 20, 19]))
    assert many.tolist() == [True, False, False, False]
    assert medium.tolist() == [False, True, True, False]
    assert few.tolist() == [False, False, False, True]


def test_frequency_groups_follow_counts_not_class_order():
    shuffled = CIFAR10_IF100[[7, 2, 9, 0, 5, 1, 8, 3, 6, 4]]
    groups = stats.frequency_groups(jnp.asarray(shuffled), num_groups=3)
    by_count = {int(n): int(g) for n, g in zip(shuffled, groups)}
    # 10 classes in 3 near-equal blocks: sizes 4, 3, 3 (rank * 3 // 10), most frequent first.
    assert [by_count[int(n)] for n in CIFAR10_IF100] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    ties = stats.frequency_groups(jnp.array([5, 7, 5, 5]), num_groups=2)
    assert ties.tolist() == [0, 0, 1, 1]  # ties broken by class index


def test_class_stats_vmap_over_several_imbalance_factors():
    batch = np.stack([exp_counts(500, 100, f) for f in (100, 50, 10)])
    vmapped = jax.vmap(functools.partial(stats.class_stats, num_groups=10))(jnp.asarray(batch))
    assert vmapped.counts.shape == (3, 100) and vmapped.num_groups == 10
    for row, counts in enumerate(batch):
        single = stats.class_stats(jnp.asarray(counts), num_groups=10)
        for name in ("prior", "log_prior", "many_shot", "medium_shot", "few_shot", "group_of_class"):
            np.testing.assert_allclose(getattr(vmapped, name)[row], getattr(single, name), rtol=1e-6)
    assert vmapped.few_shot.sum(axis=1).tolist() == [int((c < 20).sum()) for c in batch]
    # Every per-class helper vmaps over count vectors as well.
    for helper in (losses.class_balanced_weights, losses.ldam_margins, losses.kps_margins, losses.kps_scales,
                   losses.freqfocus_gammas, losses.iif_weights):
        np.testing.assert_allclose(jax.vmap(helper)(jnp.asarray(batch))[1], helper(batch[1]), rtol=1e-5)


def test_class_stats_is_a_pytree_that_crosses_jit():
    s = stats.ClassStats.from_counts(CIFAR10_IF100, num_groups=2)
    out = jax.jit(lambda t: t.replace(prior=t.prior * 2))(s)
    np.testing.assert_allclose(out.prior, 2 * s.prior)
    assert out.num_groups == 2


def test_dynasmooth_epoch_cycle():
    state = dynasmooth.init(jnp.array([0, 0, 1, 1, 2]), num_groups=3)
    assert not state.has_means
    state = dynasmooth.accumulate(state, jnp.array([0.2, 0.4, 0.9]), jnp.array([0, 1, 2]))
    state = dynasmooth.accumulate(state, jnp.array([0.6, 1.0]), jnp.array([3, 7]))  # label 7 is out of range
    np.testing.assert_allclose(state.example_counts, [2, 2, 0])
    state = dynasmooth.end_epoch(state)
    assert bool(state.has_means)
    # group 2 saw nothing: it takes the epoch's overall mean instead of 0/0.
    overall = (0.2 + 0.4 + 0.9 + 0.6) / 4
    np.testing.assert_allclose(state.group_means, [0.3, 0.75, overall], rtol=1e-6)
    np.testing.assert_allclose(dynasmooth.class_mean_probs(state), [0.3, 0.3, 0.75, 0.75, overall], rtol=1e-6)
    np.testing.assert_allclose(state.prob_sums, 0)
    # A later epoch where group 1 is empty keeps group 1's previous mean.
    state = dynasmooth.end_epoch(dynasmooth.accumulate(state, jnp.array([0.5]), jnp.array([4])))
    np.testing.assert_allclose(state.group_means, [0.3, 0.75, 0.5], rtol=1e-6)
    assert np.all(np.isfinite(dynasmooth.class_mean_probs(state)))


def test_dynasmooth_clips_probabilities_like_the_reference():
    state = dynasmooth.init(jnp.array([0]), num_groups=1)
    state = dynasmooth.end_epoch(dynasmooth.accumulate(state, jnp.array([0.0, 1.0]), jnp.array([0, 0])))
    np.testing.assert_allclose(state.group_means, [0.5], rtol=1e-6)
    empty = dynasmooth.end_epoch(dynasmooth.init(jnp.array([0, 1]), num_groups=2))
    assert not empty.has_means and np.all(np.isfinite(empty.group_means))


def test_dynasmooth_accumulate_in_a_data_parallel_step_equals_one_device():
    devices = np.array(jax.devices()[:8])
    assert len(devices) == 8, "conftest sets 8 fake CPU devices"
    mesh = Mesh(devices, ("batch",))
    groups = jnp.array([0, 1, 1, 2])
    probs = jnp.linspace(0.05, 0.95, 32)
    labels = jnp.arange(32) % 4

    @jax.jit
    @functools.partial(
        jax.shard_map, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec("batch"), PartitionSpec("batch")),
        out_specs=PartitionSpec(),
    )
    def step(state, p, y):
        return dynasmooth.accumulate(state, p, y, axis_name="batch")

    sharded = step(dynasmooth.init(groups, 3), probs, labels)
    single = dynasmooth.accumulate(dynasmooth.init(groups, 3), probs, labels)
    np.testing.assert_allclose(sharded.prob_sums, single.prob_sums, rtol=1e-6)
    np.testing.assert_allclose(sharded.example_counts, single.example_counts)


def test_ffds_with_a_fresh_state_is_cross_entropy_then_smooths():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((8, 10)), jnp.float32)
    labels = jnp.arange(8) % 10
    s = stats.ClassStats.from_counts(CIFAR10_IF100, group_ends=[3, 6, 10])
    state = dynasmooth.init(s.group_of_class, s.num_groups)

    def loss(state):
        return losses.ffds_loss(logits, labels, class_counts=s.counts,
                                class_mean_probs=dynasmooth.class_mean_probs(state), has_means=state.has_means)

    np.testing.assert_allclose(loss(state), losses.softmax_cross_entropy(logits, labels), rtol=1e-6)
    probs = jnp.exp(-losses.softmax_cross_entropy(logits, labels))
    state = dynasmooth.end_epoch(dynasmooth.accumulate(state, probs, labels))
    assert not np.allclose(loss(state), losses.softmax_cross_entropy(logits, labels))


@pytest.mark.parametrize(
    "spec, num_epochs, epoch",
    [
        (0.65, 200, 130),  # D-FFDS
        (0.5, 200, 100),  # IB
        (0.6, 200, 120),  # KPS-GA
        (0.7, 200, 140),  # SWRM, the last 60 of 200
        (0.8, 20, 16),  # DRW in a 20-epoch run
        (0.29, 100, 29),  # 0.29 * 100 is 28.999999999999996 in binary: the floor must still give 29
        (0.0, 50, 0),
        (130, 200, 130),  # absolute
        (13, 20, 13),
    ],
)
def test_epoch_specs_are_fractions_of_the_run_or_absolute(spec, num_epochs, epoch):
    assert schedules.epoch_of(spec, num_epochs, key="loss.x") == epoch


@pytest.mark.parametrize("spec", [-0.1, 1.5, 130.5])
def test_epoch_specs_that_are_neither_fraction_nor_whole_epoch_raise(spec):
    with pytest.raises(ValueError, match=r"loss\.x="):
        schedules.epoch_of(spec, 200, key="loss.x")


def test_drw_switch_is_traceable_without_recompiling():
    weights = jax.jit(chex.assert_max_traces(schedules.drw_class_weights, n=1))
    np.testing.assert_allclose(weights(CIFAR10_IF100, False), np.ones(10))
    np.testing.assert_allclose(weights(CIFAR10_IF100, True), losses.class_balanced_weights(CIFAR10_IF100), rtol=1e-6)


def test_window_members_shift_inward_at_the_edges():
    coordinates = jnp.array([0.3, -2.0, 1.5, 0.0, 4.0, -1.0])  # order: 1, 5, 3, 0, 2, 4
    members = losses.window_members(coordinates, 3)
    assert members.tolist() == [[3, 0, 2], [1, 5, 3], [0, 2, 4], [5, 3, 0], [0, 2, 4], [1, 5, 3]]
    even = losses.window_members(coordinates, 4)  # even W: the extra member lies on the lower side
    assert even[0].tolist() == [5, 3, 0, 2] and even[1].tolist() == [1, 5, 3, 0]
    assert all(c in row for c, row in enumerate(np.asarray(even)))


def test_swr_weights_and_swm_margins_by_hand():
    counts = jnp.array([100, 10, 50, 5])
    coordinates = jnp.array([0.0, 3.0, 1.0, 2.0])  # order: 0, 2, 3, 1
    weights = losses.swr_weights(counts, coordinates, window_size=3)
    windows = {0: [0, 2, 3], 1: [2, 3, 1], 2: [0, 2, 3], 3: [2, 3, 1]}
    expected = [np.log1p(100 / n * np.mean([counts[i] / n for i in windows[c]]))
                for c, n in enumerate(np.asarray(counts, np.float64))]
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    t = (np.array([0.0, 3.0, 1.0, 2.0]) - 1.5) / np.std([0.0, 3.0, 1.0, 2.0])
    margins = losses.swm_margins(coordinates, window_size=3, beta=2.0)
    expected_margins = [np.log(np.mean([(1 + (t[i] - t[c]) ** 2) ** 2 for i in windows[c]])) for c in range(4)]
    np.testing.assert_allclose(margins, expected_margins, rtol=1e-5)
    gaussian = losses.swm_margins(coordinates, window_size=3, kernel="gaussian")
    np.testing.assert_allclose(
        gaussian, [np.log(np.mean([np.exp((t[i] - t[c]) ** 2) for i in windows[c]])) for c in range(4)], rtol=1e-5)
    assert np.all(np.asarray(margins) >= 0)


def test_similarity_windows_permute_with_the_classes_and_ignore_coordinate_scale():
    rng = np.random.default_rng(4)
    counts = jnp.asarray(rng.integers(5, 500, size=12))
    coordinates = jnp.asarray(rng.standard_normal(12), jnp.float32)
    perm = jnp.asarray(rng.permutation(12))
    w = losses.swr_weights(counts, coordinates, window_size=5)
    m = losses.swm_margins(coordinates, window_size=5)
    np.testing.assert_allclose(losses.swr_weights(counts[perm], coordinates[perm], window_size=5), w[perm], rtol=1e-6)
    np.testing.assert_allclose(losses.swm_margins(coordinates[perm], window_size=5), m[perm], rtol=1e-5)
    np.testing.assert_allclose(losses.swm_margins(3.0 * coordinates + 7.0, window_size=5), m, rtol=1e-4, atol=1e-6)


def test_tsne_coordinates_put_similar_prototypes_next_to_each_other():
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(5), 8)
    prototypes = 5 * rng.standard_normal((5, 32))[clusters] + rng.standard_normal((40, 32))
    coordinates = losses.tsne_coordinates(prototypes, seed=0)
    assert coordinates.shape == (40,) and coordinates.dtype == np.float32
    np.testing.assert_array_equal(coordinates, losses.tsne_coordinates(prototypes, seed=0))
    along_the_line = clusters[np.argsort(coordinates)]
    # 1-D t-SNE has local minima (a stray point may land at an end), but neighbours along the line should mostly
    # share a cluster: about 18 % would in a random order.
    assert np.mean(along_the_line[1:] == along_the_line[:-1]) > 0.8
    with pytest.raises(ValueError, match="class_prototypes must be"):
        losses.tsne_coordinates(np.ones(5))
