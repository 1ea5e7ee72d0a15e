"""Shared pytest fixtures: the real clips in /work/shared/data and tiny generated audio trees."""

import os
import pathlib

import numpy as np
import pytest
import soundfile

from speechjax import accelerator

# Before anything imports jax: tests run on the CPU (with no CUDA plugin start-up) with
# the CPU convolution flag main.py uses, and share XLA's persistent compilation cache, so
# each distinct step compiles once per machine rather than once per test and subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
accelerator.use_fast_cpu_convolutions()
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.expanduser("~"), ".cache", "speechjax-tests-xla"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

SHARED_DATA_ENV = "SPEECHJAX_SHARED_DATA"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The shared real-data folder (toy_dataset/, _background_noise_/); skips when absent."""
    default = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    path = pathlib.Path(os.environ.get(SHARED_DATA_ENV, default))
    if not (path / "toy_dataset").is_dir():
        pytest.skip(f"real clips not found at {path} (set {SHARED_DATA_ENV} to their folder)")
    return path


def tone(seconds: float = 0.25, rate: int = 16000, freq: float = 440.0, amp: float = 0.5):
    """A float32 sine: distinct, non-silent content for generated clips."""
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def tiny_wav_tree(tmp_path):
    """Factory: tiny_wav_tree({relative path: content}) -> root folder of the written files.

    content: a numpy array (float in [-1, 1] or int16; [n] mono or [n, channels]) written as
    16 kHz audio in the format the suffix names (16-bit PCM for .wav and .flac); a tuple
    (array, sample_rate) for another rate; bytes written as they are (corrupt files); str
    written as text (list files). Each call writes into a new folder.
    """
    count = 0

    def make(files: dict) -> pathlib.Path:
        nonlocal count
        count += 1
        root = tmp_path / f"tree{count}"
        for relative, content in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            elif isinstance(content, str):
                path.write_text(content)
            else:
                samples, rate = content if isinstance(content, tuple) else (content, 16000)
                pcm16 = path.suffix.lower() in (".wav", ".flac")
                soundfile.write(path, samples, rate, subtype="PCM_16" if pcm16 else None)
        return root

    return make


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> str:
    """Classes file and synthetic-data cache of tests/tiny_config.py (generated once)."""
    from tests import tiny_config

    path = str(tmp_path_factory.mktemp("workspace"))
    tiny_config.write_workspace(path)
    return path


@pytest.fixture(scope="session")
def trained(workspace, tmp_path_factory) -> pathlib.Path:
    """A workdir where main.py trained tests/tiny_config.py for 2 epochs (shared, read it only;
    copy it to change it)."""
    from tests.helpers import run_main

    workdir = tmp_path_factory.mktemp("run") / "tiny"
    run_main("--config", f"tests/tiny_config.py:{workspace}", "--workdir", str(workdir))
    return workdir
