"""The log-linear pool (models/pooled.py): what it predicts, that each member learns on its
own loss, and the speech_embedding model's CNN branch built and checked from the config."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs import speech_embedding as speech_embedding_config
from speechjax import pretrained_embedding, train_state, validation
from speechjax.batch_keys import LABEL, MASK, SPECTROGRAM
from speechjax.errors import UserError
from speechjax.models import create_model, pooled, set_training, speech_embedding

CLASSES = 5


class Linear(nnx.Module):
    """A member small enough to check by hand: [B, T, F, C] flattened -> Dense."""

    def __init__(self, features: int, seed: int):
        self.dense = nnx.Linear(features, CLASSES, rngs=nnx.Rngs(seed))

    def __call__(self, x):
        return self.dense(x.reshape(x.shape[0], -1))


def batch(rng: np.random.Generator, size: int = 6) -> dict:
    return {
        SPECTROGRAM: jnp.asarray(rng.normal(size=(size, 4, 3, 1)), jnp.float32),
        LABEL: jnp.asarray(rng.integers(0, CLASSES, size), jnp.int32),
        MASK: jnp.ones(size, jnp.float32),
    }


def test_predicts_the_weighted_geometric_mean_of_its_members():
    members = [Linear(12, 0), Linear(12, 1)]
    pool = pooled.LogLinearPool(members, [0.7, 0.3])
    x = batch(np.random.default_rng(0))[SPECTROGRAM]
    p_a, p_b = (np.asarray(jax.nn.softmax(m(x))) for m in members)
    expected = p_a**0.7 * p_b**0.3
    expected /= expected.sum(-1, keepdims=True)
    set_training(pool, False)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(pool(x))), expected, rtol=1e-5)
    set_training(pool, True)
    logits, member_logits = pool(x)
    assert member_logits.shape == (6, 2, CLASSES)
    np.testing.assert_allclose(np.asarray(member_logits[:, 1]), np.asarray(members[1](x)))
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(logits)), expected, rtol=1e-5)


@pytest.mark.parametrize("weights", [[1.0], [0.5, 0.6], [1.2, -0.2]])
def test_weights_that_are_not_a_distribution_over_the_members_are_refused(weights):
    with pytest.raises(ValueError, match="weights"):
        pooled.LogLinearPool([Linear(12, 0), Linear(12, 1)], weights)


@pytest.mark.parametrize("mixup_alpha", [0.0, 0.4])
def test_each_member_learns_on_its_own_loss(mixup_alpha):
    """The train step's loss of a pool is the sum of its members' cross-entropies, so each
    member's gradient is the one it would get trained alone (mixup included)."""
    config = ml_collections.ConfigDict(
        {"seed": 0, "train": {"label_smoothing": 0.1}, "augment": {"mixup_alpha": mixup_alpha}}
    )
    batch_loss = train_state._make_batch_loss(config, CLASSES)
    data = batch(np.random.default_rng(1))
    members = [Linear(12, 0), Linear(12, 1)]
    pool = pooled.LogLinearPool(members, [0.75, 0.25])

    def grads_of(model):
        return nnx.grad(lambda m: batch_loss(m, jnp.int32(3), data)[0])(model)

    pool_grads = grads_of(pool)
    for k, member in enumerate(members):
        alone = grads_of(member)
        for got, want in zip(
            jax.tree.leaves(pool_grads["members"][k]), jax.tree.leaves(alone), strict=True
        ):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
    loss, (per_example, logits) = batch_loss(pool, jnp.int32(3), data)
    alone = sum(batch_loss(m, jnp.int32(3), data)[0] for m in members)
    np.testing.assert_allclose(float(loss), float(alone), rtol=1e-6)
    assert per_example.shape == (6,) and logits.shape == (6, CLASSES)


def branch_config(**fields) -> ml_collections.ConfigDict:
    cfg = speech_embedding_config.get_config()
    cfg.model.cnn_branch = "resnet32"
    cfg.model.blocks_per_stage = 1
    cfg.model.widths = (4, 8, 16)
    for key, value in fields.items():
        cfg.model[key] = value
    return cfg


def test_the_cnn_branch_sees_the_front_end_averaged_in_threes_and_trains():
    shape = (pretrained_embedding.num_frames(16000), 32, 1)
    cfg = branch_config(cnn_branch_weight=0.25)
    model = create_model(cfg.model, CLASSES, shape, nnx.Rngs(params=0, dropout=1))
    head, branch = model.members
    assert isinstance(head, speech_embedding.SpeechEmbeddingClassifier)
    assert model.weights == (0.75, 0.25)
    set_training(model, False)
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, (2, *shape)), jnp.float32)
    frames = shape[0] // 3 * 3
    averaged = x[:, :frames].reshape(2, frames // 3, 3, 32, 1).mean(2)
    np.testing.assert_allclose(
        np.asarray(branch(x)), np.asarray(branch.network(averaged)), rtol=1e-4, atol=1e-5
    )
    # The branch is trained (its weights are parameters); the pretrained network is not.
    set_training(model, True)
    frozen_before = jax.tree.map(np.asarray, nnx.state(model, speech_embedding.Pretrained))
    grads = nnx.grad(lambda m: jnp.sum(m(x)[1] ** 2))(model)
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads["members"][1]))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    optimizer.update(model, grads)
    frozen_after = jax.tree.map(np.asarray, nnx.state(model, speech_embedding.Pretrained))
    jax.tree.map(np.testing.assert_array_equal, frozen_after, frozen_before)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"cnn_branch": "speech_embedding"}, "model.cnn_branch must be empty or one of"),
        ({"cnn_branch": "resnet33"}, "model.cnn_branch must be empty or one of"),
        ({"cnn_branch_weight": 1.0}, "model.cnn_branch_weight"),
        ({"cnn_branch_weight": 0}, "model.cnn_branch_weight"),
        ({"cnn_branch": "alexnet"}, r"model.cnn_branch='alexnet' needs inputs of at least 63"),
        ({"widths": (8, 4)}, "model.widths must not decrease"),
    ],
)
def test_a_cnn_branch_it_cannot_build_is_refused_naming_the_key(fields, message):
    with pytest.raises(UserError, match=message):
        validation.validate(branch_config(**fields))
