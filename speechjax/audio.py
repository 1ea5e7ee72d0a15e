"""Audio files to mono float32 waveforms: a cheap header probe, a raw PCM path, a libsndfile path.

Decoding is numpy (`load`); the input pipeline calls it through threads and
`tf.numpy_function` on whole batches, which costs ~40% less CPU per clip than a per-example
tf.data map of `tf.audio.decode_wav` (most of that cost is tf.data's per-element overhead).

Whether a file is usable is decided once, when a dataset is listed (`inspect`), so that a file
that passes listing never stops a run later. Listing sorts files into three kinds:

* 16-bit PCM WAV at the target rate (any channel count), the common case (Speech Commands is
  all of this kind): the samples are the bytes of the 'data' chunk, read as int16. Its header
  (a few hundred bytes) is all listing reads: int16 samples cannot be NaN or infinite, and
  the probe checks that every promised sample is in the file.
* any other audio libsndfile reads (other WAV encodings or rates, FLAC, OGG, MP3, AIFF):
  decoded by `soundfile`, averaged to mono and resampled (librosa, soxr_hq) to the target
  rate. Listing decodes each such file completely, the way training will, since a valid
  header says nothing about the samples (a FLAC frame can be corrupt, a float WAV can hold
  NaN). mini_speech_commands' 7,152 one-second FLACs take about 0.5 ms each; listing runs on
  threads.
* unusable files, reported as `BadAudio` with the reason (its first word is the kind:
  unreadable, empty, corrupt, truncated, unsupported, non-finite), which the folder source
  skips and counts.

What happens to each kind of bad or unusual input (the README has the same table):

| input                                              | what happens                            |
| -------------------------------------------------- | --------------------------------------- |
| corrupt or unreadable file, or one whose samples   | skipped, counted, one warning per split |
| do not decode (any format)                         |                                         |
| empty file or 0 samples                            | skipped, counted, one warning per split |
| truncated WAV (header promises more than is there) | skipped, counted, one warning per split |
| NaN or infinite samples (float WAV)                | skipped, counted, one warning per split |
| sample rate under 1000 Hz (a corrupt header)       | skipped, counted, one warning per split |
| streaming WAV header (data size 0xFFFFFFFF)        | read: the samples run to the end        |
| sample rate other than data.sample_rate            | resampled with librosa (soxr_hq)        |
| stereo or more channels                            | channels averaged                       |
| non-WAV (FLAC, OGG, MP3, AIFF)                     | decoded with libsndfile                 |
| longer than data.clip_seconds                      | cropped: random window when training,   |
|                                                    | the centre otherwise                    |
| shorter than data.clip_seconds                     | zero-padded at the end (as the original)|

Skipping rather than stopping: one bad clip among thousands should not cost a training run, and
the warning names the files. `read_audio` (prediction on files the user names) stops instead,
raising `UserError`, since there the file is the whole input.
"""

import dataclasses
import os

import librosa
import numpy as np
import soundfile
import tensorflow as tf

from speechjax.errors import UserError

# Extensions read as audio when listing folders (case-insensitive); all but .wav go to libsndfile.
AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")

# Raw reading is for this format tag only (WAVE_FORMAT_EXTENSIBLE, 0xFFFE, goes to libsndfile).
_WAVE_FORMAT_PCM = 1
# The 'data' size a streaming writer puts in the header when it cannot know the length
# (ffmpeg to a pipe, for one): the samples run to the end of the file.
_STREAMING_SIZE = 0xFFFFFFFF
# No real recording is sampled this slowly; a lower rate is a corrupt header, and resampling
# it would blow a few bytes up into gigabytes.
MIN_SAMPLE_RATE = 1000


