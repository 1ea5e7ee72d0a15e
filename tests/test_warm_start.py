"""speechjax.warm_start: a new run starts from a trained run's weights (train.init_from)."""

import jax
import numpy as np
import optax
import pytest

from speechjax import frontend_settings, inference, train, warm_start
from speechjax.errors import UserError
from speechjax.train_state import create_train_state
from tests import tiny_config


def _config(workspace, trained, **changes):
    config = tiny_config.get_config(workspace)
    config.train.init_from = str(trained)
    for key, value in changes.items():
        group, field = key.split(".")
        config[group][field] = value
    return config


def _fresh_state(config, num_classes: int):
    data = config.data
    input_shape = frontend_settings.output_shape(
        config.features, round(data.clip_seconds * data.sample_rate), data.sample_rate
    )
    _, state = create_train_state(config, num_classes, input_shape, optax.adam(1e-3))
    return state, input_shape


def _leaves(tree) -> dict:
    def plain(leaf):
        is_key = jax.numpy.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        return np.asarray(jax.random.key_data(leaf) if is_key else leaf)

    return {
        jax.tree_util.keystr(path): plain(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def test_new_classes_keep_the_trained_rows_of_the_shared_ones(workspace, trained):
    # The trained run knows yes, no, up, down; this one: down, stop, yes (stop is new).
    config = _config(workspace, trained)
    new_names = ["down", "stop", "yes"]
    fresh, input_shape = _fresh_state(config, len(new_names))
    started = warm_start.warm_start(fresh, config, new_names, input_shape)
    old = inference.load_model(str(trained))
    old_names = list(old.metadata.class_names)
    assert old_names == list(tiny_config.WORDS)

    fresh_variables = {"params": fresh.params, "model_state": fresh.model_state}
    class_axes = warm_start._class_axes(fresh_variables, config, len(new_names), input_shape)
    # The classifier's kernel and bias, and nothing else, have one entry per class.
    assert len(class_axes) == 2
    old_leaves = _leaves({"params": old.variables.params})
    new_leaves = _leaves({"params": started.params})
    fresh_leaves = _leaves({"params": fresh.params})
    axes = {jax.tree_util.keystr(path): axis for path, axis in class_axes.items()}
    for key, new in new_leaves.items():
        axis = axes.get(key)
        if axis is None:
            np.testing.assert_array_equal(new, old_leaves[key], err_msg=key)
            continue
        for row, name in enumerate(new_names):
            got = np.take(new, row, axis=axis)
            if name in old_names:
                want = np.take(old_leaves[key], old_names.index(name), axis=axis)
            else:
                want = np.take(fresh_leaves[key], row, axis=axis)
            np.testing.assert_array_equal(got, want, err_msg=f"{key} row {name}")
    # BatchNorm statistics come from the trained run; the dropout RNG stays this run's.
    old_state = _leaves(old.variables.model_state)
    fresh_state = _leaves(fresh.model_state)
    assert any(not np.array_equal(v, fresh_state[k]) for k, v in old_state.items())
    for key, value in _leaves(started.model_state).items():
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_array_equal(value, old_state[key], err_msg=key)
    fresh_rng = [v for v in _leaves(fresh.model_state).values() if v.dtype.kind in "ui"]
    started_rng = [v for v in _leaves(started.model_state).values() if v.dtype.kind in "ui"]
    assert all(np.array_equal(a, b) for a, b in zip(fresh_rng, started_rng, strict=True))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model.name": "alexnet"}, "model.name: checkpoint 'resnet32', given 'alexnet'"),
        ({"features.n_mels": 20}, "features.n_mels: checkpoint 16, given 20"),
        ({"model.widths": (4, 8, 16)}, "layer "),
    ],
    ids=["other_network", "other_front_end", "other_width"],
)
def test_a_run_that_cannot_start_this_one_is_refused_with_the_reason(
    workspace, trained, changes, message
):
    config = _config(workspace, trained, **changes)
    fresh, input_shape = (None, None)
    if "model.widths" in changes:
        fresh, input_shape = _fresh_state(config, len(tiny_config.WORDS))
    with pytest.raises(UserError, match=f"train.init_from={trained}") as error:
        warm_start.warm_start(fresh, config, list(tiny_config.WORDS), input_shape)
    assert message in str(error.value)


def test_no_checkpoint_or_no_shared_class_is_refused(workspace, trained, tmp_path):
    config = _config(workspace, tmp_path / "never_trained")
    with pytest.raises(UserError, match="no checkpoint in .*never_trained"):
        warm_start.warm_start(None, config, ["yes"], None)
    config = _config(workspace, trained)
    with pytest.raises(UserError, match="no name in common"):
        warm_start.warm_start(None, config, ["cat", "dog"], None)


def test_only_a_new_run_starts_from_init_from(workspace, trained, tmp_path, monkeypatch):
    calls = []
    real = warm_start.warm_start

    def recorded(state, config, class_names, input_shape):
        calls.append(list(class_names))
        return real(state, config, class_names, input_shape)

    monkeypatch.setattr(warm_start, "warm_start", recorded)
    config = _config(workspace, trained, **{"train.epochs": 1})
    workdir = tmp_path / "fine_tuned"
    train.train_and_evaluate(config, str(workdir))
    assert calls == [list(tiny_config.WORDS)]
    assert f"train.init_from: starts from the weights of {trained}" in (
        (workdir / "log.txt").read_text()
    )
    with config.unlocked():
        config.train.epochs = 2
    train.train_and_evaluate(config, str(workdir))  # resumes from its own checkpoint
    assert len(calls) == 1
