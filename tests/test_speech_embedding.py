"""The pretrained speech embedding: front ends and frozen network against the ONNX files they
are read from (run by ONNX Runtime), training that reaches the head only, clear errors."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime
import optax
import pytest
from flax import nnx

from configs import speech_embedding as speech_embedding_config
from speechjax import features, jax_frontend, pretrained_embedding, validation
from speechjax.errors import UserError
from speechjax.models import create_model, speech_embedding
from tests.conftest import tone
from tests.helpers import run_main

CLIP = 16000


def clips() -> np.ndarray:
    """Three one-second clips unlike each other: tones over noise, a chirp, near silence."""
    rng = np.random.default_rng(0)
    t = np.arange(CLIP) / CLIP
    voiced = np.concatenate([tone(0.5, freq=220.0, amp=0.3), tone(0.5, freq=660.0, amp=0.1)])
    return np.stack(
        [
            voiced + 0.01 * rng.standard_normal(CLIP),
            0.2 * np.sin(2 * np.pi * (100 + 3000 * t) * t),
            1e-4 * rng.standard_normal(CLIP),
        ]
    ).astype(np.float32)


def onnx_session(name: str) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(pretrained_embedding.model_file(name))


def onnx_mel(clip: np.ndarray) -> np.ndarray:
    """melspectrogram.onnx on one padded clip, scaled as openWakeWord scales it: [T, 32]."""
    pad = pretrained_embedding.PAD_SAMPLES
    padded = np.pad(clip, (pad, pad))[np.newaxis] * pretrained_embedding.INT16_SCALE
    out = onnx_session("melspectrogram").run(None, {"input": padded.astype(np.float32)})[0]
    return out[0, 0] / 10.0 + 2.0


def config():
    return speech_embedding_config.get_config()


def test_tf_and_jax_front_ends_equal_the_networks_own():
    waveforms = clips()
    reference = np.stack([onnx_mel(clip) for clip in waveforms])
    assert reference.shape == (3, pretrained_embedding.num_frames(CLIP), 32)
    tf_features = features.make_frontend(config().features, CLIP)(waveforms).numpy()
    jax_features = jax_frontend.make_frontend(config().features, CLIP, CLIP, None)(waveforms)
    assert tf_features.shape == (*reference.shape, 1)
    # The near-silent clip exercises the floor 80 dB under its own maximum.
    assert np.ptp(reference[2]) > 1.0
    # Three float32 FFTs (ONNX Runtime's, TensorFlow's, XLA's) round differently, most in the
    # chirp's weak bands, and by how much depends on the CPU: up to 1.04e-4 apart on an AMD
    # EPYC without AVX-512. 3e-4 is 0.003 dB: a clip one sample late is off by 2.9, 1% louder
    # by 0.009.
    np.testing.assert_allclose(tf_features[..., 0], reference, atol=3e-4)
    np.testing.assert_allclose(np.asarray(jax_features), tf_features, atol=3e-4)


def test_frozen_network_over_the_clip_equals_the_network_window_by_window():
    mel = np.stack([onnx_mel(clip) for clip in clips()]).astype(np.float32)
    model = speech_embedding.SpeechEmbeddingClassifier(
        mel.shape[1],
        4,
        head_units=8,
        tuned_convs=0,
        dropout=0.0,
        dtype=jnp.float32,
        rngs=nnx.Rngs(0),
    )
    embeddings = np.asarray(model.embed(jnp.asarray(mel[..., np.newaxis])))
    windows = [
        mel[:, start : start + pretrained_embedding.WINDOW_FRAMES]
        for start in range(0, mel.shape[1] - 75, pretrained_embedding.EMBEDDING_STRIDE)
    ]
    assert embeddings.shape == (3, len(windows), pretrained_embedding.EMBEDDING_DIM) == (3, 9, 96)
    session = onnx_session("embedding_model")
    reference = np.stack(
        [session.run(None, {"input_1": w[..., np.newaxis]})[0][:, 0, 0] for w in windows], axis=1
    )
    scale = np.abs(reference).max()
    assert scale > 1.0
    np.testing.assert_allclose(embeddings, reference, atol=1e-5 * scale)


def test_only_the_head_is_trained():
    cfg = config()
    shape = (pretrained_embedding.num_frames(CLIP), 32, 1)
    model = create_model(cfg.model, 5, shape, nnx.Rngs(params=0, dropout=1))
    frozen_before = jax.tree.map(np.asarray, nnx.state(model, speech_embedding.Pretrained))
    params = nnx.state(model, nnx.Param)
    hidden_before = np.asarray(model.hidden.kernel[...])
    # BatchNorm of the embeddings, the hidden Dense and the output Dense: nothing of the network.
    units = cfg.model.head_units
    assert sum(p.size for p in jax.tree.leaves(params)) == (
        2 * 96 + (9 * 96 * units + units) + (units * 5 + 5)
    )
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, (4, *shape)), jnp.float32)
    labels = jnp.arange(4) % 5

    def loss(model):
        logits = model(x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    grads = nnx.grad(loss)(model)
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    optimizer.update(model, grads)
    frozen_after = jax.tree.map(np.asarray, nnx.state(model, speech_embedding.Pretrained))
    jax.tree.map(np.testing.assert_array_equal, frozen_after, frozen_before)
    assert not np.allclose(np.asarray(model.hidden.kernel[...]), hidden_before)


def test_a_missing_package_is_named_with_its_version(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"openwakeword==0\.4\.0 .*not installed"):
        pretrained_embedding.model_file("embedding_model")


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"features.kind": "logmel"}, "features.kind='speech_embedding'"),
        ({"features.normalize": True}, "features.normalize=False"),
        ({"data.sample_rate": 8000}, "data.sample_rate=16000"),
        ({"features.channels": 3}, "features.channels=1"),
        ({"data.clip_seconds": 0.2}, "at least 76"),
    ],
)
def test_settings_the_pretrained_network_cannot_take_are_refused(overrides, key):
    cfg = config()
    for name, value in overrides.items():
        section, field = name.split(".")
        cfg[section][field] = value
    with pytest.raises(UserError, match=key.replace("(", r"\(")):
        validation.validate(cfg)


def test_trains_predicts_and_exports_end_to_end(workspace, tmp_path):
    """main.py trains the model, with a small CNN branch pooled in, on the tiny synthetic set;
    every exported artifact (front end, frozen network and pool inside) gives the
    checkpoint's top-1 on its test split."""
    workdir = tmp_path / "run"
    overrides = [
        "--config.model.name=speech_embedding",
        "--config.model.head_units=16",
        "--config.model.cnn_branch=resnet32",
        "--config.model.blocks_per_stage=1",
        "--config.model.widths=(4, 8, 16)",
        "--config.features.branch_mels=8",
        "--config.features.kind=speech_embedding",
        "--config.features.normalize=False",
        "--config.train.epochs=1",
    ]
    config_arg = ("--config", f"tests/tiny_config.py:{workspace}")
    run_main(*config_arg, "--workdir", str(workdir), *overrides)
    run_main(*config_arg, "--workdir", str(workdir), "--mode", "export")
    record = json.loads((workdir / "export" / "export.json").read_text())
    checks = record["verification"]["artifacts"]
    for name in ("model.stablehlo", "model.tflite", "model.onnx"):
        assert checks[name]["top1_agreement"] == 1.0, name
        assert checks[name]["max_abs_diff"] < 1e-4, name
    assert record["features"]["kind"] == "speech_embedding"


