"""Test accuracy against the number of training speakers on mini_speech_commands.

About 35 recipe changes leave ResNet-32 near 96% on mini's test speakers (README,
"Accuracy on real voices"), while a pretrained embedding that has heard far more speakers
reaches 97%. This asks the question behind that: how fast does test accuracy grow with
the speakers trained on? It trains one run on nested random subsets of mini's training
speakers (every clip of a chosen speaker, none of the others; validation and test as
they are), each for about the same number of examples seen, so that a point differs from
the next only in how many voices it heard. Each seed picks its own speakers and trains its
own runs. It prints a table and plots test accuracy against the number of speakers
trained on, for each seed and their mean (PNG).

A subset is a folder of symbolic links to the chosen clips (nothing is copied), under
`--out`. Fraction 1 trains on the data folder itself. Finished runs are read, not trained
again (benchmarks/seeds.py's records).

    python benchmarks/speaker_curve.py --fractions 0.25 0.5 1 --seeds 0 1
"""

import argparse
import itertools
import os
import pathlib
import random
import shutil
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import seeds  # noqa: E402

DEFAULT_RUN = "configs/resnet32.py --config.data.train_on_validation=True"
TRAINS_ON_VALIDATION = "--config.data.train_on_validation=True"
# The final fit's 8 epochs of mini's train + validation (5,694 + 595 clips).
DEFAULT_EXAMPLES = 8 * (5694 + 595)
TARGET = 0.97


def speaker_of(clip: pathlib.Path) -> str:
    """Speech Commands names a clip `<speaker>_nohash_<n>.<ext>`."""
    return clip.name.split("_", 1)[0]


def split_clips(mini: pathlib.Path, split: str = "train") -> list[pathlib.Path]:
    """Every clip of `mini`/`split`/<label>/, sorted (a subset must not hang on listing order)."""
    clips = sorted(p for p in (mini / split).glob("*/*") if p.is_file())
    if not clips:
        sys.exit(f"error: {mini / split} holds no clips in <label>/ folders")
    return clips


def speaker_subset(
    shared: pathlib.Path, fraction: float, seed: int, dest: pathlib.Path
) -> tuple[int, int]:
    """Builds `dest` as a `--shared` folder whose mini train split keeps `fraction` of the speakers.

    The speakers are shuffled once by `seed` and the first `int(fraction * n)` kept, so the
    subsets of one seed are nested. Validation, test, classes.txt and the noise folder are
    linked as they are. Returns (speakers kept, training clips kept).
    """
    mini = shared / "mini_speech_commands"
    clips = split_clips(mini)
    speakers = sorted({speaker_of(clip) for clip in clips})
    random.Random(seed).shuffle(speakers)
    keep = set(speakers[: int(fraction * len(speakers))])
    if not keep:
        sys.exit(f"error: fraction {fraction} keeps none of {len(speakers)} speakers")
    if dest.exists():
        shutil.rmtree(dest)
    subset = dest / "mini_speech_commands"
    kept = 0
    for clip in clips:
        if speaker_of(clip) in keep:
            link = subset / "train" / clip.parent.name / clip.name
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(clip.resolve(), link)
            kept += 1
    for name in ("validation", "test", "classes.txt"):
        os.symlink((mini / name).resolve(), subset / name)
    os.symlink((shared / "_background_noise_").resolve(), dest / "_background_noise_")
    return len(keep), kept


def epochs_for(examples: int, clips: int) -> int:
    """Whole epochs of `clips` closest to `examples` examples seen (at least one)."""
    return max(1, round(examples / clips))


def mean_curve(rows: list[dict]) -> tuple[list[int], list[float]]:
    """Speakers trained on and the mean test accuracy over the seeds, per point."""
    speakers = sorted({row["speakers"] for row in rows})
    means = [
        statistics.mean(row["test_accuracy"] for row in rows if row["speakers"] == n)
        for n in speakers
    ]
    return speakers, means


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for seed in sorted({row["seed"] for row in rows}):
        mine = [row for row in rows if row["seed"] == seed]
        ax.plot(
            [row["speakers"] for row in mine],
            [row["test_accuracy"] for row in mine],
            marker="o",
            ls=":",
            alpha=0.6,
            label=f"seed {seed}",
        )
    speakers, means = mean_curve(rows)
    ax.plot(speakers, means, marker="s", color="black", label="mean")
    for x, y in zip(speakers, means, strict=True):
        ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 8), ha="center")
    ax.axhline(TARGET, color="grey", lw=0.8, ls="--", label=f"target {TARGET:.0%}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(speakers, [str(s) for s in speakers])
    ax.set(xlabel="speakers trained on", ylabel="test accuracy (177 unseen speakers)")
    ax.set_title("mini_speech_commands: test accuracy against speakers trained on")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    parser.add_argument("--run", default=DEFAULT_RUN, help="config file and its flags")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="each picks its speakers and its run"
    )
    parser.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES)
    parser.add_argument("--shared", type=pathlib.Path, default=seeds.SHARED_DATA)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "speaker_curve")
    args = parser.parse_args()
    seeds.require_data(args.shared, ["mini_speech_commands", "_background_noise_"])
    if any(not 0 < fraction <= 1 for fraction in args.fractions):
        sys.exit("error: --fractions must lie in (0, 1]")
    mini = args.shared / "mini_speech_commands"
    train = split_clips(mini)
    all_speakers, all_clips = len({speaker_of(c) for c in train}), len(train)
    # Validation's speakers and clips, added to every point when the run trains on them.
    extra_speakers = extra_clips = 0
    if TRAINS_ON_VALIDATION in args.run.split():
        validation = split_clips(mini, "validation")
        extra_speakers, extra_clips = len({speaker_of(c) for c in validation}), len(validation)
    rows = []
    for seed, fraction in itertools.product(args.seeds, sorted(args.fractions)):
        point = args.out / f"speakers-{fraction:g}-seed{seed}"
        if fraction == 1:
            shared, speakers, kept = args.shared, all_speakers, all_clips
        else:
            shared = point / "data"
            speakers, kept = speaker_subset(args.shared, fraction, seed, shared)
        speakers += extra_speakers
        kept += extra_clips
        epochs = epochs_for(args.examples, kept)
        run = f"{args.run} --config.train.epochs={epochs}"
        record = seeds.train(run, seed, seeds.mini_data_flags(shared), point / "run")
        record.update(fraction=fraction, speakers=speakers, clips=kept)
        rows.append(record)
        print(
            f"seed {seed}, fraction {fraction:g}: {speakers} speakers, {kept} clips, "
            f"{epochs} epochs, test {record['test_accuracy']:.4f}",
            flush=True,
        )
    print(f"\nspeaker curve, seeds {args.seeds}: {args.run}")
    print("| speakers trained on | seed | clips | epochs | training min | test |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in sorted(rows, key=lambda row: (row["speakers"], row["seed"])):
        print(
            f"| {row['speakers']} | {row['seed']} | {row['clips']} | {row['epochs']} "
            f"| {row['train_seconds'] / 60:.1f} | {row['test_accuracy']:.3f} |"
        )
    for speakers, mean in zip(*mean_curve(rows), strict=True):
        print(f"| {speakers} | mean | | | | {mean:.3f} |")
    print("\ncommands:")
    for row in rows:
        print("  " + row["command"])
    plot(rows, args.out / "speaker_curve.png")
    print(f"plot: {args.out / 'speaker_curve.png'}")


if __name__ == "__main__":
    main()
