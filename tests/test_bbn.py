"""BBN (methods-structures.md §1): the bilateral loss and its alpha schedule against float64 NumPy restatements of
`combiner.py`, the reversed partner sampler, the pipeline that pairs every example with a partner, and the train step
that passes the two through the network separately: its loss by hand, and the same step on 1 and 8 devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from runs import digits_config

from ltjax import losses, schedules
from ltjax.data import samplers
from ltjax.data.augment import Normalization, normalize
from ltjax.data.pipeline import TrainPipeline, with_partners
from ltjax.data.source import ArraySource
from ltjax.train.build import DataSpec, build

RNG = np.random.default_rng(11)
CONVENTIONAL = 2.0 * RNG.standard_normal((6, 5))
REBALANCING = 2.0 * RNG.standard_normal((6, 5))
LABELS = RNG.integers(0, 5, 6)
PARTNER_LABELS = RNG.integers(0, 5, 6)
NORMALIZATION = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
COUNTS = np.array([40, 20, 10, 5])


def ref_cross_entropy(z, y):
    shifted = z - z.max(-1, keepdims=True)
    return -(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(len(y)), y]


def ref_bbn(conventional, rebalancing, y, y_partner, alpha):
    z = 2 * alpha * conventional + 2 * (1 - alpha) * rebalancing
    return alpha * ref_cross_entropy(z, y) + (1 - alpha) * ref_cross_entropy(z, y_partner)


@pytest.mark.parametrize("alpha", [1.0, 0.75, 0.5, 0.2079, 0.0])
def test_bbn_loss_matches_the_reference(alpha):
    with jax.enable_x64(True):
        actual = losses.bbn_loss(jnp.asarray(CONVENTIONAL), jnp.asarray(REBALANCING), jnp.asarray(LABELS),
                                 jnp.asarray(PARTNER_LABELS), alpha=alpha)
        np.testing.assert_allclose(actual, ref_bbn(CONVENTIONAL, REBALANCING, LABELS, PARTNER_LABELS, alpha),
                                   rtol=1e-12)


def test_bbn_loss_at_the_ends_of_the_schedule_is_cross_entropy_of_one_branch():
    conventional, rebalancing = jnp.asarray(CONVENTIONAL, jnp.float32), jnp.asarray(REBALANCING, jnp.float32)
    labels, partners = jnp.asarray(LABELS), jnp.asarray(PARTNER_LABELS)
    np.testing.assert_allclose(losses.bbn_loss(conventional, rebalancing, labels, partners, alpha=1.0),
                               losses.softmax_cross_entropy(2 * conventional, labels), rtol=1e-6)
    np.testing.assert_allclose(losses.bbn_loss(conventional, rebalancing, labels, partners, alpha=0.0),
                               losses.softmax_cross_entropy(2 * rebalancing, partners), rtol=1e-6)


def test_bbn_loss_gradients_and_traced_alpha():
    with jax.enable_x64(True):
        labels, partners = jnp.asarray(LABELS), jnp.asarray(PARTNER_LABELS)
        check_grads(lambda c, r, a: losses.bbn_loss(c, r, labels, partners, alpha=a),
                    (jnp.asarray(CONVENTIONAL), jnp.asarray(REBALANCING), jnp.asarray(0.4)), order=2,
                    modes=("fwd", "rev"))
        swept = jax.vmap(lambda a: losses.bbn_loss(jnp.asarray(CONVENTIONAL), jnp.asarray(REBALANCING), labels,
                                                   partners, alpha=a))(jnp.array([0.2, 0.9]))
        np.testing.assert_allclose(swept[1], ref_bbn(CONVENTIONAL, REBALANCING, LABELS, PARTNER_LABELS, 0.9),
                                   rtol=1e-12)


def test_bbn_loss_errors():
    z = jnp.zeros((3, 4))
    with pytest.raises(ValueError, match="alpha"):
        losses.bbn_loss(z, z, jnp.zeros(3, int), jnp.zeros(3, int), alpha=1.5)
    with pytest.raises(ValueError, match="one shape"):
        losses.bbn_logits(z, jnp.zeros((3, 5)), alpha=0.5)
    with pytest.raises(ValueError, match="labels shape"):
        losses.bbn_loss(z, z, jnp.zeros(2, int), jnp.zeros(3, int), alpha=0.5)


def test_alpha_follows_the_reference_schedule():
    # combiner.py: 1 - ((e - 1) / D)^2 for the 1-indexed epoch e, D = E except 100 for E = 90 and 200 for E = 180.
    for num_epochs, divisor in [(200, 200), (90, 100), (180, 200), (10, 10)]:
        for epoch in range(num_epochs):
            np.testing.assert_allclose(schedules.bbn_alpha(epoch, num_epochs), 1 - (epoch / divisor) ** 2,
                                       rtol=1e-6, atol=1e-7)
    assert float(schedules.bbn_alpha(89, 90)) == pytest.approx(0.2079, abs=1e-4)
    assert float(schedules.bbn_alpha(199, 200)) == pytest.approx(0.00997, abs=1e-5)


def test_reversed_partners_draw_classes_in_inverse_proportion_to_their_counts():
    labels = np.repeat(np.arange(3), [400, 40, 4])
    draws = samplers.reversed_partners(labels, 60_000, np.random.default_rng(0))
    frequencies = np.bincount(labels[draws], minlength=3) / len(draws)
    expected = (1 / np.array([400, 40, 4])) / np.sum(1 / np.array([400, 40, 4]))
    np.testing.assert_allclose(frequencies, expected, atol=0.01)
    # Every image of a class is drawn (with replacement): the 4 tail images about equally.
    tail = np.bincount(draws[labels[draws] == 2] - 440, minlength=4)
    assert tail.min() > 0.2 * len(draws) * expected[2] / 4 * 4 / 4 and tail.size == 4


def test_with_partners_lays_out_each_devices_examples_then_their_partners():
    indices, partners, mask = np.arange(8), np.arange(100, 108), np.arange(8) < 6
    paired, paired_mask = with_partners(indices, partners, mask, 4)
    assert paired.tolist() == [0, 1, 100, 101, 2, 3, 102, 103, 4, 5, 104, 105, 6, 7, 106, 107]
    assert paired_mask.tolist() == [True] * 12 + [False, False, False, False]


def test_the_pipeline_pairs_every_example_and_resumes_with_the_same_partners():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [30, 8, 2]).astype(np.int64)
    source = ArraySource(rng.integers(0, 255, (40, 4, 4, 3), dtype=np.uint8), labels, 3, ("a", "b", "c"))
    pipeline = TrainPipeline(source, global_batch_size=8, seed=3, partners=samplers.reversed_partners,
                             device_blocks=2)
    batches = list(pipeline.batches(end_epoch=2))
    assert len(batches) == 2 * pipeline.steps_per_epoch() == 10 and all(len(b.labels) == 16 for b in batches)
    order = pipeline.epoch_order(0)
    first = batches[0].indices
    assert first[:4].tolist() == order[:4].tolist() and first[8:12].tolist() == order[4:8].tolist()
    partners = np.concatenate([b.indices.reshape(2, 2, 4)[:, 1].ravel() for b in batches])
    assert np.mean(labels[partners] == 2) > 0.5  # the rarest class: 2 images, most of the partners
    resumed = list(pipeline.batches(start_epoch=1, start_step=2, end_epoch=2))
    np.testing.assert_array_equal(resumed[0].indices, batches[7].indices)
    with pytest.raises(ValueError, match="device_blocks=3"):
        TrainPipeline(source, global_batch_size=8, partners=samplers.reversed_partners, device_blocks=3)


def _program(devices, model="resnet8"):
    trainer = build(digits_config(("loss.name", "bbn"), ("num_epochs", "10"), model=model),
                    DataSpec(COUNTS, (8, 8, 3), NORMALIZATION, 10), devices=devices)
    return trainer, trainer.init_state()


def test_a_bbn_step_passes_examples_and_partners_separately_and_mixes_them_by_alpha():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)  # 8 examples, then their 8 partners
    labels = rng.integers(0, 4, 16).astype(np.int32)
    trainer, state = _program(jax.devices()[:1])
    before = jax.device_get(state)
    epoch = 4
    new_state = trainer.train_step(state, images, labels, trainer.epoch_inputs(epoch))
    variables = {"params": before.params["model"], "batch_stats": before.batch_stats}
    uniform, updates = trainer.model.apply(variables, normalize(images[:8], NORMALIZATION), train=True,
                                           mutable=["batch_stats"])
    partner, updates = trainer.model.apply({**variables, **updates}, normalize(images[8:], NORMALIZATION), train=True,
                                           mutable=["batch_stats"])
    alpha = 1 - (epoch / 10) ** 2
    expected = ref_bbn(np.asarray(uniform.branches[:, 0], np.float64), np.asarray(partner.branches[:, 1], np.float64),
                       labels[:8], labels[8:], alpha).mean()
    np.testing.assert_allclose(float(new_state.totals.loss_sum), expected, rtol=1e-5)
    assert int(new_state.totals.class_count.sum()) == 8  # the accuracy counts the examples, not the partners
    # BatchNorm's running statistics took both passes, one after the other.
    np.testing.assert_allclose(new_state.batch_stats["stem_bn"]["mean"], updates["batch_stats"]["stem_bn"]["mean"],
                               rtol=1e-5, atol=1e-7)


def test_a_bbn_step_on_eight_devices_is_the_step_on_one():
    rng = np.random.default_rng(2)
    examples = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    example_labels = rng.integers(0, 4, 16).astype(np.int32)
    results = {}
    for devices in (jax.devices()[:1], jax.devices()):
        blocks = len(devices)
        layout, _ = with_partners(np.arange(8), np.arange(8, 16), np.ones(8, bool), blocks)
        trainer, state = _program(devices)
        results[blocks] = jax.device_get(trainer.train_step(state, examples[layout], example_labels[layout],
                                                            trainer.epoch_inputs(2)))
    one, many = results[1], results[len(jax.devices())]
    assert len(jax.devices()) == 8
    for a, b in zip(jax.tree.leaves((one.params, one.batch_stats)), jax.tree.leaves((many.params, many.batch_stats))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one.totals.loss_sum, many.totals.loss_sum, rtol=1e-6)


def test_mixup_with_partners_is_refused():
    from ltjax.keys import ConfigError

    with pytest.raises(ConfigError, match="mixup_alpha=0"):
        build(digits_config(("loss.name", "bbn"), ("mixup_alpha", "0.2")),
              DataSpec(COUNTS, (8, 8, 3), NORMALIZATION, 10))
