"""Front-end settings in samples, shared by the tf.data front end and the JAX one.

Pure numpy (no TensorFlow, no JAX): `settings(config.features, sample_rate)` checks the
`features.*` fields the chosen kind uses and turns milliseconds into samples;
`output_shape` says what a front end produces; `mel_filterbank` and `periodic_hann` are
the constant matrices both implementations multiply by, so they cannot drift apart.
"""

import math
from dataclasses import dataclass

import numpy as np
import scipy.signal

from speechjax import pretrained_embedding
from speechjax.errors import UserError

# speech_embedding: the front end Google's pretrained speech embedding was trained on
# (`speechjax.pretrained_embedding`), for model.name=speech_embedding.
KINDS = ("seed", "logmel", "mfcc", "speech_embedding")
MAX_MELS = 128
LOG_FLOOR = 1e-6

SEED_FRAME = 1024
SEED_HOP = 512
SEED_BINS = 257


@dataclass(frozen=True)
class FrontendSettings:
    """Validated front-end settings in samples."""

    kind: str
    channels: int
    deltas: bool
    resize: tuple[int, ...]
    window: int = 0
    hop: int = 0
    fft_length: int = 0
    n_mels: int = 0
    fmin: float = 0.0
    fmax: float = 0.0
    n_mfcc: int = 0
    # speech_embedding only: log-mel bands over fmin..fmax appended after the network's 32,
    # for a CNN pooled with its head (model.cnn_branch); the network's bands stop at 3.8 kHz.
    branch_mels: int = 0

    @property
    def centre_pad(self) -> int:
        """Zeros before the first sample for log-mel frames centred on multiples of the hop.

        librosa frames fft_length samples around each centre with the window in the middle
        and zeros around it; framing only the window's span (and letting the DFT zero-pad
        the end) shifts each frame by a constant, which changes the phase and not the power,
        and frames 20% fewer samples.
        """
        return self.fft_length // 2 - (self.fft_length - self.window) // 2

    def num_frames(self, num_samples: int) -> int:
        if self.kind == "seed":
            return -(-num_samples // SEED_HOP)
        if self.kind == "speech_embedding":
            return pretrained_embedding.num_frames(num_samples)
        return num_samples // self.hop + 1


def settings(config, sample_rate: int) -> FrontendSettings:
    """Checks the `features.*` fields the chosen kind uses; raises UserError naming the key."""
    if config.kind not in KINDS:
        raise UserError(f"features.kind={config.kind!r} is unknown; use one of {', '.join(KINDS)}.")
    if config.channels not in (1, 3):
        raise UserError(f"features.channels={config.channels} must be 1 or 3.")
    if config.deltas and config.channels != 3:
        raise UserError("features.deltas=True needs features.channels=3 ([S, dS, ddS]).")
    resize = tuple(config.resize)
    if resize and (len(resize) != 2 or any(int(s) != s or s < 1 for s in resize)):
        raise UserError(
            f"features.resize={config.resize!r} must be () or (height, width) positive integers."
        )
    common = dict(
        kind=config.kind,
        channels=config.channels,
        deltas=bool(config.deltas),
        resize=tuple(int(s) for s in resize),
    )
    if config.branch_mels and config.kind != "speech_embedding":
        raise UserError(
            f"features.branch_mels={config.branch_mels} adds bands to the speech_embedding "
            "front end only; set it to 0 or use features.kind='speech_embedding'."
        )
    if config.kind == "seed":
        return FrontendSettings(**common)
    if config.kind == "speech_embedding":
        return _speech_embedding_settings(config, common, sample_rate)
    window = round(config.window_ms * sample_rate / 1000)
    hop = round(config.hop_ms * sample_rate / 1000)
    if window < 2:
        raise UserError(f"features.window_ms={config.window_ms} is under two samples.")
    if hop < 1:
        raise UserError(f"features.hop_ms={config.hop_ms} is under one sample.")
    if not 1 <= config.n_mels <= MAX_MELS:
        raise UserError(f"features.n_mels={config.n_mels} must be in 1..{MAX_MELS}.")
    if not 0 <= config.fmin < config.fmax <= sample_rate / 2:
        raise UserError(
            f"features.fmin={config.fmin} and features.fmax={config.fmax} need "
            f"0 <= fmin < fmax <= {sample_rate / 2} (half the sample rate)."
        )
    if config.kind == "mfcc" and not 1 <= config.n_mfcc <= config.n_mels:
        raise UserError(
            f"features.n_mfcc={config.n_mfcc} must be in 1..features.n_mels={config.n_mels}."
        )
    return FrontendSettings(
        **common,
        window=window,
        hop=hop,
        fft_length=2 ** math.ceil(math.log2(window)),
        n_mels=config.n_mels,
        fmin=float(config.fmin),
        fmax=float(config.fmax),
        n_mfcc=config.n_mfcc,
    )


def _speech_embedding_settings(config, common: dict, sample_rate: int) -> FrontendSettings:
    """Fixed by the pretrained network: 16 kHz, 32 bands, one channel, natural size; and
    `features.branch_mels` more bands over features.fmin..fmax."""
    if sample_rate != pretrained_embedding.SAMPLE_RATE:
        raise UserError(
            f"features.kind='speech_embedding' needs data.sample_rate="
            f"{pretrained_embedding.SAMPLE_RATE} (the pretrained network's), got {sample_rate}."
        )
    if common["channels"] != 1 or common["resize"]:
        raise UserError(
            "features.kind='speech_embedding' gives the pretrained network its own input: "
            "set features.channels=1, features.deltas=False and features.resize=()."
        )
    branch_mels = config.branch_mels
    if branch_mels:
        if not 1 <= branch_mels <= MAX_MELS:
            raise UserError(
                f"features.branch_mels={branch_mels} must be 0 (none) or in 1..{MAX_MELS}."
            )
        if not 0 <= config.fmin < config.fmax <= sample_rate / 2:
            raise UserError(
                f"features.fmin={config.fmin} and features.fmax={config.fmax} (the range of "
                f"features.branch_mels) need 0 <= fmin < fmax <= {sample_rate / 2}."
            )
    return FrontendSettings(
        **common,
        window=pretrained_embedding.FRAME,
        hop=pretrained_embedding.HOP,
        fft_length=pretrained_embedding.FRAME,
        n_mels=pretrained_embedding.N_MELS,
        fmin=float(config.fmin),
        fmax=float(config.fmax),
        branch_mels=int(branch_mels),
    )


def branch_filterbank(s: FrontendSettings) -> np.ndarray:
    """[bins, branch_mels] mel filters over the pretrained network's own DFT bins."""
    return mel_filterbank(
        pretrained_embedding.SAMPLE_RATE, s.fft_length, s.branch_mels, s.fmin, s.fmax
    )


def output_shape(features_config, num_samples: int, sample_rate: int) -> tuple[int, int, int]:
    """(T, F, C) a front end of these settings gives for `num_samples` samples."""
    s = settings(features_config, sample_rate)
    if s.resize:
        return (*s.resize, s.channels)
    if s.kind == "seed":
        return (s.num_frames(num_samples), SEED_BINS, s.channels)
    bins = s.n_mfcc if s.kind == "mfcc" else s.n_mels + s.branch_mels
    return (s.num_frames(num_samples), bins, s.channels)


def periodic_hann(length: int) -> np.ndarray:
    """The periodic Hann window (the spectral-analysis one scipy and librosa use), float32."""
    return scipy.signal.get_window("hann", length).astype(np.float32)


def mel_filterbank(
    sample_rate: int, fft_length: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """HTK-scale triangular filters in Hz, peak 1 (librosa htk=True, norm=None): [bins, n_mels]."""

    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)

    def mel_to_hz(mel):
        return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)

    bin_hz = np.fft.rfftfreq(fft_length, 1.0 / sample_rate)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    distance = edges_hz[:, np.newaxis] - bin_hz[np.newaxis, :]
    rising = -distance[:-2] / widths[:-1, np.newaxis]
    falling = distance[2:] / widths[1:, np.newaxis]
    return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)
