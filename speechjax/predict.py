"""`--mode predict`: label audio files, and find the commands in long recordings.

Every file gets its top-k labels: the whole file when it is at most one clip long
(zero-padded at the end), else its centre clip, exactly as evaluation treats such clips.
A file longer than one clip is also scanned: a one-clip window every `predict.hop_ms`
(the last one zero-padded past the end) gives class posteriors, and the numpy detector
(`speechjax.detection`) reports the commands in it. Results are printed as a table and
written as JSON, with CSVs beside it, and a PNG per long file shows where the commands are.
"""

import csv
import glob
import os

import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from speechjax import audio, detection, reporting
from speechjax.errors import UserError
from speechjax.inference import Classifier, fit_clip
from speechjax.run import Workdir

# Windows classified per call when scanning a long recording.
_SCAN_BATCH = 64


def expand_audio_paths(specs: list[str]) -> list[str]:
    """Each --audio value (a file, a folder searched recursively, or a glob) -> audio files."""
    if not specs:
        raise UserError("--mode predict needs --audio PATH (a file, a folder or a glob).")
    found: list[str] = []
    for spec in specs:
        path = os.path.expanduser(spec)
        if os.path.isdir(path):
            matches = [
                os.path.join(folder, name)
                for folder, _, names in os.walk(path)
                for name in names
                if audio.is_audio_file(name)
            ]
        elif os.path.isfile(path):
            matches = [path]
        else:
            matches = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
        if not matches and os.path.isdir(path):
            raise UserError(
                f"--audio {spec}: the folder holds no audio file (searched recursively for "
                f"{', '.join(audio.AUDIO_EXTENSIONS)})."
            )
        if not matches:
            raise UserError(f"--audio {spec}: no such file or folder, and no file matches it.")
        found.extend(sorted(matches))
    return list(dict.fromkeys(found))  # each file once, in the order given


