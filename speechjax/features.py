"""Spectrogram front ends in TensorFlow (tf.signal): the original's STFT, log-mel and MFCC.

Every front end is a pure tf function of a float32 waveform `[..., num_samples]` (any leading
batch dimensions, static `num_samples`) to `[..., T, F, C]`, so it runs eagerly, inside a
tf.data map, and on whole batches (much faster than per example: one big STFT).

`seed` reproduces the original program (/work/shared/seed/BEHAVIOUR.md):
  pre-emphasis y[n] = x[n] - 0.5 x[n-1] (x[-1] = 0); a 6th-order Butterworth high-pass at
  100 Hz run forward and backward exactly as `scipy.signal.filtfilt(b, a, y)` with its
  defaults (odd extension by 21 samples, steady-state initial conditions); Hann window of
  1024 (periodic, the spectral-analysis window scipy and librosa use); FFT 1024, hop 512,
  first frame at sample 0, end zero-padded (16000 samples -> 32 frames); |X|^(2/3); bins
  0..256. The filter runs as two float64 FFT convolutions with its impulse response (cut
  below 1e-12 of its peak): with the odd extension and steady-state initial conditions this
  is exactly filtfilt's linear map, and it matches scipy within ~3e-5 of each channel's peak
  on real clips (a recursive scan over 16000 samples would be far slower in tf). The input
  is float in [-1, 1] (tf.audio.decode_wav's scale), not int16.
`logmel`: periodic Hann of window_ms, hop_ms, FFT size the next power of two, frames
  centred on multiples of the hop with zero padding (librosa `center=True,
  pad_mode="constant"`, its default: 16000 samples -> 101 frames at 10 ms), power
  spectrum, HTK mel filterbank (2595 log10(1 + f/700)) of triangles in Hz without area
  normalisation (librosa `htk=True, norm=None`), then log(max(mel, 1e-6)): the floor keeps
  the zero-padded tails of short clips at -13.8 instead of -inf.
`mfcc`: orthonormal DCT-II of the log-mel, first n_mfcc coefficients.
`speech_embedding`: the 32-band log-mel Google's pretrained speech embedding expects, with
  the matrices of its own front end (`speechjax.pretrained_embedding` says how).
Deltas (any kind): regression over +-2 frames, zero frames beyond both edges.
The settings (checks, sizes in samples, window, mel filterbank) come from
`speechjax.frontend_settings`, which the JAX front end of inference shares.
"""

from collections.abc import Callable, Sequence

import numpy as np
import scipy.signal
import tensorflow as tf

from speechjax import pretrained_embedding
from speechjax.errors import UserError
from speechjax.frontend_settings import (
    LOG_FLOOR,
    SEED_BINS,
    SEED_FRAME,
    SEED_HOP,
    FrontendSettings,
    branch_filterbank,
    mel_filterbank,
    periodic_hann,
    settings,
)

SEED_PREEMPHASIS = 0.5
SEED_HIGHPASS_HZ = 100.0
SEED_HIGHPASS_ORDER = 6
SEED_POWER = 2.0 / 3.0
# scipy.signal.filtfilt's default padlen: 3 * max(len(a), len(b)).
_FILTFILT_PAD = 3 * (SEED_HIGHPASS_ORDER + 1)


