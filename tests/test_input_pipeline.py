"""speechjax.input_pipeline: batches, exact epochs, padding, norm stats, sources end to end."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import tone

from configs import default
from speechjax import audio, features, input_pipeline
from speechjax.errors import UserError
from speechjax.input_pipeline import LABEL, MASK, SPECTROGRAM
from speechjax.normalization import NormStats

WORDS = [f"w{i}" for i in range(7)]
CLIP = 4000  # 0.25 s at 16 kHz keeps every test cheap
# Given statistics skip computing them, where a test is not about them.
STATS = NormStats((-5.0,), (4.0,))


@pytest.fixture
def tree(tiny_wav_tree):
    """train: 10 clips (one 10 samples too long, one short); validation: 7, one a class; test: 4."""
    files = {}
    for i in range(10):
        seconds = {0: (CLIP + 10) / 16000, 1: 0.1}.get(i, 0.25)
        files[f"train/w{i % 7}/{i}.wav"] = tone(seconds, freq=200 + 50 * i, amp=0.1 + 0.05 * i)
    for i in range(7):
        files[f"validation/w{i}/{i}.wav"] = tone(0.25, freq=300 + 40 * i)
    for i in range(4):
        files[f"test/w{i}/{i}.wav"] = tone(0.25, freq=500 + 30 * i)
    return tiny_wav_tree(files)


def make_config(root, tmp_path, **overrides):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(WORDS) + "\n")
    config = default.get_config()
    config.data.source = "folder"
    config.data.dir = str(root)
    config.data.classes_file = str(classes)
    config.data.clip_seconds = CLIP / 16000
    config.features.n_mels = 16
    for key, value in overrides.items():
        group, field = key.split(".")
        config[group][field] = value
    return config


def collect(batches) -> list[dict]:
    return [dict(b) for b in batches]


def test_eval_batches_count_every_example_exactly_once(tree, tmp_path):
    pipeline = input_pipeline.create_pipeline(make_config(tree, tmp_path), STATS)
    assert pipeline.num_examples == {"train": 10, "validation": 7, "test": 4}
    assert pipeline.class_names == WORDS
    batches = collect(pipeline.eval_batches("validation", 3))
    assert len(batches) == 3
    for b in batches:
        assert b[SPECTROGRAM].shape == (3, *pipeline.input_shape)
        assert b[SPECTROGRAM].dtype == np.float32
        assert b[LABEL].dtype == np.int32 and b[MASK].dtype == np.float32
    mask = np.concatenate([b[MASK] for b in batches])
    labels = np.concatenate([b[LABEL] for b in batches])
    np.testing.assert_array_equal(mask, [1] * 7 + [0] * 2)
    assert sorted(labels[mask == 1]) == list(range(7))
    np.testing.assert_array_equal(labels[mask == 0], 0)
    # Reading every file each time (no cache) gives the same batches.
    uncached = input_pipeline.create_pipeline(
        make_config(tree, tmp_path, **{"data.cache_mb": 0}), STATS
    )
    for a, b in zip(batches, uncached.eval_batches("validation", 3), strict=True):
        np.testing.assert_allclose(a[SPECTROGRAM], b[SPECTROGRAM], atol=1e-5)
        np.testing.assert_array_equal(a[MASK], b[MASK])
    with pytest.raises(UserError, match="no split 'dev'"):
        pipeline.eval_batches("dev", 3)


def test_train_batches_are_a_function_of_seed_and_epoch(tree, tmp_path):
    config = make_config(tree, tmp_path)
    pipeline = input_pipeline.create_pipeline(config, STATS)
    assert pipeline.steps_per_epoch(3) == 3
    first = collect(pipeline.train_batches(1, 3))
    assert len(first) == 3  # 10 examples: the remainder is dropped
    for b in first:
        assert b[SPECTROGRAM].shape == (3, *pipeline.input_shape)
        np.testing.assert_array_equal(b[MASK], 1.0)
    second = collect(pipeline.train_batches(2, 3))
    again = collect(pipeline.train_batches(1, 3))  # after epoch 2 ran
    fresh = input_pipeline.create_pipeline(config, STATS)
    uncached = input_pipeline.create_pipeline(
        make_config(tree, tmp_path, **{"data.cache_mb": 0}), STATS
    )
    for other in (again, collect(fresh.train_batches(1, 3)), collect(uncached.train_batches(1, 3))):
        for a, b in zip(first, other, strict=True):
            np.testing.assert_array_equal(a[LABEL], b[LABEL])
            np.testing.assert_allclose(a[SPECTROGRAM], b[SPECTROGRAM], atol=1e-5)
    assert not all(np.array_equal(a[LABEL], b[LABEL]) for a, b in zip(first, second, strict=True))
    assert not np.allclose(first[0][SPECTROGRAM], second[0][SPECTROGRAM])
    config.seed = 1
    reseeded = collect(input_pipeline.create_pipeline(config, STATS).train_batches(1, 3))
    assert not np.allclose(first[0][SPECTROGRAM], reseeded[0][SPECTROGRAM])


def numpy_spectrograms(root, config) -> tuple[np.ndarray, np.ndarray]:
    """Reference: every training clip read by librosa, centre window, front end one by one."""
    frontend = features.make_frontend(config.features, 16000)
    paths = sorted((root / "train").glob("*/*.wav"))
    spectrograms, labels = [], []
    for path in paths:
        waveform = audio.read_audio(str(path), 16000)
        start = max(len(waveform) - CLIP, 0) // 2
        window = np.zeros(CLIP, np.float32)
        window[: len(waveform[start : start + CLIP])] = waveform[start : start + CLIP]
        spectrograms.append(frontend(window).numpy())
        labels.append(WORDS.index(path.parent.name))
    return np.stack(spectrograms).astype(np.float64), np.array(labels)


def test_norm_stats_computed_or_given(tree, tmp_path, monkeypatch):
    config = make_config(tree, tmp_path)
    pipeline = input_pipeline.create_pipeline(config)
    reference, _ = numpy_spectrograms(tree, config)
    np.testing.assert_allclose(pipeline.norm_stats.mean, [reference.mean()], rtol=1e-5)
    np.testing.assert_allclose(pipeline.norm_stats.std, [reference.std()], rtol=1e-5)

    def fail(self):
        raise AssertionError("recomputed although statistics were given")

    monkeypatch.setattr(input_pipeline.DataPipeline, "_compute_norm_stats", fail)
    given = NormStats((1.0,), (2.0,))
    assert input_pipeline.create_pipeline(config, given).norm_stats == given
    with pytest.raises(UserError, match="have 1 channels, the features.. settings give 3"):
        input_pipeline.create_pipeline(
            make_config(tree, tmp_path, **{"features.channels": 3}), given
        )


def test_eval_spectrograms_are_normalised_centre_windows(tree, tmp_path):
    """Including the clip 10 samples longer than the window (centre-cropped) and a short one."""
    config = make_config(tree, tmp_path)
    pipeline = input_pipeline.create_pipeline(config)
    reference, labels = numpy_spectrograms(tree, config)
    mean, std = pipeline.norm_stats.mean[0], pipeline.norm_stats.std[0]
    batches = collect(pipeline.eval_batches("train", 4))
    got = np.concatenate([b[SPECTROGRAM] for b in batches])[:10]
    np.testing.assert_array_equal(np.concatenate([b[LABEL] for b in batches])[:10], labels)
    np.testing.assert_allclose(got, (reference - mean) / std, atol=1e-4)


def test_training_windows_of_a_long_clip_move(tree, tmp_path):
    """Without augmentation a training example is the normalised spectrogram of a random
    window: for the clip 10 samples too long, one of its 11 windows, not always the same."""
    quiet = {
        "augment.time_shift_ms": 0.0,
        "augment.gain_db": 0.0,
        "augment.time_masks": 0,
        "augment.freq_masks": 0,
    }
    config = make_config(tree, tmp_path, **quiet)
    pipeline = input_pipeline.create_pipeline(config, STATS)
    waveform = audio.read_audio(str(tree / "train" / "w0" / "0.wav"), 16000)
    windows = np.stack([waveform[s : s + CLIP] for s in range(11)])
    frontend = features.make_frontend(config.features, 16000)
    mean, std = pipeline.norm_stats.mean[0], pipeline.norm_stats.std[0]
    candidates = (frontend(windows).numpy() - mean) / std
    starts = set()
    for epoch in range(1, 9):
        for b in pipeline.train_batches(epoch, 5):
            for spectrogram, label in zip(b[SPECTROGRAM], b[LABEL], strict=True):
                error = np.abs(candidates - spectrogram).max(axis=(1, 2, 3))
                if label == 0 and error.min() < 1e-3:  # w0 is clip 0 or clip 7
                    starts.add(int(error.argmin()))
    assert len(starts) > 1


def test_sharded_processes_see_disjoint_parts_and_equal_batch_counts(tree, tmp_path):
    config = make_config(tree, tmp_path)
    shards = [
        input_pipeline.create_pipeline(config, STATS, process_index=i, process_count=2)
        for i in range(2)
    ]
    assert shards[0].num_examples["validation"] == 7  # global counts
    labels = []
    counts = []
    for shard in shards:
        batches = collect(shard.eval_batches("validation", 3))
        counts.append(len(batches))
        for b in batches:
            labels.extend(b[LABEL][b[MASK] == 1])
    assert counts == [2, 2]  # shards of 4 and 3: both yield 2 batches
    assert sorted(labels) == list(range(7))
    assert [s.steps_per_epoch(2) for s in shards] == [2, 2]
    assert [len(collect(s.train_batches(1, 2))) for s in shards] == [2, 2]


def test_norm_stats_with_several_processes_use_the_whole_split(tree, tmp_path):
    config = make_config(tree, tmp_path)
    single = input_pipeline.create_pipeline(config).norm_stats
    for i in range(2):
        sharded = input_pipeline.create_pipeline(config, process_index=i, process_count=2)
        np.testing.assert_allclose(sharded.norm_stats.mean, single.mean, rtol=1e-6)
        np.testing.assert_allclose(sharded.norm_stats.std, single.std, rtol=1e-6)


def test_normalize_off_uses_identity(tree, tmp_path):
    config = make_config(tree, tmp_path, **{"features.normalize": False})
    assert input_pipeline.create_pipeline(config).norm_stats == NormStats.identity(1)


def test_too_few_training_examples_for_a_batch(tree, tmp_path):
    pipeline = input_pipeline.create_pipeline(make_config(tree, tmp_path), STATS)
    assert pipeline.steps_per_epoch(11) == 0
    with pytest.raises(UserError, match="fewer than one batch of 11"):
        next(pipeline.train_batches(1, 11))


def test_background_noise_of_a_speech_commands_root_is_mixed_in(tiny_wav_tree, tmp_path):
    files = {f"w{i}/{i}.wav": tone(0.25, freq=200 + 50 * i) for i in range(7)}
    files["_background_noise_/white.wav"] = np.random.default_rng(0).uniform(-1, 1, 16000)
    files["validation_list.txt"] = "w5/5.wav\n"
    files["testing_list.txt"] = "w6/6.wav\n"
    root = tiny_wav_tree(files)
    quiet = {"augment.time_shift_ms": 0.0, "augment.gain_db": 0.0, "augment.time_masks": 0}
    noisy = make_config(root, tmp_path, **quiet, **{"augment.noise_prob": 1.0})
    clean = make_config(root, tmp_path, **quiet, **{"augment.noise_prob": 0.0})
    a = next(input_pipeline.create_pipeline(noisy, STATS).train_batches(1, 5))
    b = next(input_pipeline.create_pipeline(clean, STATS).train_batches(1, 5))
    np.testing.assert_array_equal(a[LABEL], b[LABEL])
    assert not np.allclose(a[SPECTROGRAM], b[SPECTROGRAM], atol=1e-2)


@pytest.mark.parametrize("cache_mb", [2048, 0], ids=["cached", "streamed"])
def test_tfds_source(tmp_path, cache_mb):
    config = default.get_config()
    config.data.source = "tfds"
    config.data.cache_mb = cache_mb
    config.data.shuffle_buffer = 4
    config.features.n_mels = 16
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        pipeline = input_pipeline.create_pipeline(config)
        assert len(pipeline.class_names) == 12
        assert pipeline.num_examples == {"train": 5, "validation": 5, "test": 5}
        batches = collect(pipeline.eval_batches("test", 2))
        train = [collect(pipeline.train_batches(epoch, 2)) for epoch in (1, 1, 2)]
    assert len(batches) == 3 and sum(b[MASK].sum() for b in batches) == 5
    assert batches[0][SPECTROGRAM].shape == (2, 101, 16, 1)
    assert np.isfinite(batches[0][SPECTROGRAM]).all()
    assert [len(t) for t in train] == [2, 2, 2]
    for a, b in zip(train[0], train[1], strict=True):
        np.testing.assert_array_equal(a[SPECTROGRAM], b[SPECTROGRAM])


def test_toy_dataset(shared_data, tmp_path):
    config = default.get_config()
    config.data.source = "folder"
    config.data.dir = str(shared_data / "toy_dataset")
    pipeline = input_pipeline.create_pipeline(config)
    assert pipeline.num_examples == {"train": 245, "validation": 70, "test": 35}
    assert pipeline.input_shape == (101, 40, 1)
    batches = collect(pipeline.eval_batches("test", 16))
    assert len(batches) == 3 and sum(b[MASK].sum() for b in batches) == 35
    labels = np.concatenate([b[LABEL][b[MASK] == 1] for b in batches])
    assert sorted(labels) == list(range(35))  # one test clip per word
    train = collect(pipeline.train_batches(1, 64))
    assert len(train) == 3
    values = np.concatenate([b[SPECTROGRAM] for b in train])
    assert abs(values.mean()) < 0.3 and 0.7 < values.std() < 1.3  # roughly normalised


def test_norm_stats_round_trip_and_validation(tmp_path):
    stats = NormStats((1.5, -2.0, 0.0), (1.0, 3.0, 0.5))
    path = tmp_path / "norm_stats.json"
    stats.save(str(path))
    assert NormStats.from_dict(json.loads(path.read_text())) == stats
    assert NormStats.from_dict(stats.to_dict()) == stats
    with pytest.raises(UserError, match="need lists 'mean' and 'std'"):
        NormStats.from_dict({"mean": [1.0]})


def test_tf_sees_no_gpu():
    assert tf.config.get_visible_devices("GPU") == []


def test_show_batch_draws_the_same_examples_clean_and_augmented(tree, tmp_path):
    config = make_config(tree, tmp_path)
    pipeline = input_pipeline.create_pipeline(config, STATS)
    clean, augmented = pipeline.first_batch_both_ways(4)
    first = next(pipeline.train_batches(1, 4))
    np.testing.assert_array_equal(augmented[SPECTROGRAM], first[SPECTROGRAM])
    np.testing.assert_array_equal(clean[LABEL], first[LABEL])
    assert np.abs(clean[SPECTROGRAM] - augmented[SPECTROGRAM]).max() > 0.1
    # With every augmentation off, the "augmented" batch is the clean one.
    off = make_config(
        tree,
        tmp_path,
        **{
            "augment.time_shift_ms": 0.0,
            "augment.noise_prob": 0.0,
            "augment.gain_db": 0.0,
            "augment.time_masks": 0,
            "augment.freq_masks": 0,
        },
    )
    plain = next(input_pipeline.create_pipeline(off, STATS).train_batches(1, 4))
    np.testing.assert_allclose(plain[SPECTROGRAM], clean[SPECTROGRAM], atol=1e-5)
    path = input_pipeline.show_batch(config, str(tmp_path / "shown" / "batch.png"))
    assert (tmp_path / "shown" / "batch.png").stat().st_size > 10_000 and path.endswith(".png")