@pytest.mark.parametrize("tuned", [2, 20])
def test_tuned_convs_makes_the_last_convolutions_parameters(tuned):
    shape = (pretrained_embedding.num_frames(CLIP), 32, 1)
    cfg = config().model
    frozen = create_model(cfg, 5, shape, nnx.Rngs(params=0, dropout=1))
    cfg.tuned_convs = tuned
    model = create_model(cfg, 5, shape, nnx.Rngs(params=0, dropout=1))
    network = pretrained_embedding.embedding_layers()
    convs = [layer for layer in network if layer.kind == "conv"]
    assert len(convs) == speech_embedding.conv_count() == 20
    first = speech_embedding.first_tuned_layer(network, tuned)
    assert network[first] is convs[-tuned]
    # Every weight from the first tuned convolution on moves to the parameters.
    moved = sum(
        layer.kernel.size + layer.bias.size for layer in network[first:] if layer.kernel is not None
    )
    count = lambda m, kind: sum(x.size for x in jax.tree.leaves(nnx.state(m, kind)))  # noqa: E731
    assert count(model, nnx.Param) == count(frozen, nnx.Param) + moved
    assert (
        count(model, speech_embedding.Pretrained)
        == count(frozen, speech_embedding.Pretrained) - moved
    )
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, (2, *shape)), jnp.float32)
    grads = jax.tree.leaves(nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)["pretrained"])
    assert grads and all(np.abs(np.asarray(g)).max() > 0 for g in grads)


def test_tuned_convs_outside_the_network_is_refused():
    cfg = config()
    cfg.model.tuned_convs = 21
    with pytest.raises(UserError, match=r"model.tuned_convs must be an integer in 0..20"):
        validation.validate(cfg)
