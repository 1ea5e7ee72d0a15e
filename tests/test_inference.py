"""A trained checkpoint used as a model: eval on any data, any device count, refused
contradictions, prediction equal to evaluation."""

import csv
import json
import shutil
import subprocess

import pytest

from speechjax import evaluate, predict, sources, train
from speechjax.errors import UserError
from speechjax.inference import Classifier
from tests import tiny_config
from tests.helpers import run_main


def dataset_root(workspace) -> str:
    """The tiny synthetic set as written on disk (split_label layout)."""
    import pathlib

    (root,) = (pathlib.Path(workspace) / "cache").glob("synthetic-*")
    return root


def eval_config(workspace, **data):
    config = tiny_config.get_config(workspace)
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def read_report(path) -> dict:
    return json.loads(open(path).read())


def same_results(a: dict, b: dict) -> None:
    assert a["num_examples"] == b["num_examples"]
    assert a["accuracy"] == b["accuracy"]
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


@pytest.fixture(scope="module")
def folders(workspace, tmp_path_factory):
    """The test clips in three places: the full dataset, a folder with only test/, and a
    folder of label folders with no split folder at all; and the flat layout's test/ only."""
    full = dataset_root(workspace)
    base = tmp_path_factory.mktemp("folders")
    only_test = base / "only_test"
    shutil.copytree(full / "test", only_test / "test")
    labels_only = base / "labels_only"
    shutil.copytree(full / "test", labels_only)
    flat = base / "flat" / "test"
    flat.mkdir(parents=True)
    for wav in (full / "test").glob("*/*.wav"):
        shutil.copy(wav, flat / f"{wav.parent.name}_{wav.name}")
    return {"full": full, "only_test": only_test, "labels_only": labels_only, "flat": flat.parent}


def test_eval_on_a_test_only_folder_equals_eval_inside_the_full_dataset(
    trained, workspace, folders, tmp_path
):
    overrides = {"data.source", "data.dir"}
    reports = {}
    for name, folder in folders.items():
        config = eval_config(workspace, source="folder", dir=str(folder))
        output = tmp_path / f"{name}.json"
        reports[name] = evaluate.evaluate_checkpoint(config, str(trained), overrides, str(output))
        assert read_report(output) == reports[name]
    training_data = evaluate.evaluate_checkpoint(eval_config(workspace), str(trained))
    for name, report in reports.items():
        assert report["num_examples"] == 16, name
        same_results(report, training_data)
    # Per-class figures and the most confused pairs are in the report.
    assert set(training_data["per_class_f1"]) == set(tiny_config.WORDS)
    assert {"true", "predicted", "count"} <= set(training_data["most_confused"][0])


def test_reports_of_other_data_never_overwrite_the_training_datas(trained, workspace, folders):
    before = (trained / "eval_test.json").read_text()
    config = eval_config(workspace, source="folder", dir=str(folders["labels_only"]))
    evaluate.evaluate_checkpoint(config, str(trained), {"data.source", "data.dir"})
    assert (trained / "eval_test.json").read_text() == before
    (other,) = trained.glob("eval_test-labels_only-*.json")
    assert other.with_name(other.stem + "_predictions.csv").is_file()
    assert list(trained.glob("confusion_test-labels_only-*.png"))


def test_eval_on_three_devices_equals_one(trained, workspace, tmp_path):
    reports = {}
    for devices in (1, 3):
        output = tmp_path / f"devices{devices}.json"
        run_main(
            "--config",
            f"tests/tiny_config.py:{workspace}",
            "--workdir",
            str(trained),
            "--mode",
            "eval",
            "--output",
            str(output),
            devices=devices,
        )
        reports[devices] = read_report(output)
    same_results(reports[3], reports[1])


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("features.n_mels", 64, "features.n_mels: checkpoint 16, given 64"),
        ("model.widths", (4, 4, 4), r"model.widths: checkpoint \[4, 8, 8\], given \[4, 4, 4\]"),
        ("data.clip_seconds", 0.5, "data.clip_seconds: checkpoint 1.0, given 0.5"),
    ],
)
def test_overrides_that_contradict_the_checkpoint_are_refused(
    trained, workspace, tmp_path, key, value, message
):
    config = eval_config(workspace)
    group, field = key.split(".")
    setattr(config[group], field, value)
    with pytest.raises(UserError, match=message):
        evaluate.evaluate_checkpoint(config, str(trained), {key})
    with pytest.raises(UserError, match=message):
        predict.predict_files(config, str(trained), [str(dataset_root(workspace))], {key})
    # The same value from a config file (not the command line) gives way to the checkpoint's.
    assert evaluate.evaluate_checkpoint(config, str(trained), (), str(tmp_path / "r.json"))


