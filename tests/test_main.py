"""main.py end to end, in subprocesses as a user runs it: train, eval, multi-device, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO, run_main


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


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    "override, hint",
    [
        ("--config.train.lrr=0.1", "did you mean --config.train.lr?"),
        ("--config.train.learning_rate=0.1", "did you mean --config.train.lr?"),
        ("--config.train.epoch=3", "did you mean --config.train.epochs?"),
    ],
)
def test_misspelled_config_key_is_refused_with_a_hint_without_a_traceback(override, hint):
    result = run_main("--config", "configs/resnet32.py", override, check=False)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line.startswith(f"error: {override.split('=')[0]} names a config field")
    assert hint in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ("def get_config(:\n", "error: --config file: SyntaxError: invalid syntax"),
        (None, "error: --config file: OSError: [Errno 2] No such file or directory"),
    ],
    ids=["syntax-error", "missing"],
)
def test_config_file_that_does_not_load_is_one_error_line(tmp_path, content, message):
    path = tmp_path / "my_config.py"
    if content is not None:
        path.write_text(content)
    result = run_main("--config", str(path), check=False)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line.startswith(message)
    assert "Traceback" not in result.stderr


def test_flags_of_other_modes_are_refused_when_training(tmp_path, workspace):
    config = ("--config", f"tests/tiny_config.py:{workspace}", "--workdir", str(tmp_path / "r"))
    for flag, message in (
        (
            "--output=x.json",
            "error: --output is for the other modes: training writes into --workdir.",
        ),
        ("--audio=x.wav", "error: --audio is for --mode predict."),
    ):
        result = run_main(*config, flag, check=False)
        assert result.returncode == 2 and error_lines(result) == [message], result.stderr
    assert not (tmp_path / "r").exists()


def test_bad_settings_are_refused_before_any_data_is_read(tmp_path, workspace):
    """Refused at start-up: no workdir (config.json, log header, norm_stats.json) and no
    synthetic data are written, nothing is compiled."""
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    result = run_main(
        "--config",
        f"tests/tiny_config.py:{workspace}",
        "--workdir",
        str(workdir),
        f"--config.data.cache_dir={cache}",
        "--config.model.name=vgg16",
        "--config.train.optimizer=adagrad",
        "--config.train.epochs=0",
        check=False,
    )
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: config.train.epochs=0: must be an integer >= 1 (to test a trained run without "
        "training it, use --mode eval).",
        "error: config.model.name='vgg16': must be one of alexnet, resnet18, resnet34, "
        "resnet50, resnet32, densenet121, bcresnet, speech_embedding.",
        "error: config.train.optimizer='adagrad': must be one of adam, adamw, sgd.",
    ]
    assert "Traceback" not in result.stderr
    assert not workdir.exists() and not cache.exists()


def test_workdir_under_a_regular_file_is_one_error_line(tmp_path, workspace):
    (tmp_path / "notes").write_text("a file, not a folder")
    workdir = tmp_path / "notes" / "run"
    result = run_main(
        "--config", f"tests/tiny_config.py:{workspace}", "--workdir", str(workdir), check=False
    )
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: --workdir {workdir}: {tmp_path / 'notes'} is a file, so no folder can be made "
        "under it; choose another --workdir."
    ]
    assert "Traceback" not in result.stderr


def test_file_system_error_from_the_environment_is_one_error_line(tmp_path, workspace):
    """The synthetic data's cache folder cannot be made (a file is in the way): the OSError
    is named in one line, as every error of the user's files and folders."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = run_main(
        "--config",
        f"tests/tiny_config.py:{workspace}",
        "--workdir",
        str(tmp_path / "run"),
        f"--config.data.cache_dir={tmp_path / 'blocker' / 'cache'}",
        check=False,
    )
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line.startswith(f"error: {tmp_path / 'blocker'}") and "Not a directory" in line
    assert "Traceback" not in result.stderr


def test_a_second_signal_exits_at_once_with_one_line(tmp_path, workspace):
    workdir = tmp_path / "run"
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("w") as stderr_sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "main.py",
                "--config",
                f"tests/tiny_config.py:{workspace}",
                "--workdir",
                str(workdir),
                "--config.train.epochs=1000",
            ],
            cwd=REPO,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
            stdout=subprocess.DEVNULL,
            stderr=stderr_sink,
            text=True,
        )
    try:
        # Signals once the first epoch's progress bar is up, inside the loop whose guard
        # turns the first signal into "checkpoint after this step". In CI the bar was still
        # open when the message came, and the message ended its line instead of starting one.
        deadline = time.time() + 300
        while "epoch 1/" not in stderr_file.read_text():
            assert process.poll() is None and time.time() < deadline, "training never started"
            time.sleep(0.1)
        time.sleep(0.5)
        # Two kinds of signal: two of one kind that arrive while the main thread is inside
        # compiled code merge into one (Unix signals do not queue).
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
    stderr = stderr_file.read_text()
    assert process.returncode == 130, stderr
    assert [
        line for line in stderr.splitlines() if line.startswith(("error:", "interrupted:"))
    ] == ["interrupted: stopped at once, without saving; earlier checkpoints are kept."], stderr
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr


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
