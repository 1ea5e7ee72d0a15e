"""Runs one exported model file on waveforms, as a user's program would: no speechjax.

    python -I artifact_runner.py MODEL WAVEFORMS.npy PROBABILITIES.npy

MODEL is a `.stablehlo` (jax), `.tflite` (LiteRT) or `.onnx` (ONNX Runtime) file;
WAVEFORMS.npy holds float32 [n, clip_samples]; PROBABILITIES.npy receives float32
[n, num_classes]. speechjax.export_formats.run_artifact starts this file by its path; it imports
numpy and the one runtime the file needs, and nothing from this repository.
"""

import sys

import numpy as np


def run_stablehlo(path: str, waveforms: np.ndarray) -> np.ndarray:
    import jax

    with open(path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    return np.asarray(exported.call(waveforms))


def run_tflite(path: str, waveforms: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    (waveform,) = interpreter.get_input_details()
    (probabilities,) = interpreter.get_output_details()
    # The TFLite files take one clip at a time, as a device runs them.
    rows = []
    for clip in waveforms:
        interpreter.set_tensor(waveform["index"], clip[np.newaxis])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(probabilities["index"])[0])
    return np.stack(rows)


def run_onnx(path: str, waveforms: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (waveform,) = session.get_inputs()
    return session.run(None, {waveform.name: waveforms})[0]


RUNNERS = {".stablehlo": run_stablehlo, ".tflite": run_tflite, ".onnx": run_onnx}


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit(__doc__)
    model, waveforms_path, probabilities_path = argv[1:]
    suffix = model[model.rfind(".") :]
    if suffix not in RUNNERS:
        sys.exit(f"{model}: unknown model file type; expected one of {', '.join(RUNNERS)}")
    waveforms = np.load(waveforms_path).astype(np.float32)
    probabilities = RUNNERS[suffix](model, waveforms)
    np.save(probabilities_path, np.asarray(probabilities, np.float32))


if __name__ == "__main__":
    main(sys.argv)
