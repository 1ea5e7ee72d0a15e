"""The train step split into forward and backward programs equals the one-program step."""

import jax
import jax.numpy as jnp
import numpy as np

from speechjax import optim, sharding, train_state
from speechjax.batch_keys import LABEL, MASK, SPECTROGRAM
from tests import tiny_config

NUM_CLASSES = 4
SHAPE = (20, 16, 1)


def _batch(seed):
    return {
        SPECTROGRAM: jax.random.normal(jax.random.key(seed), (8, *SHAPE), jnp.float32),
        LABEL: jnp.arange(8, dtype=jnp.int32) % NUM_CLASSES,
        MASK: jnp.array([1, 1, 1, 1, 1, 1, 1, 0], jnp.float32),  # one padded example
    }


def test_split_step_equals_one_step_with_mixup_dropout_and_batchnorm():
    config = tiny_config.get_config()
    config.augment.mixup_alpha = 0.2
    tx = optim.create_optimizer(config.train, steps_per_epoch=1)
    model_def, state = train_state.create_train_state(config, NUM_CLASSES, SHAPE, tx)
    one = jax.jit(train_state.make_train_step(model_def, tx, config, NUM_CLASSES))
    forward, backward = train_state.make_split_train_step(model_def, tx, config, NUM_CLASSES)
    forward, backward = jax.jit(forward), jax.jit(backward)

    a = b = state
    for seed in range(2):
        batch = _batch(seed)
        a, metrics_a = one(a, batch)
        b, metrics_b = backward(b, forward(b, batch), batch)
        for x, y in zip(jax.tree.leaves(metrics_a), jax.tree.leaves(metrics_b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # Parameters, BatchNorm statistics, dropout RNG counters, Adam's moments and the step.
    # Two programs sum in other orders than one, and Adam divides by the gradients' own
    # scale, so float32 rounding shows up to ~4e-5 relative after two steps.
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(_numbers(x), _numbers(y), rtol=2e-4, atol=1e-5)


def _numbers(leaf):
    """The dropout streams hold typed PRNG keys: compare their bits."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(leaf)
    return leaf


def test_mixup_runs_on_the_mesh_training_uses():
    """The batch is explicitly sharded over 'data' in training: mixup's gather of partner
    rows must say its output layout (it failed to trace before)."""
    config = tiny_config.get_config()
    config.augment.mixup_alpha = 0.2
    tx = optim.create_optimizer(config.train, steps_per_epoch=1)
    model_def, state = train_state.create_train_state(config, NUM_CLASSES, SHAPE, tx)
    mesh = sharding.create_mesh()
    step = jax.jit(
        train_state.make_train_step(model_def, tx, config, NUM_CLASSES),
        in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
    )
    batch = sharding.put_batch({k: np.asarray(v) for k, v in _batch(0).items()}, mesh)
    state, metrics = step(sharding.put_replicated(state, mesh), batch)
    assert int(state.step) == 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(metrics))
