"""speechjax.export_formats: every artifact of a toy classifier, reloaded in a fresh process.

The toy has the real classifier's shape: waveform [B, 16000] -> centred 25 ms frames every
10 ms (reshape + slices) -> Hann window and a real DFT as two matmuls -> power -> HTK mel
matmul -> log(max(., 1e-6)) -> normalise, all inside jax.named_scope("frontend"); then a
3x3 NHWC convolution, batch norm, ReLU, global mean pool, dense, softmax. One export, run
once per artifact on every clip, serves all tests.

Tolerances. The float artifacts compute the same float32 graph with other kernels (XLA,
XNNPACK, ONNX Runtime's MLAS) that sum the 400-term DFT and 257-term mel products in other
orders; that moved probabilities by at most 2e-5 here (the batch norm's division amplifies
it), so 1e-4 leaves a 5x margin while any wrong op moves them by far more. int8 (network
only, front end float), on the 24 real clips: the largest probability difference measured
0.013 and top-1 agreed on every clip; the bounds (0.05, 90%) leave room for other CPUs'
rounding without hiding a broken quantization (quantizing the front end too gave
differences of 1.0 and 29% agreement).
"""

import os
import pathlib

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import onnx
import pytest
import soundfile
from flax import nnx

from speechjax import export_formats as formats
from speechjax.errors import UserError
from speechjax.models import layers

CLIP = 16000
WINDOW = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
FFT = 512
MELS = 40
CLASSES = 8
CHANNELS = 16
FLOAT_TOLERANCE = 1e-4
INT8_TOLERANCE = 0.05
INT8_MIN_AGREEMENT = 0.9
FLOAT_ARTIFACTS = (formats.STABLEHLO, formats.TFLITE, formats.ONNX)


