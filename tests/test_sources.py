"""speechjax.sources: folder layouts, classes file, bad files, TFDS and synthetic sources."""

import io
import logging

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds
from conftest import tone
from test_audio import corrupt_flac_bytes

from configs import default
from speechjax import sources, synthetic
from speechjax.errors import UserError

WORDS = ["yes", "no", "up"]


def wav(freq=440.0):
    return tone(0.25, freq=freq)


def wav_bytes(samples) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def float_wav_bytes(samples) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def config_for(root, classes_file, **data):
    config = default.get_config()
    config.data.source = "folder"
    config.data.dir = str(root)
    config.data.classes_file = str(classes_file)
    for key, value in data.items():
        config.data[key] = value
    return config


@pytest.fixture
def classes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


def labels_of(split) -> list[str]:
    return [WORDS[i] for i in split.labels]


def test_toy_dataset_flat_layout(shared_data):
    root = shared_data / "toy_dataset"
    config = config_for(root, "classes.txt")
    assert sources.detect_layout(root) == "flat"
    source = sources.load_source(config)
    names = sources.read_classes("classes.txt")
    assert source.class_names == names and len(names) == 35
    assert {n: s.num_examples for n, s in source.splits.items()} == {
        "train": 245,
        "validation": 70,
        "test": 35,
    }
    for split in source.splits.values():
        assert not split.skipped
        for path, label in zip(split.paths, split.labels, strict=True):
            # backward_f035e2ea_nohash_3.wav -> "backward" -> its line in classes.txt
            assert names[label] == path.rsplit("/", 1)[1].split("_")[0]
    assert np.bincount(source.splits["train"].labels).tolist() == [7] * 35
    assert source.noise_files == []


def test_split_label_layout(tiny_wav_tree, classes):
    root = tiny_wav_tree(
        {
            "train/yes/a.wav": wav(),
            "train/yes/b.wav": wav(),
            "train/no/c.flac": wav(),
            "train/README.txt": "ignored: not audio",
            "valid/up/d.wav": wav(),
            "testing/no/e.wav": wav(),
            "testing/up/f.wav": wav(),
        }
    )
    source = sources.load_source(config_for(root, classes))
    assert sources.detect_layout(root) == "split_label"
    assert labels_of(source.splits["train"]) == ["no", "yes", "yes"]
    assert labels_of(source.splits["validation"]) == ["up"]
    assert labels_of(source.splits["test"]) == ["no", "up"]
    train = source.splits["train"]
    assert [i.fast(16000) for i in train.infos] == [False, True, True]  # flac via librosa


def test_speech_commands_layout(tiny_wav_tree, classes):
    root = tiny_wav_tree(
        {
            "yes/a_nohash_0.wav": wav(),
            "yes/b_nohash_0.wav": wav(),
            "yes/c_nohash_0.wav": wav(),
            "no/a_nohash_0.wav": wav(),
            "no/d_nohash_0.wav": wav(),
            "up/e_nohash_0.wav": wav(),
            "_background_noise_/white.wav": tone(2.0),
            "_background_noise_/README.md": "not audio",
            "validation_list.txt": "yes/b_nohash_0.wav\nno/d_nohash_0.wav\n",
            "testing_list.txt": "up/e_nohash_0.wav\n",
        }
    )
    assert sources.detect_layout(root) == "speech_commands"
    source = sources.load_source(config_for(root, classes))
    train = source.splits["train"]
    assert [p.rsplit("/", 2)[1:] for p in train.paths] == [
        ["no", "a_nohash_0.wav"],
        ["yes", "a_nohash_0.wav"],
        ["yes", "c_nohash_0.wav"],
    ]
    assert labels_of(train) == ["no", "yes", "yes"]
    assert labels_of(source.splits["validation"]) == ["yes", "no"]
    assert labels_of(source.splits["test"]) == ["up"]
    assert source.noise_files == [str(root / "_background_noise_" / "white.wav")]


