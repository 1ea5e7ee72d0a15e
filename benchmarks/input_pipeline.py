"""Input throughput: WAV files on disk -> normalised spectrogram batches, against the original.

    python benchmarks/input_pipeline.py [--data /work/shared/data] [--copies 20] [--batch 64]

Rows (each one pass of speechjax.input_pipeline over the toy training clips, linked `copies`
times into a temporary flat folder so one pass is long enough to time; `data.cache_mb=0`
so every clip is read and decoded from its file; evaluation batches, so no augmentation,
except the row marked "train"):
  seed 32x257x3, seed resized to 224x224x3 (the original's input), logmel 101x40x1 (the
  default), and logmel with the default training augmentation.
The baseline runs the original's steps the way it ran them: a Python loop over clips, per
clip scipy's WAV reader, tests/reference_seed.py (numpy/scipy), normalisation and a bilinear
resize to 224x224 (scipy.ndimage.zoom, order 1).
CPU seconds per clip (all threads of this process) are printed beside wall-clock rates:
on a shared machine they show the cost even when other jobs take cores.
"""

import argparse
import itertools
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import scipy.io.wavfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import default  # noqa: E402
from speechjax import input_pipeline  # noqa: E402
from tests import reference_seed  # noqa: E402


def link_dataset(toy_dataset: pathlib.Path, copies: int, root: pathlib.Path) -> None:
    """A flat train/val/test folder whose train split links every clip `copies` times."""
    for split, times in (("train", copies), ("val", 1), ("test", 1)):
        (root / split).mkdir(parents=True)
        for path in sorted((toy_dataset / split).glob("*.wav")):
            for copy in range(times):
                (root / split / f"{path.stem}_copy{copy}.wav").symlink_to(path)


def time_pipeline(data_dir: pathlib.Path, batch: int, noise_dir: str, **features) -> tuple:
    """(clips, wall seconds, CPU seconds) of one pass, after a few untimed batches.

    With a noise_dir: training batches (augmentation with that background noise), else
    evaluation batches.
    """
    config = default.get_config()
    config.data.source, config.data.dir, config.data.layout = "folder", str(data_dir), "flat"
    config.data.classes_file = str(REPO / "classes.txt")
    config.data.cache_mb = 0
    config.data.noise_dir = noise_dir
    train = bool(noise_dir)
    for key, value in features.items():
        setattr(config.features, key, value)
    pipeline = input_pipeline.create_pipeline(config, norm_stats=fixed_stats(config))

    def batches():
        if train:
            return pipeline.train_batches(0, batch)
        return pipeline.eval_batches("train", batch)

    for _ in itertools.islice(batches(), 3):  # warm-up: tracing, thread pools, page cache
        pass
    wall, cpu = time.perf_counter(), time.process_time()
    clips = sum(int(b[input_pipeline.MASK].sum()) for b in batches())
    return clips, time.perf_counter() - wall, time.process_time() - cpu


def fixed_stats(config) -> input_pipeline.NormStats:
    """Fixed statistics: normalisation costs the same whatever its values."""
    channels = config.features.channels
    return input_pipeline.NormStats((1.0,) * channels, (2.0,) * channels)


def time_original(paths: list[pathlib.Path]) -> tuple:
    """(clips, wall seconds, CPU seconds) of the original's per-clip loop."""
    mean, std = np.array([1.0] * 3), np.array([2.0] * 3)
    wall, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        rate, samples = scipy.io.wavfile.read(path)
        spectrogram = reference_seed.seed_spectrogram(samples / 32768.0, sample_rate=rate)
        reference_seed.resize_bilinear((spectrogram - mean) / std, (224, 224))
    return len(paths), time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = os.environ.get("SPEECHJAX_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data", default=default_data, help="folder holding toy_dataset/")
    parser.add_argument("--copies", type=int, default=20, help="links per training clip")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    args = parser.parse_args()
    toy_dataset = pathlib.Path(args.data) / "toy_dataset"
    if not toy_dataset.is_dir():
        sys.exit(f"{toy_dataset} not found: pass --data or set SPEECHJAX_SHARED_DATA.")

    print(f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}")
    originals = sorted((toy_dataset / "train").glob("*.wav"))
    rows = [("original: numpy/scipy loop, seed + resize 224", *time_original(originals))]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = pathlib.Path(tmp)
        link_dataset(toy_dataset, args.copies, data_dir)
        noise = str(pathlib.Path(args.data) / "_background_noise_")
        runs = [
            ("speechjax seed 32x257x3", "", dict(kind="seed", channels=3)),
            ("speechjax seed 224x224x3", "", dict(kind="seed", channels=3, resize=(224, 224))),
            ("speechjax logmel 101x40x1", "", dict(kind="logmel")),
            ("speechjax logmel 101x40x1, train + augment", noise, dict(kind="logmel")),
        ]
        for name, noise_dir, features in runs:
            rows.append((name, *time_pipeline(data_dir, args.batch, noise_dir, **features)))

    baseline = rows[0][1] / rows[0][2]
    print(f"load average after: {os.getloadavg()[0]:.2f}; batch {args.batch}\n")
    baseline_cpu = rows[0][3] / rows[0][1]
    header = (
        f"{'pipeline':<46} {'clips':>6} {'s':>7} {'clips/s':>8} {'x orig':>7} "
        f"{'CPU ms/clip':>11} {'x orig CPU':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, clips, wall, cpu in rows:
        rate, cpu_per_clip = clips / wall, cpu / clips
        print(
            f"{name:<46} {clips:>6} {wall:>7.2f} {rate:>8.0f} {rate / baseline:>7.1f} "
            f"{1000 * cpu_per_clip:>11.3f} {baseline_cpu / cpu_per_clip:>10.1f}"
        )


if __name__ == "__main__":
    main()
