"""Which clips of a labelled folder do trained models miss, and how loud are they?

For each run directory (its best checkpoint), prints the accuracy on the folder's clips,
then the accuracy with each clip's probabilities averaged over time shifts (`--shifts-ms`);
then the accuracy of all the runs' probabilities averaged, and every clip that all the runs
miss, with its peak level in dBFS and what the runs together predicted. That list shows
how much of a test split no recipe can get: clips that are empty or nearly so. Last, the
speakers with the most errors (mean over the runs), from Speech Commands' file names
(`<speaker>_nohash_<n>`): a few speakers can hold a large share of a split's errors.

Labels come from each file's parent folder (split/label/*.wav, mini_speech_commands) or,
where that is not a class name, from the file name up to its first `_` (toy_dataset).

    python benchmarks/missed_clips.py ../shared/data/mini_speech_commands/test \\
        --runs runs/mini-seed0 runs/mini-seed1 runs/mini-seed2
"""

import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechjax import accelerator  # noqa: E402


def label_of(path: pathlib.Path, class_names: list[str]) -> str:
    if path.parent.name in class_names:
        return path.parent.name
    return path.name.split("_")[0]


def speaker_of(path: pathlib.Path, class_names: list[str]) -> str:
    """Speech Commands' speaker id: the file name's first field (mini_speech_commands,
    `dbb40d24_nohash_4`), or its second where the first is the label (toy_dataset)."""
    fields = path.stem.split("_")
    if path.parent.name not in class_names and len(fields) > 1:
        return fields[1]
    return fields[0]


def load_folder(folder: pathlib.Path, class_names: list[str], classifier):
    """Every audio file under folder, fitted to one clip: paths, class ids, waveforms."""
    from speechjax import audio
    from speechjax.inference import fit_clip

    paths = sorted(p for p in folder.rglob("*") if audio.is_audio_file(p.name))
    if not paths:
        sys.exit(f"error: no audio files under {folder}")
    labels = [label_of(p, class_names) for p in paths]
    unknown = sorted(set(labels) - set(class_names))
    if unknown:
        sys.exit(f"error: labels {unknown} of {folder} are not classes of the model")
    waveforms = np.stack(
        [
            fit_clip(audio.read_audio(str(p), classifier.sample_rate), classifier.clip_samples)
            for p in paths
        ]
    )
    return paths, np.array([class_names.index(label) for label in labels]), waveforms


def probabilities_by_shift(classifier, waveforms, shifts_ms) -> dict[float, np.ndarray]:
    """Probabilities of each clip circularly shifted by each of shifts_ms and by 0 ms (as is)."""
    return {
        ms: classifier.predict(np.roll(waveforms, round(ms * classifier.sample_rate / 1000), 1))
        for ms in {0.0, *shifts_ms}
    }


def main():
    """Parses the flags; a user mistake (no checkpoint, unreadable file) ends in one line."""
    from speechjax.errors import UserError

    try:
        report(parse_args())
    except UserError as e:
        sys.exit(f"error: {e}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=pathlib.Path, help="labelled clips to score")
    parser.add_argument("--runs", nargs="+", required=True, help="run directories (workdirs)")
    parser.add_argument("--shifts-ms", type=float, nargs="+", default=[0.0, -50.0, 50.0])
    parser.add_argument("--speakers", type=int, default=10, help="speakers to list by errors")
    return parser.parse_args()


def report(args: argparse.Namespace) -> None:
    accelerator.select_platform()  # before jax is imported
    from speechjax.inference import Classifier

    classifiers = [Classifier.from_workdir(run) for run in args.runs]
    class_names = list(classifiers[0].class_names)
    if any(list(c.class_names) != class_names for c in classifiers):
        sys.exit("error: the runs were trained on different class lists")
    paths, labels, waveforms = load_folder(args.folder, class_names, classifiers[0])

    all_probabilities = []
    for run, classifier in zip(args.runs, classifiers, strict=True):
        by_shift = probabilities_by_shift(classifier, waveforms, args.shifts_ms)
        plain = by_shift[0.0]
        shifted = np.mean([by_shift[ms] for ms in args.shifts_ms], axis=0)
        all_probabilities.append(plain)
        print(
            f"{run}: accuracy {np.mean(plain.argmax(1) == labels):.4f}, averaged over shifts "
            f"{args.shifts_ms} ms {np.mean(shifted.argmax(1) == labels):.4f} ({len(labels)} clips)"
        )
    together = np.mean(all_probabilities, axis=0)
    print(f"runs averaged: accuracy {np.mean(together.argmax(1) == labels):.4f}")

    missed_by_all = np.all([p.argmax(1) != labels for p in all_probabilities], axis=0)
    print(f"missed by every run: {missed_by_all.sum()} clips")
    for i in np.flatnonzero(missed_by_all):
        peak_dbfs = 20 * np.log10(max(np.abs(waveforms[i]).max(), 1e-6))
        guess = class_names[together[i].argmax()]
        print(
            f"  {paths[i].relative_to(args.folder)}: peak {peak_dbfs:6.1f} dBFS, "
            f"predicted {guess} ({together[i].max():.2f})"
        )
    print_errors_by_speaker(paths, labels, all_probabilities, class_names, args.speakers)


def print_errors_by_speaker(paths, labels, all_probabilities, class_names, how_many: int):
    """The `how_many` speakers with the most errors per run, with their clip counts."""
    speakers = np.array([speaker_of(p, class_names) for p in paths])
    wrong = np.mean([p.argmax(1) != labels for p in all_probabilities], axis=0)
    names, clip_counts = np.unique(speakers, return_counts=True)
    errors = np.array([wrong[speakers == name].sum() for name in names])
    order = np.argsort(-errors, kind="stable")[:how_many]
    print(f"errors per run by speaker ({len(names)} speakers, {wrong.sum():.1f} errors per run):")
    for k in order:
        if errors[k] > 0:
            print(f"  {names[k]}: {errors[k]:.1f} errors of {clip_counts[k]} clips")


if __name__ == "__main__":
    main()
