"""Two processes on this machine as two hosts: jax.distributed over localhost, Gloo
collectives, 2 virtual CPU devices each (tests/multiprocess_worker.py is one process).

Training equals one process with 4 devices on the same global batches; each process reads
its own part of every split and evaluation still counts every example once; one process
writes the run's files; a SIGTERM to one process stops both at the same step, and the
rerun ends where an uninterrupted run ends.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from tests import tiny_config
from tests.helpers import REPO, run_main

WORKER = str(REPO / "tests" / "multiprocess_worker.py")
# What Gloo prints of each connection. Its C++ streams each line as separate pieces (text,
# number, text, ..., newline) from several threads, so pieces of different lines interleave
# anywhere between pieces: match the pieces, not the lines.
GLOO_PIECES = (
    r"\[Gloo\] Rank | is connected to | peer ranks\. "
    r"|Expected number of connected peer ranks is : |\d+"
)
# Split sizes two processes do not divide: parts of 26/25, 7/6 and 6/5 examples.
SPLIT_SIZES = {"train": 51, "validation": 13, "test": 11}
EPOCHS = 3
# main.py's training: 51 clips, 2 processes, 4 per process and step -> 6 steps per epoch.
STEPS_PER_EPOCH = 6
TIMEOUT_SECONDS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int, extra: dict | None = None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(extra or {}))
    env["XLA_FLAGS"] = (
        f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    )
    return env


def _run_together(commands: list[list[str]], envs: list[dict]) -> list[subprocess.CompletedProcess]:
    """Runs the processes side by side; kills all of them if one hangs or the test fails."""
    processes = [
        subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for command, env in zip(commands, envs, strict=True)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_SECONDS) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [
        subprocess.CompletedProcess(c, p.returncode, out, err)
        for c, p, (out, err) in zip(commands, processes, outputs, strict=True)
    ]


def _main_in_two_processes(*flags: str, signal_at: str | None = None):
    """main.py in 2 processes; signal_at "SIGNAL,EPOCH,BATCH" signals process 1 alone."""
    port = _free_port()
    commands, envs = [], []
    for process_id in range(2):
        commands.append(
            [
                sys.executable,
                WORKER,
                "main",
                *flags,
                "--distributed",
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={process_id}",
            ]
        )
        signal_here = {"SPEECHJAX_TEST_SIGNAL_AT": signal_at} if signal_at and process_id else {}
        envs.append(_env(2, signal_here))
    return _run_together(commands, envs)


def _check_ok(results: list[subprocess.CompletedProcess]) -> None:
    for i, result in enumerate(results):
        assert result.returncode == 0, f"process {i} failed:\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def tone_data(tmp_path_factory, workspace):
    """Folder data of the tiny config's 4 words (one tone each, with noise), split sizes
    two processes do not divide."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for split, size in SPLIT_SIZES.items():
        for i in range(size):
            word = i % len(tiny_config.WORDS)
            clip = 0.3 * np.sin(2 * np.pi * 300 * (word + 1) * t) + 0.05 * rng.standard_normal(
                16000
            )
            path = root / split / tiny_config.WORDS[word] / f"{i:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, clip.astype(np.float32), 16000, subtype="PCM_16")
    return root


def _train_flags(workspace, data_root, workdir) -> list[str]:
    return [
        "--config",
        f"tests/tiny_config.py:{workspace}",
        "--config.data.source=folder",
        f"--config.data.dir={data_root}",
        f"--config.train.epochs={EPOCHS}",
        "--workdir",
        str(workdir),
    ]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, workspace, tone_data):
    workdir = tmp_path_factory.mktemp("two") / "run"
    results = _main_in_two_processes(*_train_flags(workspace, tone_data, workdir))
    _check_ok(results)
    return workdir, results


def _results(workdir) -> dict:
    return json.loads((workdir / "results.json").read_text())


def _without_timing(results: dict) -> dict:
    results = dict(results, train_seconds=None)
    results["history"] = [dict(h, seconds=None) for h in results["history"]]
    return results


def test_two_processes_train_like_one_process_with_four_devices(tmp_path):
    port = _free_port()
    outputs = [tmp_path / "two.npz", tmp_path / "one.npz"]
    two = _run_together(
        [
            [sys.executable, WORKER, "steps", str(i), "2", str(port), str(outputs[0])]
            for i in (0, 1)
        ],
        [_env(2), _env(2)],
    )
    one = _run_together(
        [[sys.executable, WORKER, "steps", "0", "1", "0", str(outputs[1])]], [_env(4)]
    )
    _check_ok(two + one)
    with np.load(outputs[0]) as two_state, np.load(outputs[1]) as one_state:
        assert sorted(two_state.files) == sorted(one_state.files)
        # Same global batches, same math; only the order of float reductions may differ.
        np.testing.assert_allclose(two_state["losses"], one_state["losses"], rtol=1e-5)
        assert two_state["losses"][0] != two_state["losses"][-1]  # the steps did train
        for name in one_state.files:
            np.testing.assert_allclose(
                two_state[name], one_state[name], rtol=1e-4, atol=1e-6, err_msg=name
            )


