"""speechjax.features against the original's steps (numpy/scipy) and librosa, in tf.data too."""

import numpy as np
import pytest
import scipy.fft
import tensorflow as tf

from configs import default
from speechjax import audio, features, frontend_settings
from speechjax.errors import UserError
from tests import reference_seed

RATE = 16000


def features_config(**overrides):
    config = default.get_config().features
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture(scope="module")
def clips(shared_data) -> np.ndarray:
    """Six real clips padded to one second, one of them shorter than a second (zero tail)."""
    paths = sorted((shared_data / "toy_dataset" / "train").glob("*.wav"))[::40][:6]
    waveforms = [audio.read_audio(str(path), RATE) for path in paths]
    if all(len(w) == RATE for w in waveforms):  # make sure a zero-padded clip is among them
        waveforms[0] = waveforms[0][: RATE // 2]
    return np.stack([np.pad(w, (0, RATE - len(w))) for w in waveforms]).astype(np.float32)


def in_dataset(frontend, waveforms: np.ndarray) -> np.ndarray:
    """The front end run per example inside a tf.data map (graph mode)."""
    dataset = tf.data.Dataset.from_tensor_slices(waveforms).map(frontend).batch(len(waveforms))
    return next(iter(dataset)).numpy()


def assert_close_per_channel(actual: np.ndarray, expected: np.ndarray, relative: float):
    """max |actual - expected| <= relative * max |expected|, channel by channel."""
    for channel in range(expected.shape[-1]):
        error = np.abs(actual[..., channel] - expected[..., channel]).max()
        scale = np.abs(expected[..., channel]).max()
        assert error <= relative * scale, (channel, error / scale)


@pytest.mark.parametrize("deltas", [False, True])
def test_seed_matches_numpy_scipy_reference(clips, deltas):
    frontend = features.make_frontend(features_config(kind="seed", channels=3, deltas=deltas), RATE)
    expected = np.stack([reference_seed.seed_spectrogram(c, deltas=deltas) for c in clips])
    eager = frontend(clips).numpy()
    assert eager.shape == (len(clips), 32, 257, 3) == expected.shape
    for actual in (eager, in_dataset(frontend, clips)):
        for clip in range(len(clips)):
            assert_close_per_channel(actual[clip], expected[clip], 1e-4)


@pytest.mark.parametrize("window_ms, hop_ms", [(25.0, 10.0), (30.0, 12.5), (25.0625, 10.0)])
def test_logmel_matches_librosa(clips, window_ms, hop_ms):
    librosa = pytest.importorskip("librosa")
    config = features_config(kind="logmel", window_ms=window_ms, hop_ms=hop_ms)
    frontend = features.make_frontend(config, RATE)
    window, hop = round(window_ms * RATE / 1000), round(hop_ms * RATE / 1000)
    n_fft = 2 ** int(np.ceil(np.log2(window)))
    actual = frontend(clips[:3]).numpy()[..., 0]
    for clip, ours in zip(clips[:3], actual, strict=True):
        mel = librosa.feature.melspectrogram(
            y=clip, sr=RATE, n_fft=n_fft, hop_length=hop, win_length=window, window="hann",
            center=True, pad_mode="constant", power=2.0, n_mels=config.n_mels,
            fmin=config.fmin, fmax=config.fmax, htk=True, norm=None,
        )  # fmt: skip
        expected = np.log(np.maximum(mel, features.LOG_FLOOR)).T
        assert ours.shape == expected.shape == (RATE // hop + 1, config.n_mels)
        # 3e-4 in log units: the mel powers agree within 0.03% (float32 against float64).
        np.testing.assert_allclose(ours, expected, rtol=0, atol=3e-4)


def test_mel_filterbank_is_librosa_htk_without_norm():
    librosa = pytest.importorskip("librosa")
    ours = frontend_settings.mel_filterbank(RATE, 512, 64, 20.0, 7600.0)
    theirs = librosa.filters.mel(
        sr=RATE, n_fft=512, n_mels=64, fmin=20, fmax=7600, htk=True, norm=None
    )
    np.testing.assert_allclose(ours.T, theirs, atol=1e-6)


def test_mfcc_is_orthonormal_dct_of_logmel():
    waveform = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1
    log_mel = features.make_frontend(features_config(kind="logmel", n_mels=40), RATE)(waveform)
    mfcc = features.make_frontend(features_config(kind="mfcc", n_mels=40, n_mfcc=13), RATE)(
        waveform
    )
    assert mfcc.shape == (101, 13, 1)
    expected = scipy.fft.dct(log_mel.numpy()[..., 0].astype(np.float64), type=2, norm="ortho")
    np.testing.assert_allclose(mfcc.numpy()[..., 0], expected[:, :13], rtol=1e-5, atol=1e-4)


def test_delta_edges_are_zero_padded():
    ramp = np.tile(np.arange(6, dtype=np.float32)[:, None], (1, 2))  # c_t = t, T = 6
    delta = features.delta_features(tf.constant(ramp)).numpy()[:, 0]
    # d_t = ((c_{t+1} - c_{t-1}) + 2 (c_{t+2} - c_{t-2})) / 10 with c = 0 outside 0..5.
    expected = [(1 + 2 * 2) / 10, (2 + 2 * 3) / 10, 1.0, 1.0, (2 - 2 * 2) / 10, (-4 - 2 * 3) / 10]
    np.testing.assert_allclose(delta, expected, atol=1e-6)
    np.testing.assert_allclose(delta, reference_seed._delta(ramp)[:, 0], atol=1e-6)


@pytest.mark.parametrize(
    "overrides, num_samples",
    [
        (dict(kind="seed", channels=3), RATE),
        (dict(kind="seed", channels=1), 12345),
        (dict(kind="seed", channels=3, deltas=True, resize=(224, 224)), RATE),
        (dict(kind="logmel"), RATE),
        (dict(kind="logmel", channels=3, deltas=True, n_mels=64, hop_ms=12.5), RATE),
        (dict(kind="logmel", window_ms=20.0, resize=(64, 32)), 8000),
        (dict(kind="mfcc", n_mfcc=13, channels=3), RATE),
    ],
)
def test_output_shape_agrees_with_output(overrides, num_samples):
    config = features_config(**overrides)
    frontend = features.make_frontend(config, RATE)
    expected = frontend_settings.output_shape(config, num_samples, RATE)
    waveforms = np.random.default_rng(1).uniform(-0.5, 0.5, (2, num_samples)).astype(np.float32)
    assert tuple(frontend(waveforms[0]).shape) == expected
    assert tuple(frontend(waveforms).shape) == (2, *expected)


def test_channels_copies_and_batches_agree():
    waveforms = np.random.default_rng(2).uniform(-0.5, 0.5, (3, RATE)).astype(np.float32)
    one = features.make_frontend(features_config(kind="logmel", channels=1), RATE)
    three = features.make_frontend(features_config(kind="logmel", channels=3), RATE)
    single = one(waveforms).numpy()
    np.testing.assert_array_equal(three(waveforms).numpy(), np.repeat(single, 3, axis=-1))
    np.testing.assert_allclose(one(waveforms[1]).numpy(), single[1], atol=1e-5)
    np.testing.assert_allclose(in_dataset(one, waveforms), single, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(kind="stft"), "features.kind"),
        (dict(channels=2), "features.channels"),
        (dict(channels=1, deltas=True), "features.deltas"),
        (dict(n_mels=129), "features.n_mels"),
        (dict(kind="mfcc", n_mels=20, n_mfcc=30), "features.n_mfcc"),
        (dict(fmax=9000.0), "features.fmax"),
        (dict(hop_ms=0.0), "features.hop_ms"),
        (dict(resize=(224,)), "features.resize"),
    ],
)
def test_invalid_config_names_the_key(overrides, key):
    config = features_config(**overrides)
    with pytest.raises(UserError, match=key):
        features.make_frontend(config, RATE)
    with pytest.raises(UserError, match=key):
        frontend_settings.output_shape(config, RATE, RATE)


def test_normalize_per_channel():
    spectrogram = tf.constant(np.random.default_rng(3).normal(size=(4, 5, 3)), tf.float32)
    mean, std = [1.0, -2.0, 0.5], [2.0, 0.5, 4.0]
    expected = (spectrogram.numpy() - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(features.normalize(spectrogram, mean, std), expected, rtol=1e-6)
    with pytest.raises(UserError, match="3 channels"):
        features.normalize(spectrogram, [0.0], [1.0])
    with pytest.raises(UserError, match="positive"):
        features.normalize(spectrogram, mean, [1.0, 0.0, 1.0])
