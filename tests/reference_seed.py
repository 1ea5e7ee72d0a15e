"""The original program's front end, per clip in numpy/scipy: the reference for `seed` features.

Written the way the original ran it (one clip at a time, a Python frame loop, scipy's
Butterworth design and `filtfilt` with its defaults), so tests can check the tf front end
against it and benchmarks/input_pipeline.py can time it. The only deliberate difference
from the original is at the delta edges, which are zero-padded (the original left the
first two delta frames uninitialised, see /work/shared/seed/BEHAVIOUR.md).
"""

import numpy as np
import scipy.ndimage
import scipy.signal

NUM_SAMPLES = 16000
FRAME = 1024
HOP = 512
BINS = 257


def _frames(signal: np.ndarray) -> np.ndarray:
    """Frames starting at every multiple of HOP inside the signal, the last ones zero-padded."""
    starts = range(0, len(signal), HOP)
    padded = np.concatenate([signal, np.zeros(FRAME, signal.dtype)])
    return np.stack([padded[start : start + FRAME] for start in starts])


def _delta(features: np.ndarray) -> np.ndarray:
    """Regression delta over +-2 frames along axis 0, with zero frames beyond both edges."""
    num_frames = len(features)
    padded = np.pad(features, ((2, 2), (0, 0)))
    delta = np.zeros_like(features)
    for t in range(num_frames):
        for n in (1, 2):
            delta[t] += n * (padded[t + 2 + n] - padded[t + 2 - n])
    return delta / (2 * (1**2 + 2**2))


def seed_spectrogram(
    waveform: np.ndarray, deltas: bool = False, sample_rate: int = 16000
) -> np.ndarray:
    """One clip (float, at most NUM_SAMPLES) -> float64 [32, 257, 3] as the original computes it."""
    signal = np.zeros(NUM_SAMPLES)
    signal[: len(waveform)] = waveform
    emphasised = np.append(signal[0], signal[1:] - 0.5 * signal[:-1])
    b, a = scipy.signal.butter(6, 100, "highpass", fs=sample_rate)
    filtered = scipy.signal.filtfilt(b, a, emphasised)
    window = scipy.signal.get_window("hann", FRAME)  # periodic, as scipy and librosa use it
    spectrum = np.abs(np.fft.rfft(_frames(filtered) * window, n=FRAME)) ** (2.0 / 3.0)
    spectrum = spectrum[:, :BINS]
    if deltas:
        delta = _delta(spectrum)
        return np.stack([spectrum, delta, _delta(delta)], axis=-1)
    return np.stack([spectrum] * 3, axis=-1)


def resize_bilinear(image: np.ndarray, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """[H, W, C] -> [size[0], size[1], C] by first-order (bilinear) spline interpolation."""
    zoom = (size[0] / image.shape[0], size[1] / image.shape[1], 1.0)
    return scipy.ndimage.zoom(image, zoom, order=1)
