"""Exported models: file sizes and single-clip latency on this machine.

For a run exported with `--mode export`: the size of every artifact, and the median of 100
single-clip calls (after a warm-up) of the checkpoint under jit (`speechjax.inference`),
`model.stablehlo` (jax.export), `model.tflite` and `model_int8.tflite` (LiteRT) and
`model.onnx` (ONNX Runtime), each on the same real-sized random clip. Accuracy and parity
are in the export's own export.json.

    python benchmarks/export.py --workdir runs/resnet32 [--export-dir runs/resnet32/export]
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from speechjax import accelerator  # noqa: E402

REPEATS = 100


def median_ms(call, clip) -> float:
    call(clip)  # warm-up (compilation, allocation)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call(clip)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def stablehlo_caller(path: str):
    import jax

    exported = jax.export.deserialize(bytearray(pathlib.Path(path).read_bytes()))
    return lambda clip: np.asarray(exported.call(clip))


def tflite_caller(path: str):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    (waveform,) = interpreter.get_input_details()
    (probabilities,) = interpreter.get_output_details()

    def call(clip):
        interpreter.set_tensor(waveform["index"], clip)
        interpreter.invoke()
        return interpreter.get_tensor(probabilities["index"])

    return call


def onnx_caller(path: str):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda clip: session.run(None, {name: clip})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--export-dir", help="default: WORKDIR/export")
    args = parser.parse_args()
    accelerator.select_platform()
    from speechjax.inference import Classifier

    export_dir = pathlib.Path(args.export_dir or os.path.join(args.workdir, "export"))
    record = json.loads((export_dir / "export.json").read_text())
    classifier = Classifier.from_workdir(args.workdir, record["checkpoint"]["step"])
    clip = np.random.default_rng(0).uniform(-0.3, 0.3, (1, record["clip_samples"]))
    clip = clip.astype(np.float32)
    rows = [("checkpoint under jit", None, median_ms(classifier.predict, clip))]
    callers = {
        "model.stablehlo": stablehlo_caller,
        "model.tflite": tflite_caller,
        "model_int8.tflite": tflite_caller,
        "model.onnx": onnx_caller,
    }
    for name, make in callers.items():
        path = export_dir / name
        if path.is_file():
            rows.append((name, path.stat().st_size, median_ms(make(str(path)), clip)))
        else:
            rows.append((name, None, None))
    print(
        f"{record['checkpoint']['workdir']} step {record['checkpoint']['step']}, "
        f"{platform.machine()} {os.cpu_count()} CPU cores, one clip of {record['clip_samples']} "
        f"samples, median of {REPEATS} calls"
    )
    print(f"{'artifact':22s} {'size (MB)':>10s} {'latency (ms)':>13s}")
    for name, size, latency in rows:
        size_text = f"{size / 1e6:10.2f}" if size else f"{'-':>10s}"
        latency_text = f"{latency:13.2f}" if latency is not None else f"{'not written':>13s}"
        print(f"{name:22s} {size_text} {latency_text}")
    verification = record["verification"]
    print(
        f"test accuracy on {verification['test_clips']} clips: checkpoint "
        f"{verification['checkpoint_test_accuracy']:.4f}; "
        + "; ".join(
            f"{name} {figures['test_accuracy']:.4f}"
            for name, figures in verification["artifacts"].items()
        )
    )


if __name__ == "__main__":
    main()
