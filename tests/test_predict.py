"""--mode predict end to end: a small model trained on real clips finds the words placed in
a long recording with background noise between them, at the right places."""

import collections
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from benchmarks.detection import compose_recording, score
from configs import resnet32
from speechjax import audio, export, predict, train
from speechjax.detection import Detection
from speechjax.errors import UserError
from speechjax.inference import Classifier, fit_clip
from tests.helpers import REPO, run_main

WORDS = ("yes", "no", "stop")
RATE = 16000


@pytest.fixture(scope="module")
def real_model(shared_data, tmp_path_factory):
    """A small ResNet-32 trained for 8 epochs on 300 real clips of each of three words
    (about 40 s here); test accuracy ~0.95 on 60 clips of unseen speakers."""
    source = shared_data / "mini_speech_commands"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    root = tmp_path_factory.mktemp("three_words")
    for split, count in (("train", 300), ("validation", 40), ("test", 20)):
        for word in WORDS:
            (root / split / word).mkdir(parents=True)
            for clip in sorted((source / split / word).glob("*.flac"))[:count]:
                os.symlink(clip, root / split / word / clip.name)
    (root / "classes.txt").write_text("\n".join(WORDS) + "\n")
    config = resnet32.get_config()
    config.data.source = "folder"
    config.data.dir = str(root)
    config.data.classes_file = str(root / "classes.txt")
    config.model.blocks_per_stage = 1
    config.model.widths = (8, 16, 32)
    config.augment.noise_prob = 0.0
    config.augment.time_masks = config.augment.freq_masks = 0
    config.train.lr = 0.01
    config.train.epochs = 8
    workdir = tmp_path_factory.mktemp("three_words_run")
    results = train.train_and_evaluate(config, str(workdir))
    assert results["test_accuracy"] >= 0.85, results["test_accuracy"]
    return root, workdir


@pytest.fixture(scope="module")
def recording(real_model, shared_data, tmp_path_factory):
    """A 20 s WAV: 7 test clips the model labels right on their own (p > 0.95) at random
    gaps of 0.8-2.5 s in a quiet pink-noise floor (RMS 0.002), and where each one was put."""
    root, workdir = real_model
    classifier = Classifier.from_workdir(str(workdir))
    files = sorted((root / "test").glob("*/*.flac"))
    clips = [audio.read_audio(str(f), RATE) for f in files]
    probabilities = classifier.predict(np.stack([fit_clip(c, RATE) for c in clips]))
    confident = [
        i
        for i, (f, p) in enumerate(zip(files, probabilities, strict=True))
        if WORDS[int(p.argmax())] == f.parent.name and p.max() > 0.95
    ]
    chosen = [confident[i] for i in np.random.default_rng(0).permutation(len(confident))[:8]]
    noise = audio.read_audio(str(shared_data / "_background_noise_" / "pink_noise.wav"), RATE)
    waveform, words = compose_recording(
        [clips[i] for i in chosen],
        [files[i].parent.name for i in chosen],
        noise,
        RATE,
        20.0,
        0.002,
        seed=0,
    )
    path = tmp_path_factory.mktemp("recording") / "long.wav"
    soundfile.write(path, waveform, RATE, subtype="PCM_16")
    return path, words


def test_predict_finds_the_words_of_a_long_recording(real_model, recording, tmp_path):
    root, workdir = real_model
    path, words = recording
    assert len(words) >= 6
    output = tmp_path / "found.json"
    result = run_main(
        "--config",
        "configs/resnet32.py",
        "--workdir",
        str(workdir),
        "--mode",
        "predict",
        "--audio",
        str(path),
        "--audio",
        str(root / "test" / "yes"),
        "--output",
        str(output),
    )
    record = json.loads(output.read_text())
    assert [f["path"] for f in record["files"]][0] == str(path)
    assert len(record["files"]) == 1 + 20
    found = [
        Detection(d["label"], d["score"], d["start_s"], d["end_s"])
        for d in record["detections"]
        if d["path"] == str(path)
    ]
    hits, missed, false = score(found, words)
    assert false == 0, (found, words)
    assert missed <= 1, (found, words)
    assert all(d.end_s - d.start_s == pytest.approx(1.0) for d in found)
    assert "detections:" in result.stdout
    assert (tmp_path / "found_detections.csv").is_file()
    assert (tmp_path / "found.csv").is_file()
    (plot,) = record["plots"]
    assert plot.endswith(".png") and os.path.getsize(plot) > 10_000