def window_starts(num_samples: int, clip_samples: int, hop_samples: int) -> np.ndarray:
    """Sample offsets of the scanning windows: every hop until one reaches the end."""
    last = max(num_samples - clip_samples, 0)
    return np.arange(1 + -(-last // hop_samples)) * hop_samples


def scan(classifier: Classifier, waveform: np.ndarray, hop_samples: int):
    """(window starts in samples [n], posteriors [n, classes]) of a long waveform."""
    clip = classifier.clip_samples
    starts = window_starts(len(waveform), clip, hop_samples)
    padded = np.pad(waveform, (0, max(starts[-1] + clip - len(waveform), 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, clip)[::hop_samples]
    posteriors = [
        classifier.predict(windows[i : i + _SCAN_BATCH]) for i in range(0, len(starts), _SCAN_BATCH)
    ]
    return starts, np.concatenate(posteriors)


def top_labels(probabilities: np.ndarray, class_names, k: int) -> list[dict]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"label": class_names[i], "probability": round(float(probabilities[i]), 6)} for i in order
    ]


def predict_files(
    config: ml_collections.ConfigDict,
    workdir: str,
    audio_specs: list[str],
    overrides=(),
    output: str | None = None,
) -> dict:
    """Labels every file of `audio_specs` with the checkpoint of `workdir` (eval.step);
    writes `output` (default workdir/predictions.json) and returns its record."""
    settings = config.predict  # checked by validation.validate
    paths = expand_audio_paths(audio_specs)
    output = output or Workdir(workdir).predictions
    if os.path.splitext(output)[1].lower() == ".csv":
        # The CSV goes beside the JSON under the same stem: it would overwrite it.
        raise UserError(
            f"--output {output}: predict writes JSON there and its CSVs beside it "
            f"({os.path.splitext(output)[0]}.csv); give a .json path."
        )
    classifier = Classifier.from_workdir(workdir, config.eval.step)
    meta = classifier.metadata
    meta.check_overrides(config, overrides, f"{workdir} (step {classifier.step})")
    names = list(classifier.class_names)
    clip, rate = classifier.clip_samples, classifier.sample_rate
    hop = max(1, round(settings.hop_ms * rate / 1000))
    if os.path.dirname(output):
        os.makedirs(os.path.dirname(output), exist_ok=True)

    plot_names = _plot_names(paths)
    files, detections, skipped, plots = [], [], [], []
    for path in tqdm(paths, desc="predict", unit="file", disable=len(paths) < 2):
        try:
            waveform = audio.read_audio(path, rate)
        except UserError as e:
            skipped.append({"path": path, "reason": str(e)})
            continue
        probabilities = classifier.predict(fit_clip(waveform, clip)[np.newaxis])[0]
        files.append(
            {
                "path": path,
                "duration_s": round(len(waveform) / rate, 4),
                "top": top_labels(probabilities, names, settings.top_k),
            }
        )
        if len(waveform) <= clip:
            continue
        starts, posteriors = scan(classifier, waveform, hop)
        found = detection.detect(
            starts / rate,
            posteriors,
            names,
            clip / rate,
            average_s=settings.average_ms / 1000,
            threshold=settings.threshold,
            suppress_s=settings.suppress_ms / 1000,
        )
        detections.extend({"path": path, **d.to_dict()} for d in found)
        if settings.plot:
            plot_path = f"{os.path.splitext(output)[0]}_{plot_names[path]}.png"
            reporting.plot_detections(
                waveform,
                rate,
                starts / rate,
                clip / rate,
                posteriors,
                names,
                found,
                settings.threshold,
                plot_path,
                title=os.path.basename(path),
            )
            plots.append(plot_path)
    if skipped:
        logging.warning(
            "Skipped %d of %d files: %s",
            len(skipped),
            len(paths),
            "; ".join(s["reason"] for s in skipped[:3]),
        )
    if not files:
        raise UserError(f"None of the {len(paths)} files could be read; first: {skipped[0]}")
    record = {
        "checkpoint": {"workdir": workdir, "step": classifier.step},
        "settings": settings.to_dict(),
        "files": files,
        "detections": detections,
        "skipped": skipped,
        "plots": plots,
    }
    reporting.write_json(output, record)
    _write_csvs(output, files, detections, settings.top_k)
    print(_table(files, detections))
    print(f"{len(files)} files, {len(detections)} detections -> {output}")
    return record


def _plot_names(paths: list[str]) -> dict[str, str]:
    """A distinct file-name part per path for its plot: the path below the folder all of
    them share (so rec/mon/take.wav and rec/tue/take.wav do not overwrite each other),
    made safe for a file name, numbered where two still meet."""
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    names: dict[str, str] = {}
    for path in paths:
        relative = os.path.relpath(os.path.abspath(path), common)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in relative)
        base, count = name, 1
        while name in names.values():
            count += 1
            name = f"{base}-{count}"
        names[path] = name
    return names


def _write_csvs(output: str, files: list[dict], detections: list[dict], top_k: int) -> None:
    stem = os.path.splitext(output)[0]
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        header = ["path", "duration_s"]
        for rank in range(1, top_k + 1):
            header += [f"label_{rank}", f"probability_{rank}"]
        writer.writerow(header)
        for file in files:
            row = [file["path"], file["duration_s"]]
            for top in file["top"]:
                row += [top["label"], top["probability"]]
            writer.writerow(row)
    if detections:
        with open(f"{stem}_detections.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["path", "start_s", "end_s", "label", "score"])
            writer.writeheader()
            writer.writerows(detections)


def _table(files: list[dict], detections: list[dict]) -> str:
    width = min(max(len(f["path"]) for f in files), 60)
    lines = [f"{'file':<{width}}  {'seconds':>7}  top labels"]
    for file in files:
        shown = file["path"] if len(file["path"]) <= width else "..." + file["path"][-width + 3 :]
        tops = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in file["top"])
        lines.append(f"{shown:<{width}}  {file['duration_s']:7.2f}  {tops}")
    if detections:
        lines.append("")
        lines.append("detections:")
        for d in detections:
            lines.append(
                f"  {os.path.basename(d['path'])}  {d['start_s']:7.2f}-{d['end_s']:7.2f} s  "
                f"{d['label']}  {d['score']:.3f}"
            )
    return "\n".join(lines)