def make_frontend(features_config, sample_rate: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns waveform float32 [..., num_samples] -> float32 [..., T, F, C], not normalised.

    `num_samples` must be static (pad or crop clips first). Resizing, when configured, is
    bilinear (tf.image.resize).
    """
    p = settings(features_config, sample_rate)
    if p.kind == "seed":
        spectrogram_fn = _seed_spectrogram_fn(sample_rate)
    elif p.kind == "speech_embedding":
        spectrogram_fn = _speech_embedding_fn(p)
    else:
        spectrogram_fn = _logmel_fn(p, sample_rate)

    def frontend(waveform: tf.Tensor) -> tf.Tensor:
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        spectrogram = spectrogram_fn(waveform)
        if p.channels == 1:
            features = spectrogram[..., tf.newaxis]
        elif p.deltas:
            delta = delta_features(spectrogram)
            features = tf.stack([spectrogram, delta, delta_features(delta)], axis=-1)
        else:
            features = tf.stack([spectrogram] * 3, axis=-1)
        return _resize(features, p.resize) if p.resize else features

    return frontend


def normalize(spectrogram: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """(x - mean[c]) / std[c] over the last (channel) axis."""
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    channels = spectrogram.shape[-1]
    if len(mean) != len(std) or (channels is not None and len(mean) != channels):
        raise UserError(
            f"Normalisation statistics have {len(mean)} means and {len(std)} standard "
            f"deviations for a spectrogram with {channels} channels: the statistics "
            "(norm_stats.json) were computed for other features.* settings; recompute them."
        )
    if np.any(std <= 0):
        raise UserError(f"Normalisation standard deviations must be positive, got {std.tolist()}.")
    return (tf.convert_to_tensor(spectrogram, tf.float32) - mean) / std


def delta_features(features: tf.Tensor) -> tf.Tensor:
    """Regression delta over +-2 frames along axis -2 of [..., T, F], zeros beyond the edges.

    d_t = sum_{n=1,2} n (c_{t+n} - c_{t-n}) / 10.
    """
    num_frames = tf.shape(features)[-2]
    paddings = [[0, 0]] * (features.shape.rank - 2) + [[2, 2], [0, 0]]
    padded = tf.pad(features, paddings)

    def frames(offset):  # c_{t + offset} for t = 0..T-1
        return padded[..., 2 + offset : 2 + offset + num_frames, :]

    return ((frames(1) - frames(-1)) + 2.0 * (frames(2) - frames(-2))) / 10.0


def _resize(features: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize of [..., T, F, C] to [..., size[0], size[1], C]."""
    leading = tf.shape(features)[:-3]
    images = tf.reshape(features, tf.concat([[-1], tf.shape(features)[-3:]], axis=0))
    resized = tf.image.resize(images, size, method="bilinear")
    return tf.reshape(resized, tf.concat([leading, tf.shape(resized)[-3:]], axis=0))


def _highpass_impulse_response(sample_rate: int) -> np.ndarray:
    """The seed Butterworth high-pass's impulse response, cut below 1e-12 of its peak.

    Computed through second-order sections: the direct form's recursion leaves a DC gain of
    ~1e-6 in the response (its poles sit close to z = 1), which the 2/3 power turns into
    visible errors in bins 0 and 1; the sections' response sums to ~1e-13, as the true one
    (zero gain at DC) should.
    """
    sos = scipy.signal.butter(
        SEED_HIGHPASS_ORDER, SEED_HIGHPASS_HZ, "highpass", fs=sample_rate, output="sos"
    )
    impulse = np.zeros(sample_rate)  # one second: the slowest pole decays ~1e-12 in 0.2 s
    impulse[0] = 1.0
    response = scipy.signal.sosfilt(sos, impulse)
    significant = np.flatnonzero(np.abs(response) > 1e-12 * np.abs(response).max())
    return response[: significant[-1] + 1]


def _smooth_size(minimum: int) -> int:
    """The smallest 2^a 3^b 5^c >= minimum: FFTs of such sizes are fast, the next power of
    two can be nearly twice as long."""
    size = minimum
    while True:
        rest = size
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return size
        size += 1


def _seed_spectrogram_fn(sample_rate: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Pre-emphasis, zero-phase high-pass, STFT and |X|^(2/3): [..., N] -> [..., T, 257]."""
    impulse_response = _highpass_impulse_response(sample_rate)
    window = tf.constant(periodic_hann(SEED_FRAME))

    def filtfilt(signal: tf.Tensor) -> tf.Tensor:
        num_samples = signal.shape[-1]
        if num_samples is None or num_samples <= _FILTFILT_PAD:
            raise ValueError(
                f"The seed front end needs a static number of samples above {_FILTFILT_PAD}, "
                f"got {num_samples}."
            )
        pad = _FILTFILT_PAD
        # filtfilt's odd extension: point-reflect `pad` samples about each end.
        extended = tf.concat(
            [
                2.0 * signal[..., :1] - tf.reverse(signal[..., 1 : pad + 1], [-1]),
                signal,
                2.0 * signal[..., -1:] - tf.reverse(signal[..., -pad - 1 : -1], [-1]),
            ],
            axis=-1,
        )
        length = num_samples + 2 * pad
        fft_length = _smooth_size(length + len(impulse_response) - 1)
        response = tf.constant(np.fft.rfft(impulse_response, fft_length))  # complex128

        def causal(x):
            # lfilter with steady-state initial conditions for the constant x[0] equals zero-state
            # filtering of x - x[0]: a high-pass's steady-state response to a constant is zero.
            x = x - x[..., :1]
            spectrum = tf.signal.rfft(x, [fft_length]) * response
            return tf.signal.irfft(spectrum, [fft_length])[..., :length]

        # float64: in float32 the rounding of the FFTs, amplified by |X|^(2/3) in the heavily
        # attenuated low bins, reaches 1e-4 of the peak.
        forward = causal(tf.cast(extended, tf.float64))
        backward = tf.reverse(causal(tf.reverse(forward, [-1])), [-1])
        return tf.cast(backward[..., pad:-pad], tf.float32)

    def spectrogram(waveform: tf.Tensor) -> tf.Tensor:
        previous = tf.pad(waveform[..., :-1], [[0, 0]] * (waveform.shape.rank - 1) + [[1, 0]])
        emphasised = waveform - SEED_PREEMPHASIS * previous
        stft = tf.signal.stft(
            filtfilt(emphasised),
            frame_length=SEED_FRAME,
            frame_step=SEED_HOP,
            fft_length=SEED_FRAME,
            window_fn=lambda length, dtype: window,
            pad_end=True,
        )
        stft = stft[..., :SEED_BINS]
        power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
        # |X|^(2/3) as exp(log(|X|^2) / 3): no square root, a third cheaper than tf.pow(|X|).
        return tf.exp(tf.math.log(power) * (SEED_POWER / 2))

    return spectrogram


def _logmel_fn(p: FrontendSettings, sample_rate: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Centred STFT, power, mel filterbank, log (and DCT for mfcc): [..., N] -> [..., T, F]."""
    window = tf.constant(periodic_hann(p.window))
    filterbank = tf.constant(mel_filterbank(sample_rate, p.fft_length, p.n_mels, p.fmin, p.fmax))
    left = p.centre_pad

    def spectrogram(waveform: tf.Tensor) -> tf.Tensor:
        num_frames = p.num_frames(waveform.shape[-1])
        right = max(0, (num_frames - 1) * p.hop + p.window - left - waveform.shape[-1])
        padded = tf.pad(waveform, [[0, 0]] * (waveform.shape.rank - 1) + [[left, right]])
        stft = tf.signal.stft(
            padded,
            frame_length=p.window,
            frame_step=p.hop,
            fft_length=p.fft_length,
            window_fn=lambda length, dtype: window,
        )[..., :num_frames, :]
        power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
        log_mel = tf.math.log(tf.maximum(tf.tensordot(power, filterbank, 1), LOG_FLOOR))
        if p.kind == "mfcc":
            return tf.signal.dct(log_mel, type=2, norm="ortho")[..., : p.n_mfcc]
        return log_mel

    return spectrogram


def _speech_embedding_fn(p: FrontendSettings) -> Callable[[tf.Tensor], tf.Tensor]:
    """[..., N] -> [..., T, 32 + branch_mels]: the pretrained speech embedding's log-mel,
    scaled as it expects, then the branch's bands, scaled alike."""
    pe = pretrained_embedding
    matrices = pe.mel_matrices()
    dft = tf.constant(np.concatenate([matrices.dft_real, matrices.dft_imag], axis=1))
    filterbanks = [tf.constant(matrices.mel)]
    if p.branch_mels:
        filterbanks.append(tf.constant(branch_filterbank(p)))

    def scaled_decibels(power: tf.Tensor, filterbank: tf.Tensor) -> tf.Tensor:
        mel = tf.tensordot(power, filterbank, 1)
        decibels = 10.0 * tf.math.log(tf.maximum(mel, pe.POWER_FLOOR)) / np.log(10.0)
        floor = tf.reduce_max(decibels, axis=[-2, -1], keepdims=True) - pe.TOP_DB
        return tf.maximum(decibels, floor) / 10.0 + 2.0

    def spectrogram(waveform: tf.Tensor) -> tf.Tensor:
        padded = tf.pad(
            waveform * pe.INT16_SCALE,
            [[0, 0]] * (waveform.shape.rank - 1) + [[pe.PAD_SAMPLES, pe.PAD_SAMPLES]],
        )
        spectrum = tf.tensordot(tf.signal.frame(padded, pe.FRAME, pe.HOP), dft, 1)
        real, imag = spectrum[..., : pe.BINS], spectrum[..., pe.BINS :]
        power = real * real + imag * imag
        return tf.concat([scaled_decibels(power, bank) for bank in filterbanks], axis=-1)

    return spectrogram
