"""speechjax.audio: header probe, raw and librosa decoding, windows."""

import io
import wave

import librosa
import numpy as np
import pytest
import soundfile
import tensorflow as tf
from conftest import tone

from speechjax import audio
from speechjax.errors import UserError


def wav_bytes(samples, rate=16000, subtype="PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def corrupt_flac_bytes() -> bytes:
    """A FLAC whose header is intact and whose frames are not: libsndfile loses sync."""
    buffer = io.BytesIO()
    soundfile.write(buffer, tone(1.0), 16000, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64
    return bytes(data)


def test_mono_16k_wav_is_read_raw(tiny_wav_tree):
    samples = tone(0.5)
    root = tiny_wav_tree({"a.wav": samples})
    path = str(root / "a.wav")
    info = audio.probe(path)
    assert info == audio.AudioInfo(16000, 1, 8000, True, data_offset=44)
    assert info.fast(16000) and not info.fast(8000)
    expected, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_array_equal(audio.load(path, info, 16000), expected)
    np.testing.assert_allclose(expected, samples, atol=1 / 32768)


def test_data_chunk_after_other_chunks_and_trailing_chunk(tmp_path):
    """The samples are exactly the 'data' chunk, wherever it is and whatever follows it."""
    pcm = (tone(0.1) * 32767).astype("<i2").tobytes()
    fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
    fmt += (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    chunks = b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    chunks += b"LIST" + (3).to_bytes(4, "little") + b"abc\x00"  # odd size: one pad byte
    chunks += b"data" + len(pcm).to_bytes(4, "little") + pcm
    chunks += b"LIST" + (4).to_bytes(4, "little") + b"\x7f\x7f\x7f\x7f"
    path = tmp_path / "chunks.wav"
    path.write_bytes(b"RIFF" + (4 + len(chunks)).to_bytes(4, "little") + b"WAVE" + chunks)
    info = audio.probe(str(path))
    assert (info.frames, info.fast(16000)) == (1600, True)
    expected = np.frombuffer(pcm, "<i2") / 32768
    np.testing.assert_allclose(audio.load(str(path), info, 16000), expected, atol=1e-7)


def test_stereo_is_averaged(tiny_wav_tree):
    left, right = tone(0.25, freq=300), tone(0.25, freq=900, amp=0.25)
    root = tiny_wav_tree({"s.wav": np.stack([left, right], axis=1)})
    path = str(root / "s.wav")
    info = audio.probe(path)
    assert info.channels == 2 and info.fast(16000)
    both, _ = soundfile.read(path, dtype="float32")
    expected = both.mean(axis=1)
    np.testing.assert_allclose(audio.load(path, info, 16000), expected, atol=1e-7)


def test_other_sample_rate_is_resampled_by_librosa(tiny_wav_tree):
    root = tiny_wav_tree({"low.wav": (tone(1.0, rate=8000, freq=200), 8000)})
    path = str(root / "low.wav")
    info = audio.probe(path)
    assert info.sample_rate == 8000 and not info.fast(16000)
    assert info.samples_at(16000) == 16000
    expected, _ = librosa.load(path, sr=16000)
    decoded = audio.load(path, info, 16000)
    assert decoded.shape == (16000,)
    np.testing.assert_allclose(decoded, expected, atol=1e-6)


@pytest.mark.parametrize("suffix", [".flac", ".ogg"])
def test_non_wav_is_decoded_by_librosa(tiny_wav_tree, suffix):
    samples = tone(0.25)
    root = tiny_wav_tree({f"a{suffix}": samples})
    path = str(root / f"a{suffix}")
    assert audio.is_audio_file(path)
    info = audio.probe(path)
    assert not info.fast(16000) and info.frames == 4000
    decoded = audio.load(path, info, 16000)
    # FLAC is lossless at 16 bits; Vorbis is lossy.
    atol = 1 / 32768 + 1e-7 if suffix == ".flac" else 0.05
    np.testing.assert_allclose(decoded, samples, atol=atol)


def test_float_and_24_bit_wav_take_the_librosa_path(tmp_path):
    samples = tone(0.1)
    for subtype in ("FLOAT", "PCM_24"):
        path = tmp_path / f"{subtype}.wav"
        path.write_bytes(wav_bytes(samples, subtype=subtype))
        info = audio.probe(str(path))
        assert not info.pcm16_wav
        np.testing.assert_allclose(audio.load(str(path), info, 16000), samples, atol=1e-6)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file (0 bytes)"),
        (wav_bytes(np.zeros(0, np.float32)), "empty: 0 samples"),
        (wav_bytes(tone(0.1))[:1000], "truncated: header promises 3200 bytes of samples"),
        (b"RIFF\x10\x00\x00\x00WAVEjunkjunk", "corrupt or truncated: no 'fmt ' chunk"),
        (b"RIFF\x10\x00\x00\x00AVI junkjunk", "corrupt: RIFF file without the WAVE tag"),
        (b"this is not audio at all" * 10, "unreadable as audio"),
    ],
    ids=["zero-bytes", "zero-samples", "truncated", "no-fmt", "not-wave", "garbage"],
)
def test_bad_files_raise_bad_audio_with_the_reason(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(audio.BadAudio, match=message.replace("(", r"\(").replace(")", r"\)")):
        audio.probe(str(path))
    with pytest.raises(UserError, match=str(path)):
        audio.read_audio(str(path), 16000)


def test_truncated_wav_is_reported_not_read_short(tmp_path):
    """The python wave module reads a truncated file silently short; the probe refuses it."""
    path = tmp_path / "cut.wav"
    path.write_bytes(wav_bytes(tone(0.5))[:5000])
    with wave.open(str(path)) as w:
        assert w.getnframes() == 8000
    with pytest.raises(audio.BadAudio, match="file holds 4956"):
        audio.probe(str(path))


def test_read_audio_resamples_and_averages(tiny_wav_tree):
    stereo = np.stack([tone(0.5, rate=22050), tone(0.5, rate=22050)], axis=1)
    root = tiny_wav_tree({"x.wav": (stereo, 22050)})
    waveform = audio.read_audio(str(root / "x.wav"), 16000)
    assert waveform.dtype == np.float32 and waveform.shape == (8000,)


def test_window_offset_centre_and_positions():
    lengths = tf.constant([16000, 16001, 20000, 9000], tf.int64)
    np.testing.assert_array_equal(audio.window_offset(lengths, 16000), [0, 0, 2000, 0])
    last = tf.constant([0.9999999] * 4, tf.float64)  # the last start of each clip
    np.testing.assert_array_equal(audio.window_offset(lengths, 16000, last), [0, 1, 4000, 0])
    first = tf.zeros([4], tf.float64)
    np.testing.assert_array_equal(audio.window_offset(lengths, 16000, first), [0, 0, 0, 0])
    # Uniform positions give uniform starts over every window inside the clip.
    positions = tf.constant((np.arange(4001) + 0.5) / 4001)
    starts = audio.window_offset(tf.fill([4001], tf.constant(20000, tf.int64)), 16000, positions)
    np.testing.assert_array_equal(np.sort(starts.numpy()), np.arange(4001))


def test_crop_or_pad():
    waveform = tf.range(10, dtype=tf.float32)
    np.testing.assert_array_equal(audio.crop_or_pad(waveform, 4, 3), [3, 4, 5, 6])
    np.testing.assert_array_equal(audio.crop_or_pad(waveform[:2], 4, 0), [0, 1, 0, 0])


def test_shared_clips_are_all_on_the_fast_path(shared_data):
    paths = sorted((shared_data / "toy_dataset" / "test").glob("*.wav"))
    assert len(paths) == 35
    for path in paths[:10]:
        info = audio.probe(str(path))
        assert info.fast(16000)
        expected, _ = soundfile.read(path, dtype="float32")
        np.testing.assert_array_equal(audio.load(str(path), info, 16000), expected)


def test_streaming_header_wav_is_read_to_the_end(tmp_path):
    """ffmpeg writing to a pipe puts 0xFFFFFFFF in the 'data' size: the samples run to EOF."""
    data = bytearray(wav_bytes(tone(0.5)))
    size_at = data.index(b"data") + 4
    data[size_at : size_at + 4] = b"\xff\xff\xff\xff"
    path = tmp_path / "stream.wav"
    path.write_bytes(bytes(data))
    info = audio.inspect(str(path), 16000)
    assert (info.frames, info.fast(16000)) == (8000, True)
    expected, _ = soundfile.read(path, dtype="float32")  # libsndfile reads it too
    np.testing.assert_array_equal(audio.load(str(path), info, 16000), expected)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav_is_refused_naming_the_count(tmp_path, bad_value):
    samples = tone(0.1)
    samples[[10, 20]] = bad_value
    path = tmp_path / "float.wav"
    path.write_bytes(wav_bytes(samples, subtype="FLOAT"))
    audio.probe(str(path))  # the header is fine: only decoding finds the values
    with pytest.raises(audio.BadAudio, match="non-finite samples: 2 of 1600 are NaN or infinite"):
        audio.inspect(str(path), 16000)
    with pytest.raises(UserError, match=f"{path}: non-finite samples"):
        audio.read_audio(str(path), 16000)


def test_flac_with_corrupt_frames_is_refused_at_inspection(tmp_path):
    path = tmp_path / "corrupt.flac"
    path.write_bytes(corrupt_flac_bytes())
    assert audio.probe(str(path)).frames == 16000  # the header alone looks fine
    with pytest.raises(audio.BadAudio, match="corrupt: the samples do not decode"):
        audio.inspect(str(path), 16000)
    with pytest.raises(UserError, match=f"{path}: corrupt"):
        audio.read_audio(str(path), 16000)


def test_inspecting_16_bit_wav_reads_only_the_header(tiny_wav_tree, monkeypatch):
    """Listing stays cheap for the common case: int16 samples cannot be NaN or infinite."""
    root = tiny_wav_tree({"a.wav": tone(0.5), "b.flac": tone(0.5)})
    decoded = []
    real_read = soundfile.read
    monkeypatch.setattr(
        soundfile, "read", lambda path, **kw: decoded.append(path) or real_read(path, **kw)
    )
    assert audio.inspect(str(root / "a.wav"), 16000).fast(16000)
    assert decoded == []
    assert audio.inspect(str(root / "b.flac"), 16000).frames == 8000
    assert decoded == [str(root / "b.flac")]


def test_implausible_sample_rate_and_block_align(tmp_path):
    path = tmp_path / "slow.wav"
    path.write_bytes(wav_bytes(tone(0.1, rate=16000), rate=999))
    with pytest.raises(audio.BadAudio, match="unsupported: sample rate 999 Hz"):
        audio.inspect(str(path), 16000)
    # 16-bit PCM whose block align is not 2 bytes a channel: not read raw.
    data = bytearray(wav_bytes(tone(0.1)))
    data[32:34] = (4).to_bytes(2, "little")
    path = tmp_path / "align.wav"
    path.write_bytes(bytes(data))
    assert not audio.probe(str(path)).fast(16000)


def test_a_folder_with_an_audio_name_is_unreadable(tmp_path):
    (tmp_path / "x.wav").mkdir()
    with pytest.raises(audio.BadAudio, match="unreadable"):
        audio.probe(str(tmp_path / "x.wav"))
