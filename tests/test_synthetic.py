"""Tests of the embedded espeak-ng dataset: layout, format, disjoint voices, determinism, cache."""

import json
import pathlib
import wave

import numpy as np
import pytest

from configs import default
from speechjax import espeak, synthetic
from speechjax.errors import UserError

WORDS = ["yes", "seven", "marvin"]
PER_WORD = 2


def _data_config(cache_dir: pathlib.Path, per_word: int = PER_WORD, clip_seconds: float = 1.0):
    data = default.get_config().data
    data.cache_dir = str(cache_dir)
    data.clip_seconds = clip_seconds
    for split in synthetic.SPLITS:
        data.synthetic[f"{split}_per_word"] = per_word
    return data


def _read(path: pathlib.Path) -> tuple[np.ndarray, int, int, int]:
    with wave.open(str(path)) as f:
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2")
        return pcm, f.getframerate(), f.getnchannels(), f.getsampwidth()


def _wavs(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    data = _data_config(cache)
    return data, synthetic.ensure_dataset(data, WORDS, seed=0)


def test_splits_use_disjoint_voices_covering_every_accent_and_variant():
    voices = {split: set(synthetic.voices_for_split(split)) for split in synthetic.SPLITS}
    assert not voices["train"] & voices["validation"]
    assert not voices["train"] & voices["test"]
    assert not voices["validation"] & voices["test"]
    every = {f"{a}+{v}" for a in synthetic.ACCENTS for v in synthetic.VARIANTS}
    assert set().union(*voices.values()) == every
    assert all(voices[split] for split in synthetic.SPLITS)
    # Training hears every accent and every variant, only never in a test combination.
    assert {v.split("+")[0] for v in voices["train"]} == set(synthetic.ACCENTS)
    assert {v.split("+")[1] for v in voices["train"]} == set(synthetic.VARIANTS)
    with pytest.raises(ValueError, match="split"):
        synthetic.voices_for_split("val")


def test_every_listed_accent_and_variant_is_shipped_with_espeakng_loader():
    languages = {p.name.lower() for p in (espeak.data_path() / "lang").rglob("*") if p.is_file()}
    assert set(synthetic.ACCENTS) <= languages
    assert set(synthetic.VARIANTS) <= espeak.available_variants()


def test_layout_counts_and_format(tiny):
    _, root = tiny
    assert root.name.startswith("synthetic-")
    for split in synthetic.SPLITS:
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(WORDS)
        split_voices = set(synthetic.voices_for_split(split))
        for word in WORDS:
            files = sorted((root / split / word).glob("*.wav"))
            assert len(files) == PER_WORD
            for path in files:
                # Name: <word>_<index>_<voice>.wav, the voice one of this split's.
                assert path.stem.split("_", 2)[2] in split_voices
                pcm, rate, channels, width = _read(path)
                assert (rate, channels, width, pcm.size) == (16000, 1, 2, 16000)
                assert np.sqrt(np.mean((pcm / 32768.0) ** 2)) > 10 ** (-60 / 20)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"] == {s: dict.fromkeys(WORDS, PER_WORD) for s in synthetic.SPLITS}
    assert len(manifest["clips"]) == 3 * len(WORDS) * PER_WORD
    for clip in manifest["clips"]:
        # The word lies inside the clip, with speech of a plausible length.
        assert 0.1 < clip["speech_s"] < 0.95
        assert 0 <= clip["start_s"] <= 1.0 - clip["speech_s"]
    assert len(set(_wavs(root).values())) == len(manifest["clips"])
    assert not [p for p in root.parent.iterdir() if "partial" in p.name]


def test_same_seed_same_bytes_and_other_seed_other_audio(tiny, tmp_path):
    data, root = tiny
    again = synthetic.ensure_dataset(_data_config(tmp_path / "again"), WORDS, seed=0)
    assert again.name == root.name
    assert _wavs(again) == _wavs(root)
    other = synthetic.ensure_dataset(_data_config(tmp_path / "other"), WORDS, seed=1)
    assert other.name != root.name
    assert not set(_wavs(other).values()) & set(_wavs(root).values())


def test_every_parameter_that_changes_the_audio_changes_the_cache_folder(tiny):
    data, root = tiny
    assert synthetic.cache_root(data, WORDS, seed=0) == root
    assert synthetic.cache_root(data, WORDS[:2], seed=0) != root
    for field, value in (("noise_level", 0.2), ("train_per_word", 3)):
        changed = _data_config(root.parent)
        changed.synthetic[field] = value
        assert synthetic.cache_root(changed, WORDS, seed=0) != root


def test_existing_dataset_is_reused_without_synthesis(tiny, monkeypatch):
    data, root = tiny
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synthetic, "_synthesize_all", fail)
    assert synthetic.ensure_dataset(data, WORDS, seed=0) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_interrupted_generation_leaves_no_complete_looking_folder(tmp_path, monkeypatch):
    data = _data_config(tmp_path, per_word=1)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    # Every clip is written by now; only the manifest and the rename are missing.
    monkeypatch.setattr(synthetic, "_write_manifest", interrupt)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_dataset(data, WORDS[:1], seed=0)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    root = synthetic.ensure_dataset(data, WORDS[:1], seed=0)
    assert (root / "manifest.json").is_file()


def test_folder_without_manifest_is_reported(tmp_path):
    data = _data_config(tmp_path, per_word=1)
    synthetic.cache_root(data, WORDS, seed=0).mkdir(parents=True)
    with pytest.raises(UserError, match="manifest.json"):
        synthetic.ensure_dataset(data, WORDS, seed=0)


def test_words_too_long_for_the_clip_are_spoken_faster(tmp_path):
    # "backward" takes about 0.4-0.8 s at 120-240 words per minute: too long for 0.3 s.
    data = _data_config(tmp_path, per_word=1, clip_seconds=0.3)
    root = synthetic.ensure_dataset(data, ["backward"], seed=0)
    manifest = json.loads((root / "manifest.json").read_text())
    assert all(clip["rate"] > 240 for clip in manifest["clips"])
    for path in root.rglob("*.wav"):
        assert _read(path)[0].size == 4800


def test_word_that_cannot_fit_or_cannot_be_spoken_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not fit"):
        synthetic.ensure_dataset(_data_config(tmp_path, 1, clip_seconds=0.1), ["backward"], 0)
    with pytest.raises(UserError, match="no sound"):
        synthetic.ensure_dataset(_data_config(tmp_path, 1), ["yes", "-"], 0)
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_are_user_errors(tmp_path):
    data = _data_config(tmp_path)
    data.synthetic.test_per_word = 0
    with pytest.raises(UserError, match="data.synthetic.test_per_word"):
        synthetic.ensure_dataset(data, WORDS, 0)
    with pytest.raises(UserError, match="cannot be spoken"):
        synthetic.ensure_dataset(_data_config(tmp_path), ["yes", "a/b"], 0)
