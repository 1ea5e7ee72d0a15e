"""Training-time augmentation in TensorFlow: speed, pitch, reverberation, time shift,
background noise, band limiting, equalisation, gain, SpecAugment.

All randomness is stateless, drawn from a seed tensor of shape [2] (for example from
`tf.data.Dataset.random(seed).batch(2)` zipped with the examples, or
`tf.random.experimental.stateless_fold_in(base_seed, index)`), so a tf.data pipeline with
the same seeds yields the same examples, however many threads run it. Both functions take
one example or a batch (any leading dimensions) and draw independently per example.

Noise bank: a 1-D float32 tensor, the background recordings concatenated
(`np.concatenate(recordings)`); each noisy example mixes in a window of it starting anywhere.
A window may straddle the seam of two recordings (with six one-minute recordings, about 1.4%
of one-second windows do), which only changes the noise type mid-clip.
"""

import numpy as np
import tensorflow as tf

from speechjax.errors import UserError

# augment.pitch_semitones: up to an octave either way.
MAX_PITCH_SEMITONES = 12.0


def check_config(augment_config) -> None:
    """Raises UserError naming the first `augment.*` value out of range."""
    c = augment_config
    non_negative = {
        "time_shift_ms": c.time_shift_ms,
        "noise_min": c.noise_min,
        "gain_db": c.gain_db,
        "time_masks": c.time_masks,
        "time_mask_width": c.time_mask_width,
        "freq_masks": c.freq_masks,
        "freq_mask_width": c.freq_mask_width,
        "mask_from_bin": c.mask_from_bin,
    }
    for key, value in non_negative.items():
        if not value >= 0:  # NaN too
            raise UserError(f"augment.{key}={value} must be >= 0.")
    for key in ("noise_prob", "reverb_prob", "band_prob", "eq_prob"):
        if not 0 <= c[key] <= 1:  # NaN too
            raise UserError(f"augment.{key}={c[key]} must be in [0, 1].")
    if not c.eq_db >= 0:  # NaN too
        raise UserError(f"augment.eq_db={c.eq_db} must be >= 0.")
    if not 0 <= c.speed_change < 1:
        raise UserError(f"augment.speed_change={c.speed_change} must be in [0, 1).")
    if not 0 <= c.pitch_semitones <= MAX_PITCH_SEMITONES:
        raise UserError(
            f"augment.pitch_semitones={c.pitch_semitones} must be in [0, {MAX_PITCH_SEMITONES}]."
        )
    if c.reverb_prob > 0 and not 0 < c.reverb_rt60_min <= c.reverb_rt60_max:
        raise UserError(
            f"augment.reverb_rt60_min={c.reverb_rt60_min} and reverb_rt60_max="
            f"{c.reverb_rt60_max} need 0 < min <= max (seconds)."
        )
    if not c.noise_max >= c.noise_min:
        raise UserError(
            f"augment.noise_max={c.noise_max} must be >= augment.noise_min={c.noise_min}."
        )


@tf.function(jit_compile=True)
def _windows(source: tf.Tensor, starts: tf.Tensor, length: int) -> tf.Tensor:
    """source[..., start : start + length] for each start in `starts` ([..., 1]).

    Leading dimensions of a multi-dimensional source pair with those of `starts`; a 1-D
    source is shared. Compiled with XLA: tf's own gather moves these windows one float at a
    time, about five times slower (~0.2 ms per one-second clip).
    """
    return tf.gather(source, starts + tf.range(length), batch_dims=source.shape.rank - 1)


def _uniform(seed, shape, minval, maxval, dtype=tf.float32):
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval, dtype=dtype)


