"""benchmarks/speaker_curve.py: nested speaker subsets of a Speech Commands split folder."""

import pytest

from benchmarks.speaker_curve import epochs_for, mean_curve, speaker_of, speaker_subset


@pytest.fixture
def shared(tmp_path):
    """A --shared folder: mini with 10 training speakers (2 labels x 2 clips each), noise."""
    mini = tmp_path / "shared" / "mini_speech_commands"
    for label in ("go", "stop"):
        for speaker in range(10):
            for n in range(2):
                path = mini / "train" / label / f"s{speaker:02d}_nohash_{n}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f"{label}{speaker}{n}".encode())
        for split in ("validation", "test"):
            (mini / split / label).mkdir(parents=True)
            (mini / split / label / f"{split[0]}0_nohash_0.wav").write_bytes(b"x")
    (mini / "classes.txt").write_text("go\nstop\n")
    (tmp_path / "shared" / "_background_noise_").mkdir()
    return tmp_path / "shared"


def kept_clips(dest):
    train = dest / "mini_speech_commands" / "train"
    return {p.relative_to(train) for p in train.glob("*/*")}


def test_subset_keeps_whole_speakers_and_nests(shared, tmp_path):
    speakers, clips = speaker_subset(shared, 0.5, seed=0, dest=tmp_path / "half")
    assert (speakers, clips) == (5, 20)
    half = kept_clips(tmp_path / "half")
    by_speaker = {}
    for clip in half:
        by_speaker.setdefault(speaker_of(clip), set()).add(clip)
    # Every clip of a kept speaker, under both labels, and none of the others.
    assert len(by_speaker) == 5 and all(len(c) == 4 for c in by_speaker.values())

    assert speaker_subset(shared, 0.2, seed=0, dest=tmp_path / "fifth") == (2, 8)
    assert kept_clips(tmp_path / "fifth") < half
    other_seed = speaker_subset(shared, 0.5, seed=1, dest=tmp_path / "other")
    assert other_seed == (5, 20) and kept_clips(tmp_path / "other") != half


def test_subset_links_the_originals_and_rebuilds(shared, tmp_path):
    dest = tmp_path / "half"
    speaker_subset(shared, 0.5, seed=0, dest=dest)
    mini = dest / "mini_speech_commands"
    clip = next((mini / "train" / "go").iterdir())
    assert clip.is_symlink()
    assert clip.read_bytes() == (shared / "mini_speech_commands/train/go" / clip.name).read_bytes()
    assert (mini / "classes.txt").read_text() == "go\nstop\n"
    assert sorted(p.name for p in (mini / "test").glob("*/*")) == ["t0_nohash_0.wav"] * 2
    assert (dest / "_background_noise_").resolve() == (shared / "_background_noise_").resolve()
    # A second build (a rerun of the benchmark) replaces the first with the same subset.
    before = kept_clips(dest)
    speaker_subset(shared, 0.5, seed=0, dest=dest)
    assert kept_clips(dest) == before


def test_subset_refuses_an_empty_fraction(shared, tmp_path):
    with pytest.raises(SystemExit, match="keeps none of 10 speakers"):
        speaker_subset(shared, 0.05, seed=0, dest=tmp_path / "none")


def test_epochs_match_the_examples_seen():
    assert epochs_for(8 * 6289, 3422) == 15  # half of mini's training speakers + validation
    assert epochs_for(8 * 6289, 2044) == 25  # a quarter + validation
    assert epochs_for(8 * 6289, 6289) == 8
    assert epochs_for(10, 100) == 1


def test_mean_curve_averages_each_point_over_its_seeds():
    rows = [
        {"speakers": 762, "seed": 0, "test_accuracy": 0.96},
        {"speakers": 444, "seed": 0, "test_accuracy": 0.95},
        {"speakers": 444, "seed": 1, "test_accuracy": 0.94},
        {"speakers": 762, "seed": 1, "test_accuracy": 0.97},
    ]
    speakers, means = mean_curve(rows)
    assert speakers == [444, 762]
    assert means == pytest.approx([0.945, 0.965])
