"""Where examples come from: a folder (three layouts), TFDS `speech_commands`, or the synthetic set.

`load_source(config)` returns the class names, the splits asked for (of "train",
"validation", "test") and the background-noise files. Examples are (waveform float32 [n] at
data.sample_rate, label): a folder split reads any example by index (`FileSplit.load`, numpy),
which the pipeline uses for exact per-epoch shuffles; a TFDS split is a tf.data stream in a
fixed order (`TfdsSplit.dataset`).

Folder layouts (`data.layout`, "auto" detects them):
  split_label      `<split>/<label>/*.wav`                    (the synthetic set is written so)
  flat             `<split>/<label>_*.wav`, label = file name up to the first "_" (the original's)
  speech_commands  the release root: `<label>/*.wav`, `validation_list.txt`, `testing_list.txt`
                   (paths relative to the root); training = every clip on neither list;
                   `_background_noise_/` is no label but the noise bank.
Split folders may be named `train`; `validation`, `valid` or `val`; `test` or `testing`.
Labels map to ids by line order of `data.classes_file` (TFDS brings its own 12 labels).

Bad input (see `speechjax.audio` for the decoding side):
  missing data.dir, missing or empty split folder, a split left with no usable file,
  unreadable / duplicate / blank-line classes file, unknown layout     -> UserError (stop)
  audio file that `audio.inspect` refuses (corrupt, empty, truncated, undecodable, NaN or
      infinite samples); label not in the classes file; broken symbolic link, folder or
      other non-file with an audio name                                  -> skipped, counted,
      and one warning per split with the counts and the first few file names
  file on validation_list.txt / testing_list.txt that does not exist    -> skipped, counted
Every file is judged here, at listing time (on threads: non-WAV files are decoded in full),
so that no file of a listed split can stop a run later.
"""

import collections
import concurrent.futures
import dataclasses
import os
import pathlib

import numpy as np
import tensorflow as tf
from absl import logging

from speechjax import audio, kws_task, synthetic
from speechjax.errors import UserError