def toy_classifier(norm_clips: np.ndarray, seed: int = 0):
    """A random-weight log-mel CNN: float32 [B, CLIP] -> probabilities [B, CLASSES].

    Like a trained network, its convolution is followed by a batch norm (statistics of
    `norm_clips`) before the ReLU, and the head sees pooled features centred on their
    mean over those clips: with raw random weights every feature mostly measures loudness
    and nearly every clip gets the same class, which would make top-1 agreement
    meaningless.
    """
    rng = np.random.default_rng(seed)
    n = np.arange(WINDOW)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / WINDOW)
    angle = 2 * np.pi * np.outer(n, np.arange(FFT // 2 + 1)) / FFT
    cos = (hann[:, None] * np.cos(angle)).astype(np.float32)
    sin = (hann[:, None] * -np.sin(angle)).astype(np.float32)
    mel = librosa.filters.mel(sr=16000, n_fft=FFT, n_mels=MELS, htk=True, norm=None)
    mel = mel.T.astype(np.float32)
    kernel = (0.3 * rng.normal(size=(3, 3, 1, CHANNELS))).astype(np.float32)
    dense = rng.normal(size=(CHANNELS, CLASSES)).astype(np.float32)
    bias = (0.1 * rng.normal(size=CLASSES)).astype(np.float32)
    frames = CLIP // HOP + 1
    chunks = -(-WINDOW // HOP)

    def frame(waveform):
        # Frame t covers samples [t*HOP - WINDOW/2, t*HOP + WINDOW/2): cut the padded
        # signal into hops and join `chunks` consecutive hops (slices, not a gather).
        padded = jnp.pad(
            waveform, ((0, 0), (WINDOW // 2, (frames + chunks - 1) * HOP - CLIP - WINDOW // 2))
        )
        hops = padded.reshape(padded.shape[0], frames + chunks - 1, HOP)
        parts = [
            jax.lax.slice_in_dim(
                jax.lax.slice_in_dim(hops, j, j + frames, axis=1),
                0,
                min(HOP, WINDOW - j * HOP),
                axis=2,
            )
            for j in range(chunks)
        ]
        return jnp.concatenate(parts, axis=-1)

    def conv(waveform):
        with jax.named_scope(formats.FRONTEND_SCOPE):
            x = frame(waveform)
            real, imag = x @ cos, x @ sin
            logmel = jnp.log(jnp.maximum((real * real + imag * imag) @ mel, 1e-6))
            features = ((logmel + 4.0) / 4.0)[..., None]
        return jax.lax.conv_general_dilated(
            features, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    y = np.asarray(jax.jit(conv)(norm_clips))
    mean, std = y.mean((0, 1, 2)), y.std((0, 1, 2)) + 1e-3
    centre = np.maximum((y - mean) / std, 0).mean((1, 2)).mean(0)

    def classify(waveform):
        pooled = jax.nn.relu((conv(waveform) - mean) / std).mean(axis=(1, 2))
        return jax.nn.softmax(3.0 * (pooled - centre) @ dense + bias, axis=-1)

    return classify


def random_clips() -> np.ndarray:
    """Silence, noise from -40 dB to full scale, and a tone: the front end's whole range."""
    rng = np.random.default_rng(1)
    t = np.arange(CLIP) / 16000
    clips = [np.zeros(CLIP)]
    clips += [amplitude * rng.uniform(-1, 1, CLIP) for amplitude in (0.01, 0.1, 0.5, 1.0)]
    clips += [0.5 * np.sin(2 * np.pi * 440 * t)]
    return np.stack(clips).astype(np.float32)


def read_clips(folder: pathlib.Path, per_word: int) -> np.ndarray:
    """The first `per_word` clips of each word folder, padded or cut to CLIP samples."""
    clips = []
    for word in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(word.glob("*.flac"))[:per_word]:
            samples, rate = soundfile.read(path, dtype="float32")
            assert rate == 16000, path
            clips.append(np.pad(samples[:CLIP], (0, max(0, CLIP - len(samples)))))
    return np.stack(clips)


@pytest.fixture(scope="module")
def real_clips():
    """mini_speech_commands: 3 test clips per word to compare on, 4 train clips to calibrate."""
    default = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    root = pathlib.Path(os.environ.get("SPEECHJAX_SHARED_DATA", default)) / "mini_speech_commands"
    if not (root / "test").is_dir():
        return None
    return {"test": read_clips(root / "test", 3), "train": read_clips(root / "train", 4)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, real_clips):
    """One export of the toy; every artifact run once, in a fresh process, on every clip."""
    clips = calibration = random_clips()
    if real_clips is not None:
        clips = np.concatenate([clips, real_clips["test"]])
        calibration = real_clips["train"]
    fn = toy_classifier(calibration)
    out_dir = tmp_path_factory.mktemp("export")
    results = formats.export_artifacts(fn, CLIP, calibration, str(out_dir))
    outputs = {
        name: formats.run_artifact(str(out_dir / name), clips)
        for name in (*FLOAT_ARTIFACTS, formats.TFLITE_INT8)
    }
    return {
        "dir": out_dir,
        "results": results,
        "clips": clips,
        "reference": np.asarray(jax.jit(fn)(clips)),
        "outputs": outputs,
        "num_random": len(random_clips()),
    }


def test_export_writes_every_artifact_and_reports_its_size(exported):
    results = exported["results"]
    assert set(results) == {*FLOAT_ARTIFACTS, formats.TFLITE_INT8}
    for name, facts in results.items():
        assert "error" not in facts, facts
        assert facts["bytes"] == (exported["dir"] / name).stat().st_size > 0
        assert facts["seconds"] > 0


@pytest.mark.parametrize("name", FLOAT_ARTIFACTS)
def test_float_artifact_matches_jax_on_random_clips(exported, name):
    n = exported["num_random"]
    figures = formats.parity(exported["reference"][:n], exported["outputs"][name][:n])
    assert figures["max_abs_diff"] < FLOAT_TOLERANCE, figures
    assert figures["top1_agreement"] == 1.0, figures


@pytest.mark.parametrize("name", FLOAT_ARTIFACTS)
def test_float_artifact_matches_jax_on_real_clips(exported, real_clips, name):
    if real_clips is None:
        pytest.skip("mini_speech_commands not found in ../shared/data (SPEECHJAX_SHARED_DATA)")
    n = exported["num_random"]
    figures = formats.parity(exported["reference"][n:], exported["outputs"][name][n:])
    assert figures["max_abs_diff"] < FLOAT_TOLERANCE, figures
    assert figures["top1_agreement"] == 1.0, figures


def test_int8_model_is_close_on_real_clips(exported, real_clips):
    if real_clips is None:
        pytest.skip("mini_speech_commands not found in ../shared/data (SPEECHJAX_SHARED_DATA)")
    n = exported["num_random"]
    probabilities = exported["outputs"][formats.TFLITE_INT8][n:]
    figures = formats.parity(exported["reference"][n:], probabilities)
    assert figures["max_abs_diff"] < INT8_TOLERANCE, figures
    assert figures["top1_agreement"] >= INT8_MIN_AGREEMENT, figures


def test_int8_model_keeps_the_front_end_float_and_quantizes_the_network(exported):
    operators = formats.tflite_operators((exported["dir"] / formats.TFLITE_INT8).read_bytes())
    # The QUANTIZE op that hands the features to the network carries a front-end name too.
    front_end = [
        op for op in operators if f"/{formats.FRONTEND_SCOPE}/" in op[1] and op[0] != "QUANTIZE"
    ]
    assert {op[0] for op in front_end} >= {"FULLY_CONNECTED", "LOG"}
    assert {dtype for _, _, dtype in front_end} == {"FLOAT32"}
    network = {(op, dtype) for op, _, dtype in operators if op in ("DEPTHWISE_CONV_2D", "CONV_2D")}
    network |= {(op, dtype) for op, _, dtype in operators[-4:] if op == "FULLY_CONNECTED"}
    assert network and {dtype for _, dtype in network} == {"INT8"}, network
    facts = exported["results"][formats.TFLITE_INT8]
    assert facts["int8_ops"] > 0 and facts["float_ops"] >= len(front_end)


def test_dynamic_batch_where_promised(exported):
    """StableHLO and ONNX take any batch (the parity runs used all clips at once)."""
    serialized = (exported["dir"] / formats.STABLEHLO).read_bytes()
    stablehlo = jax.export.deserialize(bytearray(serialized))
    (waveform,) = stablehlo.in_avals
    assert str(waveform.shape[0]) == "batch" and waveform.shape[1] == CLIP
    assert set(stablehlo.platforms) == set(formats.STABLEHLO_PLATFORMS)
    for name in (formats.STABLEHLO, formats.ONNX):
        assert exported["outputs"][name].shape == (len(exported["clips"]), CLASSES)
    model = onnx.load(exported["dir"] / formats.ONNX)
    axes = [
        [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
        for value in (*model.graph.input, *model.graph.output)
    ]
    assert axes == [["batch", CLIP], ["batch", CLASSES]]


def test_runner_process_cannot_import_speechjax(tmp_path, monkeypatch):
    repo = str(pathlib.Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", repo)
    result = formats.fresh_python(["-c", "import speechjax"], cwd=repo, timeout=60)
    assert result.returncode != 0 and "No module named 'speechjax'" in result.stderr


class SmallNet(nnx.Module):
    """speechjax's building blocks as a ResNet stem and block use them, each of which a
    converter trips over as Flax traces it: convolutions with explicit padding, batch norm,
    a padded NHWC max pool feeding a residual add, average pooling."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = layers.conv(1, 4, 3, padding=1, dtype=jnp.float32, rngs=rngs)
        self.bn = layers.batch_norm(4, dtype=jnp.float32, rngs=rngs)
        self.block = layers.conv(4, 4, 3, padding=1, dtype=jnp.float32, rngs=rngs)
        self.conv2 = layers.conv(4, 8, 3, stride=2, padding=1, dtype=jnp.float32, rngs=rngs)
        self.head = layers.Head(8, CLASSES, 0.1, rngs=rngs)

    def __call__(self, waveform):
        x = waveform.reshape(waveform.shape[0], 100, 160, 1)
        x = layers.max_pool(nnx.relu(self.bn(self.conv1(x))), 3, 2, padding=1)
        x = nnx.relu(x + self.block(x))
        x = layers.avg_pool(self.conv2(x), 2, 2)
        return jax.nn.softmax(self.head(layers.global_avg_pool(x)), axis=-1)


@pytest.fixture(scope="module")
def small_net():
    net = SmallNet(nnx.Rngs(0))
    net.eval()
    graph, state = nnx.split(net)
    return lambda waveform: nnx.merge(graph, state)(waveform)


def test_onnx_converts_flax_networks_with_max_pooling(tmp_path, small_net):
    path = tmp_path / formats.ONNX
    formats.export_onnx(small_net, CLIP, str(path))
    clips = random_clips()
    figures = formats.parity(np.asarray(small_net(clips)), formats.run_artifact(str(path), clips))
    assert figures["max_abs_diff"] < FLOAT_TOLERANCE and figures["top1_agreement"] == 1.0


def test_int8_of_a_padded_max_pool_runs_in_litert(tmp_path, small_net):
    # Padded with -inf, the pool's int8 scale came out near 1e36 and LiteRT aborted.
    path = tmp_path / formats.TFLITE_INT8
    formats.export_tflite_int8(small_net, CLIP, random_clips(), str(path), float_scope=None)
    clips = random_clips()
    figures = formats.parity(np.asarray(small_net(clips)), formats.run_artifact(str(path), clips))
    assert figures["max_abs_diff"] < INT8_TOLERANCE, figures


def test_onnx_is_one_file_even_with_large_weights(tmp_path):
    weights = np.random.default_rng(0).normal(size=(CLIP, 32)).astype(np.float32)  # 2 MB

    def dense(waveform):
        return jax.nn.softmax(waveform @ weights, axis=-1)

    formats.export_onnx(dense, CLIP, str(tmp_path / formats.ONNX))
    assert os.listdir(tmp_path) == [formats.ONNX]
    clips = random_clips()
    figures = formats.parity(
        np.asarray(dense(clips)),
        formats.run_artifact(str(tmp_path / formats.ONNX), clips),
    )
    assert figures["max_abs_diff"] < FLOAT_TOLERANCE, figures


def test_onnx_failure_is_reported_and_leaves_no_file(tmp_path):
    # jax2onnx 0.12 writes rfft as an ONNX DFT that ONNX Runtime rejects at opset 18.
    def fft_front_end(waveform):
        spectrum = jnp.abs(jnp.fft.rfft(waveform.reshape(waveform.shape[0], 100, 160)))
        return jax.nn.softmax(spectrum.mean(axis=1)[:, :CLASSES], axis=-1)

    path = tmp_path / formats.ONNX
    with pytest.raises(formats.OnnxExportError, match="DFT"):
        formats.export_onnx(fft_front_end, CLIP, str(path))
    assert not path.exists()


def test_int8_needs_the_float_scope_in_the_graph(tmp_path):
    with pytest.raises(ValueError, match=r"jax.named_scope\('nowhere'\)"):
        formats.export_tflite_int8(
            toy_classifier(random_clips()),
            CLIP,
            random_clips(),
            str(tmp_path / "m.tflite"),
            "nowhere",
        )


def first_samples(waveform):
    """The cheapest function of the right type, for checks that fail before converting."""
    return jax.nn.softmax(waveform[:, :CLASSES], axis=-1)


@pytest.mark.parametrize("shape", [(0, CLIP), (4, CLIP - 1), (CLIP,)])
def test_calibration_must_be_clips_of_the_right_length(tmp_path, shape):
    with pytest.raises(ValueError, match="calibration must be"):
        formats.export_artifacts(first_samples, CLIP, np.zeros(shape), str(tmp_path))


def test_function_must_return_a_batch_of_float32_probabilities(tmp_path):
    with pytest.raises(ValueError, match=r"\[batch, num_classes\]"):
        formats.export_artifacts(lambda w: w.sum(), CLIP, random_clips(), str(tmp_path))


def test_export_folder_that_cannot_be_created_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="Cannot create the export folder"):
        formats.export_artifacts(first_samples, CLIP, random_clips(), str(blocker / "export"))
