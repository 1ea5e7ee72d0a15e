"""speechjax.augment: stateless determinism, the stated amounts, shapes, tf.data and batches."""

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from speechjax import augment
from speechjax.errors import UserError

RATE = 16000
SEED = tf.constant([3, 7], tf.int64)


def augment_config(**overrides):
    config = default.get_config().augment
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


ONLY_SHIFT = dict(time_shift_ms=100.0, noise_prob=0.0, gain_db=0.0)
ONLY_GAIN = dict(time_shift_ms=0.0, noise_prob=0.0, gain_db=6.0)
ONLY_NOISE = dict(time_shift_ms=0.0, noise_prob=1.0, noise_min=0.3, noise_max=0.3, gain_db=0.0)


@pytest.fixture(scope="module")
def waveform() -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.5, 0.5, RATE).astype(np.float32)


@pytest.fixture(scope="module")
def noise_bank() -> np.ndarray:
    return np.random.default_rng(1).normal(0.0, 0.1, 3 * RATE).astype(np.float32)


def test_waveform_augmentation_is_deterministic_per_seed(waveform, noise_bank):
    config = augment_config()
    first = augment.augment_waveform(waveform, SEED, config, RATE, noise_bank).numpy()
    again = augment.augment_waveform(waveform, SEED, config, RATE, noise_bank).numpy()
    other = augment.augment_waveform(waveform, SEED + 1, config, RATE, noise_bank).numpy()
    assert first.shape == waveform.shape
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_time_shift_rolls_with_zero_fill_within_the_limit(waveform):
    config = augment_config(**ONLY_SHIFT)
    max_shift = RATE // 10
    shifts = set()
    for seed in range(8):
        out = augment.augment_waveform(waveform, [seed, 0], config, RATE, None).numpy()
        matches = [
            s for s in range(-max_shift, max_shift + 1) if np.array_equal(out, roll(waveform, s))
        ]
        assert len(matches) == 1, "the output is not the input shifted by at most 100 ms"
        shifts.add(matches[0])
    assert len(shifts) > 1  # the shift varies with the seed


def roll(x: np.ndarray, shift: int) -> np.ndarray:
    """x delayed by `shift` samples (advanced when negative), zeros shifted in."""
    out = np.zeros_like(x)
    if shift >= 0:
        out[shift:] = x[: len(x) - shift]
    else:
        out[:shift] = x[-shift:]
    return out


def test_gain_is_one_factor_within_gain_db(waveform):
    config = augment_config(**ONLY_GAIN)
    for seed in range(4):
        out = augment.augment_waveform(waveform, [seed, 1], config, RATE, None).numpy()
        ratio = out / waveform
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
        assert abs(20 * np.log10(ratio[0])) <= 6.0 + 1e-4


def test_noise_is_a_bank_window_at_the_stated_level(waveform, noise_bank):
    config = augment_config(**ONLY_NOISE)
    out = augment.augment_waveform(waveform, SEED, config, RATE, noise_bank).numpy()
    added = out - waveform
    rms = lambda x: np.sqrt(np.mean(np.square(x, dtype=np.float64)))  # noqa: E731
    np.testing.assert_allclose(rms(added), 0.3 * rms(waveform), rtol=1e-3)
    # The added noise is a scaled window of the bank: find it by correlation.
    correlation = np.correlate(noise_bank, added, mode="valid")
    offset = int(np.argmax(correlation))
    window = noise_bank[offset : offset + RATE]
    np.testing.assert_allclose(added, window * (added @ window) / (window @ window), atol=1e-5)

    silent = np.zeros(RATE, np.float32)
    quiet = augment.augment_waveform(silent, SEED, config, RATE, noise_bank).numpy()
    np.testing.assert_array_equal(quiet, silent)
    never = augment_config(**{**ONLY_NOISE, "noise_prob": 0.0})
    unchanged = augment.augment_waveform(waveform, SEED, never, RATE, noise_bank).numpy()
    np.testing.assert_array_equal(unchanged, waveform)


