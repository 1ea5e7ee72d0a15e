"""Property tests of the audio reader: whatever a file holds, `audio.inspect` (listing) either
refuses it with a named reason, or passes it and `audio.load` then returns a finite float32
mono waveform of the length listing promised. Nothing else: no other exception, no NaN.

Cases are drawn by hypothesis, derandomized so that every run tries the same ones.
"""

import io
import os

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechjax import audio

RATE = 16000
# The first word of every BadAudio reason (see the speechjax.audio docstring).
SKIP_KINDS = ("unreadable", "empty", "corrupt", "truncated", "unsupported", "non-finite")
PROPERTY = settings(
    max_examples=60,
    deadline=None,  # file system and libsndfile timings vary on a shared machine
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


def read_or_skip(path: str) -> np.ndarray | None:
    """The reader's contract, checked: a finite mono float32 waveform, or a named skip."""
    try:
        info = audio.inspect(path, RATE)
    except audio.BadAudio as e:
        assert str(e).startswith(SKIP_KINDS), str(e)
        return None
    waveform = audio.load(path, info, RATE)
    assert isinstance(waveform, np.ndarray)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert len(waveform) == info.samples_at(RATE) > 0
    assert np.isfinite(waveform).all()
    return waveform


def write(scratch, name: str, content: bytes) -> str:
    path = os.path.join(scratch, name)
    with open(path, "wb") as f:
        f.write(content)
    return path


@PROPERTY
@given(
    content=st.binary(max_size=3000),
    suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".aiff"]),
)
def test_random_bytes(scratch, content, suffix):
    read_or_skip(write(scratch, f"random{suffix}", content))


def _chunk(chunk_id: bytes, body: bytes, size: int | None) -> bytes:
    size = len(body) if size is None else size
    return chunk_id + size.to_bytes(4, "little") + body + b"\0" * (len(body) & 1)


_FMT_BODY = st.builds(
    lambda tag, channels, rate, align, bits, extra: (
        tag.to_bytes(2, "little")
        + channels.to_bytes(2, "little")
        + rate.to_bytes(4, "little")
        + (rate * align % 2**32).to_bytes(4, "little")
        + align.to_bytes(2, "little")
        + bits.to_bytes(2, "little")
        + extra
    ),
    tag=st.sampled_from([1, 3, 6, 7, 0xFFFE, 0, 2, 0x55]),
    channels=st.integers(0, 5),
    rate=st.sampled_from([0, 1, 999, 8000, 16000, 44100, 2**32 - 1]),
    align=st.integers(0, 9),
    bits=st.sampled_from([0, 8, 12, 16, 24, 32, 64]),
    extra=st.binary(max_size=24),
)
_FMT = st.builds(_chunk, st.just(b"fmt "), _FMT_BODY, st.none() | st.integers(0, 2**32 - 1))
_DATA = st.builds(
    _chunk,
    st.just(b"data"),
    st.binary(max_size=800),
    st.none() | st.sampled_from([0, 1, 7, 2**31, 2**32 - 1]) | st.integers(0, 2000),
)
_OTHER = st.builds(_chunk, st.binary(min_size=4, max_size=4), st.binary(max_size=40), st.none())
_CHUNKS = st.lists(st.one_of(_FMT, _DATA, _OTHER), max_size=2)


@settings(PROPERTY, max_examples=150)
@given(
    before=_CHUNKS,
    fmt=st.just(b"") | _FMT,
    between=_CHUNKS,
    samples=st.just(b"") | _DATA,
    after=_CHUNKS,
    riff_size=st.integers(0, 2**32 - 1),
)
def test_random_riff_chunks(scratch, before, fmt, between, samples, after, riff_size):
    """RIFF files assembled from plausible and implausible chunks, most often a 'fmt ' chunk
    then a 'data' chunk with others around them: the header parser's cases."""
    chunks = [*before, fmt, *between, samples, *after]
    content = b"RIFF" + riff_size.to_bytes(4, "little") + b"WAVE" + b"".join(chunks)
    read_or_skip(write(scratch, "chunks.wav", content))


# (offset, size) of each field of the canonical 44-byte WAV header.
_HEADER_FIELDS = {
    "riff_size": (4, 4),
    "fmt_size": (16, 4),
    "tag": (20, 2),
    "channels": (22, 2),
    "rate": (24, 4),
    "byte_rate": (28, 4),
    "block_align": (32, 2),
    "bits": (34, 2),
    "data_size": (40, 4),
}