def test_audio_paths_expand_and_bad_ones_say_so(tmp_path, tiny_wav_tree):
    from tests.conftest import tone

    root = tiny_wav_tree({"a/x.wav": tone(), "a/b/y.flac": tone(), "notes.txt": "hi"})
    found = predict.expand_audio_paths([str(root), str(root / "a" / "x.wav")])
    assert found == [str(root / "a" / "b" / "y.flac"), str(root / "a" / "x.wav")]
    assert predict.expand_audio_paths([str(root / "a" / "*.wav")]) == [str(root / "a" / "x.wav")]
    with pytest.raises(UserError, match="no such file or folder"):
        predict.expand_audio_paths([str(tmp_path / "missing.wav")])
    with pytest.raises(UserError, match="needs --audio"):
        predict.expand_audio_paths([])
    empty = tiny_wav_tree({"notes.txt": "hi", "clip.m4a": b"not decoded"})
    with pytest.raises(UserError, match=r"the folder holds no audio file \(searched recursively"):
        predict.expand_audio_paths([str(empty)])


def test_plots_of_files_of_one_name_in_two_folders_do_not_overwrite_each_other():
    names = predict._plot_names(["rec/mon/take.wav", "rec/tue/take.wav", "rec/mon_take.wav"])
    assert names == {
        "rec/mon/take.wav": "mon_take.wav",
        "rec/tue/take.wav": "tue_take.wav",
        "rec/mon_take.wav": "mon_take.wav-2",
    }
    assert predict._plot_names(["/a/b/one file.wav"]) == {"/a/b/one file.wav": "one_file.wav"}


def test_predict_refuses_a_csv_output_that_would_overwrite_its_json(tmp_path, tiny_wav_tree):
    from tests.conftest import tone

    root = tiny_wav_tree({"x.wav": tone()})
    config, output = resnet32.get_config(), str(tmp_path / "out.csv")
    with pytest.raises(UserError, match=r"--output .*out.csv: predict writes JSON there"):
        predict.predict_files(config, str(tmp_path / "run"), [str(root)], output=output)
    assert not (tmp_path / "out.csv").exists()


def test_window_starts_cover_the_whole_recording():
    np.testing.assert_array_equal(predict.window_starts(16000, 16000, 1600), [0])
    np.testing.assert_array_equal(predict.window_starts(8000, 16000, 1600), [0])
    starts = predict.window_starts(20000, 16000, 1600)
    np.testing.assert_array_equal(starts, [0, 1600, 3200, 4800])  # the last one reaches past
    assert starts[-1] + 16000 >= 20000


@pytest.fixture(scope="module")
def exported(real_model, tmp_path_factory):
    _, workdir = real_model
    config = resnet32.get_config()
    out_dir = tmp_path_factory.mktemp("export")
    return export.export_checkpoint(config, str(workdir), (), str(out_dir)), out_dir


