"""benchmarks/input_pipeline.py: its timed passes run and count every clip (timings aside)."""

import numpy as np

from benchmarks.input_pipeline import link_dataset, time_pipeline
from tests.conftest import tone


def test_pipeline_passes_count_every_linked_clip(tiny_wav_tree, tmp_path):
    words = ("yes", "no", "stop")
    per_split = {"train": 2, "val": 1, "test": 1}
    toy = tiny_wav_tree(
        {
            f"{split}/{word}_{i}.wav": tone(1.0, freq=300.0 + 50 * i)
            for split, count in per_split.items()
            for word in words
            for i in range(count)
        }
    )
    noise = tiny_wav_tree({"hum.wav": 0.1 * np.ones(32000, np.float32)})
    data_dir = tmp_path / "linked"
    link_dataset(toy, 3, data_dir)
    for noise_dir in ("", str(noise)):  # evaluation batches, then augmented training ones
        # Batches of 3 divide the 18 clips: training drops a last partial batch.
        clips, wall, cpu = time_pipeline(data_dir, 3, noise_dir, kind="logmel")
        assert clips == 3 * len(words) * 2 and wall > 0 and cpu > 0