SPLITS = ("train", "validation", "test")
LAYOUTS = ("split_label", "flat", "speech_commands")
SOURCES = ("folder", "tfds", "synthetic")
BACKGROUND_NOISE = "_background_noise_"
_SPLIT_FOLDERS = {
    "train": ("train",),
    "validation": ("validation", "valid", "val"),
    "test": ("test", "testing"),
}
_LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
_TFDS_NAME = "speech_commands"
_TFDS_SAMPLE_RATE = 16000
# File names a skip warning shows.
_SHOWN = 3


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file left out of a split, and why."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True, eq=False)
class FileSplit:
    """One split of audio files: paths, class ids, and what the header probe found."""

    name: str
    paths: tuple[str, ...]
    labels: np.ndarray  # int32 class ids
    infos: tuple[audio.AudioInfo, ...]
    sample_rate: int
    skipped: tuple[Skipped, ...] = ()

    @property
    def num_examples(self) -> int:
        return len(self.paths)

    @property
    def lengths(self) -> np.ndarray:
        """int64 [n]: samples of each example at the split's sample rate."""
        return np.array([i.samples_at(self.sample_rate) for i in self.infos], np.int64)

    @property
    def decoded_bytes(self) -> int:
        """Memory the decoded float32 waveforms take."""
        return 4 * int(self.lengths.sum())

    def shard(self, index: int, count: int) -> "FileSplit":
        """Every count-th file from index: this process's part of the split (interleaved, so
        every process gets every class when the files are listed class by class)."""
        return dataclasses.replace(
            self,
            paths=self.paths[index::count],
            labels=self.labels[index::count],
            infos=self.infos[index::count],
        )

    def shard_positions(self, index: int, count: int) -> np.ndarray:
        """Where the examples of `shard(index, count)` stand in the whole split."""
        return np.arange(self.num_examples)[index::count]

    def load(self, index: int) -> np.ndarray:
        """Example `index`'s waveform, float32 [n] at the split's sample rate."""
        return audio.load(self.paths[index], self.infos[index], self.sample_rate)

    def joined(self, other: "FileSplit") -> "FileSplit":
        """This split's files followed by `other`'s, under this split's name."""
        return dataclasses.replace(
            self,
            paths=self.paths + other.paths,
            labels=np.concatenate([self.labels, other.labels]),
            infos=self.infos + other.infos,
            skipped=self.skipped + other.skipped,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsSplit:
    """One split of TFDS speech_commands (int16 audio at 16 kHz of varying length)."""

    name: str
    builder: object  # tfds.core.DatasetBuilder
    split: str  # TFDS split spec, e.g. "train" or an even_splits part of it
    num_examples: int
    sample_rate: int
    skipped: tuple[Skipped, ...] = ()
    # The sizes of the TFDS splits that `split` adds up ("train+validation"); () for one.
    part_sizes: tuple[int, ...] = ()

    @property
    def decoded_bytes(self) -> int:
        # Clips are at most one second; the sizes are not in the metadata.
        return self.num_examples * self.sample_rate * 4

    def shard(self, index: int, count: int) -> "TfdsSplit":
        import tensorflow_datasets as tfds

        part = tfds.even_splits(self.split, n=count, drop_remainder=False)[index]
        return _tfds_split(self.name, self.builder, part, self.sample_rate)

    def shard_positions(self, index: int, count: int) -> np.ndarray:
        """Where the examples of `shard(index, count)` stand in the whole split: TFDS's
        even_splits cuts contiguous blocks, the first (size % count) one example longer,
        of each split that a "+" spec adds up."""
        sizes = self._sizes
        starts = np.cumsum((0, *sizes[:-1]))
        return np.concatenate(
            [
                start + np.array_split(np.arange(size), count)[index]
                for start, size in zip(starts, sizes, strict=True)
            ]
        )

    def joined(self, other: "TfdsSplit") -> "TfdsSplit":
        """This split's examples followed by `other`'s (a "+" spec), under this split's name."""
        return dataclasses.replace(
            self,
            split=f"{self.split}+{other.split}",
            num_examples=self.num_examples + other.num_examples,
            skipped=self.skipped + other.skipped,
            part_sizes=(*self._sizes, other.num_examples),
        )

    @property
    def _sizes(self) -> tuple[int, ...]:
        return self.part_sizes or (self.num_examples,)

    def dataset(self) -> tf.data.Dataset:
        sample_rate = self.sample_rate

        def convert(example):
            waveform = tf.cast(example["audio"], tf.float32) / 32768.0
            if sample_rate != _TFDS_SAMPLE_RATE:
                waveform = tf.ensure_shape(
                    tf.numpy_function(
                        lambda x: audio.resample(x, _TFDS_SAMPLE_RATE, sample_rate),
                        [waveform],
                        tf.float32,
                        stateful=False,
                    ),
                    [None],
                )
            return waveform, tf.cast(example["label"], tf.int32)

        dataset = self.builder.as_dataset(split=self.split, shuffle_files=False)
        return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


Split = FileSplit | TfdsSplit


@dataclasses.dataclass(frozen=True)
class Source:
    class_names: list[str]
    splits: dict[str, Split]
    noise_files: list[str]
    # The 12-class task's validation and test `_silence_` clips are cut from the noise
    # recordings' last 20%: training's noise bank then keeps only each one's train share.
    noise_train_share_only: bool = False


def load_source(
    config, splits: tuple[str, ...] = SPLITS, class_names: list[str] | None = None
) -> Source:
    """Lists (does not decode) `splits` of `config.data.source`; see the module docstring.

    class_names: a trained model's classes, used instead of data.classes_file (TFDS brings
    its own). Listing only some splits lets a folder hold just the data to evaluate: with one
    split asked for, a folder of label folders with no split folders is that split.
    With data.train_on_validation (the final fit), "train" is train followed by validation
    when both are asked for.
    """
    source = _listed_source(config, splits, class_names)
    if config.data.train_on_validation and {"train", "validation"} <= source.splits.keys():
        train = source.splits["train"].joined(source.splits["validation"])
        source = dataclasses.replace(source, splits={**source.splits, "train": train})
    return source


def _listed_source(config, splits: tuple[str, ...], class_names: list[str] | None) -> Source:
    data = config.data
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise UserError(f"There is no split {unknown[0]!r}; use one of {', '.join(SPLITS)}.")
    if data.source == "tfds":
        return _tfds_source(data, splits)
    if data.source not in SOURCES:
        raise UserError(f"data.source={data.source!r} is unknown; use one of {', '.join(SOURCES)}.")
    if class_names is None:
        class_names = read_classes(data.classes_file)
        classes_origin = data.classes_file
    else:
        classes_origin = "the checkpoint's classes"
    if data.source == "synthetic":
        root = synthetic.ensure_dataset(data, class_names, config.seed)
        layout = "split_label"
    else:
        if not data.dir:
            raise UserError("data.source='folder' needs data.dir, the dataset's root folder.")
        root = pathlib.Path(os.path.expanduser(data.dir))
        if not root.is_dir():
            raise UserError(f"data.dir={str(root)!r} does not exist or is not a folder.")
        layout = detect_layout(root, splits) if data.layout == "auto" else data.layout
        if layout not in LAYOUTS:
            raise UserError(
                f"data.layout={data.layout!r} is unknown; use auto or one of {', '.join(LAYOUTS)}."
            )
    listed = _list_files(root, layout, splits)
    noise_dir = pathlib.Path(os.path.expanduser(data.noise_dir)) if data.noise_dir else None
    if noise_dir is None and layout == "speech_commands" and (root / BACKGROUND_NOISE).is_dir():
        noise_dir = root / BACKGROUND_NOISE
    if kws_task.wants_task(class_names):
        listed = _with_unknown_and_silence(listed, class_names, data, noise_dir, config.seed)
    source_splits = {
        name: _file_split(name, where, files, class_names, data.sample_rate, classes_origin)
        for name, (where, files) in listed.items()
    }
    # Only training mixes in noise: evaluating a folder needs no noise bank.
    train = noise_dir and "train" in splits
    noise_files = list_noise_files(noise_dir, data.sample_rate) if train else []
    return Source(class_names, source_splits, noise_files, kws_task.SILENCE in class_names)


def _with_unknown_and_silence(listed, class_names, data, noise_dir, seed):
    """The 12-class task's extra labels (see `speechjax.kws_task`) added to each split."""
    clip_samples = round(data.clip_seconds * data.sample_rate)
    noise_files = list_noise_files(noise_dir, data.sample_rate) if noise_dir else []
    result = {}
    for split, (where, files) in listed.items():
        files = kws_task.relabel_unknown(files, class_names, data.unknown_fraction, seed, split)
        # Data that brings its own _silence_ clips (the released test set) keeps them alone.
        brings_silence = any(label == kws_task.SILENCE for _, label in files)
        if kws_task.SILENCE in class_names and not brings_silence:
            known = sum(label not in (kws_task.UNKNOWN, kws_task.SILENCE) for _, label in files)
            count = int(np.ceil(data.silence_fraction * known))
            if count:
                files = files + kws_task.silence_clips(
                    noise_files, split, count, clip_samples, data.sample_rate, data.cache_dir, seed
                )
        result[split] = (where, files)
    return result


def model_class_names(model_classes, config, overrides) -> list[str] | None:
    """A trained model's classes for reading data with `config`, after checking that a
    classes file named on the command line (`overrides`) has them; None for TFDS, which
    brings its own (the caller compares them)."""
    if config.data.source == "tfds":
        return None
    model_classes = list(model_classes)
    if "data.classes_file" in overrides:
        named = read_classes(config.data.classes_file)
        if named != model_classes:
            raise UserError(
                f"data.classes_file={config.data.classes_file!r} lists {len(named)} classes "
                f"({', '.join(named[:5])}...), the checkpoint was trained on "
                f"{len(model_classes)} ({', '.join(model_classes[:5])}...): they must be the "
                "same, in the same order. Drop the override to use the checkpoint's."
            )
    return model_classes


def check_data_classes(data_classes, model_classes, source: str, mode: str) -> None:
    """UserError when the data read for `mode` (eval, export) labels other classes than the
    checkpoint's: TFDS brings its own, and ids of two class lists do not compare."""
    if list(data_classes) != list(model_classes):
        raise UserError(
            f"data.source={source!r} has {len(data_classes)} classes, the checkpoint "
            f"{len(model_classes)}: {mode} it with data of its classes."
        )


def read_classes(path: str) -> list[str]:
    """Class names, one a line; line order is the class id."""
    path = os.path.expanduser(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f"data.classes_file={path!r} cannot be read: {e.strerror}.") from e
    except UnicodeDecodeError as e:
        raise UserError(f"data.classes_file={path!r} is not UTF-8 text ({e.reason}).") from e
    seen = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise UserError(f"{path}, line {number}: blank line; write one class name a line.")
        if name in seen:
            raise UserError(
                f"{path}, line {number}: class {name!r} repeats line {seen[name]}; "
                "each class must appear once."
            )
        seen[name] = number
    if not seen:
        raise UserError(f"{path} lists no classes; write one class name a line.")
    return list(seen)


def detect_layout(root: pathlib.Path, splits: tuple[str, ...] = SPLITS) -> str:
    """Which of LAYOUTS `root` is in; UserError when it is none of them.

    The first split folder found tells flat from split_label. A folder with no split
    folders but label folders of audio is split_label too when one split is asked for: it
    is that split (`_list_files`).
    """
    if any((root / name).exists() for name in _LIST_FILES.values()):
        return "speech_commands"
    for split in SPLITS:
        folder = _split_folder(root, split, required=False)
        if folder is None:
            continue
        entries = list(os.scandir(folder))
        if any(e.is_file() and audio.is_audio_file(e.name) for e in entries):
            return "flat"
        if any(e.is_dir() for e in entries):
            return "split_label"
        raise UserError(f"{folder} is empty: it holds no audio files and no label folders.")
    if len(splits) == 1 and any(p.is_dir() for p in root.iterdir()):
        return "split_label"
    raise UserError(
        f"data.dir={str(root)!r}: cannot tell its layout. Expected train/, val/ (or validation/) "
        "and test/ folders holding label folders (split_label) or label_*.wav files (flat), or a "
        "Speech Commands release root with validation_list.txt and testing_list.txt "
        "(speech_commands). Set data.layout to force one."
    )


def list_noise_files(folder: pathlib.Path, sample_rate: int) -> list[str]:
    """The usable audio files of a background-noise folder (bad ones skipped with a warning)."""
    if not folder.is_dir():
        raise UserError(f"data.noise_dir={str(folder)!r} does not exist or is not a folder.")
    paths = [str(p) for p in _audio_files(folder)]
    good, skipped = [], []
    for path, verdict in zip(paths, _inspect_all(paths, sample_rate), strict=True):
        if isinstance(verdict, str):
            skipped.append(Skipped(path, verdict))
        else:
            good.append(path)
    _warn_skipped(f"background noise ({folder})", skipped, len(paths))
    if not good:
        raise UserError(f"{folder} holds no usable background-noise audio files.")
    return good


def _split_folder(root: pathlib.Path, split: str, required: bool = True) -> pathlib.Path | None:
    found = [root / n for n in _SPLIT_FOLDERS[split] if (root / n).is_dir()]
    if len(found) > 1:
        raise UserError(
            f"{root} has {' and '.join(f.name + '/' for f in found)}: keep one {split} folder."
        )
    if not found and required:
        names = " or ".join(f"{n}/" for n in _SPLIT_FOLDERS[split])
        raise UserError(f"{root} has no {split} folder: expected {names}.")
    return found[0] if found else None


def _audio_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """Every entry of `folder` with an audio name, whatever it is: a folder or a broken link
    named like audio is a mistake to report (`_inspect_all` skips it), not to hide."""
    return sorted(folder / e.name for e in os.scandir(folder) if audio.is_audio_file(e.name))


def _inspect_all(paths: list[str], sample_rate: int) -> list[audio.AudioInfo | str]:
    """Each path's AudioInfo, or the reason it is unusable, in order.

    On threads: file reads, libsndfile and soxr release the GIL, and off the raw WAV path
    `audio.inspect` decodes the whole file.
    """
    with concurrent.futures.ThreadPoolExecutor() as pool:
        return list(pool.map(lambda path: _inspect(path, sample_rate), paths))


def _inspect(path: str, sample_rate: int) -> audio.AudioInfo | str:
    if os.path.islink(path) and not os.path.exists(path):
        return f"broken symbolic link: it points to {os.readlink(path)}, which does not exist"
    if os.path.isdir(path):
        return "not a file: a folder with an audio file's name"
    if os.path.exists(path) and not os.path.isfile(path):
        return "not a file: a device, pipe or socket with an audio file's name"
    try:
        return audio.inspect(path, sample_rate)
    except audio.BadAudio as e:
        return str(e)


def _list_files(
    root: pathlib.Path, layout: str, splits: tuple[str, ...]
) -> dict[str, tuple[pathlib.Path, list[tuple[pathlib.Path, str]]]]:
    """split -> (its folder, [(file, label name)]) in a fixed order; UserError if one is empty."""
    if layout == "speech_commands":
        return _list_speech_commands(root, splits)
    has_split_folders = any(_split_folder(root, s, required=False) for s in SPLITS)
    listed = {}
    # One split asked for and no split folders: the folder holds only the split to evaluate.
    only_split = len(splits) == 1 and not has_split_folders
    for split in splits:
        folder = root if only_split else _split_folder(root, split)
        if layout == "flat":
            files = [(f, f.stem.split("_")[0]) for f in _audio_files(folder)]
        else:
            files = [
                (f, label.name)
                for label in sorted(p for p in folder.iterdir() if p.is_dir())
                for f in _audio_files(label)
            ]
        if not files:
            where = "" if layout == "flat" else " in its label folders"
            hint = _other_layout(folder, layout)
            raise UserError(f"{folder} holds no audio files{where} (layout {layout}).{hint}")
        listed[split] = (folder, files)
    return listed


def _other_layout(folder: pathlib.Path, layout: str) -> str:
    """A hint when `folder` looks like the other of flat / split_label (configs/seed.py sets
    flat, the original's layout, and is often pointed at label folders)."""
    entries = list(os.scandir(folder))
    if layout == "flat" and any(
        e.is_dir() and any(audio.is_audio_file(f.name) for f in os.scandir(e.path)) for e in entries
    ):
        return (
            " It holds label folders of audio (the split_label layout): "
            "add --config.data.layout=auto."
        )
    if layout == "split_label" and any(
        e.is_file() and audio.is_audio_file(e.name) for e in entries
    ):
        return " It holds label_*.wav files (the flat layout): add --config.data.layout=auto."
    return ""


def _list_speech_commands(root: pathlib.Path, splits: tuple[str, ...]):
    # Training is every clip on neither list, so it needs both; another split its own.
    needed = _LIST_FILES if "train" in splits else {s: _LIST_FILES[s] for s in splits}
    lists = {}
    for split, name in needed.items():
        list_file = root / name
        if not list_file.is_file():
            why = "both lists to tell training clips" if "train" in splits else f"it for {split}"
            raise UserError(
                f"{list_file} is missing: a Speech Commands root needs {why}. A folder of label "
                "folders with no lists: add --config.data.layout=auto."
            )
        try:
            lines = list_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise UserError(f"{list_file} is not UTF-8 text ({e.reason}).") from e
        lists[split] = [pathlib.PurePosixPath(line.strip()) for line in lines if line.strip()]
    listed = {}
    if "train" in splits:
        on_lists = {str(p) for paths in lists.values() for p in paths}
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
        listed["train"] = (
            root,
            [
                (f, folder.name)
                for folder in folders
                for f in _audio_files(folder)
                if f"{folder.name}/{f.name}" not in on_lists
            ],
        )
    for split, paths in lists.items():
        listed[split] = (root / _LIST_FILES[split], [(root / p, p.parts[0]) for p in paths])
    listed = {split: listed[split] for split in splits}
    for split, (where, files) in listed.items():
        if not files:
            raise UserError(f"{where}: the {split} split of {root} has no audio files.")
    return listed


def _file_split(
    name: str,
    where: pathlib.Path,
    files: list[tuple[pathlib.Path, str]],
    class_names: list[str],
    sample_rate: int,
    classes_origin: str,
) -> FileSplit:
    """Judges every file, skipping (and reporting) the unusable ones and unknown labels."""
    class_ids = {c: i for i, c in enumerate(class_names)}
    reasons = [
        f"label {label!r} is not in {classes_origin}"
        if label not in class_ids
        else None
        if os.path.lexists(path)
        else f"listed in {where.name} but missing"
        for path, label in files
    ]
    to_inspect = [
        str(path) for (path, _), reason in zip(files, reasons, strict=True) if reason is None
    ]
    verdicts = iter(_inspect_all(to_inspect, sample_rate))
    paths, labels, infos, skipped = [], [], [], []
    for (path, label), reason in zip(files, reasons, strict=True):
        verdict = next(verdicts) if reason is None else reason
        if isinstance(verdict, str):
            skipped.append(Skipped(str(path), verdict))
            continue
        paths.append(str(path))
        labels.append(class_ids[label])
        infos.append(verdict)
    _warn_skipped(f"{name} split ({where})", skipped, len(files))
    if not paths:
        raise UserError(
            f"{where}: the {name} split has no usable audio files: all {len(files)} were skipped "
            f"(first: {skipped[0].path}: {skipped[0].reason})."
        )
    return FileSplit(
        name=name,
        paths=tuple(paths),
        labels=np.asarray(labels, np.int32),
        infos=tuple(infos),
        sample_rate=sample_rate,
        skipped=tuple(skipped),
    )


def _warn_skipped(what: str, skipped: list[Skipped], total: int) -> None:
    """One warning for all skipped files of a split: counts by reason, the first few names."""
    if not skipped:
        return
    kinds = collections.Counter(s.reason.split(":")[0] for s in skipped)
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    shown = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:_SHOWN])
    more = f"; and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
    logging.warning(
        "%s: skipped %d of %d files (%s): %s%s", what, len(skipped), total, counts, shown, more
    )


