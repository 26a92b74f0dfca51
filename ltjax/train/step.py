"""The train and eval steps, written per device in the pmap programming model, and their data-parallel wrapper.

`make_train_step` returns `train_step(state, images, labels, schedule, mask) -> state`, a pure function of one
device's shard of the batch and of what the host's schedule says for the epoch (`EpochInputs`: the epoch, the
method's phase, the learning rate; so the compiled step depends on none of the run's milestones): gradients are
averaged with `pmean` over the named axis `"batch"`, BatchNorm normalises with statistics synchronised over that
axis, and sums (loss normaliser, per-class counts, the method's in-step statistics) are `psum`med, so every device
ends the step with the same state and a step on D devices equals one device's step on the global batch. `mask` marks
the real examples of an epoch's padded last batch: the loss, BatchNorm's statistics, the counts and the method's
statistics leave the padding out, so that step is the step on its real examples alone. What the loss is, when its
phases switch and what state it keeps is the `Objective`'s business; the step only calls it. The epoch's running
sums (`TrainTotals`) stay in the state on device, so the host never waits for a step; they include the first step
whose loss or gradient was not finite, which the loop checks whenever it fetches them.

`data_parallel` runs such a function over the devices through `jax.shard_map` under `jax.jit` (the default) or
through `jax.pmap`; arguments are placed by partition specs over a 1-D mesh with axis `"batch"`. Across processes
(`ltjax.multihost`) the mesh holds every process's devices, the batch arrives as one global array assembled
from each process's share (`ltjax.data.device_prefetch`), and the collectives span the processes: the same program,
with a device assignment over hosts (only `shard_map`; `pmap` maps one process's devices).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ltjax.data import device_augment, device_crops, mixup
from ltjax.data.augment import Normalization, normalize
from ltjax.methods import TrainObjective
from ltjax.methods.base import example_keys
from ltjax.metrics import EvalStats
from ltjax.train.state import TrainState

AXIS = "batch"
PARALLEL_MODES = ("shard_map", "pmap")
REPLICATED = PartitionSpec()
SPLIT = PartitionSpec(AXIS)
MEMBERS_SPLIT = PartitionSpec(None, AXIS)  # [members, batch, ...]: every member's batch split over the devices


class EpochInputs(NamedTuple):
    """What the train step is given for an epoch, from the host's schedule (`Trainer.epoch_inputs`).

    Attributes:
      epoch: the 0-indexed epoch (the device augmentation's draws depend on it), int32.
      phase: the method's phase index (`Objective.phase_at`), int32; `[members]` in an ensemble.
      learning_rate: the schedule's rate for the epoch (`ltjax.train.optim`), float32.
    """

    epoch: jax.Array
    phase: jax.Array
    learning_rate: jax.Array


class Crops(NamedTuple):
    """Random-resized crops on the device (`ltjax.data.device_crops`): `size` x `size` crops with a flip in
    training; in evaluation the shorter side resized to `eval_resize`, then the centred `size` x `size` crop."""

    size: int
    eval_resize: int


def _evaluation_images(images: jax.Array, crops: Crops | None) -> jax.Array:
    return images if crops is None else device_crops.resize_center_crop(images, size=crops.size,
                                                                         resize_to=crops.eval_resize)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_train_step(model, optimizer: optax.GradientTransformationExtraArgs, objective: TrainObjective,
                    normalization: Normalization, *, crop_padding: int | None = None,
                    frozen_batch_norm: bool = False, mixup_alpha: float = 0.0, partners: bool = False,
                    crops: Crops | None = None) -> Callable:
    """The per-device train step.

    Args:
      model: a Flax model built with `batch_norm_axis_name="batch"`.
      optimizer: the optax optimizer; its `update` takes the step's `learning_rate` (`ltjax.train.optim`).
      objective: the method bound to the run (`ltjax.methods.bind`), or an ensemble's (`EnsembleObjective`).
      normalization: mean/std applied on device to the uint8 images.
      crop_padding: augment on the device with random pad-crop + flip of this border (None: no augmentation); each
        example's draw is a pure function of (the state's seed, epoch, global step, its position in the batch).
      frozen_batch_norm: BatchNorm in eval mode: the state's running statistics normalise and stay as they are (a
        second stage that freezes them, `SecondStage.frozen_batch_norm`).
      mixup_alpha: mix each batch with `Beta(alpha, alpha)` weights and partners from the global batch
        (`ltjax.data.mixup`); the loss is the weighted sum of the method's loss on both label sets, the accuracy and
        the method's statistics use the examples' own labels. 0: no mixup.
      partners: each device's shard is its examples followed by their partners (`ltjax.data.pipeline.with_partners`,
        a method with `partners`): the network takes the two halves in two passes (BatchNorm's statistics per
        pass, its running averages updated twice), the loss gets both (`Inputs.partner`); the
        accuracy and the method's statistics use the examples. Positions, and so the augmentation's and the loss's
        draws, are those of the global batch of examples followed by the global batch of partners.
      crops: random-resized crops and flips of the full-size images instead of `crop_padding`'s (same key
        discipline).
    """

    def train_step(state: TrainState, images: jax.Array, labels: jax.Array, schedule: EpochInputs,
                   mask: jax.Array) -> TrainState:
        views = [(images, labels, mask)]
        if partners:  # this shard's examples, then their partners
            half = images.shape[0] // 2
            views = [(images[:half], labels[:half], mask[:half]), (images[half:], labels[half:], mask[half:])]
        shard = views[0][0].shape[0]
        first = jax.lax.axis_index(AXIS) * shard
        offsets = [first, first + shard * jax.lax.psum(1, AXIS)]  # the partners follow the global batch
        key = device_augment.step_key(state.seed, schedule.epoch, state.step)
        if crop_padding is not None:
            views = [(device_augment.pad_crop_flip(x, key, padding=crop_padding, index_offset=offset), y, m)
                     for (x, y, m), offset in zip(views, offsets)]
        if crops is not None:
            views = [(device_crops.random_resized_crop_flip(x, key, size=crops.size, index_offset=offset), y, m)
                     for (x, y, m), offset in zip(views, offsets)]
        images, labels, mask = views[0]
        inputs = normalize(images, normalization)
        keys = example_keys(state.seed, state.step, first, labels.shape[0])
        # The loss's terms: (weight, labels, per-example keys); mixup adds the partners' labels, with keys of their own
        # (a method that draws per label draws anew for them).
        terms = [(1.0, labels, keys)]
        if mixup_alpha > 0:
            weight, mixed = _mixup_partners(state, images, labels, mask, first, mixup_alpha)
            partner_images, partner_labels = mixed
            inputs = weight * inputs + (1.0 - weight) * normalize(partner_images, normalization)
            terms = [(weight, labels, keys), (1.0 - weight, partner_labels, jax.vmap(jax.random.fold_in,
                                                                                        (0, None))(keys, 1))]

        def loss_fn(params):
            def forward(batch_stats, x, m):
                return model.apply({"params": params["model"], "batch_stats": batch_stats}, x,
                                   train=not frozen_batch_norm, mask=m, mutable=["batch_stats"])

            outputs, updates = forward(state.batch_stats, inputs, mask)
            partner = None
            if partners:
                partner_images, partner_labels, partner_mask = views[1]
                partner_outputs, updates = forward(updates["batch_stats"], normalize(partner_images, normalization),
                                                   partner_mask)
                partner = (partner_outputs, partner_labels)
            objective_value, batch_loss = 0.0, 0.0
            for weight, term_labels, term_keys in terms:
                total, normalizer = objective.loss(outputs, term_labels, schedule.phase, state.loss_state,
                                                   params["loss"], mask, term_keys, AXIS, schedule.epoch, partner)
                normalizer = jax.lax.psum(normalizer, AXIS)
                # The pmean over devices of D * total_d / normalizer is the gradient of sum_d total_d / normalizer.
                objective_value += weight * total * jax.lax.psum(1, AXIS) / normalizer
                batch_loss += weight * jax.lax.psum(total, AXIS) / normalizer
            return objective_value, (outputs, updates, batch_loss)

        grads, (outputs, updates, batch_loss) = jax.grad(loss_fn, has_aux=True)(state.params)
        grads = jax.lax.pmean(grads, AXIS)
        param_updates, opt_state = optimizer.update(grads, state.opt_state, state.params,
                                                    learning_rate=schedule.learning_rate)
        totals = state.totals.add(
            batch_loss, objective.predict(outputs, state.loss_state), labels, state.step,
            jnp.isfinite(batch_loss) & _all_finite(grads), mask=mask, axis_name=AXIS,
        )
        return state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, param_updates),
            batch_stats=updates["batch_stats"],
            opt_state=opt_state,
            loss_state=objective.collect(state.loss_state, outputs, labels, schedule.phase, AXIS, mask),
            totals=totals,
        )

    return train_step


def _mixup_partners(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array, first: jax.Array,
                    alpha: float) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """This shard's mixup weight and its examples' partners (images, labels), drawn over the global batch: the whole
    batch is gathered (uint8, after the augmentation), so the mixed batch does not depend on the number of devices."""
    weight_key, partner_key = mixup.mixup_keys(state.seed, state.step)
    every_image, every_label, every_mask = (jax.lax.all_gather(x, AXIS, tiled=True) for x in (images, labels, mask))
    chosen = jax.lax.dynamic_slice_in_dim(mixup.mixup_partners(partner_key, every_mask), first, images.shape[0])
    return mixup.mixup_lambda(weight_key, alpha), (every_image[chosen], every_label[chosen])


def make_eval_step(model, normalization: Normalization, objective: TrainObjective,
                   crops: Crops | None = None) -> Callable:
    """The per-device eval step: `eval_step(state, images, labels, mask) -> (EvalStats, features)`.

    `mask` marks the real examples of a padded last batch. The returned statistics are summed over devices; the
    features (for class prototypes) stay per device. With `crops`, images are resized and centre-cropped first.
    """

    def eval_step(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array):
        outputs = model.apply(
            {"params": state.params["model"], "batch_stats": state.batch_stats},
            normalize(_evaluation_images(images, crops), normalization), train=False,
        )
        logits = objective.predict(outputs, state.loss_state)
        stats = EvalStats.init(logits.shape[-1]).update(logits, labels, mask, axis_name=AXIS)
        return stats, outputs.features

    return eval_step


def make_outputs_step(model, normalization: Normalization, crops: Crops | None = None) -> Callable:
    """The per-device outputs step: `outputs_step(state, images) -> (logits, features)`, eval mode, both split over
    the devices like the images (for post-hoc corrections computed from a whole split's outputs)."""

    def outputs_step(state: TrainState, images: jax.Array):
        outputs = model.apply(
            {"params": state.params["model"], "batch_stats": state.batch_stats},
            normalize(_evaluation_images(images, crops), normalization), train=False,
        )
        return outputs.logits, outputs.features

    return outputs_step


def place(tree, sharding: NamedSharding):
    """`tree`'s arrays with `sharding`. Across processes, a host value (NumPy, or an array on this process's devices
    alone) is taken to be the same on every process, as the state and the schedule are, and each process places its
    own copy: `jax.device_put` would first compare it across the processes, a collective per array."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def placed(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf  # already global: a step's output or a batch from device_prefetch
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree.map(placed, tree)


def _split_axis(spec: PartitionSpec) -> int | None:
    """The position of the device axis in a partition spec (None: replicated)."""
    return next((i for i, name in enumerate(spec) if name == AXIS), None)


def data_parallel(
    per_device_fn: Callable,
    mode: str,
    devices: Sequence,
    *,
    in_specs: tuple[PartitionSpec, ...],
    out_specs: PartitionSpec | tuple[PartitionSpec, ...],
    donate_argnums: tuple[int, ...] = (),
) -> Callable:
    """Runs a per-device function over `devices`; arguments and outputs placed by partition specs.

    A spec naming the axis `"batch"` at position k splits that array's dimension k over the devices (device d takes
    the d-th contiguous block, in both modes); `PartitionSpec()` replicates.

    Args:
      per_device_fn: written for one device with collectives over the axis `"batch"`.
      mode: `"shard_map"` (`jax.shard_map` under `jax.jit`) or `"pmap"`.
      devices: the local devices to use.
      in_specs: a spec per positional argument (a spec prefix applies to a whole pytree argument).
      out_specs: a spec per output, or one spec for a single output.
      donate_argnums: arguments whose buffers the step may reuse (the train state).

    Returns:
      A function of the global (unsplit) arguments; its `lower(*args)` gives the lowered program (for inspection:
      HLO, cost analysis) in the `"shard_map"` mode.
    """
    if mode not in PARALLEL_MODES:
        raise ValueError(f"unknown parallel mode {mode!r}; choose one of {', '.join(PARALLEL_MODES)}")
    if mode == "pmap":
        return _pmapped(per_device_fn, devices, in_specs, out_specs, donate_argnums)
    mesh = Mesh(np.asarray(devices), (AXIS,))
    mapped = jax.jit(
        jax.shard_map(
            per_device_fn,
            mesh=mesh,
            in_specs=in_specs,
            out_specs=out_specs,
            # The pmap model: collectives are written out (the `pmean` of the gradients). With replication
            # checking on, autodiff would also sum the gradients of the replicated parameters over devices.
            check_vma=False,
        ),
        donate_argnums=donate_argnums,
    )
    # Explicit placements: a state fresh from init (one device) and one returned by a step (replicated on the mesh)
    # then present the same input shardings, so the step is traced and compiled once.
    placements = tuple(NamedSharding(mesh, spec) for spec in in_specs)

    def placed(args):
        return tuple(place(a, placement) for a, placement in zip(args, placements))

    def run(*args):
        return mapped(*placed(args))

    run.lower = lambda *args: mapped.lower(*placed(args))
    return run


def _pmapped(per_device_fn, devices, in_specs, out_specs, donate_argnums) -> Callable:
    num_devices = len(devices)
    single_output = isinstance(out_specs, PartitionSpec)
    out_tuple = (out_specs,) if single_output else tuple(out_specs)
    in_axes = tuple(_split_axis(spec) for spec in in_specs)
    out_axes = tuple(_split_axis(spec) for spec in out_tuple)
    mapped = jax.pmap(
        per_device_fn, axis_name=AXIS, in_axes=in_axes, out_axes=out_axes[0] if single_output else out_axes,
        devices=devices, donate_argnums=donate_argnums,
    )

    def split(x, axis):
        return x.reshape(*x.shape[:axis], num_devices, x.shape[axis] // num_devices, *x.shape[axis + 1:])

    def merge(x, axis):
        return x.reshape(*x.shape[:axis], -1, *x.shape[axis + 2:])

    def run(*args):
        outputs = mapped(*(
            a if axis is None else jax.tree.map(lambda x, k=axis: split(x, k), a) for a, axis in zip(args, in_axes)
        ))
        outputs = (outputs,) if single_output else outputs
        merged = tuple(
            out if axis is None else jax.tree.map(lambda x, k=axis: merge(x, k), out)
            for out, axis in zip(outputs, out_axes)
        )
        return merged[0] if single_output else merged

    return run


def check_batch_divides(global_batch_size: int, num_devices: int) -> None:
    if global_batch_size % num_devices:
        raise ValueError(
            f"the global batch size {global_batch_size} must divide by the number of devices {num_devices}; "
            f"use a multiple of {num_devices} (e.g. {num_devices * max(1, global_batch_size // num_devices)})"
        )
