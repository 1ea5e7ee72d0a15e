"""Streaming command detection with an exported model: LiteRT and numpy, no JAX, no TF.

Reads a WAV file in chunks of `--hop-ms` as a microphone would deliver them, keeps the
last clip of audio in a ring buffer, runs `model.tflite` (from `--mode export`) on it after
every chunk and feeds the probabilities to speechjax's numpy detector, printing each
command as it is heard. Its windows are those of `--mode predict` and its settings the
`predict.*` values export.json recorded (each can be overridden below), so on a recording
longer than one clip it reports the same detections.

    python docs/stream_tflite.py runs/resnet32/export recording.wav
"""

import argparse
import json
import pathlib
import sys
import wave

import numpy as np
from ai_edge_litert.interpreter import Interpreter

# speechjax.detection imports numpy only: take it from this checkout, or copy the file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from speechjax.detection import CommandDetector  # noqa: E402


def chunks(path: str, rate: int, first: int, hop: int):
    """float32 mono chunks of a 16-bit PCM WAV: `first` samples, then `hop` at a time."""
    with wave.open(path, "rb") as f:
        if f.getframerate() != rate or f.getsampwidth() != 2:
            sys.exit(f"{path}: need 16-bit PCM at {rate} Hz (the model's rate)")
        channels, size = f.getnchannels(), first
        while True:
            frames = f.readframes(size)
            if not frames:
                return
            pcm = np.frombuffer(frames, "<i2").reshape(-1, channels).mean(axis=1)
            yield (pcm / 32768.0).astype(np.float32)
            size = hop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export_dir", help="the folder --mode export wrote")
    parser.add_argument("wav", help="a 16-bit PCM WAV at the model's sample rate")
    for name in ("hop_ms", "average_ms", "threshold", "suppress_ms"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, help="export.json's")
    args = parser.parse_args()

    export_dir = pathlib.Path(args.export_dir)
    info = json.loads((export_dir / "export.json").read_text())
    for name, value in info["detection"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    rate, clip = info["sample_rate"], info["clip_samples"]
    labels = (export_dir / "labels.txt").read_text().splitlines()
    hop = max(1, round(args.hop_ms * rate / 1000))

    interpreter = Interpreter(model_path=str(export_dir / "model.tflite"))
    interpreter.allocate_tensors()
    (waveform_input,) = interpreter.get_input_details()
    (probabilities_output,) = interpreter.get_output_details()
    detector = CommandDetector(
        labels, clip / rate, args.average_ms / 1000, args.threshold, args.suppress_ms / 1000
    )

    ring = np.zeros(clip, np.float32)  # the last `clip` samples heard
    received = 0  # samples read so far
    window = 0  # start of the next window, in samples

    def classify(start: int) -> None:
        interpreter.set_tensor(waveform_input["index"], ring[np.newaxis])
        interpreter.invoke()
        probabilities = interpreter.get_tensor(probabilities_output["index"])[0]
        found = detector.update(start / rate, probabilities)
        if found is not None:
            print(
                f"{found.start_s:7.2f}-{found.end_s:7.2f} s  {found.label}  {found.score:.3f}",
                flush=True,
            )

    for chunk in chunks(args.wav, rate, clip, hop):
        ring = np.concatenate([ring[len(chunk) :], chunk])
        received += len(chunk)
        if received == window + clip:  # the ring holds exactly [window, window + clip)
            classify(window)
            window += hop
    # The end: windows reaching past the last sample see zeros there, as --mode predict's.
    end = received
    while received > clip and window - hop + clip < received:
        shift = window + clip - end
        ring = np.concatenate([ring[shift:], np.zeros(shift, np.float32)])
        end += shift
        classify(window)
        window += hop


if __name__ == "__main__":
    main()