def test_speech_commands_missing_list_entry_and_list_file(tiny_wav_tree, classes, caplog):
    files = {
        "yes/a.wav": wav(),
        "no/b.wav": wav(),
        "up/c.wav": wav(),
        "validation_list.txt": "no/b.wav\nno/gone.wav\n",
        "testing_list.txt": "up/c.wav\n",
    }
    root = tiny_wav_tree(files)
    with caplog.at_level(logging.WARNING):
        source = sources.load_source(config_for(root, classes))
    assert source.splits["validation"].num_examples == 1
    assert "listed in validation_list.txt but missing" in caplog.text
    (root / "testing_list.txt").unlink()
    with pytest.raises(UserError, match="testing_list.txt is missing.*to tell training clips"):
        sources.load_source(config_for(root, classes, layout="speech_commands"))
    # Evaluating one split needs only its own list.
    config = config_for(root, classes, layout="speech_commands")
    alone = sources.load_source(config, splits=("validation",))
    assert list(alone.splits) == ["validation"] and alone.splits["validation"].num_examples == 1
    with pytest.raises(UserError, match="testing_list.txt is missing.*needs it for test"):
        sources.load_source(config, splits=("test",))


def test_a_test_set_that_brings_its_own_unknown_and_silence_keeps_them(tiny_wav_tree, tmp_path):
    """The released speech_commands_test_set: the ten words, _unknown_/ and _silence_/ as
    folders: evaluated as they are, nothing drawn or cut from noise (there is none here)."""
    names = ["yes", "no", "_silence_", "_unknown_"]
    brought = {"yes": 3, "no": 2, "_silence_": 2, "_unknown_": 4}
    root = tiny_wav_tree(
        {f"{label}/{i}.wav": wav(300.0 + i) for label, n in brought.items() for i in range(n)}
    )
    (tmp_path / "classes12.txt").write_text("\n".join(names) + "\n")
    source = sources.load_source(config_for(root, tmp_path / "classes12.txt"), splits=("test",))
    labels = [names[i] for i in source.splits["test"].labels]
    assert {label: labels.count(label) for label in names} == brought


def test_bad_files_are_skipped_counted_and_warned_once(tiny_wav_tree, classes, caplog):
    good = wav_bytes(wav())
    root = tiny_wav_tree(
        {
            "train/yes_1.wav": good,
            "train/yes_2.wav": b"not a wav file at all, just text",
            "train/no_3.wav": wav_bytes(np.zeros(0, np.float32)),
            "train/no_4.wav": good[:500],
            "train/maybe_5.wav": good,
            "train/no_6.wav": good,
            "val/up_1.wav": good,
            "test/up_1.wav": good,
        }
    )
    with caplog.at_level(logging.WARNING):
        source = sources.load_source(config_for(root, classes))
    train = source.splits["train"]
    assert labels_of(train) == ["no", "yes"]
    reasons = {s.path.rsplit("/", 1)[1]: s.reason for s in train.skipped}
    assert reasons["yes_2.wav"].startswith("unreadable as audio")
    assert reasons["no_3.wav"] == "empty: 0 samples"
    assert reasons["no_4.wav"].startswith("truncated: header promises")
    assert reasons["maybe_5.wav"] == f"label 'maybe' is not in {classes}"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "train split" in warnings[0] and "skipped 4 of 6 files" in warnings[0]
    assert "1 truncated" in warnings[0] and "1 empty" in warnings[0]
    assert "and 1 more" in warnings[0]  # only the first few are named


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_undecodable_files_are_skipped_at_listing_in_every_split(
    tiny_wav_tree, classes, caplog, split
):
    """NaN, inf and corrupt FLAC frames used to pass listing and stop the run when read
    (in training, after an epoch, or at the final test); now listing skips and names them."""
    with_nan, with_inf = wav(), wav()
    with_nan[100] = np.nan
    with_inf[100:110] = np.inf
    files = {f"{name}/up_good.wav": wav() for name in ("train", "val", "test")}
    files[f"{split}/yes_nan.wav"] = float_wav_bytes(with_nan)
    files[f"{split}/yes_inf.wav"] = float_wav_bytes(with_inf)
    files[f"{split}/no_corrupt.flac"] = corrupt_flac_bytes()
    root = tiny_wav_tree(files)
    with caplog.at_level(logging.WARNING):
        source = sources.load_source(config_for(root, classes))
    name = {"val": "validation"}.get(split, split)
    reasons = {s.path.rsplit("/", 1)[1]: s.reason for s in source.splits[name].skipped}
    assert reasons == {
        "yes_nan.wav": "non-finite samples: 1 of 4000 are NaN or infinite",
        "yes_inf.wav": "non-finite samples: 10 of 4000 are NaN or infinite",
        "no_corrupt.flac": reasons["no_corrupt.flac"],
    }
    assert reasons["no_corrupt.flac"].startswith("corrupt: the samples do not decode")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{name} split" in warning and "skipped 3 of 4 files" in warning
    assert "2 non-finite samples, 1 corrupt" in warning
    for bad in ("yes_nan.wav", "yes_inf.wav", "no_corrupt.flac"):
        assert str(root / split / bad) in warning
    for listed in source.splits.values():  # what is listed reads, and reads finite
        assert all(np.isfinite(listed.load(i)).all() for i in range(listed.num_examples))