class BadAudio(Exception):
    """A file that cannot be used as a clip; the message says why (without the path)."""


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a file's header says."""

    sample_rate: int
    channels: int
    frames: int
    # True for 16-bit PCM WAV, whose samples are read raw from data_offset.
    pcm16_wav: bool
    data_offset: int = 0

    def fast(self, sample_rate: int) -> bool:
        """Whether raw reading alone yields samples at `sample_rate` (no decoder, no resampling)."""
        return self.pcm16_wav and self.sample_rate == sample_rate

    def samples_at(self, sample_rate: int) -> int:
        """Length in samples once resampled to `sample_rate` (mono)."""
        # librosa.resample's own formula, float rounding included, so that the two agree.
        return int(np.ceil(self.frames * (sample_rate / self.sample_rate)))


def is_audio_file(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


def probe(path: str) -> AudioInfo:
    """Reads a file's header only; raises BadAudio for corrupt, empty or truncated files."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise BadAudio("empty file (0 bytes)")
        with open(path, "rb") as f:
            is_riff = f.read(4) == b"RIFF"
        info = _probe_wav(path, size) if is_riff else _probe_other(path)
    except OSError as e:
        raise BadAudio(f"unreadable: {e.strerror or e}") from e
    if info.sample_rate < MIN_SAMPLE_RATE:
        raise BadAudio(
            f"unsupported: sample rate {info.sample_rate} Hz (under {MIN_SAMPLE_RATE} Hz)"
        )
    return info


def inspect(path: str, sample_rate: int) -> AudioInfo:
    """Listing's verdict on a file: its AudioInfo if `load` will read it, else BadAudio.

    Files off the raw path are decoded here in full, exactly as `load` will decode them, and
    their header's frame count is replaced by the decoded one (compressed formats may state
    it only approximately).
    """
    info = probe(path)
    if info.fast(sample_rate):
        return info
    samples, rate = _decode(path)
    _to_mono_at(samples, rate, sample_rate)
    return dataclasses.replace(
        info, sample_rate=rate, channels=samples.shape[1], frames=samples.shape[0]
    )


def _probe_wav(path: str, size: int) -> AudioInfo:
    """Walks the RIFF chunks up to 'data', checking that its samples are all there."""
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[8:12] != b"WAVE":
            raise BadAudio("corrupt: RIFF file without the WAVE tag")
        fmt = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                missing = "'data'" if fmt else "'fmt '"
                raise BadAudio(f"corrupt or truncated: no {missing} chunk")
            chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if chunk_id == b"fmt ":
                body = f.read(chunk_size)
                if len(body) < 16:
                    raise BadAudio("corrupt: 'fmt ' chunk shorter than 16 bytes")
                fmt = _parse_fmt(body)
                f.seek(chunk_size & 1, os.SEEK_CUR)
            elif chunk_id == b"data":
                if fmt is None:
                    raise BadAudio("corrupt: 'data' chunk before the 'fmt ' chunk")
                available = size - f.tell()
                if chunk_size == _STREAMING_SIZE:
                    chunk_size = available
                if chunk_size > available:
                    raise BadAudio(
                        f"truncated: header promises {chunk_size} bytes of samples, "
                        f"the file holds {available}"
                    )
                tag, channels, rate, block_align, bits = fmt
                frames = chunk_size // block_align
                if frames == 0:
                    raise BadAudio("empty: 0 samples")
                # A block align other than 2 bytes a channel would put the raw reader off
                # the sample grid: such a file is left to libsndfile.
                pcm16 = tag == _WAVE_FORMAT_PCM and bits == 16 and block_align == 2 * channels
                if not pcm16:
                    # Let libsndfile confirm it understands this encoding.
                    _probe_other(path)
                return AudioInfo(rate, channels, frames, pcm16, data_offset=f.tell())
            else:
                f.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)


def _parse_fmt(body: bytes) -> tuple[int, int, int, int, int]:
    tag = int.from_bytes(body[0:2], "little")
    channels = int.from_bytes(body[2:4], "little")
    rate = int.from_bytes(body[4:8], "little")
    block_align = int.from_bytes(body[12:14], "little")
    bits = int.from_bytes(body[14:16], "little")
    if channels == 0 or rate == 0 or block_align == 0:
        raise BadAudio(
            f"corrupt: 'fmt ' chunk says {channels} channels, {rate} Hz, block align {block_align}"
        )
    return tag, channels, rate, block_align, bits


def _probe_other(path: str) -> AudioInfo:
    try:
        info = soundfile.info(path)
    except Exception as e:  # libsndfile raises a bare RuntimeError/LibsndfileError
        raise BadAudio(f"unreadable as audio: {e}") from e
    if info.frames <= 0:
        raise BadAudio("empty: 0 samples")
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), False)


def load(path: str, info: AudioInfo, sample_rate: int) -> np.ndarray:
    """A listed file -> finite mono float32 [n] at sample_rate (channels averaged).

    Raises BadAudio only for a file `inspect` has not passed (or one changed since).
    """
    if not info.fast(sample_rate):
        return _to_mono_at(*_decode(path), sample_rate)
    with open(path, "rb") as f:
        f.seek(info.data_offset)
        raw = f.read(info.frames * info.channels * 2)
    pcm = np.frombuffer(raw, "<i2").reshape(-1, info.channels)
    return (pcm.mean(axis=1, dtype=np.float32) if info.channels > 1 else pcm[:, 0]) / np.float32(
        32768.0
    )


def _decode(path: str) -> tuple[np.ndarray, int]:
    """Every sample of a file libsndfile reads: (float32 [frames, channels], sample rate).

    libsndfile alone, with no fallback to audioread (which librosa.load would try): a file
    libsndfile cannot decode is corrupt or of a kind no other reader here understands either.
    """
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # LibsndfileError, RuntimeError, ValueError, MemoryError...
        raise BadAudio(f"corrupt: the samples do not decode ({e})") from e
    if samples.size == 0:
        raise BadAudio("empty: 0 samples")
    return samples, rate


def _to_mono_at(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """float32 [frames, channels] at rate -> finite float32 [n] at sample_rate, or BadAudio."""
    _check_finite(samples)
    waveform = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != sample_rate:
        waveform = resample(waveform, rate, sample_rate)
    # Averaging or resampling samples near the float32 limit can overflow.
    _check_finite(waveform)
    return waveform


def _check_finite(values: np.ndarray) -> None:
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise BadAudio(f"non-finite samples: {bad} of {values.size} are NaN or infinite")


def resample(waveform: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """float32 [n] from source_rate to sample_rate (soxr_hq, librosa's default)."""
    return librosa.resample(waveform, orig_sr=source_rate, target_sr=sample_rate).astype(
        np.float32, copy=False
    )


def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """One file named by the user -> finite mono float32 [n] at sample_rate; UserError if
    unusable (judged as listing judges files: non-finite samples included)."""
    try:
        return load(path, inspect(path, sample_rate), sample_rate)
    except BadAudio as e:
        raise UserError(f"{path}: {e}") from e


def crop_or_pad(waveform: tf.Tensor, length: int, offset: tf.Tensor) -> tf.Tensor:
    """tf: [n] -> [length]: the window at `offset` if longer, zero-padded at the end if shorter."""
    waveform = waveform[offset : offset + length]
    padded = tf.pad(waveform, [[0, length - tf.shape(waveform)[0]]])
    return tf.ensure_shape(padded, [length])


def window_offset(
    num_samples: tf.Tensor, length: int, position: tf.Tensor | None = None
) -> tf.Tensor:
    """tf: where the `length`-sample window of a clip of num_samples starts (any shape).

    position None: the centre. Else position in [0, 1) picks one of the `spare + 1` starts
    that keep the window inside the clip (uniform position -> uniform start); 0 if shorter.
    """
    spare = tf.maximum(num_samples - length, 0)
    if position is None:
        return spare // 2
    start = tf.cast(
        tf.floor(tf.cast(position, tf.float64) * tf.cast(spare + 1, tf.float64)), spare.dtype
    )
    return tf.minimum(start, spare)