def augment_waveform(
    waveform: tf.Tensor,
    seed: tf.Tensor,
    augment_config,
    sample_rate: int,
    noise_bank: tf.Tensor | None,
) -> tf.Tensor:
    """Time shift, background noise and gain of float32 [..., num_samples] waveforms
    (num_samples static: pad or crop first).

    - Time shift: by a whole number of samples uniform in +-time_shift_ms, zeros shifted in.
    - Noise (with probability noise_prob, only when noise_bank is given): a random window of
      the bank, scaled so that its RMS is `level` times the clip's RMS, level uniform in
      [noise_min, noise_max]; silent clips stay silent.
    - Gain: uniform in +-gain_db decibels. Nothing is clipped: features are computed in float.
    """
    check_config(augment_config)
    c = augment_config
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    seed = tf.cast(seed, tf.int64)
    shift_seed, noise_seed, gain_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    # The later augmentations draw from a seed of their own, so that with them off every
    # draw above is what it was before they existed (and runs stay reproducible).
    speed_seed, reverb_seed, band_seed = tf.unstack(
        tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(seed, 1), num=3
        )
    )
    eq_seed = tf.random.experimental.stateless_fold_in(seed, 2)
    pitch_seed = tf.random.experimental.stateless_fold_in(seed, 3)
    if waveform.shape.rank is None or waveform.shape[-1] is None:
        raise ValueError(f"augment_waveform needs a static clip length, got {waveform.shape}.")
    per_example = tf.concat([tf.shape(waveform)[:-1], [1]], axis=0)  # one draw per example

    if c.speed_change > 0:
        waveform = change_speed(waveform, speed_seed, c.speed_change, per_example)
    if c.pitch_semitones > 0:
        semitones = _uniform(pitch_seed, per_example, -c.pitch_semitones, c.pitch_semitones)
        waveform = shift_pitch(waveform, tf.pow(2.0, semitones / 12.0), c.pitch_semitones)
    if c.reverb_prob > 0:
        waveform = reverberate(
            waveform,
            reverb_seed,
            sample_rate,
            c.reverb_prob,
            (c.reverb_rt60_min, c.reverb_rt60_max),
            per_example,
        )

    max_shift = round(augment_config.time_shift_ms * sample_rate / 1000)
    if max_shift > 0:
        shift = _uniform(shift_seed, per_example, -max_shift, max_shift + 1, tf.int32)
        paddings = [[0, 0]] * (waveform.shape.rank - 1) + [[max_shift, max_shift]]
        waveform = _windows(tf.pad(waveform, paddings), max_shift - shift, waveform.shape[-1])

    if noise_bank is not None and augment_config.noise_prob > 0 and augment_config.noise_max > 0:
        waveform = _mix_noise(waveform, noise_seed, augment_config, noise_bank, per_example)

    if c.band_prob > 0:
        waveform = limit_band(waveform, band_seed, sample_rate, c.band_prob, per_example)
    if c.eq_prob > 0 and c.eq_db > 0:
        waveform = equalize(waveform, eq_seed, sample_rate, c.eq_prob, c.eq_db, per_example)

    if augment_config.gain_db > 0:
        gain_db = _uniform(gain_seed, per_example, -augment_config.gain_db, augment_config.gain_db)
        waveform = waveform * tf.pow(10.0, gain_db / 20.0)
    return waveform


def change_speed(waveform: tf.Tensor, seed, max_change: float, per_example) -> tf.Tensor:
    """Speed perturbation (Ko et al. 2015): each clip resampled by a factor uniform in
    1 +- max_change about its centre, so pitch and tempo change together and the word stays
    in place; linear interpolation, zeros beyond the clip's ends.

    Resampling by interpolation rather than with a polyphase filter: at factors within 10%
    of 1 its aliasing lies above 7 kHz, where the front ends' mel bands end (fmax 7600 Hz).
    """
    num_samples = waveform.shape[-1]
    factor = _uniform(seed, per_example, 1.0 - max_change, 1.0 + max_change)
    centre = (num_samples - 1) / 2.0
    positions = centre + (tf.range(num_samples, dtype=tf.float32) - centre) * factor
    return _interpolate(waveform, positions)