@pytest.mark.parametrize("layout", ["flat", "split_label"])
def test_broken_links_and_folders_named_like_audio_are_counted(
    tiny_wav_tree, classes, caplog, layout
):
    prefix = "yes_" if layout == "flat" else "yes/"
    root = tiny_wav_tree(
        {
            f"train/{prefix}1.wav": wav(),
            f"val/{prefix}1.wav": wav(),
            f"test/{prefix}1.wav": wav(),
        }
    )
    (root / f"train/{prefix}folder.wav").mkdir()
    (root / f"train/{prefix}link.wav").symlink_to(root / "nowhere.wav")
    (root / f"train/{prefix}good_link.wav").symlink_to(root / f"train/{prefix}1.wav")
    with caplog.at_level(logging.WARNING):
        source = sources.load_source(config_for(root, classes, layout=layout))
    train = source.splits["train"]
    assert train.num_examples == 2  # the file and the working link to it
    assert {s.path: s.reason for s in train.skipped} == {
        str(root / f"train/{prefix}folder.wav"): "not a file: a folder with an audio file's name",
        str(root / f"train/{prefix}link.wav"): (
            f"broken symbolic link: it points to {root / 'nowhere.wav'}, which does not exist"
        ),
    }
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 2 of 4 files" in warning and "folder.wav" in warning and "link.wav" in warning


def test_noise_files_with_non_finite_samples_are_skipped(tiny_wav_tree, classes, caplog):
    root = tiny_wav_tree({"train/yes_1.wav": wav(), "val/up_1.wav": wav(), "test/up_1.wav": wav()})
    bad = tone(1.0)
    bad[5] = np.nan
    noise = tiny_wav_tree({"hum.wav": tone(1.0, freq=50), "nan.wav": float_wav_bytes(bad)})
    with caplog.at_level(logging.WARNING):
        source = sources.load_source(config_for(root, classes, noise_dir=str(noise)))
    assert source.noise_files == [str(noise / "hum.wav")]
    assert f"{noise / 'nan.wav'}: non-finite samples" in caplog.text


def test_split_with_only_bad_files_stops(tiny_wav_tree, classes):
    root = tiny_wav_tree(
        {
            "train/yes_1.wav": wav(),
            "val/maybe_1.wav": wav(),
            "test/up_1.wav": wav(),
        }
    )
    with pytest.raises(UserError, match="validation split has no usable audio files"):
        sources.load_source(config_for(root, classes))