def test_noise_bank_shorter_than_a_clip_is_a_user_error(waveform):
    with pytest.raises(UserError, match="noise"):
        augment.augment_waveform(
            waveform, SEED, augment_config(**ONLY_NOISE), RATE, np.zeros(100, np.float32)
        )


def test_spec_augment_masks_whole_bands_of_the_stated_size():
    config = augment_config(time_masks=2, time_mask_width=10, freq_masks=3, freq_mask_width=5)
    ones = tf.ones([101, 40, 3])
    masked_frames, masked_bins = [], []
    for seed in range(20):
        out = augment.spec_augment(ones, [seed, 2], config).numpy()
        assert out.shape == (101, 40, 3)
        zero = out == 0
        frames, bins = zero.all(axis=(1, 2)), zero.all(axis=(0, 2))
        # Every zero lies in a fully masked frame or bin; nothing else changes.
        expected = np.broadcast_to(frames[:, None, None] | bins[None, :, None], zero.shape)
        np.testing.assert_array_equal(zero, expected)
        assert frames.sum() <= 2 * 10 and bins.sum() <= 3 * 5
        masked_frames.append(frames.sum())
        masked_bins.append(bins.sum())
    assert max(masked_frames) > 0 and max(masked_bins) > 0
    again = augment.spec_augment(ones, [5, 2], config)
    np.testing.assert_array_equal(again, augment.spec_augment(ones, [5, 2], config))

    none = augment_config(time_masks=0, freq_masks=0)
    np.testing.assert_array_equal(augment.spec_augment(ones, SEED, none), ones)


def test_spec_augment_from_a_bin_masks_only_the_bins_above():
    # The speech_embedding front end with branch_mels: the pretrained network's 32 bins,
    # then the CNN's. The masks must reach the CNN's bins only, and reach them as before.
    config = augment_config(
        time_masks=2, time_mask_width=10, freq_masks=3, freq_mask_width=5, mask_from_bin=32
    )
    every_bin = augment_config(time_masks=2, time_mask_width=10, freq_masks=3, freq_mask_width=5)
    spectrograms = tf.random.stateless_uniform([4, 147, 72, 1], [1, 2], 1.0, 2.0)
    masked_somewhere = False
    for seed in range(10):
        out = augment.spec_augment(spectrograms, [seed, 2], config).numpy()
        np.testing.assert_array_equal(out[..., :32, :], spectrograms[..., :32, :])
        alone = augment.spec_augment(spectrograms[..., 32:, :], [seed, 2], every_bin)
        np.testing.assert_array_equal(out[..., 32:, :], alone)
        masked_somewhere |= bool((out[..., 32:, :] == 0).any())
    assert masked_somewhere


def test_batches_draw_per_example_and_tf_data_matches_eager(waveform, noise_bank):
    config = augment_config()
    batch = np.stack([waveform] * 4)
    out = augment.augment_waveform(batch, SEED, config, RATE, noise_bank).numpy()
    assert out.shape == batch.shape
    assert len({row.tobytes() for row in out}) == 4
    masked = augment.spec_augment(tf.ones([4, 50, 20, 1]), SEED, config).numpy()
    assert len({row.tobytes() for row in masked}) > 1

    seeds = tf.constant([[0, 1], [0, 2]], tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((batch[:2], seeds)).map(
        lambda w, s: augment.augment_waveform(w, s, config, RATE, tf.constant(noise_bank))
    )
    for from_dataset, seed in zip(dataset, seeds, strict=True):
        eager = augment.augment_waveform(waveform, seed, config, RATE, noise_bank)
        np.testing.assert_allclose(from_dataset.numpy(), eager.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(noise_prob=1.5), "augment.noise_prob"),
        (dict(noise_min=0.5, noise_max=0.1), "augment.noise_max"),
        (dict(time_mask_width=-1), "augment.time_mask_width"),
        (dict(gain_db=-3.0), "augment.gain_db"),
        (dict(mask_from_bin=-1), "augment.mask_from_bin"),
    ],
)
def test_invalid_config_names_the_key(overrides, key, waveform):
    config = augment_config(**overrides)
    with pytest.raises(UserError, match=key):
        augment.augment_waveform(waveform, SEED, config, RATE, None)
    with pytest.raises(UserError, match=key):
        augment.spec_augment(tf.ones([10, 10, 1]), SEED, config)