def _tfds_split(name: str, builder, split: str, sample_rate: int) -> TfdsSplit:
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    size = int(dataset.cardinality())
    if size < 0:
        size = builder.info.splits[split].num_examples
    return TfdsSplit(name, builder, split, size, sample_rate)


def _tfds_source(data, splits: tuple[str, ...]) -> Source:
    import tensorflow_datasets as tfds  # slow to import; only this source needs it

    builder = tfds.builder(_TFDS_NAME, data_dir=data.data_dir or None)
    try:
        listed = {name: _tfds_split(name, builder, name, data.sample_rate) for name in splits}
    except AssertionError as e:  # how TFDS reports data that was never downloaded
        where = data.data_dir or "~/tensorflow_datasets"
        raise UserError(
            f"TFDS {_TFDS_NAME} is not prepared in {where} and cannot be downloaded here. On a "
            f"machine with internet run `tfds build {_TFDS_NAME}` and copy its "
            f"~/tensorflow_datasets/{_TFDS_NAME} folder to {where} (or set data.data_dir to "
            "the folder holding it), or use data.source=folder with data.dir, or "
            f"data.source=synthetic. (TFDS said: {e})"
        ) from e
    class_names = list(builder.info.features["label"].names)
    noise_dir = pathlib.Path(os.path.expanduser(data.noise_dir)) if data.noise_dir else None
    train = noise_dir and "train" in splits
    noise_files = list_noise_files(noise_dir, data.sample_rate) if train else []
    return Source(class_names, listed, noise_files)