def test_a_classes_file_with_other_classes_is_refused(trained, workspace, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("yes\nno\nup\nleft\n")
    config = eval_config(workspace, classes_file=str(classes))
    with pytest.raises(UserError, match="lists 4 classes.*must be the same"):
        evaluate.evaluate_checkpoint(config, str(trained), {"data.classes_file"})


def test_resuming_with_a_changed_front_end_is_refused(trained, workspace, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    config = tiny_config.get_config(workspace)
    config.features.n_mels = 32
    config.train.epochs = 3
    with pytest.raises(UserError, match="Cannot resume.*features.n_mels: checkpoint 16, given 32"):
        train.train_and_evaluate(config, str(copy))


def test_eval_without_a_checkpoint_leaves_the_workdir_as_it_was(workspace, tmp_path):
    with pytest.raises(UserError, match="No checkpoint in"):
        evaluate.evaluate_checkpoint(eval_config(workspace), str(tmp_path / "none"))
    assert not (tmp_path / "none").exists()


def test_eval_with_only_an_unfinished_save_says_train_first(workspace, tmp_path):
    # What a run killed while writing its first checkpoint leaves behind.
    (tmp_path / "run" / "checkpoints" / "1.orbax-checkpoint-tmp-123").mkdir(parents=True)
    with pytest.raises(UserError, match="No finished checkpoint in .*: train first"):
        evaluate.evaluate_checkpoint(eval_config(workspace), str(tmp_path / "run"))


def test_data_with_other_classes_than_the_checkpoint_is_refused():
    sources.check_data_classes(["yes", "no"], ("yes", "no"), "folder", "export")
    with pytest.raises(UserError, match=r"data.source='tfds' has 12 classes, the checkpoint 2: "):
        sources.check_data_classes([str(i) for i in range(12)], ["yes", "no"], "tfds", "export")


@pytest.fixture(scope="module")
def real_clips(shared_data, tmp_path_factory):
    """Real recordings of the tiny model's four words (6 each), as a folder of label folders."""
    source = shared_data / "mini_speech_commands" / "test"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    root = tmp_path_factory.mktemp("real")
    for word in tiny_config.WORDS:
        (root / word).mkdir()
        for clip in sorted((source / word).glob("*.flac"))[:6]:
            shutil.copy(clip, root / word / clip.name)
    return root


def test_predict_gives_evals_top1_on_real_clips(trained, workspace, real_clips, tmp_path):
    config = eval_config(workspace, source="folder", dir=str(real_clips))
    report = tmp_path / "eval.json"
    evaluate.evaluate_checkpoint(config, str(trained), {"data.source", "data.dir"}, str(report))
    with open(tmp_path / "eval_predictions.csv") as f:
        evaluated = {row["path"]: row["predicted"] for row in csv.DictReader(f)}
    output = tmp_path / "predictions.json"
    record = predict.predict_files(config, str(trained), [str(real_clips)], (), str(output))
    predicted = {f["path"]: f["top"][0]["label"] for f in record["files"]}
    assert len(predicted) == len(evaluated) == 24
    assert predicted == evaluated
    assert [len(f["top"]) for f in record["files"]] == [3] * 24
    assert json.loads(output.read_text())["files"] == record["files"]
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["path"]: r["label_1"] for r in rows} == predicted


def test_classifier_batches_any_number_of_clips(trained):
    import numpy as np

    classifier = Classifier.from_workdir(str(trained))
    clips = np.random.default_rng(0).uniform(-0.3, 0.3, (70, classifier.clip_samples))
    together = classifier.predict(clips.astype(np.float32))
    one_by_one = np.concatenate([classifier.predict(c[np.newaxis]) for c in clips[:9]])
    assert together.shape == (70, 4)
    np.testing.assert_allclose(together.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(one_by_one, together[:9], atol=1e-5)
    assert classifier.class_names == tiny_config.WORDS


def test_data_comes_from_the_checkpoint_unless_the_command_line_names_other(
    trained, workspace, real_clips, tmp_path
):
    # A config file whose data differs from the training data's: the checkpoint's wins...
    config = eval_config(workspace, source="folder", dir=str(real_clips))
    record = evaluate.evaluate_checkpoint(config, str(trained), (), str(tmp_path / "a.json"))
    assert record["num_examples"] == 16  # the synthetic test split it was trained with
    # ...and --config.data.* on the command line selects other data.
    overrides = {"data.source", "data.dir"}
    other = evaluate.evaluate_checkpoint(config, str(trained), overrides, str(tmp_path / "b.json"))
    assert other["num_examples"] == 24


def test_a_read_only_run_is_evaluated_into_output(trained, workspace, tmp_path):
    """A trained run nobody may write to (a shared model folder): eval with --output reads
    it and writes only there; without --output it is refused, naming the folder."""
    chattr = shutil.which("chattr")
    shared = tmp_path / "shared_run"
    shutil.copytree(trained, shared)
    if chattr is None or subprocess.run([chattr, "-R", "+i", str(shared)]).returncode != 0:
        pytest.skip("chattr +i unavailable: cannot make a folder read-only for every user")
    try:
        config = ("--config", f"tests/tiny_config.py:{workspace}", "--workdir", str(shared))
        report = tmp_path / "reports" / "test.json"
        run_main(*config, "--mode", "eval", "--output", str(report))
        assert json.loads(report.read_text())["accuracy"] >= 0
        refused = run_main(*config, "--mode", "eval", check=False)
        assert refused.returncode == 2 and f"{shared} is not writable" in refused.stderr
    finally:
        subprocess.run([chattr, "-R", "-i", str(shared)], check=True)


def test_other_data_is_read_in_its_own_layout_not_the_training_folders():
    """A model trained on a release root (layout speech_commands), evaluated on another
    folder: its layout is detected anew, unless the command line names one."""
    from configs import speech_commands12
    from speechjax.normalization import NormStats
    from speechjax.run import RunMetadata

    config = speech_commands12.get_config()
    meta = RunMetadata.from_config(config, ["yes", "no"], NormStats((0.0,), (1.0,)))
    config.data.dir = "new_clips"
    assert meta.apply_to(config, {"data.dir"}).data.layout == "auto"
    config.data.layout = "flat"
    assert meta.apply_to(config, {"data.dir", "data.layout"}).data.layout == "flat"
    assert meta.apply_to(config).data.layout == "speech_commands"