NONE = dict(time_shift_ms=0.0, noise_prob=0.0, gain_db=0.0)


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * RATE / len(x))


def test_new_augmentations_off_leave_every_earlier_draw_unchanged(waveform, noise_bank):
    # Samples of the default augmentation of these fixtures as computed by augment.py before
    # speed, reverberation and band limiting existed (commit 9dbebd1): with them off, shift,
    # noise and gain must draw the same, so earlier runs and checkpoints reproduce.
    before = {0: -0.03144879266619682, 5000: -0.3107454180717468, 15999: 0.4953310191631317}
    out = augment.augment_waveform(waveform, SEED, augment_config(), RATE, noise_bank).numpy()
    for index, value in before.items():
        assert out[index] == pytest.approx(value, abs=1e-6)
    assert float(np.abs(out).sum()) == pytest.approx(3445.3115, rel=1e-5)


def test_speed_change_scales_frequency_and_keeps_the_centre():
    t = np.arange(RATE) / RATE
    burst = (np.sin(2 * np.pi * 1000 * t) * np.exp(-(((t - 0.5) / 0.1) ** 2))).astype(np.float32)
    config = augment_config(**NONE, speed_change=0.1)
    factors = []
    for seed in range(6):
        out = augment.augment_waveform(burst, [seed, 1], config, RATE, None).numpy()
        factors.append(dominant_hz(out) / 1000)
        # The envelope's peak stays at the centre.
        assert abs(np.argmax(np.abs(out)) - RATE / 2) < RATE * 0.01
    assert all(0.89 <= f <= 1.11 for f in factors)
    assert max(factors) - min(factors) > 0.02  # it varies with the seed
    batch = np.stack([burst, burst])
    out = augment.augment_waveform(batch, SEED, config, RATE, None).numpy()
    assert not np.allclose(out[0], out[1])  # independent per example


def test_pitch_shift_moves_every_frequency_and_keeps_timing_and_level():
    t = np.arange(RATE) / RATE
    burst = (np.sin(2 * np.pi * 440 * t) * np.exp(-(((t - 0.5) / 0.1) ** 2))).astype(np.float32)
    factors = np.array([[2 ** (2 / 12)], [2 ** (-2 / 12)], [1.0]], np.float32)
    out = augment.shift_pitch(np.stack([burst] * 3), factors, 2.0).numpy()
    for shifted, factor in zip(out, factors[:, 0], strict=True):
        assert dominant_hz(shifted) == pytest.approx(440 * factor, rel=0.01)
        assert abs(np.argmax(np.abs(shifted)) - RATE / 2) < RATE * 0.02  # the tempo is kept
        assert np.sqrt(np.mean(shifted**2)) == pytest.approx(np.sqrt(np.mean(burst**2)), rel=1e-3)
    # A factor of one gives the clip back: the vocoder's frames overlap-add exactly.
    np.testing.assert_allclose(out[2], burst, atol=1e-3)


def test_pitch_augmentation_draws_within_the_range_per_seed_and_example():
    t = np.arange(RATE) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    config = augment_config(**NONE, pitch_semitones=3.0)
    factors = []
    for seed in range(6):
        out = augment.augment_waveform(tone, [seed, 1], config, RATE, None).numpy()
        again = augment.augment_waveform(tone, [seed, 1], config, RATE, None).numpy()
        np.testing.assert_array_equal(out, again)
        factors.append(dominant_hz(out) / 1000)
    assert all(2 ** (-3 / 12) - 0.01 <= f <= 2 ** (3 / 12) + 0.01 for f in factors)
    assert max(factors) - min(factors) > 0.05  # it varies with the seed
    out = augment.augment_waveform(np.stack([tone, tone]), SEED, config, RATE, None).numpy()
    assert dominant_hz(out[0]) != pytest.approx(dominant_hz(out[1]), rel=1e-3)  # per example


