"""Finding commands in long recordings: detections found / missed / false, and latency.

Builds a recording from real one-word clips of a split (`mini_speech_commands/test` by
default: speakers no model trained on) placed at random gaps in background noise, scans it
as `--mode predict` does (`speechjax.predict.scan` + `speechjax.detection`), and scores
the detections against where the words were put. `--sweep` prints the same for a grid of
thresholds and averaging windows (use a validation split for that: the defaults in
configs/default.py were chosen so). Latency: one clip through the jitted classifier
(median of 100), and the scan rate of a long recording.

    python benchmarks/detection.py --workdir runs/mini_r32 --seconds 30
    python benchmarks/detection.py --workdir runs/mini_r32 --split validation --sweep
"""

import argparse
import dataclasses
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from speechjax import accelerator  # noqa: E402

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclasses.dataclass(frozen=True)
class Word:
    label: str
    start_s: float
    end_s: float


def compose_recording(clips, labels, noise, rate, seconds, noise_rms, seed):
    """Clips at random gaps (0.8-2.5 s) in a noise floor of RMS `noise_rms`, about `seconds`
    long -> (waveform float32, [Word] where each clip was put)."""
    rng = np.random.default_rng(seed)
    total = round(seconds * rate)
    parts, words, position = [], [], 0
    for clip, label in zip(clips, labels, strict=True):
        gap = round(rng.uniform(0.8, 2.5) * rate)
        if position + gap + len(clip) > total:
            break
        parts += [np.zeros(gap, np.float32), clip.astype(np.float32)]
        position += gap
        words.append(Word(label, position / rate, (position + len(clip)) / rate))
        position += len(clip)
    speech = np.concatenate(parts + [np.zeros(total - position, np.float32)])
    start = rng.integers(0, len(noise) - total)
    floor = noise[start : start + total]
    floor = floor * (noise_rms / max(float(np.sqrt(np.mean(floor**2))), 1e-9))
    return np.clip(speech + floor, -1.0, 1.0).astype(np.float32), words


def score(detections, words, min_overlap_s=0.25):
    """(found, missed, false): a detection finds a word of its label whose clip its window
    overlaps by min_overlap_s; each word is found at most once."""
    unmatched = list(words)
    found = false = 0
    for d in detections:
        match = next(
            (
                w
                for w in unmatched
                if w.label == d.label
                and min(d.end_s, w.end_s) - max(d.start_s, w.start_s) >= min_overlap_s
            ),
            None,
        )
        if match is None:
            false += 1
        else:
            unmatched.remove(match)
            found += 1
    return found, len(unmatched), false


