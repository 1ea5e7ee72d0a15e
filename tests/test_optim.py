"""Optimisers and learning-rate schedules from config."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from speechjax import optim
from speechjax.errors import UserError


def _train_config(**overrides):
    config = default.get_config().train
    config.unlock()
    config.update(overrides)
    return config


def test_cosine_schedule_warms_up_then_decays_to_zero():
    schedule = optim.learning_rate_schedule(
        _train_config(schedule="cosine", lr=0.1, warmup_epochs=1.0, epochs=10), steps_per_epoch=10
    )
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)
    assert float(schedule(55)) < 0.1
    np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-7)


def test_step_schedule_decays_every_decay_epochs():
    schedule = optim.learning_rate_schedule(
        _train_config(schedule="step", lr=1.0, decay_epochs=2, decay_factor=0.5), steps_per_epoch=3
    )
    assert [float(schedule(s)) for s in (0, 5, 6, 12)] == [1.0, 1.0, 0.5, 0.25]


def test_constant_with_warmup():
    schedule = optim.learning_rate_schedule(
        _train_config(schedule="constant", lr=0.2, warmup_epochs=0.5), steps_per_epoch=4
    )
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 1, 2, 50)], [0, 0.1, 0.2, 0.2])


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_reduces_a_quadratic(name):
    tx = optim.create_optimizer(
        _train_config(optimizer=name, lr=0.05, weight_decay=1e-4, grad_clip_norm=1.0),
        steps_per_epoch=1,
    )
    params = {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}
    opt_state = tx.init(params)

    def loss(p):
        return jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)

    start = loss(params)
    for _ in range(20):
        grads = {k: 2 * v for k, v in params.items()}
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.5 * start


def test_unknown_optimizer_names_the_key():
    with pytest.raises(UserError, match="config.train.optimizer='lamb'"):
        optim.create_optimizer(_train_config(optimizer="lamb"), steps_per_epoch=1)