def test_reverberation_adds_a_decaying_tail_and_keeps_the_level():
    click = np.zeros(RATE, np.float32)
    click[1000:1100] = 0.5
    config = augment_config(**NONE, reverb_prob=1.0, reverb_rt60_min=0.3, reverb_rt60_max=0.3)
    out = augment.augment_waveform(click, SEED, config, RATE, None).numpy()
    rms = np.sqrt(np.mean(click**2))
    assert np.sqrt(np.mean(out**2)) == pytest.approx(rms, rel=1e-3)
    tail = out[1100:]
    early, late = np.abs(tail[:1600]).mean(), np.abs(tail[3200:4800]).mean()
    assert early > 0.01 and late < early  # a tail that decays after the click
    assert np.abs(out[:990]).max() < 1e-4  # nothing before the sound (causal)
    off = augment_config(**NONE, reverb_prob=0.0)
    np.testing.assert_array_equal(augment.augment_waveform(click, SEED, off, RATE, None), click)


def test_band_limit_removes_energy_outside_a_random_band():
    t = np.arange(RATE) / RATE
    mix = (np.sin(2 * np.pi * 100 * t) + np.sin(2 * np.pi * 7900 * t)).astype(np.float32) * 0.3
    config = augment_config(**NONE, band_prob=1.0)
    removed = 0
    for seed in range(6):
        out = augment.augment_waveform(mix, [seed, 2], config, RATE, None).numpy()
        spectrum = np.abs(np.fft.rfft(out))
        low, high = spectrum[100], spectrum[7900]
        removed += (low < 1.0) + (high < 1.0)
        assert spectrum[100:7901].max() <= np.abs(np.fft.rfft(mix)).max() + 1e-3
    assert removed >= 6  # corners above 100 Hz and below 7.9 kHz cut those tones


def test_new_augmentation_settings_are_checked():
    settings = (
        ("speed_change", 1.0),
        ("pitch_semitones", -1.0),
        ("pitch_semitones", 13.0),
        ("reverb_prob", 1.5),
        ("band_prob", -0.1),
    )
    for key, value in settings:
        with pytest.raises(UserError, match=f"augment.{key}"):
            augment.augment_waveform(
                np.zeros(RATE, np.float32), SEED, augment_config(**{key: value}), RATE, None
            )


def test_equaliser_colours_smoothly_within_eq_db_and_keeps_the_level(waveform):
    config = augment_config(**NONE, eq_prob=1.0, eq_db=10.0)
    flat = np.abs(np.fft.rfft(waveform))
    curves = []
    for seed in range(4):
        out = augment.augment_waveform(waveform, [seed, 3], config, RATE, None).numpy()
        assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(waveform**2)), rel=1e-3)
        ratio_db = 20 * np.log10(np.abs(np.fft.rfft(out))[1:] / flat[1:])
        # A gain curve within +-10 dB (then moved as a whole by the RMS correction)...
        assert ratio_db.max() - ratio_db.min() <= 20.0 + 0.1
        # ...that is smooth: neighbouring bins differ by a small fraction of a decibel.
        assert np.abs(np.diff(ratio_db)).max() < 0.5
        curves.append(ratio_db)
    assert np.ptp(curves[0]) > 2.0  # it colours
    assert not np.allclose(curves[0], curves[1], atol=0.5)  # differently per seed
    off = augment_config(**NONE, eq_prob=0.0)
    np.testing.assert_array_equal(
        augment.augment_waveform(waveform, SEED, off, RATE, None), waveform
    )
    batch = augment.augment_waveform(np.stack([waveform] * 2), SEED, config, RATE, None).numpy()
    assert not np.allclose(batch[0], batch[1])  # independent per example
    with pytest.raises(UserError, match="augment.eq_db"):
        augment.augment_waveform(waveform, SEED, augment_config(eq_db=-1.0), RATE, None)
