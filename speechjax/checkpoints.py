"""Orbax checkpoints in `workdir/checkpoints`: the latest for resuming, the best for use.

Each checkpoint holds three items: `state` (parameters, BatchNorm statistics, optimiser
state, dropout RNG state, step), `meta`, a JSON record of the loop's progress (epoch,
early-stopping counters, history), and `run`, the run metadata (`speechjax.run`: model
and front-end config, sample rate, clip length, classes, normalisation statistics), so a
checkpoint alone is enough to evaluate, predict or export. Inference restores only the
parameters and BatchNorm statistics (`restore_model_variables`), never the optimiser state.

One manager keeps both: `LatestN` preserves the newest checkpoints and `BestN` the one
with the highest validation accuracy; `best_fn` makes `best_step()` rank by that metric.
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.sharding import Sharding

from speechjax.errors import UserError
from speechjax.run import RunMetadata, Workdir

BEST_METRIC = "val_accuracy"


def _best_metric(metrics: dict[str, float]) -> float:
    return metrics[BEST_METRIC]


def create_manager(workdir: Workdir, keep_latest: int = 1):
    """The manager of `workdir`'s checkpoints; creates the folder, so only training calls it
    on a workdir that may have none (see `existing_manager`)."""
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        best_fn=_best_metric,
        best_mode="max",
        preservation_policy=policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=keep_latest),
                policies.BestN(
                    get_metric_fn=_best_metric,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        ),
    )
    return ocp.CheckpointManager(workdir.checkpoints, options=options)


def existing_manager(workdir: Workdir):
    """The manager of a trained run; UserError (and nothing created) when it has no checkpoint."""
    advice = "train first with the same --config and --workdir, or point --workdir at a trained run"
    if not os.path.isdir(workdir.checkpoints) or not os.listdir(workdir.checkpoints):
        raise UserError(f"No checkpoint in {workdir.checkpoints}: {advice}.")
    manager = create_manager(workdir)
    if not manager.all_steps():
        # Only unfinished saves (a run killed while writing its first checkpoint) or other files.
        manager.close()
        raise UserError(f"No finished checkpoint in {workdir.checkpoints}: {advice}.")
    return manager


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saveable(state):
    # Typed PRNG keys (dropout RNG state) are stored as their raw uint32 data; an abstract
    # key (a template's ShapeDtypeStruct) becomes the abstract shape of that data.
    def saveable(x):
        if not _is_key(x):
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.eval_shape(jax.random.key_data, x)
        return jax.random.key_data(x)

    return jax.tree.map(saveable, state)


def _from_saveable(saved, template):
    def restored(x, t):
        if not _is_key(t):
            return x
        # An abstract template carries no implementation to ask for: dropout keys are made
        # with the default one (nnx.Rngs from an int), which the dtype check confirms.
        impl = jax.random.key_impl(t) if isinstance(t, jax.Array) else None
        key = jax.random.wrap_key_data(x, impl=impl)
        if key.dtype != t.dtype:
            raise ValueError(f"restored a {key.dtype} key for a {t.dtype} template")
        return key

    return jax.tree.map(restored, saved, template)


def save(
    manager,
    step: int,
    state,
    meta: dict[str, Any],
    run: RunMetadata,
    metrics: dict[str, float] | None,
):
    """Saves synchronously; `metrics` (with `val_accuracy`) only for end-of-epoch saves."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_saveable(state)),
            meta=ocp.args.JsonSave(meta),
            run=ocp.args.JsonSave(run.to_dict()),
        ),
        metrics=metrics,
        force=True,
    )
    manager.wait_until_finished()


def restore(manager, step: int, template, sharding: Sharding):
    """Restores checkpoint `step` into arrays shaped like `template`, laid out by `sharding`."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        _to_saveable(template),
    )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
    )
    return _from_saveable(restored.state, template), restored.meta


def restore_meta(manager, step: int) -> dict[str, Any]:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def restore_run(manager, step: int) -> RunMetadata:
    """The run metadata of checkpoint `step`."""
    try:
        record = manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore())).run
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise UserError(
            f"Checkpoint step {step} in {manager.directory} has no run metadata (item 'run'): "
            "it was written by an older speechjax; retrain it in a new --workdir."
        ) from e
    return RunMetadata.from_dict(record)


def restore_model_variables(manager, step: int, template):
    """Only the parameters and BatchNorm statistics (`template`'s items, e.g. {"params",
    "model_state"} of abstract arrays) of checkpoint `step`: no optimiser state is read,
    and the arrays land on the default device whatever device count saved them."""
    path = os.path.join(str(manager.directory), str(step), "state")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        _to_saveable(template),
    )
    restored = ocp.PyTreeCheckpointer().restore(
        path,
        args=ocp.args.PyTreeRestore(
            item=abstract,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=True,
        ),
    )
    return _from_saveable(restored, template)


def choose_step(manager, requested: int) -> int:
    """The step to use: `requested`, or the best one when it is -1."""
    steps = manager.all_steps()
    if requested < 0:
        return manager.best_step() or manager.latest_step()
    if requested not in steps:
        raise UserError(
            f"config.eval.step={requested} is not a saved checkpoint; saved steps: {sorted(steps)}."
        )
    return requested
