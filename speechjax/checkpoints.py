"""Orbax checkpoints in `workdir/checkpoints`: the latest for resuming, the best for use.

Each checkpoint holds two items: `state` (parameters, BatchNorm statistics, optimiser
state, dropout RNG state, step) and `meta`, a JSON record of the loop's progress (epoch,
early-stopping counters, history), the normalisation statistics and the class names, so
a checkpoint alone is enough to evaluate or predict.

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

BEST_METRIC = "val_accuracy"


def _best_metric(metrics: dict[str, float]) -> float:
    return metrics[BEST_METRIC]


def create_manager(workdir: str, keep_latest: int = 1):
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
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    return ocp.CheckpointManager(directory, options=options)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saveable(state):
    # Typed PRNG keys (dropout RNG state) are stored as their raw uint32 data.
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _from_saveable(saved, template):
    return jax.tree.map(
        lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
        saved,
        template,
    )


def save(manager, step: int, state, meta: dict[str, Any], metrics: dict[str, float] | None):
    """Saves synchronously; `metrics` (with `val_accuracy`) only for end-of-epoch saves."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_saveable(state)),
            meta=ocp.args.JsonSave(meta),
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


def choose_step(manager, requested: int, workdir: str) -> int:
    """The step to evaluate: `requested`, or the best one when it is -1."""
    steps = manager.all_steps()
    if not steps:
        raise UserError(
            f"No checkpoint in {os.path.join(workdir, 'checkpoints')}: train first with "
            "the same --config and --workdir, or point --workdir at a trained run."
        )
    if requested < 0:
        return manager.best_step() or manager.latest_step()
    if requested not in steps:
        raise UserError(
            f"config.eval.step={requested} is not a saved checkpoint; saved steps: {sorted(steps)}."
        )
    return requested
