"""The train and eval steps, written per device in the pmap programming model, and their data-parallel wrappers.

`make_train_step` returns `train_step(state, images, labels, epoch) -> (state, metrics)`, a pure function of one
device's shard of the batch: gradients are averaged with `pmean` over the named axis `"batch"`, BatchNorm
normalises with statistics synchronised over that axis, and sums (loss, per-class counts, DynaSmooth statistics)
are `psum`med, so every device ends the step with the same state and a step on D devices equals one device's step
on the global batch. `data_parallel` runs such a function over all local devices through `jax.shard_map` under
`jax.jit` (the default) or through `jax.pmap`; both take the state replicated and return it replicated.

Multi-host: call `jax.distributed.initialize()` before anything touches the devices, build each host's share of the
global batch with the pipeline's `process_index`/`process_count`, and assemble global arrays with
`jax.make_array_from_process_local_data` over a mesh of `jax.devices()`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ltjax import dynasmooth
from ltjax.data.augment import Normalization, normalize
from ltjax.metrics import EvalStats
from ltjax.train.state import TrainState

AXIS = "batch"
PARALLEL_MODES = ("shard_map", "pmap")


def _device_count() -> jax.Array:
    return jax.lax.psum(1, AXIS)


def make_train_step(
    model,
    optimizer: optax.GradientTransformation,
    objective: Callable,
    normalization: Normalization,
    num_classes: int,
    dynasmooth_phase: Callable[[jax.Array], jax.Array] | None,
    *,
    predict_logits: Callable | None = None,
) -> Callable:
    """The per-device train step.

    Args:
      model: a Flax model built with `batch_norm_axis_name="batch"`.
      optimizer: the optax optimizer.
      objective: `train.objective.make_objective(...)`.
      normalization: mean/std applied on device to the uint8 images.
      num_classes: C.
      dynasmooth_phase: `epoch -> bool`, whether training batches feed DynaSmooth (FFDS); None for other losses.
      predict_logits: `outputs -> logits` whose argmax counts as the prediction in the training accuracy, the
        same rule the eval step uses (IIF predicts with `z * iif`); None: the model's logits.
    """

    def train_step(state: TrainState, images: jax.Array, labels: jax.Array, epoch: jax.Array):
        inputs = normalize(images, normalization)

        def loss_fn(params):
            outputs, updates = model.apply(
                {"params": params["model"], "batch_stats": state.batch_stats},
                inputs, train=True, mutable=["batch_stats"],
            )
            batch_loss = objective(outputs, labels, epoch, state.loss_state, params["loss"])
            normalizer = jax.lax.psum(batch_loss.normalizer, AXIS)
            # The pmean of D * total_d / normalizer over devices is the gradient of sum_d total_d / normalizer.
            return batch_loss.total * _device_count() / normalizer, (outputs, updates, batch_loss, normalizer)

        grads, (outputs, updates, batch_loss, normalizer) = jax.grad(loss_fn, has_aux=True)(state.params)
        grads = jax.lax.pmean(grads, AXIS)
        param_updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        loss_state = state.loss_state
        if dynasmooth_phase is not None:
            smoothing = jax.lax.cond(
                dynasmooth_phase(epoch),
                lambda s: dynasmooth.accumulate(s, batch_loss.true_class_probs, labels, axis_name=AXIS),
                lambda s: s,
                loss_state.dynasmooth,
            )
            loss_state = loss_state.replace(dynasmooth=smoothing)
        predicted = predict_logits(outputs) if predict_logits is not None else outputs.logits
        correct = jnp.argmax(predicted, axis=-1) == labels
        metrics = {
            "loss": jax.lax.psum(batch_loss.total, AXIS) / normalizer,
            "class_correct": jax.lax.psum(jnp.zeros(num_classes, jnp.int32).at[labels].add(correct), AXIS),
            "class_count": jax.lax.psum(jnp.zeros(num_classes, jnp.int32).at[labels].add(1), AXIS),
        }
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, param_updates),
            batch_stats=updates["batch_stats"],
            opt_state=opt_state,
            loss_state=loss_state,
        )
        return new_state, metrics

    return train_step


def make_eval_step(model, normalization: Normalization, predict_logits: Callable) -> Callable:
    """The per-device eval step: `eval_step(state, images, labels, mask) -> (EvalStats, features)`.

    `mask` marks the real examples of a padded last batch. The returned statistics are summed over devices; the
    features (for SWRM's class prototypes) stay per device.
    """

    def eval_step(state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array):
        outputs = model.apply(
            {"params": state.params["model"], "batch_stats": state.batch_stats},
            normalize(images, normalization), train=False,
        )
        logits = predict_logits(outputs)
        stats = EvalStats.init(logits.shape[-1]).update(logits, labels, mask, axis_name=AXIS)
        return stats, outputs.features

    return eval_step


def data_parallel(
    per_device_fn: Callable, mode: str, devices: list, *, sharded_args: tuple[bool, ...], sharded_outputs: tuple[bool, ...]
) -> Callable:
    """Runs a per-device function over `devices`, replicated arguments in, replicated or sharded outputs out.

    Arguments and outputs marked sharded carry a leading batch axis that is split over the devices (device d takes
    the d-th contiguous block, for both modes); the others are the same on every device.

    Args:
      per_device_fn: written for one device with collectives over the axis `"batch"`.
      mode: `"shard_map"` (`jax.shard_map` under `jax.jit`) or `"pmap"`.
      devices: the local devices to use.
      sharded_args, sharded_outputs: which positional arguments / outputs are split over devices.

    Returns:
      A function of the global (unsplit) arguments.
    """
    if mode not in PARALLEL_MODES:
        raise ValueError(f"unknown parallel mode {mode!r}; choose one of {', '.join(PARALLEL_MODES)}")
    num_devices = len(devices)
    if mode == "pmap":
        mapped = jax.pmap(
            per_device_fn,
            axis_name=AXIS,
            in_axes=tuple(0 if sharded else None for sharded in sharded_args),
            out_axes=tuple(0 if sharded else None for sharded in sharded_outputs),
            devices=devices,
        )

        def split(x):
            return x.reshape(num_devices, x.shape[0] // num_devices, *x.shape[1:])

        def merge(x):
            return x.reshape(-1, *x.shape[2:])

        def run(*args):
            outputs = mapped(*(split(a) if s else a for a, s in zip(args, sharded_args)))
            return tuple(
                jax.tree.map(merge, out) if s else out for out, s in zip(outputs, sharded_outputs)
            )

        return run

    mesh = Mesh(np.asarray(devices), (AXIS,))

    def spec(sharded):
        return PartitionSpec(AXIS) if sharded else PartitionSpec()

    mapped = jax.jit(
        jax.shard_map(
            per_device_fn,
            mesh=mesh,
            in_specs=tuple(spec(s) for s in sharded_args),
            out_specs=tuple(spec(s) for s in sharded_outputs),
            # The pmap model: collectives are written out (the `pmean` of the gradients). With replication
            # checking on, autodiff would also sum the gradients of the replicated parameters over devices.
            check_vma=False,
        )
    )
    # Explicit placements: a state fresh from init (one device) and one returned by a step (replicated on the mesh)
    # then present the same input shardings, so the step is traced and compiled once.
    placements = tuple(NamedSharding(mesh, spec(s)) for s in sharded_args)

    def run(*args):
        return mapped(*(jax.device_put(a, placement) for a, placement in zip(args, placements)))

    return run


def check_batch_divides(global_batch_size: int, num_devices: int) -> None:
    if global_batch_size % num_devices:
        raise ValueError(
            f"the global batch size {global_batch_size} must divide by the number of devices {num_devices}; "
            f"use a multiple of {num_devices} (e.g. {num_devices * max(1, global_batch_size // num_devices)})"
        )