def test_export_writes_every_artifact_verified_against_the_checkpoint(exported):
    record, out_dir = exported
    names = ("model.stablehlo", "model.tflite", "model_int8.tflite", "model.onnx")
    for name in (*names, "labels.txt", "export.json"):
        assert (out_dir / name).is_file(), name
    assert (out_dir / "labels.txt").read_text().splitlines() == list(WORDS)
    assert record["sample_rate"] == RATE and record["clip_samples"] == RATE
    assert record["detection"]["threshold"] == resnet32.get_config().predict.threshold
    checks = record["verification"]["artifacts"]
    assert record["verification"]["test_clips"] == 60
    for name in ("model.stablehlo", "model.tflite", "model.onnx"):
        assert checks[name]["top1_agreement"] == 1.0, name
        assert checks[name]["max_abs_diff"] < 1e-4, name
    float_accuracy = record["verification"]["checkpoint_test_accuracy"]
    assert abs(checks["model_int8.tflite"]["test_accuracy"] - float_accuracy) <= 0.05
    assert record["files"]["model_int8.tflite"]["float_ops"] > 0  # the front end stays float


def test_streaming_example_reports_what_predict_reports(exported, real_model, recording, tmp_path):
    _, out_dir = exported
    _, workdir = real_model
    path, _ = recording
    streamed = subprocess.run(
        [sys.executable, "docs/stream_tflite.py", str(out_dir), str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout.splitlines()
    config = resnet32.get_config()
    record = predict.predict_files(config, str(workdir), [str(path)], (), str(tmp_path / "p.json"))
    expected = [
        f"{d['start_s']:7.2f}-{d['end_s']:7.2f} s  {d['label']}  {d['score']:.3f}"
        for d in record["detections"]
    ]
    assert len(expected) >= 5
    # Same windows, same detector: the same detections; scores may differ in the last digit.
    assert [line[:-6] for line in streamed] == [line[:-6] for line in expected]
    for ours, theirs in zip(streamed, expected, strict=True):
        assert float(ours.split()[-1]) == pytest.approx(float(theirs.split()[-1]), abs=2e-3)


def test_predict_skips_a_file_with_non_finite_samples_and_says_why(tmp_path):
    bad = tmp_path / "nan.wav"
    samples = np.zeros(RATE, np.float32)
    samples[100] = np.nan
    soundfile.write(bad, samples, RATE, subtype="FLOAT")
    with pytest.raises(UserError, match="nan.wav"):
        audio.read_audio(str(bad), RATE)


def test_missed_clips_lists_exactly_the_clips_the_model_gets_wrong(real_model):
    root, workdir = real_model
    classifier = Classifier.from_workdir(str(workdir))
    paths = sorted((root / "test").glob("*/*.flac"))
    waveforms = np.stack([fit_clip(audio.read_audio(str(p), RATE), RATE) for p in paths])
    predicted = classifier.predict(waveforms).argmax(1)
    names = list(classifier.class_names)
    wrong = {str(p.relative_to(root / "test")) for p, k in zip(paths, predicted, strict=True)
             if names[k] != p.parent.name}  # fmt: skip
    accuracy = 1 - len(wrong) / len(paths)

    printed = subprocess.run(
        [sys.executable, "benchmarks/missed_clips.py", str(root / "test"), "--runs",
         str(workdir), str(workdir), "--shifts-ms", "0", "-50", "50", "--speakers", "1000"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    assert f"accuracy {accuracy:.4f}, averaged over shifts" in printed
    assert f"runs averaged: accuracy {accuracy:.4f}" in printed
    assert f"missed by every run: {len(wrong)} clips" in printed
    listed = {line.split(":")[0].strip() for line in printed.splitlines() if "dBFS" in line}
    assert listed == wrong
    # Speech Commands names its files <speaker>_nohash_<n>: the errors are counted per speaker.
    speakers = sorted({p.name.split("_")[0] for p in paths})
    assert f"by speaker ({len(speakers)} speakers, {len(wrong):.1f} errors per run)" in printed
    by_speaker = collections.Counter(pathlib.Path(w).name.split("_")[0] for w in wrong)
    for speaker, count in by_speaker.items():
        clips = sum(p.name.startswith(speaker + "_") for p in paths)
        assert f"  {speaker}: {float(count):.1f} errors of {clips} clips" in printed