def test_missing_and_empty_folders(tiny_wav_tree, classes, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        sources.load_source(config_for(tmp_path / "nowhere", classes))
    with pytest.raises(UserError, match="needs data.dir"):
        sources.load_source(config_for("", classes))
    root = tiny_wav_tree({"train/yes_1.wav": wav(), "val/up_1.wav": wav()})
    with pytest.raises(UserError, match="has no test folder: expected test/ or testing/"):
        sources.load_source(config_for(root, classes))
    (root / "test").mkdir()
    with pytest.raises(UserError, match=f"{root / 'test'} holds no audio files"):
        sources.load_source(config_for(root, classes))
    (root / "validation").mkdir()
    with pytest.raises(UserError, match="has validation/ and val/: keep one validation folder"):
        sources.load_source(config_for(root, classes))
    with pytest.raises(UserError, match="cannot tell its layout"):
        sources.load_source(config_for(tmp_path, classes))
    empty_train = tiny_wav_tree({"train/notes.txt": "no audio"})
    with pytest.raises(UserError, match="train is empty"):
        sources.load_source(config_for(empty_train, classes))


def test_a_forced_layout_that_does_not_match_says_which_would(tiny_wav_tree, classes):
    nested = tiny_wav_tree({f"{split}/yes/a_1.wav": wav() for split in ("train", "val", "test")})
    with pytest.raises(UserError, match="label folders of audio .* --config.data.layout=auto"):
        sources.load_source(config_for(nested, classes, layout="flat"))
    flat = tiny_wav_tree({f"{split}/yes_1.wav": wav() for split in ("train", "val", "test")})
    with pytest.raises(UserError, match="label_\\*.wav files .* --config.data.layout=auto"):
        sources.load_source(config_for(flat, classes, layout="split_label"))


def test_classes_file_errors(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("yes\nno\nyes\n")
    with pytest.raises(UserError, match=rf"{path}, line 3: class 'yes' repeats line 1"):
        sources.read_classes(str(path))
    path.write_text("yes\n\nno\n")
    with pytest.raises(UserError, match=rf"{path}, line 2: blank line"):
        sources.read_classes(str(path))
    path.write_text("yes\nno")
    assert sources.read_classes(str(path)) == ["yes", "no"]
    with pytest.raises(UserError, match="cannot be read"):
        sources.read_classes(str(tmp_path / "missing.txt"))
    path.write_bytes(b"yes\n\xff\xfe\n")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        sources.read_classes(str(path))


def test_noise_dir_and_unknown_source(tiny_wav_tree, classes, tmp_path):
    root = tiny_wav_tree({"train/yes_1.wav": wav(), "val/up_1.wav": wav(), "test/up_1.wav": wav()})
    noise = tiny_wav_tree({"hum.wav": tone(1.0, freq=50), "bad.wav": b"junk"})
    source = sources.load_source(config_for(root, classes, noise_dir=str(noise)))
    assert source.noise_files == [str(noise / "hum.wav")]
    with pytest.raises(UserError, match="noise_dir.*does not exist"):
        sources.load_source(config_for(root, classes, noise_dir=str(tmp_path / "none")))
    with pytest.raises(UserError, match="data.source='ftp' is unknown"):
        sources.load_source(config_for(root, classes, source="ftp"))


def test_shard_splits_files_by_index(tiny_wav_tree, classes):
    root = tiny_wav_tree(
        {
            **{f"train/yes_{i}.wav": wav(100 + i) for i in range(5)},
            "val/up_1.wav": wav(),
            "test/up_1.wav": wav(),
        }
    )
    train = sources.load_source(config_for(root, classes)).splits["train"]
    shards = [train.shard(i, 2) for i in range(2)]
    assert [s.num_examples for s in shards] == [3, 2]
    assert sorted(shards[0].paths + shards[1].paths) == sorted(train.paths)


def test_synthetic_source_reads_the_generated_folder(tiny_wav_tree, classes, monkeypatch):
    root = tiny_wav_tree(
        {
            "manifest.json": "{}",
            "train/yes/a.wav": wav(),
            "train/no/b.wav": wav(),
            "validation/up/c.wav": wav(),
            "test/up/d.wav": wav(),
        }
    )
    calls = []

    def ensure_dataset(data_config, class_names, seed):
        calls.append((list(class_names), seed))
        return root

    monkeypatch.setattr(synthetic, "ensure_dataset", ensure_dataset)
    config = config_for("", classes, source="synthetic")
    config.seed = 7
    source = sources.load_source(config)
    assert calls == [(WORDS, 7)]
    assert labels_of(source.splits["train"]) == ["no", "yes"]


def tfds_config(data_dir=""):
    config = default.get_config()
    config.data.source = "tfds"
    config.data.data_dir = str(data_dir)
    return config


def test_tfds_source_with_mock_data():
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        source = sources.load_source(tfds_config())
        assert source.class_names[10:] == ["_silence_", "_unknown_"]
        assert len(source.class_names) == 12
        train = source.splits["train"]
        assert train.num_examples == 5
        examples = list(train.dataset().as_numpy_iterator())
    assert len(examples) == 5
    for waveform, label in examples:
        assert waveform.dtype == np.float32 and waveform.ndim == 1
        assert np.abs(waveform).max() <= 1.0 and 0 <= label < 12


def test_tfds_final_fit_trains_on_train_plus_validation():
    config = tfds_config()
    config.data.train_on_validation = True
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        source = sources.load_source(config)
        train = source.splits["train"]
        assert (train.split, train.part_sizes) == ("train+validation", (5, 5))
        assert train.num_examples == 10
        # (TFDS's mock yields num_examples for any split spec, so the stream's length is not
        # checkable here; the spec is what TFDS reads as both splits.)
    assert source.splits["validation"].split == "validation"


def test_tfds_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError, match="tfds build speech_commands") as error:
        sources.load_source(tfds_config(tmp_path))
    assert "data.source=synthetic" in str(error.value) and str(tmp_path) in str(error.value)


@pytest.mark.parametrize("size, count", [(11, 3), (10, 4), (7, 2)])
def test_tfds_shard_positions_are_where_tfds_even_splits_cut(size, count):

    infos = tfds.core.SplitDict(
        [tfds.core.SplitInfo(name="train", shard_lengths=[size], num_bytes=0)]
    )
    split = sources.TfdsSplit("train", None, "train", size, 16000)
    parts = tfds.even_splits("train", n=count, drop_remainder=False)
    for index, part in enumerate(parts):
        (block,) = part.to_absolute(infos)
        expected = np.arange(size)[block.from_ or 0 : size if block.to is None else block.to]
        np.testing.assert_array_equal(split.shard_positions(index, count), expected)


@pytest.mark.parametrize("count", [2, 3])
def test_tfds_shard_positions_of_a_joined_split_follow_even_splits_of_each_part(count):
    infos = tfds.core.SplitDict(
        [
            tfds.core.SplitInfo(name="train", shard_lengths=[7], num_bytes=0),
            tfds.core.SplitInfo(name="validation", shard_lengths=[4], num_bytes=0),
        ]
    )
    train = sources.TfdsSplit("train", None, "train", 7, 16000)
    joined = train.joined(sources.TfdsSplit("validation", None, "validation", 4, 16000))
    offsets = {"train": 0, "validation": 7}
    parts = tfds.even_splits("train+validation", n=count, drop_remainder=False)
    for index, part in enumerate(parts):
        expected = np.concatenate(
            [
                offsets[block.splitname]
                + np.arange(infos[block.splitname].num_examples)[block.from_ : block.to]
                for block in part.to_absolute(infos)
            ]
        )
        np.testing.assert_array_equal(joined.shard_positions(index, count), expected)


def test_final_fit_appends_validation_to_train_only_when_both_are_listed(tiny_wav_tree, classes):
    files = {f"train/{WORDS[i % 3]}/{i}.wav": wav() for i in range(4)}
    files.update({f"validation/{WORDS[i % 3]}/v{i}.wav": wav() for i in range(3)})
    files.update({f"test/{WORDS[i % 3]}/t{i}.wav": wav() for i in range(3)})
    root = tiny_wav_tree(files)
    held_out = sources.load_source(config_for(root, classes))
    config = config_for(root, classes, train_on_validation=True)
    final_fit = sources.load_source(config)
    train, validation = held_out.splits["train"], held_out.splits["validation"]
    assert final_fit.splits["train"].paths == train.paths + validation.paths
    assert labels_of(final_fit.splits["train"]) == labels_of(train) + labels_of(validation)
    assert final_fit.splits["train"].name == "train"
    assert final_fit.splits["validation"].paths == validation.paths
    assert final_fit.splits["test"].paths == held_out.splits["test"].paths
    # Evaluating one split never joins anything.
    only_train = sources.load_source(config, splits=("train",))
    assert only_train.splits["train"].paths == train.paths


def test_file_shards_cover_the_split_once_and_know_their_positions(tiny_wav_tree, classes):
    files = {f"train/{WORDS[i % 3]}/{i}.wav": wav() for i in range(7)}
    source = sources.load_source(config_for(tiny_wav_tree(files), classes), splits=("train",))
    split = source.splits["train"]
    seen = []
    for index in range(3):
        shard = split.shard(index, 3)
        positions = split.shard_positions(index, 3)
        assert shard.paths == tuple(split.paths[p] for p in positions)
        np.testing.assert_array_equal(shard.labels, split.labels[positions])
        seen.extend(positions)
    assert sorted(seen) == list(range(7))


def test_silence_fraction_zero_needs_no_background_noise(tiny_wav_tree, tmp_path):
    root = tiny_wav_tree(
        {
            "yes/a.wav": wav(),
            "no/b.wav": wav(),
            "no/c.wav": wav(),
            "validation_list.txt": "no/b.wav\n",
            "testing_list.txt": "no/c.wav\n",
        }
    )
    (tmp_path / "classes12.txt").write_text("yes\nno\n_silence_\n")
    config = config_for(root, tmp_path / "classes12.txt", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match="no _background_noise_/ folder"):
        sources.load_source(config)
    config.data.silence_fraction = 0.0
    assert sources.load_source(config).splits["train"].num_examples == 1
