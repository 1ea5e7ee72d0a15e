"""The standard keyword-spotting task: some words, `_unknown_` and `_silence_`.

The 12-class Speech Commands task of the literature (Warden 2018; TFDS `speech_commands`)
has ten words, `_silence_` and `_unknown_`. From a release root read by the folder source,
a classes file that lists `_unknown_` and/or `_silence_` (configs/classes_12.txt, in TFDS's
label order) asks for them:

* `_unknown_`: clips of every word folder that is not a class, drawn (seeded) to
  `data.unknown_fraction` of the split's known-word clips;
* `_silence_`: one-clip windows of the background-noise recordings (`_background_noise_/`
  or `data.noise_dir`), `data.silence_fraction` of the known-word clips. Each split cuts
  its windows from its own share of every recording (train the first 80%, validation the
  next 10%, test the last 10%), and training's background-noise augmentation mixes in
  only the train share, so no noise is in two splits. They are written once as WAV
  files into `data.cache_dir` and then read like every other clip: one code path for all
  examples.

Both fractions default to 0.1, the proportions of TensorFlow's speech-commands example
(`--silence_percentage=10 --unknown_percentage=10`).
"""

import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import soundfile

from speechjax import audio
from speechjax.errors import UserError

SILENCE, UNKNOWN = "_silence_", "_unknown_"
# Each split's share of every noise recording, as fractions of its length.
_NOISE_SHARES = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
_SPLITS = tuple(_NOISE_SHARES)


def wants_task(class_names) -> bool:
    return SILENCE in class_names or UNKNOWN in class_names


def relabel_unknown(
    files: list[tuple[pathlib.Path, str]],
    class_names,
    fraction: float,
    seed: int,
    split: str,
) -> list[tuple[pathlib.Path, str]]:
    """Known-word files as they are; other words' files as `_unknown_`, a seeded draw of
    `fraction` x the known count (all others are left out, not counted as skipped). Data
    that brings its own `_unknown_` clips (the released test set's `_unknown_/` folder) is
    kept as it is."""
    if UNKNOWN not in class_names:
        return files
    if any(label == UNKNOWN for _, label in files):
        return [(f, label) for f, label in files if label in class_names]
    known = [(f, label) for f, label in files if label in class_names]
    others = [(f, UNKNOWN) for f, label in files if label not in class_names]
    count = min(len(others), int(np.ceil(fraction * len(known))))
    rng = np.random.default_rng([seed, _SPLITS.index(split), 1])
    chosen = sorted(rng.choice(len(others), size=count, replace=False)) if count else []
    return known + [others[i] for i in chosen]


def split_share(recording: np.ndarray, split: str) -> np.ndarray:
    """`split`'s share of one noise recording: training's noise bank, when `_silence_` is a
    class, is cut to the train share too, so that no noise is in two splits."""
    start, end = _NOISE_SHARES[split]
    return recording[int(start * len(recording)) : int(end * len(recording))]


def silence_clips(
    noise_files: list[str],
    split: str,
    count: int,
    clip_samples: int,
    sample_rate: int,
    cache_dir: str,
    seed: int,
) -> list[tuple[pathlib.Path, str]]:
    """`count` one-clip windows of the noise recordings (this split's share of each), written
    once as WAVs under cache_dir; [(path, "_silence_")]."""
    if not noise_files:
        raise UserError(
            "The classes file lists _silence_, which is cut from background noise, but there "
            "is none: the release root has no _background_noise_/ folder and data.noise_dir "
            "is empty."
        )
    settings = {
        "noise": [os.path.abspath(p) for p in noise_files],
        "split": split,
        "count": count,
        "clip_samples": clip_samples,
        "sample_rate": sample_rate,
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = pathlib.Path(os.path.expanduser(cache_dir)) / f"silence-{digest}"
    names = [f"silence_{i:05d}.wav" for i in range(count)]
    if not (folder / "done").is_file():
        _write_silence(folder, names, settings)
    return [(folder / name, SILENCE) for name in names]


def _write_silence(folder: pathlib.Path, names: list[str], settings: dict) -> None:
    """Cuts the windows and writes them into a temporary folder renamed into place."""
    rate, length = settings["sample_rate"], settings["clip_samples"]
    start_share, end_share = _NOISE_SHARES[settings["split"]]
    recordings = []
    for path in settings["noise"]:
        share = split_share(audio.read_audio(path, rate), settings["split"])
        if len(share) >= length:
            recordings.append(share)
    if not recordings:
        raise UserError(
            f"No background-noise recording is long enough to give {settings['split']} "
            f"silence clips of {length} samples from its {end_share - start_share:.0%} share."
        )
    rng = np.random.default_rng([settings["seed"], _SPLITS.index(settings["split"]), 2])
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        for i, name in enumerate(names):
            source = recordings[i % len(recordings)]
            start = int(rng.integers(0, len(source) - length + 1))
            # A random level, as silence in real recordings ranges from quiet rooms to noise.
            level = float(rng.uniform(0.0, 1.0))
            window = source[start : start + length] * level
            soundfile.write(partial / name, window, rate, subtype="PCM_16")
        (partial / "done").write_text(json.dumps(settings) + "\n")
        try:
            partial.rename(folder)
        except OSError:
            # Another process (of a multi-process run) finished first: its clips are these.
            # Otherwise the folder is a stale one without "done": replace it.
            if not (folder / "done").is_file():
                shutil.rmtree(folder)
                partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
