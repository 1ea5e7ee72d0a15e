"""The log-mel, MFCC and speech_embedding front ends in JAX, for inference and export:
waveforms in, the normalised features the network was trained on out.

Training computes features in tf.data (`speechjax.features`); a trained model is used on
raw audio, so the same front end runs here, inside the jitted inference function and every
exported artifact. Both share their settings, window and mel filterbank
(`speechjax.frontend_settings`), and a test runs both on real clips.

The DFT is a matrix product with the window folded into cosine and sine matrices, not an
FFT: it needs no complex numbers and no FFT op, which TFLite's int8 path and some ONNX
runtimes lack, and quantizes like any other matmul. It costs more on a CPU (measured with
jax 0.10.2 on this project's 2-core machine, 30 ms window, 20 ms hop, one-second clips:
8.6 ms against 1.5 ms for jnp.fft.rfft on a batch of 32; the 7 ms more are about 14% of
ResNet-32's ~50 ms forward pass at that batch), which one code path for inference and
export is worth.
The matmuls ask for full float32 precision so that GPUs do not use TF32 for them.

The original's `seed` front end is not available here: its zero-phase float64 filter has no
export-friendly form, so predict and export refuse it with a clear message.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from speechjax import frontend_settings, pretrained_embedding
from speechjax.errors import UserError
from speechjax.normalization import NormStats

_PRECISION = jax.lax.Precision.HIGHEST
# The name scope inference runs the front end in: int8 export keeps what is inside it float.
SCOPE = "frontend"


def _dft_matrix(s: frontend_settings.FrontendSettings) -> np.ndarray:
    """[window, 2 * bins]: windowed cosines then sines, so one matmul gives real and imaginary
    parts of the zero-padded fft_length-point DFT of each frame."""
    bins = s.fft_length // 2 + 1
    n = np.arange(s.window, dtype=np.float64)[:, np.newaxis]
    k = np.arange(bins, dtype=np.float64)[np.newaxis, :]
    angle = 2.0 * np.pi * ((n * k) % s.fft_length) / s.fft_length
    window = frontend_settings.periodic_hann(s.window).astype(np.float64)[:, np.newaxis]
    return np.concatenate([window * np.cos(angle), -window * np.sin(angle)], axis=1).astype(
        np.float32
    )


def _dct_matrix(n_mels: int, n_mfcc: int) -> np.ndarray:
    """[n_mels, n_mfcc]: the orthonormal DCT-II (scipy `norm="ortho"`, tf.signal.dct's)."""
    n = np.arange(n_mels, dtype=np.float64)[:, np.newaxis]
    k = np.arange(n_mfcc, dtype=np.float64)[np.newaxis, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[:, 0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def delta_features(features: jax.Array) -> jax.Array:
    """Regression delta over +-2 frames along axis -2 of [..., T, F], zeros beyond the edges
    (as `speechjax.features.delta_features`)."""
    num_frames = features.shape[-2]
    padded = jnp.pad(features, [(0, 0)] * (features.ndim - 2) + [(2, 2), (0, 0)])

    def frames(offset):
        return padded[..., 2 + offset : 2 + offset + num_frames, :]

    return ((frames(1) - frames(-1)) + 2.0 * (frames(2) - frames(-2))) / 10.0


def make_frontend(
    features_config: dict | ml_collections.ConfigDict,
    sample_rate: int,
    num_samples: int,
    norm_stats: NormStats | None,
) -> Callable[[jax.Array], jax.Array]:
    """waveforms float32 [B, num_samples] -> features float32 [B, T, F, C], normalised by
    `norm_stats` (None: not normalised), equal to the tf.data front end of these settings."""
    if isinstance(features_config, dict):
        features_config = ml_collections.ConfigDict(features_config)
    s = frontend_settings.settings(features_config, sample_rate)
    if s.kind == "seed":
        raise UserError(
            "features.kind='seed' (the original's front end) cannot run in predict or export: "
            "its zero-phase float64 filter has no exportable form. Evaluate it with --mode eval, "
            "or train with features.kind=logmel or mfcc."
        )
    if s.kind == "speech_embedding":
        return _speech_embedding_frontend(s, num_samples)
    num_frames = s.num_frames(num_samples)
    # Frame t covers padded[t * hop : t * hop + window]; zeros pad the edges as librosa's
    # centred frames do (see FrontendSettings.centre_pad).
    left = s.centre_pad
    right = max(0, (num_frames - 1) * s.hop + s.window - left - num_samples)
    frame_index = np.arange(num_frames)[:, np.newaxis] * s.hop + np.arange(s.window)
    dft = _dft_matrix(s)
    bins = s.fft_length // 2 + 1
    filterbank = frontend_settings.mel_filterbank(
        sample_rate, s.fft_length, s.n_mels, s.fmin, s.fmax
    )
    dct = _dct_matrix(s.n_mels, s.n_mfcc) if s.kind == "mfcc" else None
    if norm_stats is not None:
        mean = np.asarray(norm_stats.mean, np.float32)
        std = np.asarray(norm_stats.std, np.float32)
        if len(mean) != s.channels:
            raise UserError(
                f"The normalisation statistics have {len(mean)} channels, the features.* "
                f"settings give {s.channels}."
            )

    def frontend(waveforms: jax.Array) -> jax.Array:
        waveforms = jnp.asarray(waveforms, jnp.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] != num_samples:
            raise ValueError(f"expected waveforms [batch, {num_samples}], got {waveforms.shape}")
        padded = jnp.pad(waveforms, ((0, 0), (left, right)))
        frames = padded[:, frame_index]  # [B, T, window]
        spectrum = jnp.matmul(frames, dft, precision=_PRECISION)
        real, imag = spectrum[..., :bins], spectrum[..., bins:]
        mel = jnp.matmul(real * real + imag * imag, filterbank, precision=_PRECISION)
        spectrogram = jnp.log(jnp.maximum(mel, frontend_settings.LOG_FLOOR))
        if dct is not None:
            spectrogram = jnp.matmul(spectrogram, dct, precision=_PRECISION)
        if s.channels == 1:
            features = spectrogram[..., jnp.newaxis]
        elif s.deltas:
            delta = delta_features(spectrogram)
            features = jnp.stack([spectrogram, delta, delta_features(delta)], axis=-1)
        else:
            features = jnp.stack([spectrogram] * 3, axis=-1)
        if s.resize:
            # Bilinear with half-pixel centres and no antialiasing: tf.image.resize's bilinear.
            shape = (features.shape[0], *s.resize, features.shape[-1])
            features = jax.image.resize(features, shape, method="bilinear", antialias=False)
        if norm_stats is not None:
            features = (features - mean) / std
        return features

    return frontend


def _speech_embedding_frontend(
    s: frontend_settings.FrontendSettings, num_samples: int
) -> Callable[[jax.Array], jax.Array]:
    """waveforms [B, num_samples] -> [B, T, 32 + branch_mels, 1]: `speechjax.features`'
    speech_embedding front end (never normalised: the pretrained network expects its own
    scale)."""
    pe = pretrained_embedding
    matrices = pe.mel_matrices()
    dft = np.concatenate([matrices.dft_real, matrices.dft_imag], axis=1)
    filterbanks = [matrices.mel]
    if s.branch_mels:
        filterbanks.append(frontend_settings.branch_filterbank(s))
    num_frames = pe.num_frames(num_samples)
    frame_index = np.arange(num_frames)[:, np.newaxis] * pe.HOP + np.arange(pe.FRAME)

    def scaled_decibels(power: jax.Array, filterbank: np.ndarray) -> jax.Array:
        mel = jnp.matmul(power, filterbank, precision=_PRECISION)
        decibels = 10.0 * jnp.log10(jnp.maximum(mel, pe.POWER_FLOOR))
        floor = jnp.max(decibels, axis=(1, 2), keepdims=True) - pe.TOP_DB
        return jnp.maximum(decibels, floor) / 10.0 + 2.0

    def frontend(waveforms: jax.Array) -> jax.Array:
        waveforms = jnp.asarray(waveforms, jnp.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] != num_samples:
            raise ValueError(f"expected waveforms [batch, {num_samples}], got {waveforms.shape}")
        padded = jnp.pad(waveforms * pe.INT16_SCALE, ((0, 0), (pe.PAD_SAMPLES, pe.PAD_SAMPLES)))
        spectrum = jnp.matmul(padded[:, frame_index], dft, precision=_PRECISION)
        real, imag = spectrum[..., : pe.BINS], spectrum[..., pe.BINS :]
        power = real * real + imag * imag
        bands = [scaled_decibels(power, bank) for bank in filterbanks]
        return jnp.concatenate(bands, axis=-1)[..., jnp.newaxis]

    return frontend