def load_clips(folder: pathlib.Path, class_names, rate, count, seed):
    from speechjax import audio

    files = sorted(p for p in folder.glob("*/*") if audio.is_audio_file(p.name))
    files = [p for p in files if p.parent.name in class_names]
    if not files:
        raise SystemExit(f"no clips of the model's classes under {folder}")
    chosen = np.random.default_rng(seed).permutation(len(files))[:count]
    clips = [audio.read_audio(str(files[i]), rate) for i in chosen]
    return clips, [files[i].parent.name for i in chosen]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a trained run")
    parser.add_argument("--data", default=str(DEFAULT_DATA / "mini_speech_commands"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--noise", default=str(DEFAULT_DATA / "_background_noise_"))
    parser.add_argument("--noise-rms", type=float, default=0.01, help="noise floor RMS")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--recordings", type=int, default=1, help="recordings (seeds) to score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="grid of threshold x average_ms")
    parser.add_argument("--save", help="write the (first) recording to this WAV")
    args = parser.parse_args()
    accelerator.select_platform()  # before jax is imported

    import soundfile

    from configs import default
    from speechjax import audio, detection
    from speechjax.errors import UserError
    from speechjax.inference import Classifier
    from speechjax.predict import scan

    settings = default.get_config().predict
    try:
        classifier = Classifier.from_workdir(args.workdir)
    except UserError as e:
        sys.exit(f"error: {e}")
    rate, clip = classifier.sample_rate, classifier.clip_samples
    names = list(classifier.class_names)
    noise_files = sorted(pathlib.Path(args.noise).glob("*.wav"))
    if not noise_files:
        sys.exit(
            f"error: --noise {args.noise}: no .wav recording there; pass a folder of "
            "background-noise WAVs (Speech Commands' _background_noise_/)."
        )
    noise = [audio.read_audio(str(p), rate) for p in noise_files]
    # Each recording's noise floor is one window of a noise file: shorter files are left out.
    kept = [i for i, n in enumerate(noise) if len(n) > round(args.seconds * rate)]
    if not kept:
        longest = max(len(n) for n in noise) / rate
        sys.exit(
            f"error: --seconds {args.seconds}: no recording in {args.noise} is that long "
            f"(the longest is {longest:.1f} s); choose fewer seconds."
        )
    noise_files, noise = [noise_files[i] for i in kept], [noise[i] for i in kept]

    recordings = []
    for r in range(args.recordings):
        seed = args.seed + r
        clips, labels = load_clips(
            pathlib.Path(args.data) / args.split, names, rate, int(args.seconds), seed
        )
        bank = noise[seed % len(noise)]
        waveform, words = compose_recording(
            clips, labels, bank, rate, args.seconds, args.noise_rms, seed
        )
        recordings.append((waveform, words, noise_files[seed % len(noise)].name))
    if args.save:
        soundfile.write(args.save, recordings[0][0], rate)

    hop = round(settings.hop_ms * rate / 1000)
    scans = []
    start = time.perf_counter()
    for waveform, _, _ in recordings:
        scans.append(scan(classifier, waveform, hop))
    seconds_scanned = sum(len(w) for w, _, _ in recordings) / rate
    windows = sum(len(s[0]) for s in scans)
    scan_time = time.perf_counter() - start

    def evaluate(threshold, average_ms, suppress_ms):
        totals = np.zeros(3, int)
        for (starts, posteriors), (_, words, _) in zip(scans, recordings, strict=True):
            found = detection.detect(
                starts / rate,
                posteriors,
                names,
                clip / rate,
                average_s=average_ms / 1000,
                threshold=threshold,
                suppress_s=suppress_ms / 1000,
            )
            totals += score(found, words)
        return totals

    words_total = sum(len(w) for _, w, _ in recordings)
    print(
        f"{len(recordings)} recording(s), {seconds_scanned:.0f} s, {words_total} words from "
        f"{args.split}, noise RMS {args.noise_rms} ({', '.join(n for _, _, n in recordings)})"
    )
    if args.sweep:
        print("threshold  average_ms  found  missed  false")
        for threshold in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
            for average_ms in (0, 300, 500, 800):
                f, m, x = evaluate(threshold, average_ms, settings.suppress_ms)
                print(f"{threshold:9.2f}  {average_ms:10d}  {f:5d}  {m:6d}  {x:5d}")
    f, m, x = evaluate(settings.threshold, settings.average_ms, settings.suppress_ms)
    print(
        f"defaults (threshold {settings.threshold}, average {settings.average_ms:.0f} ms, "
        f"hop {settings.hop_ms:.0f} ms, suppress {settings.suppress_ms:.0f} ms): "
        f"found {f}/{words_total}, missed {m}, false {x}"
    )

    one = np.zeros((1, clip), np.float32)
    classifier.predict(one)
    latencies = []
    for _ in range(100):
        t = time.perf_counter()
        classifier.predict(one)
        latencies.append(time.perf_counter() - t)
    print(
        f"latency: one clip {np.median(latencies) * 1e3:.2f} ms (median of 100); scanning "
        f"{windows / scan_time:.0f} windows/s ({seconds_scanned / scan_time:.1f}x real time at "
        f"hop {settings.hop_ms:.0f} ms, compilation included); {os.cpu_count()} CPU cores"
    )


if __name__ == "__main__":
    main()
