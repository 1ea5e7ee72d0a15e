"""Fine-tuning: a new run starts from the weights of a trained one (`train.init_from`).

The trained run's best checkpoint gives the parameters and BatchNorm statistics; the
optimiser, the schedule, the dropout RNG and the normalisation statistics start afresh
(the new data's own). The model and front end must be the same, since they fix every
weight's shape. The class lists may differ: the weights that have one entry per class
(the classifier's) take the trained ones of each class both runs know, by name, and keep
their fresh initialisation for the others, so a model of 35 words can start one of 8.

Orbax restores a checkpoint into a template of the same shapes, so the saved weights are
read in the trained run's shapes and mapped by hand here.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from speechjax import checkpoints
from speechjax.errors import UserError
from speechjax.run import Workdir
from speechjax.train_state import TrainState, abstract_model_variables


def _class_axes(fresh, config, num_classes: int, input_shape) -> dict:
    """{leaf path: the axis that has one entry per class} of `fresh`, a model's weights for
    `num_classes`, found by building its shapes for one class more: those axes grow."""
    more = abstract_model_variables(config, num_classes + 1, input_shape)
    axes = {}
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(fresh)[0], jax.tree.leaves(more), strict=True
    ):
        grown = [i for i, (m, n) in enumerate(zip(a.shape, b.shape, strict=True)) if m != n]
        if grown:
            axes[path] = grown[0]
    return axes


def _check_same_layers(template, fresh, class_axes: dict, where: str) -> None:
    """UserError unless the trained run's weights have this model's layers and shapes
    (but for the class axes): a config that changes a width cannot start from them."""
    saved_leaves, saved_tree = jax.tree_util.tree_flatten_with_path(template)
    fresh_leaves, fresh_tree = jax.tree_util.tree_flatten_with_path(fresh)
    if saved_tree != fresh_tree:
        raise UserError(
            f"{where}: that run's network has other layers than this config's; fine-tuning "
            "needs the same network (the model.* fields of the trained run)."
        )
    for (path, saved), (_, new) in zip(saved_leaves, fresh_leaves, strict=True):
        axis = class_axes.get(path)
        other_axes = [n for i, n in enumerate(saved.shape) if i != axis]
        if other_axes != [n for i, n in enumerate(new.shape) if i != axis]:
            raise UserError(
                f"{where}: layer {jax.tree_util.keystr(path)} is {saved.shape} in that run "
                f"and {new.shape} here; fine-tuning needs the same network (the model.* "
                "fields of the trained run)."
            )


def _is_weight(leaf) -> bool:
    # Parameters and BatchNorm statistics; not the dropout RNG's keys and counters.
    return jnp.issubdtype(leaf.dtype, jnp.floating)


def warm_start(
    state: TrainState, config: ml_collections.ConfigDict, class_names, input_shape
) -> TrainState:
    """`state` (a fresh run's) with the weights of the run in `config.train.init_from`."""
    source = Workdir(config.train.init_from)
    where = f"train.init_from={config.train.init_from}"
    try:
        manager = checkpoints.existing_manager(source)
    except UserError:
        raise UserError(
            f"{where}: no checkpoint in {source.checkpoints}; point it at the --workdir of a "
            "trained run, or set it to '' to start from random weights."
        ) from None
    step = checkpoints.choose_step(manager, -1)
    trained = checkpoints.restore_run(manager, step)
    # The front end and the network define what each weight means; other model fields
    # (dropout, a branch's weight in the prediction) are this config's to choose.
    conflicts = [
        c
        for c in trained.conflicts(config)
        if not c.startswith("model.") or c.startswith("model.name:")
    ]
    if conflicts:
        raise UserError(
            f"{where}: that run's model or front end differs from this config's ("
            + "; ".join(conflicts)
            + "); fine-tuning keeps both. Use the trained run's model and front end."
        )
    old_names, new_names = list(trained.class_names), list(class_names)
    shared = [name for name in new_names if name in old_names]
    if not shared:
        raise UserError(
            f"{where}: that run's classes ({', '.join(old_names[:5])}...) and this one's "
            f"({', '.join(new_names[:5])}...) have no name in common, so its classifier "
            "cannot start this one; fine-tuning needs at least one shared class."
        )
    template = abstract_model_variables(trained.apply_to(config), len(old_names), input_shape)
    fresh = {"params": state.params, "model_state": state.model_state}
    class_axes = _class_axes(fresh, config, len(new_names), input_shape)
    _check_same_layers(template, fresh, class_axes, where)
    saved = checkpoints.restore_model_variables(manager, step, template)
    new_rows = np.array([new_names.index(name) for name in shared])
    old_rows = np.array([old_names.index(name) for name in shared])

    def take(path, new, old):
        if not _is_weight(new):
            return new
        axis = class_axes.get(path)
        if axis is None:
            return jnp.asarray(old, new.dtype)
        new = jnp.moveaxis(new, axis, 0).at[new_rows].set(jnp.moveaxis(old, axis, 0)[old_rows])
        return jnp.moveaxis(new, 0, axis)

    merged = jax.tree_util.tree_map_with_path(take, fresh, saved)
    added = [name for name in new_names if name not in old_names]
    logging.info(
        "Weights from %s, step %d (%s): classifier rows of %d of %d classes%s.",
        source.checkpoints,
        step,
        trained.model.get("name"),
        len(shared),
        len(new_names),
        f"; new, from random weights: {', '.join(added)}" if added else "",
    )
    return state.replace(params=merged["params"], model_state=merged["model_state"])
