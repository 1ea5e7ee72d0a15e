"""The log-linear pool (models/pooled.py): what it predicts, that each member learns on its
own loss, and the speech_embedding model's CNN branch built and checked from the config."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import tensorflow as tf
from flax import nnx

from configs import speech_embedding as speech_embedding_config
from speechjax import (
    features,
    frontend_settings,
    inference,
    jax_frontend,
    pretrained_embedding,
    run,
    train_state,
    validation,
)
from speechjax.batch_keys import LABEL, MASK, SPECTROGRAM
from speechjax.errors import UserError
from speechjax.models import create_model, pooled, set_training, speech_embedding
from speechjax.normalization import NormStats

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
    """Without bands of its own (features.branch_mels=0), the branch shares the network's."""
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


def test_a_checkpoint_from_before_the_branch_existed_rebuilds_its_model():
    """Run metadata stored before model.cnn_branch (and head_units, tuned_convs) existed is
    read with the values that rebuild the network it holds: the head alone."""
    cfg = speech_embedding_config.get_config()
    metadata = run.RunMetadata.from_config(
        cfg, [f"w{i}" for i in range(CLASSES)], NormStats((0.0,), (1.0,))
    )
    record = metadata.to_dict()
    for field in run.MODEL_FIELDS_ADDED:
        del record["model"][field]
    old = run.RunMetadata.from_dict(record)
    assert old.model == metadata.model
    graph, variables = inference.abstract_model(old)
    model = nnx.merge(graph, variables.params, variables.model_state)
    assert isinstance(model, speech_embedding.SpeechEmbeddingClassifier)


def test_branch_mels_add_full_band_bins_that_only_the_cnn_branch_reads():
    cfg = branch_config()
    cfg.features.branch_mels = 24
    cfg.features.fmax = 8000.0
    validation.validate(cfg)
    t = np.arange(16000) / 16000
    clips = np.stack([0.3 * np.sin(2 * np.pi * 6000 * t), 0.3 * np.sin(2 * np.pi * 500 * t)])
    clips = clips.astype(np.float32)
    both = np.asarray(jax_frontend.make_frontend(cfg.features.to_dict(), 16000, 16000, None)(clips))
    plain = speech_embedding_config.get_config().features.to_dict()
    own = np.asarray(jax_frontend.make_frontend(plain, 16000, 16000, None)(clips))
    assert both.shape == (2, own.shape[1], 32 + 24, 1)
    np.testing.assert_array_equal(both[..., :32, :], own)
    tf_both = features.make_frontend(cfg.features, 16000)(tf.constant(clips)).numpy()
    np.testing.assert_allclose(tf_both[..., 32:, :], both[..., 32:, :], atol=1e-4)
    # The network's bands stop at 3.8 kHz; the branch's reach 8 kHz: a 6 kHz tone lands in the
    # band whose filter peaks nearest 6 kHz, the 500 Hz one in a low band.
    bank = frontend_settings.branch_filterbank(frontend_settings.settings(cfg.features, 16000))
    peaks_hz = bank.argmax(0) * 16000 / 512
    middle = both[:, both.shape[1] // 2, 32:, 0]
    assert middle[0].argmax() == np.abs(peaks_hz - 6000).argmin()
    assert middle[1].argmax() == np.abs(peaks_hz - 500).argmin()
    # The head reads bins 0-31, the CNN branch the rest.
    model = create_model(cfg.model, CLASSES, both.shape[1:], nnx.Rngs(params=0, dropout=1))
    set_training(model, False)
    head, branch = model.members
    x = jnp.asarray(both)
    low = x.at[:, :, :32].add(0.5)
    high = x.at[:, :, 32:].add(0.5)
    np.testing.assert_array_equal(np.asarray(head(high)), np.asarray(head(x)))
    np.testing.assert_array_equal(np.asarray(branch(low)), np.asarray(branch(x)))
    assert not np.allclose(np.asarray(branch(high)), np.asarray(branch(x)))
    assert not np.allclose(np.asarray(head(low)), np.asarray(head(x)))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"features.branch_mels": 24, "model.cnn_branch": ""}, "feeds the CNN of model.cnn_branch"),
        ({"features.branch_mels": 200}, r"features.branch_mels=200 must be 0 \(none\) or in"),
        ({"features.branch_mels": 24, "features.fmax": 9000.0}, "the range of features.branch"),
    ],
)
def test_branch_mels_it_cannot_use_are_refused_naming_the_key(fields, message):
    cfg = branch_config()
    for key, value in fields.items():
        section, field = key.split(".")
        cfg[section][field] = value
    with pytest.raises(UserError, match=message):
        validation.validate(cfg)


def test_branch_mels_on_another_front_end_are_refused():
    cfg = branch_config()
    cfg.model.name = "resnet32"
    cfg.features.kind = "logmel"
    cfg.features.normalize = True
    cfg.features.branch_mels = 24
    with pytest.raises(UserError, match="adds bands to the speech_embedding front end only"):
        validation.validate(cfg)
