"""The 12-class task from a Speech Commands root: _unknown_ from other words, _silence_ from
background noise, in the configured proportions, each split from its own noise."""

import collections
import json

import numpy as np
import pytest
import soundfile
from conftest import tone

from configs import default
from speechjax import audio, kws_task, sources

CLASSES = ["yes", "no", "_silence_", "_unknown_"]
RATE = 16000


@pytest.fixture
def release(tiny_wav_tree, tmp_path):
    """A Speech Commands root: yes/no (20 clips each), six other words (5 each), lists, and a
    10 s noise recording: a 300 Hz tone for its first 80%, 3 kHz after."""
    files, validation, testing = {}, [], []
    words = ["yes", "no", "cat", "dog", "bed", "bird", "tree", "wow"]
    for w, word in enumerate(words):
        for i in range(20 if word in ("yes", "no") else 5):
            name = f"{word}/{w}{i:02d}_nohash_0.wav"
            files[name] = tone(0.5, freq=200 + 40 * w + i)
            (validation if i % 5 == 1 else testing if i % 5 == 2 else []).append(name)
    t = np.arange(10 * RATE) / RATE
    noise = np.where(t < 8.0, np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 3000 * t))
    files["_background_noise_/tones.wav"] = (0.5 * noise).astype(np.float32)
    files["validation_list.txt"] = "\n".join(validation) + "\n"
    files["testing_list.txt"] = "\n".join(testing) + "\n"
    root = tiny_wav_tree(files)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def config_for(root, tmp_path, **data):
    config = default.get_config()
    config.data.source = "folder"
    config.data.dir = str(root)
    config.data.classes_file = str(tmp_path / "classes.txt")
    config.data.cache_dir = str(tmp_path / "cache")
    for key, value in data.items():
        config.data[key] = value
    return config


def counts(split) -> dict[str, int]:
    return dict(collections.Counter(CLASSES[label] for label in split.labels))


def dominant_hz(path) -> float:
    waveform = audio.read_audio(path, RATE)
    return float(np.argmax(np.abs(np.fft.rfft(waveform))) * RATE / len(waveform))


def test_unknown_and_silence_come_in_the_configured_proportions(release, tmp_path):
    source = sources.load_source(
        config_for(release, tmp_path, unknown_fraction=0.25, silence_fraction=0.1)
    )
    assert source.class_names == CLASSES
    train = counts(source.splits["train"])
    # yes/no: 12 of 20 each in train; the others 3 of 5 each (18), of which ceil(0.25 * 24)
    # = 6 as _unknown_; ceil(0.1 * 24) = 3 silence clips. Validation: 4 + 4 known.
    assert train == {"yes": 12, "no": 12, "_unknown_": 6, "_silence_": 3}
    validation = counts(source.splits["validation"])
    assert validation == {"yes": 4, "no": 4, "_unknown_": 2, "_silence_": 1}
    unknown = [
        p
        for p, label in zip(
            source.splits["train"].paths, source.splits["train"].labels, strict=True
        )
        if CLASSES[label] == "_unknown_"
    ]
    assert all(p.split("/")[-2] not in ("yes", "no") for p in unknown)
    # The same draw every time.
    again = sources.load_source(
        config_for(release, tmp_path, unknown_fraction=0.25, silence_fraction=0.1)
    )
    assert again.splits["train"].paths == source.splits["train"].paths


def test_each_split_cuts_silence_from_its_own_share_of_the_noise(release, tmp_path):
    source = sources.load_source(config_for(release, tmp_path, silence_fraction=0.5))
    for split, expected_hz in (("train", 300), ("validation", 3000), ("test", 3000)):
        found = source.splits[split]
        labels = found.labels.tolist()
        silence = [p for p, label in zip(found.paths, labels, strict=True) if label == 2]
        assert silence, split
        for path in silence:
            if np.abs(audio.read_audio(path, RATE)).max() > 0.01:  # level may be near 0
                assert abs(dominant_hz(path) - expected_hz) < 20, (split, path)
            assert soundfile.info(path).frames == RATE


def test_without_the_special_labels_nothing_is_added(release, tmp_path):
    (tmp_path / "classes.txt").write_text("yes\nno\n")
    source = sources.load_source(config_for(release, tmp_path))
    assert sorted(set(source.splits["train"].labels.tolist())) == [0, 1]
    assert len(source.splits["train"].paths) == 24
    assert not kws_task.wants_task(["yes", "no"])


def test_the_12_class_config_uses_tfds_label_names_and_ids():
    from configs import speech_commands12

    config = speech_commands12.get_config()
    names = sources.read_classes(config.data.classes_file)
    expected = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]
    assert names == expected + ["_silence_", "_unknown_"]  # TFDS's ClassLabel order


def test_silence_clips_replace_a_stale_folder_and_keep_one_another_process_finished(release):
    noise = [str(release / "_background_noise_" / "tones.wav")]
    cache = release / "cache"

    def clips():
        return kws_task.silence_clips(noise, "train", 3, RATE, RATE, str(cache), seed=0)

    folder = clips()[0][0].parent
    written = {p.name: p.read_bytes() for p in folder.iterdir()}
    # A folder without "done" (an interrupted older version) is replaced.
    (folder / "done").unlink()
    (folder / "junk.txt").write_text("stale")
    assert [p.exists() for p, _ in clips()] == [True] * 3
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == written
    # Another process renamed its (identical) clips into place first: they are kept, and
    # this process's partial folder is removed.
    inode = (folder / "silence_00000.wav").stat().st_ino
    settings = json.loads((folder / "done").read_text())
    kws_task._write_silence(folder, sorted(n for n in written if n.endswith(".wav")), settings)
    assert (folder / "silence_00000.wav").stat().st_ino == inode
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_training_noise_holds_only_the_train_share_of_each_recording(release, tmp_path):
    """Validation and test _silence_ come from the 3 kHz last 20%: training's background
    noise must not mix those samples into its clips."""
    from speechjax import input_pipeline

    pipeline = input_pipeline.create_pipeline(config_for(release, tmp_path))
    bank = pipeline._noise().numpy()  # the bank augment.noise_* draws its windows from
    assert len(bank) == 8 * RATE
    spectrum = np.abs(np.fft.rfft(bank))
    hz = np.fft.rfftfreq(len(bank), 1 / RATE)
    assert hz[np.argmax(spectrum)] == pytest.approx(300, abs=1)
    assert spectrum[np.abs(hz - 3000) < 50].max() < 1e-3 * spectrum.max()
    # Without a _silence_ class no split cuts noise: training has every recording whole.
    (tmp_path / "classes.txt").write_text("yes\nno\n")
    whole = input_pipeline.create_pipeline(config_for(release, tmp_path))._noise().numpy()
    assert len(whole) == 10 * RATE