@settings(PROPERTY, max_examples=150)
@given(
    channels=st.integers(1, 3),
    frames=st.integers(1, 400),
    edits=st.lists(
        st.tuples(
            st.sampled_from(sorted(_HEADER_FIELDS)),
            st.integers(0, 8) | st.sampled_from([16, 24, 32, 3, 0xFFFE, 16000]) | st.integers(),
        ),
        min_size=1,
        max_size=3,
    ),
    tail=st.binary(max_size=9),
)
def test_16_bit_wav_with_header_fields_changed(scratch, channels, frames, edits, tail):
    """A valid 16-bit WAV with one to three header fields set to other values (small
    numbers, other valid ones, anything), and maybe stray bytes after the samples."""
    buffer = io.BytesIO()
    samples = np.random.default_rng(frames).uniform(-1, 1, (frames, channels))
    soundfile.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    content = bytearray(buffer.getvalue())
    assert content[36:40] == b"data"  # the canonical header the offsets describe
    for field, value in edits:
        offset, size = _HEADER_FIELDS[field]
        content[offset : offset + size] = (value % 2 ** (8 * size)).to_bytes(size, "little")
    read_or_skip(write(scratch, "edited.wav", bytes(content) + tail))


_WAV_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"]


@PROPERTY
@given(
    container=st.sampled_from(["WAV", "WAVEX"]),
    subtype=st.sampled_from(_WAV_SUBTYPES),
    rate=st.sampled_from([1000, 8000, 11025, 16000, 22050, 44100, 48000, 96000]),
    channels=st.integers(1, 4),
    frames=st.integers(0, 3000),
    seed=st.integers(0, 2**32 - 1),
    non_finite=st.sampled_from([None, np.nan, np.inf, -np.inf]),
)
def test_valid_wav_of_any_parameters(
    scratch, container, subtype, rate, channels, frames, seed, non_finite
):
    samples = np.random.default_rng(seed).uniform(-1, 1, (frames, channels)).astype(np.float32)
    float_file = subtype in ("FLOAT", "DOUBLE")
    if non_finite is not None and float_file and frames:
        samples[frames // 2, 0] = non_finite
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=container, subtype=subtype)
    path = write(scratch, "valid.wav", buffer.getvalue())
    waveform = read_or_skip(path)
    if frames == 0:
        assert waveform is None
    elif non_finite is not None and float_file:
        assert waveform is None
        with pytest.raises(audio.BadAudio, match="non-finite samples: 1 of"):
            audio.inspect(path, RATE)
    else:
        assert waveform is not None, "a valid file must be read"
        if rate == RATE:
            expected, _ = soundfile.read(path, dtype="float32", always_2d=True)
            np.testing.assert_allclose(waveform, expected.mean(axis=1), atol=1e-6)


def _damaged(original: bytes, data) -> bytes:
    """`original` cut short, with some bytes overwritten (often in the header)."""
    content = bytearray(original[: data.draw(st.integers(0, len(original)), label="length")])
    if content:
        position = st.integers(0, min(len(content) - 1, 80)) | st.integers(0, len(content) - 1)
        for at, value in data.draw(
            st.lists(st.tuples(position, st.integers(0, 255)), max_size=12), label="edits"
        ):
            content[at] = value
    return bytes(content)


@pytest.fixture(scope="module")
def real_files(shared_data) -> dict[str, bytes]:
    """One real Speech Commands WAV and one FLAC, as bytes."""
    wav = sorted((shared_data / "toy_dataset" / "train").glob("*.wav"))[0]
    flac = sorted((shared_data / "mini_speech_commands" / "train").glob("*/*.flac"))[0]
    return {".wav": wav.read_bytes(), ".flac": flac.read_bytes()}


@PROPERTY
@given(suffix=st.sampled_from([".wav", ".flac"]), data=st.data())
def test_truncated_and_corrupted_real_files(scratch, real_files, suffix, data):
    original = real_files[suffix]
    content = _damaged(original, data)
    waveform = read_or_skip(write(scratch, f"damaged{suffix}", content))
    if content == original:
        assert waveform is not None
