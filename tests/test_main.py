"""main.py end to end, in subprocesses as a user runs it: train, eval, multi-device, errors."""

import json

import numpy as np
import pytest

from tests.helpers import run_main


def _results(workdir) -> dict:
    return json.loads((workdir / "results.json").read_text())


def test_training_writes_everything_a_run_promises(trained):
    for name in (
        "config.json",
        "log.txt",
        "norm_stats.json",
        "results.json",
        "history.png",
        "confusion_test.png",
        "eval_test.json",
    ):
        assert (trained / name).is_file(), name
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    assert (trained / "checkpoints").is_dir()
    log = (trained / "log.txt").read_text()
    assert "model: resnet32 lr: 0.003 dropout: 0.1" in log
    assert "Epoch 2/2 train Loss:" in log and "val Loss:" in log
    assert "Best val Acc:" in log and "Test Acc:" in log
    results = _results(trained)
    assert results["epochs_run"] == 2
    assert results["test_examples"] == 16


def test_eval_mode_reproduces_the_logged_validation_accuracy(trained, workspace):
    results = _results(trained)
    step = results["history"][-1]["step"]
    run_main(
        "--config",
        f"tests/tiny_config.py:{workspace}",
        "--workdir",
        str(trained),
        "--mode",
        "eval",
        "--config.eval.split=validation",
        f"--config.eval.step={step}",
    )
    report = json.loads((trained / "eval_validation.json").read_text())
    assert report["step"] == step
    assert report["num_examples"] == 16
    assert report["accuracy"] == results["history"][-1]["val_accuracy"]
    assert report["loss"] == pytest.approx(results["history"][-1]["val_loss"], rel=1e-6)


def test_eval_mode_defaults_to_the_best_checkpoint_on_test(trained, workspace):
    result = run_main(
        "--config", f"tests/tiny_config.py:{workspace}", "--workdir", str(trained), "--mode", "eval"
    )
    report = json.loads((trained / "eval_test.json").read_text())
    results = _results(trained)
    assert report["step"] == results["best_step"]
    assert report["accuracy"] == results["test_accuracy"]
    assert "test: accuracy" in result.stdout


def test_four_devices_give_the_same_losses_as_one(trained, workspace, tmp_path):
    workdir = tmp_path / "four"
    run_main("--config", f"tests/tiny_config.py:{workspace}", "--workdir", str(workdir), devices=4)
    one, four = _results(trained)["history"], _results(workdir)["history"]
    for key in ("train_loss", "val_loss"):
        # Same global batch, same math; only the order of float reductions differs.
        np.testing.assert_allclose([h[key] for h in four], [h[key] for h in one], rtol=1e-3)


def test_misspelled_config_key_is_refused_without_a_traceback():
    result = run_main("--config", "configs/resnet32.py", "--config.train.lrr=0.1", check=False)
    assert result.returncode == 2
    assert 'Did you mean "lr" instead of "lrr"?' in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_without_checkpoints_says_what_to_do(tmp_path, workspace):
    result = run_main(
        "--config",
        f"tests/tiny_config.py:{workspace}",
        "--workdir",
        str(tmp_path / "none"),
        "--mode",
        "eval",
        check=False,
    )
    assert result.returncode == 2
    assert "No checkpoint in" in result.stderr and "train first" in result.stderr
    assert "Traceback" not in result.stderr