def test_every_example_is_evaluated_once_across_processes(two_process_run):
    workdir, _ = two_process_run
    results = _results(workdir)
    assert results["test_examples"] == SPLIT_SIZES["test"]
    assert [h["step"] for h in results["history"]] == [
        STEPS_PER_EPOCH * epoch for epoch in range(1, EPOCHS + 1)
    ]
    report = json.loads((workdir / "eval_test.json").read_text())
    assert report["num_examples"] == SPLIT_SIZES["test"]
    assert sum(report["support"].values()) == SPLIT_SIZES["test"]
    assert report["support"] == {"yes": 3, "no": 3, "up": 3, "down": 2}


def test_only_process_zero_writes_and_prints(two_process_run):
    workdir, (chief, other) = two_process_run
    log = (workdir / "log.txt").read_text().splitlines()
    assert [line.split(" train ")[0] for line in log if line.startswith("Epoch ")] == [
        f"Epoch {epoch}/{EPOCHS}" for epoch in range(1, EPOCHS + 1)
    ]
    assert sum(line.startswith("Test Acc") for line in log) == 1
    # Gloo's C++ prints its connections on stdout itself: only that may be on process 1's.
    printed = re.sub(GLOO_PIECES, "", other.stdout)
    assert "results in" in chief.stdout and printed.strip() == ""
    assert "Test Acc" in chief.stderr and "Test Acc" not in other.stderr
    assert (workdir / "tensorboard").is_dir() and (workdir / "history.png").is_file()


def test_eval_in_two_processes_equals_eval_in_one(two_process_run, workspace, tone_data, tmp_path):
    workdir, _ = two_process_run
    flags = [
        "--config",
        f"tests/tiny_config.py:{workspace}",
        "--workdir",
        str(workdir),
        "--mode",
        "eval",
        "--config.eval.split=validation",
    ]
    two = _main_in_two_processes(*flags, "--output", str(tmp_path / "two.json"))
    one = _run_together(
        [[sys.executable, "main.py", *flags, "--output", str(tmp_path / "one.json")]], [_env(1)]
    )
    _check_ok(two + one)
    reports = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one")]
    assert reports[0]["num_examples"] == SPLIT_SIZES["validation"]
    assert reports[0]["confusion_matrix"] == reports[1]["confusion_matrix"]
    assert reports[0]["accuracy"] == pytest.approx(reports[1]["accuracy"], abs=1e-6)
    tables = [(tmp_path / f"{n}_predictions.csv").read_text() for n in ("two", "one")]
    # Every file once, in the split's listed order, with the same predictions.
    assert tables[0] == tables[1]
    assert len(tables[0].splitlines()) == 1 + SPLIT_SIZES["validation"]


def _stopped_together(results) -> int:
    """The step both processes saved before exiting with 130 (a test failure otherwise)."""
    for i, result in enumerate(results):
        assert result.returncode == 130, f"process {i}:\n{result.stderr[-4000:]}"
    saved = [
        int(line.split("saved checkpoint step ")[1].split()[0])
        for result in results
        for line in result.stderr.splitlines()
        if line.startswith("interrupted:")
    ]
    assert len(saved) == 2 and saved[0] == saved[1], saved
    assert saved[0] >= STEPS_PER_EPOCH + 2  # not before the signal (and the run did not end)
    return saved[0]


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes(
    two_process_run, workspace, tone_data, tmp_path
):
    uninterrupted, _ = two_process_run
    workdir = tmp_path / "interrupted"
    flags = _train_flags(workspace, tone_data, workdir)
    # Process 1 alone gets SIGTERM while reading the 2nd batch of epoch 2.
    _stopped_together(_main_in_two_processes(*flags, signal_at="SIGTERM,2,2"))
    resumed = _main_in_two_processes(*flags)
    _check_ok(resumed)
    assert _without_timing(_results(workdir)) == _without_timing(_results(uninterrupted))


def test_ctrl_c_on_one_process_stops_both_at_one_step(workspace, tone_data, tmp_path):
    flags = _train_flags(workspace, tone_data, tmp_path / "ctrl_c")
    _stopped_together(_main_in_two_processes(*flags, signal_at="SIGINT,2,2"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--distributed", "--num_processes=2"], "go together: give all three"),
        (["--num_processes=2"], "need --distributed"),
        (["--num_processes=0"], "need --distributed"),
        # Refused before joining: with no peer to join, the join would wait 120 s.
        (
            [
                "--distributed",
                "--coordinator_address=localhost:1",
                "--num_processes=2",
                "--process_id=0",
                "--mode=eval",
                "--audio=x.wav",
            ],
            "--audio is for --mode predict",
        ),
        (["--distributed", "--mode=predict", "--audio=x.wav"], "runs on one machine"),
        (
            [
                "--distributed",
                "--coordinator_address=localhost:1",
                "--num_processes=2",
                "--process_id=2",
            ],
            "--process_id=2 is outside 0..1",
        ),
    ],
)
def test_distributed_flag_mistakes_are_one_error_line(flags, message, workspace):
    result = run_main("--config", f"tests/tiny_config.py:{workspace}", *flags, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