def _interpolate(source: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """source [..., L] read at fractional positions [..., n] (leading dimensions paired) by
    linear interpolation, with zeros beyond both ends."""
    length = source.shape[-1]
    left = tf.floor(positions)
    fraction = positions - left
    left = tf.cast(left, tf.int32)
    padded = tf.pad(source, [[0, 0]] * (source.shape.rank - 1) + [[1, 2]])
    # padded[i + 1] is source[i]; positions outside [-1, length] read the zero pads.
    before = _windows_at(padded, tf.clip_by_value(left + 1, 0, length + 2))
    after = _windows_at(padded, tf.clip_by_value(left + 2, 0, length + 2))
    inside = (positions > -1.0) & (positions < length)
    return tf.where(inside, before * (1.0 - fraction) + after * fraction, 0.0)


def _windows_at(source: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """source[..., indices] with leading dimensions paired (indices: [..., n])."""
    return tf.gather(source, indices, batch_dims=source.shape.rank - 1)


# Phase vocoder analysis: 32 ms frames at 16 kHz, a quarter-frame hop (the usual overlap
# for time stretching; librosa's default too).
_VOCODER_FFT = 512
_VOCODER_HOP = _VOCODER_FFT // 4


def shift_pitch(waveform: tf.Tensor, factor: tf.Tensor, max_semitones: float) -> tf.Tensor:
    """Pitch shift that keeps tempo and timing: every frequency of each clip times `factor`
    ([..., 1]; 2 ** (semitones / 12)), as librosa.effects.pitch_shift does it: a phase
    vocoder stretches the clip `factor` times longer at the same pitch, then resampling
    reads it `factor` times faster, back to its own length. Formants move with the pitch,
    as in speed perturbation, but the word keeps its duration and place.

    The vocoder is the textbook one (librosa's `phase_vocoder`, here on 32 ms frames):
    each bin keeps its own phase track, so partials lose some of their phase alignment
    across bins ("phasiness"); on speech that costs energy (librosa's own pitch_shift kept
    54-85% of the RMS of a Speech Commands clip at +-2 semitones, on 32 ms or its default
    128 ms frames), so the result is scaled back to the clip's RMS, as reverberate does.

    max_semitones (at least every |semitones| drawn) sizes the stretched signal, which
    must have a static length. Resampling is linear interpolation, as in change_speed:
    shifts up alias the stretched signal's content above 8 kHz / factor (6.7 kHz at +3
    semitones), within the top mel bands only for shifts of a few semitones.
    """
    shape = tf.shape(waveform)
    num_samples = waveform.shape[-1]
    clips = tf.reshape(waveform, [-1, num_samples])
    factor = tf.reshape(tf.cast(factor, tf.float32), [-1, 1])
    # Padding of one frame each side: every sample of the clip then lies under four frames,
    # so the overlap-add rebuilds the edges as fully as the middle.
    pad = _VOCODER_FFT
    padded = tf.pad(clips, [[0, 0], [pad, pad]])
    window = tf.signal.hann_window
    spectra = tf.signal.stft(padded, _VOCODER_FFT, _VOCODER_HOP, window_fn=window, pad_end=True)
    max_factor = 2.0 ** (max_semitones / 12.0)
    frames_out = int(np.ceil(spectra.shape[1] * max_factor)) + 1
    stretched_spectra = _stretch(spectra, factor, frames_out)
    stretched = tf.signal.inverse_stft(
        stretched_spectra,
        _VOCODER_FFT,
        _VOCODER_HOP,
        window_fn=tf.signal.inverse_stft_window_fn(_VOCODER_HOP, window),
    )
    # Sample n of the clip is sample (n + pad) * factor of the stretched signal.
    positions = (tf.range(num_samples, dtype=tf.float32) + pad) * factor
    shifted = _interpolate(stretched, positions)
    shifted = shifted * _rms(clips) / tf.maximum(_rms(shifted), 1e-8)
    return tf.reshape(shifted, shape)


def _rms(x: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True))


def _stretch(spectra: tf.Tensor, factor: tf.Tensor, frames_out: int) -> tf.Tensor:
    """Phase vocoder (Flanagan and Golden 1966; Laroche and Dolson 1999's phase advance):
    [B, T, K] complex STFT frames -> [B, frames_out, K], each clip `factor` ([B, 1]) times
    longer. Output frame j reads input position j / factor: magnitudes interpolated
    linearly, each bin's phase advanced by its measured frequency, so it runs on smoothly
    from frame to frame. Frames past the input's end are silent."""
    num_frames, bins = spectra.shape[1], spectra.shape[2]
    magnitude = tf.abs(spectra)
    phase = tf.math.angle(spectra)
    # Expected phase advance of bin k over one hop, and the measured deviation from it.
    expected = tf.constant(2.0 * np.pi * _VOCODER_HOP * np.arange(bins) / _VOCODER_FFT, tf.float32)
    deviation = phase[:, 1:] - phase[:, :-1] - expected
    deviation = deviation - 2.0 * np.pi * tf.round(deviation / (2.0 * np.pi))
    advance = tf.concat([deviation + expected, tf.zeros_like(phase[:, :1])], axis=1)

    positions = tf.range(frames_out, dtype=tf.float32) / factor  # [B, frames_out]
    inside = positions <= num_frames - 1
    left = tf.minimum(tf.cast(tf.floor(positions), tf.int32), num_frames - 2)
    fraction = tf.minimum(positions - tf.cast(left, tf.float32), 1.0)[..., tf.newaxis]
    magnitudes = (1.0 - fraction) * tf.gather(magnitude, left, batch_dims=1) + fraction * (
        tf.gather(magnitude, left + 1, batch_dims=1)
    )
    # Output frame j's phase: the first frame's, plus the advances read at frames 0..j-1.
    steps = tf.gather(advance, left, batch_dims=1)
    phases = phase[:, :1] + tf.math.cumsum(steps, axis=1, exclusive=True)
    magnitudes = tf.where(inside[..., tf.newaxis], magnitudes, 0.0)
    return tf.complex(magnitudes * tf.cos(phases), magnitudes * tf.sin(phases))


def room_impulse_response(rt60: tf.Tensor, sample_rate: int, length: int, seed) -> tf.Tensor:
    """[..., length] synthetic room responses: a direct path followed by exponentially
    decaying Gaussian noise (energy down 60 dB after rt60 seconds), the classic statistical
    model of late reverberation. rt60: [..., 1] seconds."""
    t = tf.range(length, dtype=tf.float32) / sample_rate
    shape = tf.concat([tf.shape(rt60)[:-1], [length]], axis=0)
    tail = tf.random.stateless_normal(shape, seed) * tf.exp(-6.9078 * t / rt60)
    # Late energy about equal to the direct path's, as in a small room a metre away.
    tail = tail / tf.sqrt(tf.reduce_sum(tail**2, axis=-1, keepdims=True) + 1e-12)
    return tf.where(t > 0.0, tail, 0.0) + tf.one_hot(0, length)


def reverberate(waveform, seed, sample_rate: int, prob: float, rt60_range, per_example):
    """With probability `prob`, convolves each clip with a synthetic room response of RT60
    uniform in rt60_range (seconds), keeping the clip's length and RMS.

    Generated responses rather than recorded ones: nothing can be downloaded at run time,
    and the exponential-decay model gives the smeared onsets and tails that make far-field
    speech hard; the convolution runs as one FFT product per batch.
    """
    num_samples = waveform.shape[-1]
    rt60_seed, ir_seed, apply_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    rt60 = _uniform(rt60_seed, per_example, rt60_range[0], rt60_range[1])
    length = round(min(rt60_range[1], 1.0) * sample_rate)
    response = room_impulse_response(rt60, sample_rate, length, ir_seed)
    fft_length = 2 ** (num_samples + length - 1).bit_length()
    wet = tf.signal.irfft(
        tf.signal.rfft(waveform, [fft_length]) * tf.signal.rfft(response, [fft_length]),
        [fft_length],
    )[..., :num_samples]

    wet = wet * _rms(waveform) / tf.maximum(_rms(wet), 1e-8)
    applied = _uniform(apply_seed, per_example, 0.0, 1.0) < prob
    return tf.where(applied, wet, waveform)


# Band limits a device or channel may impose: a high-pass corner up to 300 Hz (small
# microphones, voice codecs) and a low-pass corner from 3.4 kHz (telephone) to 8 kHz.
_HIGHPASS_MAX_HZ = 300.0
_LOWPASS_MIN_HZ = 3400.0


def limit_band(waveform, seed, sample_rate: int, prob: float, per_example):
    """With probability `prob`, keeps only a random band: a high-pass corner uniform in
    0-300 Hz and a low-pass corner uniform in 3.4 kHz to half the sample rate, as brick-wall
    masks of the clip's spectrum (microphone and channel colour)."""
    num_samples = waveform.shape[-1]
    low_seed, high_seed, apply_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    nyquist = sample_rate / 2.0
    low = _uniform(low_seed, per_example, 0.0, _HIGHPASS_MAX_HZ)
    high = _uniform(high_seed, per_example, min(_LOWPASS_MIN_HZ, nyquist), nyquist)
    frequencies = tf.linspace(0.0, nyquist, num_samples // 2 + 1)
    keep = tf.cast((frequencies >= low) & (frequencies <= high), tf.complex64)
    limited = tf.signal.irfft(tf.signal.rfft(waveform) * keep, [num_samples])
    applied = _uniform(apply_seed, per_example, 0.0, 1.0) < prob
    return tf.where(applied, limited, waveform)


# Equalisation curves: smooth over log frequency (this many cosine terms) from this corner
# up; below it the gain of the corner applies.
_EQ_TERMS = 4
_EQ_LOWEST_HZ = 60.0


def equalize(waveform, seed, sample_rate: int, prob: float, max_db: float, per_example):
    """With probability `prob`, colours each clip with a random smooth gain curve of at most
    +-max_db decibels, keeping its RMS: what different microphones, rooms and vocal tracts do
    to the same word (a tilt, a presence peak, a muffled top).

    The curve is a sum of `_EQ_TERMS` cosines over log frequency with random amplitudes,
    a few broad bumps and dips rather than the notches of a room's response.
    """
    num_samples = waveform.shape[-1]
    terms_seed, apply_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    nyquist = sample_rate / 2.0
    frequencies = tf.maximum(tf.linspace(0.0, nyquist, num_samples // 2 + 1), _EQ_LOWEST_HZ)
    position = tf.math.log(frequencies / _EQ_LOWEST_HZ) / tf.math.log(nyquist / _EQ_LOWEST_HZ)
    basis = tf.cos(3.14159265 * tf.range(1, _EQ_TERMS + 1, dtype=tf.float32)[:, None] * position)
    shape = tf.concat([per_example[:-1], [_EQ_TERMS]], axis=0)
    amplitudes = _uniform(terms_seed, shape, -max_db / _EQ_TERMS, max_db / _EQ_TERMS)
    gain = tf.pow(10.0, tf.tensordot(amplitudes, basis, axes=1) / 20.0)
    coloured = tf.signal.irfft(
        tf.signal.rfft(waveform) * tf.cast(gain, tf.complex64), [num_samples]
    )

    coloured = coloured * _rms(waveform) / tf.maximum(_rms(coloured), 1e-8)
    applied = _uniform(apply_seed, per_example, 0.0, 1.0) < prob
    return tf.where(applied, coloured, waveform)


def _mix_noise(waveform, seed, augment_config, noise_bank, per_example):
    """Adds a random window of the noise bank at a random level relative to the clip's RMS."""
    noise_bank = tf.convert_to_tensor(noise_bank, tf.float32)
    if noise_bank.shape.rank != 1:
        raise ValueError(
            f"noise_bank must be 1-D (concatenated recordings), got {noise_bank.shape}"
        )
    if None not in (noise_bank.shape[0], waveform.shape[-1]) and (
        noise_bank.shape[0] < waveform.shape[-1]
    ):
        raise UserError(
            f"The background-noise recordings hold {noise_bank.shape[0]} samples, fewer than "
            f"one clip ({waveform.shape[-1]}): add longer recordings or set data.noise_dir=''."
        )
    num_samples = tf.shape(waveform)[-1]
    bank_size = tf.shape(noise_bank)[0]
    offset_seed, level_seed, apply_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    offset = _uniform(offset_seed, per_example, 0, bank_size - num_samples + 1, tf.int32)
    noise = _windows(noise_bank, offset, waveform.shape[-1])
    level = _uniform(level_seed, per_example, augment_config.noise_min, augment_config.noise_max)
    applied = _uniform(apply_seed, per_example, 0.0, 1.0) < augment_config.noise_prob

    scale = level * _rms(waveform) / tf.maximum(_rms(noise), 1e-8)
    return waveform + tf.where(applied, scale, 0.0) * noise


def _band_mask(seed, leading, size, count, max_width):
    """[..., size] float mask, 0 inside `count` random bands of width 0..max_width, 1 elsewhere."""
    width_seed, start_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    shape = tf.concat([leading, [count]], axis=0)
    widths = tf.minimum(_uniform(width_seed, shape, 0, max_width + 1, tf.int32), size)
    # Uniform start among the size - width + 1 positions that keep the band inside.
    starts = tf.cast(
        tf.floor(_uniform(start_seed, shape, 0.0, 1.0) * tf.cast(size - widths + 1, tf.float32)),
        tf.int32,
    )
    positions = tf.range(size)
    inside = (positions >= starts[..., tf.newaxis]) & (
        positions < (starts + widths)[..., tf.newaxis]
    )
    return 1.0 - tf.cast(tf.reduce_any(inside, axis=-2), tf.float32)


def spec_augment(spectrogram: tf.Tensor, seed: tf.Tensor, augment_config) -> tf.Tensor:
    """SpecAugment masking of [..., T, F, C]: zeroes time_masks bands of 0..time_mask_width
    frames and freq_masks bands of 0..freq_mask_width bins, over all channels, in the bins
    from mask_from_bin up; the bins below it pass unchanged.

    Apply after `features.normalize`, where zero is the training mean.
    """
    check_config(augment_config)
    spectrogram = tf.convert_to_tensor(spectrogram, tf.float32)
    from_bin = augment_config.mask_from_bin
    if from_bin:
        kept, masked = spectrogram[..., :from_bin, :], spectrogram[..., from_bin:, :]
        return tf.concat([kept, _masked(masked, seed, augment_config)], axis=-2)
    return _masked(spectrogram, seed, augment_config)


def _masked(spectrogram: tf.Tensor, seed: tf.Tensor, augment_config) -> tf.Tensor:
    """spec_augment's masks over all of [..., T, F, C]."""
    time_seed, freq_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    )
    leading = tf.shape(spectrogram)[:-3]
    num_frames, num_bins = tf.shape(spectrogram)[-3], tf.shape(spectrogram)[-2]
    c = augment_config
    if c.time_masks > 0 and c.time_mask_width > 0:
        mask = _band_mask(time_seed, leading, num_frames, c.time_masks, c.time_mask_width)
        spectrogram = spectrogram * mask[..., :, tf.newaxis, tf.newaxis]
    if c.freq_masks > 0 and c.freq_mask_width > 0:
        mask = _band_mask(freq_seed, leading, num_bins, c.freq_masks, c.freq_mask_width)
        spectrogram = spectrogram * mask[..., tf.newaxis, :, tf.newaxis]
    return spectrogram
