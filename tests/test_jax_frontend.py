"""The JAX front end of inference equals the tf.data front end of training, on real clips."""

import numpy as np
import pytest

from configs import default
from speechjax import audio, features, jax_frontend
from speechjax.errors import UserError
from speechjax.normalization import NormStats

RATE = 16000
# Largest |JAX - tf.data| allowed, in normalised units (standard deviations). Both compute
# in float32 and round differently (a matrix-product DFT against tf's FFT); the difference
# shows in the log of mel bands ~1e-7 below the frame's loudest one (the zero-padded tail of
# short clips, bands under the 20 Hz floor's neighbours), where it reached 4e-4 on real
# clips. A thousandth of a standard deviation is far below anything a network resolves.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def clips(shared_data) -> np.ndarray:
    """16 real one-second clips of 8 words, one of them cut short (a zero tail)."""
    folder = shared_data / "mini_speech_commands" / "test"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    paths = sorted(folder.glob("*/*.flac"))[::50][:16]
    waveforms = [audio.read_audio(str(p), RATE) for p in paths]
    waveforms[0] = waveforms[0][: RATE // 2]
    return np.stack([np.pad(w, (0, RATE - len(w)))[:RATE] for w in waveforms]).astype(np.float32)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(window_ms=30.0, hop_ms=20.0),  # configs/resnet32.py
        dict(n_mels=64),  # configs/logmel64.py
        dict(kind="mfcc", n_mfcc=13, channels=3, deltas=True),
        dict(n_mels=64, channels=3, resize=(64, 32)),
        dict(kind="mfcc", n_mfcc=20, window_ms=25.0625, hop_ms=12.5),
    ],
)
def test_jax_frontend_equals_tf_data(clips, overrides):
    config = default.get_config().features
    for key, value in overrides.items():
        setattr(config, key, value)
    raw = features.make_frontend(config, RATE)(clips).numpy()
    channels = raw.shape[-1]
    stats = NormStats(
        tuple(raw.reshape(-1, channels).mean(0)), tuple(raw.reshape(-1, channels).std(0))
    )
    expected = features.normalize(raw, stats.mean, stats.std).numpy()
    actual = np.asarray(jax_frontend.make_frontend(config, RATE, RATE, stats)(clips))
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= TOLERANCE
    unnormalised = np.asarray(jax_frontend.make_frontend(config, RATE, RATE, None)(clips))
    np.testing.assert_allclose(unnormalised, raw, atol=TOLERANCE * max(stats.std))


def test_seed_front_end_is_refused_with_the_reason():
    config = default.get_config().features
    config.kind = "seed"
    with pytest.raises(UserError, match="features.kind='seed'.*--mode eval"):
        jax_frontend.make_frontend(config, RATE, RATE, None)


def test_wrong_statistics_and_shapes_are_refused():
    config = default.get_config().features
    with pytest.raises(UserError, match="3 channels"):
        jax_frontend.make_frontend(config, RATE, RATE, NormStats((0.0,) * 3, (1.0,) * 3))
    frontend = jax_frontend.make_frontend(config, RATE, RATE, None)
    with pytest.raises(ValueError, match=r"\[batch, 16000\]"):
        frontend(np.zeros((2, 8000), np.float32))
