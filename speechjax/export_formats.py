"""Export formats: one JAX function `waveform -> probabilities` as StableHLO, TFLite and ONNX.

The function is anything jittable that maps float32 `[batch, clip_samples]` (samples in
[-1, 1]) to float32 `[batch, num_classes]`, with its parameters closed over as constants, so
the front end travels inside every file and a device computes the features training saw.

| file | route | batch |
| --- | --- | --- |
| `model.stablehlo` | `jax.export`, lowered for CPU and CUDA | symbolic |
| `model.tflite` | `jax2tf.convert` -> `tf.lite.TFLiteConverter`, float32 | 1 |
| `model_int8.tflite` | the same, post-training int8 (weights and activations), float in/out | 1 |
| `model.onnx` | `jax2onnx.to_onnx` of one clip's computation, mapped over the batch | symbolic |

The TFLite files take one clip (`[1, clip_samples]`), as phones and boards run them: with a
symbolic batch the converter adds shape arithmetic around every matmul (SHAPE,
UNSORTED_SEGMENT_PROD), and `jnp` indexing such as `x[:, idx]` lowers to a dynamic gather
it cannot convert at all.

int8: the log-mel front end does not survive int8 activations (power spectra span ten
orders of magnitude; an int8 scale keeps two), so the ops inside `jax.named_scope(float_scope)`
(and everything before them) stay float32 and the network after them is quantized.

The TFLite and ONNX converters get `fn` traced once for one clip and replayed primitive by
primitive (`_one_clip`), so that the few primitives they mishandle can be computed another,
equal way: max pooling (see `_tflite_rewrite`, `_onnx_rewrite`).

`run_artifact` runs an exported file in a fresh Python process (`python -I` on
`artifact_runner.py`, from a temporary folder) that never imports speechjax, as a user's
program would.
"""

import contextlib
import io
import logging as std_logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import jax
import jax.extend
import jax.numpy as jnp
import jax2onnx
import numpy as np
import onnx
import onnxruntime
import tensorflow as tf
from absl import logging
from ai_edge_litert.tools import flatbuffer_utils
from jax.experimental import jax2tf

from speechjax import jax_frontend
from speechjax.errors import UserError

STABLEHLO = "model.stablehlo"
TFLITE = "model.tflite"
TFLITE_INT8 = "model_int8.tflite"
ONNX = "model.onnx"
# Kept float32 in int8 files: the front end, which inference names so (see jax_frontend).
FRONTEND_SCOPE = jax_frontend.SCOPE

# Platforms model.stablehlo is lowered for: servers run it on either.
STABLEHLO_PLATFORMS = ("cpu", "cuda")
# ONNX Runtime 1.14+ loads opset 18; jax2onnx 0.12 writes ReduceMax in its opset-18 form.
ONNX_OPSET = 18
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifact_runner.py")

ProbabilityFn = Callable[[jax.Array], jax.Array]


def export_artifacts(
    fn: ProbabilityFn,
    clip_samples: int,
    calibration: np.ndarray,
    out_dir: str,
    float_scope: str | None = FRONTEND_SCOPE,
) -> dict[str, dict]:
    """Writes the four artifacts of `fn` into `out_dir`; returns {file name: facts}.

    Each entry holds `bytes` and `seconds` (conversion time); the int8 entry also
    `int8_ops` and `float_ops` (operators by output type). ONNX is the one format a model
    may fail to reach (see `export_onnx`): its entry then holds `error` instead.
    """
    _check_function(fn, clip_samples)
    calibration = _check_calibration(calibration, clip_samples)
    _make_out_dir(out_dir)
    path = {name: os.path.join(out_dir, name) for name in (STABLEHLO, TFLITE, TFLITE_INT8, ONNX)}
    results = {
        STABLEHLO: _timed(export_stablehlo, fn, clip_samples, path[STABLEHLO]),
        TFLITE: _timed(export_tflite, fn, clip_samples, path[TFLITE]),
        TFLITE_INT8: _timed(
            export_tflite_int8, fn, clip_samples, calibration, path[TFLITE_INT8], float_scope
        ),
    }
    try:
        results[ONNX] = _timed(export_onnx, fn, clip_samples, path[ONNX])
    except OnnxExportError as e:
        logging.warning("No %s: %s", ONNX, e)
        results[ONNX] = {"error": str(e)}
    return results


def export_stablehlo(fn: ProbabilityFn, clip_samples: int, path: str) -> dict:
    """`jax.export` serialization with a symbolic batch dimension named `batch`."""
    (batch,) = jax.export.symbolic_shape("batch")
    exported = jax.export.export(jax.jit(fn), platforms=STABLEHLO_PLATFORMS)(
        jax.ShapeDtypeStruct((batch, clip_samples), np.float32)
    )
    return {"bytes": _write(path, exported.serialize())}


def export_tflite(fn: ProbabilityFn, clip_samples: int, path: str) -> dict:
    """float32 TFLite of `fn` on one clip; only builtin ops (no TF select ops)."""
    return {"bytes": _write(path, _tflite_converter(fn, clip_samples).convert())}


def export_tflite_int8(
    fn: ProbabilityFn,
    clip_samples: int,
    calibration: np.ndarray,
    path: str,
    float_scope: str | None = FRONTEND_SCOPE,
) -> dict:
    """Post-training int8 TFLite (weights and activations), float32 input and output.

    Activation ranges come from running `calibration` ([n, clip_samples]) through the float
    model. With `float_scope`, every operator up to the last one whose name carries that
    `jax.named_scope` stays float32 (the waveform's padding and framing come before the
    front end's named ops); `None` quantizes everything.
    """
    calibration = _check_calibration(calibration, clip_samples)
    converter = _tflite_converter(fn, clip_samples)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([clip[np.newaxis]] for clip in calibration)
    with warnings.catch_warnings():
        # The debugger opens TF's own (deprecated) interpreter on the models it builds;
        # the artifacts themselves are run with LiteRT.
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
        # Said of every model whose input stays float32, as ours does on purpose.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        # TF's QuantizationDebugger is its documented way to keep chosen nodes in float
        # ("selective quantization"): calibrate once, quantize all but the denylisted nodes.
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=converter.representative_dataset
        )
        if float_scope is not None:
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=_float_prefix(debugger.calibrated_model, float_scope)
            )
        model = debugger.get_nondebug_quantized_model()
    types = [dtype for _, _, dtype in tflite_operators(model)]
    return {
        "bytes": _write(path, model),
        "int8_ops": types.count("INT8"),
        "float_ops": types.count("FLOAT32"),
    }


class OnnxExportError(Exception):
    """jax2onnx could not convert the function, or ONNX Runtime rejected its model."""


def export_onnx(fn: ProbabilityFn, clip_samples: int, path: str) -> dict:
    """ONNX of `fn` with a symbolic batch, by jax2onnx; raises OnnxExportError on failure.

    jax2onnx 0.12 cannot convert speechjax's networks as Flax traces them: its NNX plugins
    reject convolutions with explicit padding, its pad lowering fails on a symbolic batch,
    and NHWC max pooling becomes a 4-D MaxPool that ONNX Runtime rejects. So it converts
    `_onnx_ready(fn)` instead: one clip's computation, mapped over the batch (an ONNX Loop).
    The model is run once in ONNX Runtime on two silent clips before it is kept, since some
    graphs only fail there; a file that cannot run is removed.
    """
    try:
        with _quiet_jax2onnx():
            model = jax2onnx.to_onnx(
                _onnx_ready(fn, clip_samples),
                [("batch", clip_samples)],
                opset=ONNX_OPSET,
                input_names=["waveform"],
                output_names=["probabilities"],
            )
        _tidy_onnx(model)
        # One self-contained file: jax2onnx's own file mode moves every tensor over 1 MB
        # into a model.onnx.data beside it. (Protobuf caps a single file at 2 GB.)
        onnx.save_model(model, path)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: not its notes on unused initializers
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        session.run(None, {"waveform": np.zeros((2, clip_samples), np.float32)})
    except Exception as e:  # any converter or runtime failure means: no ONNX file
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        raise OnnxExportError(f"{type(e).__name__}: {_first_line(e)}") from e
    return {"bytes": os.path.getsize(path)}


def run_artifact(path: str, waveforms: np.ndarray, timeout: float = 600.0) -> np.ndarray:
    """Probabilities [n, num_classes] of an exported file on `waveforms` [n, clip_samples].

    Runs in a fresh `python -I` process started from a temporary folder, so that neither
    the repository nor PYTHONPATH is on its path: the file must work without speechjax.
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: export the model first (--mode export).")
    with tempfile.TemporaryDirectory(prefix="speechjax-run-") as tmp:
        inputs = os.path.join(tmp, "waveforms.npy")
        outputs = os.path.join(tmp, "probabilities.npy")
        np.save(inputs, np.asarray(waveforms, np.float32))
        result = fresh_python([RUNNER, path, inputs, outputs], cwd=tmp, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{os.path.basename(path)} failed in a fresh process "
                f"(exit {result.returncode}):\n{result.stderr[-3000:]}"
            )
        return np.load(outputs)


def fresh_python(args: list[str], cwd: str, timeout: float) -> subprocess.CompletedProcess:
    """This interpreter in isolated mode (-I: no PYTHONPATH, no user site, no script dir)."""
    return subprocess.run(
        [sys.executable, "-I", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def parity(reference: np.ndarray, probabilities: np.ndarray) -> dict:
    """Largest absolute probability difference and top-1 agreement of two [n, k] arrays."""
    reference = np.asarray(reference)
    probabilities = np.asarray(probabilities)
    if reference.shape != probabilities.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {probabilities.shape}")
    return {
        "max_abs_diff": float(np.max(np.abs(reference - probabilities))),
        "top1_agreement": float(np.mean(reference.argmax(-1) == probabilities.argmax(-1))),
    }


def tflite_operators(model: bytes) -> list[tuple[str, str, str]]:
    """(op, output tensor name, output type) of a TFLite model's main graph, in run order."""
    flat = flatbuffer_utils.convert_bytearray_to_object(model)
    graph = flat.subgraphs[0]
    operators = []
    for op in graph.operators:
        output = graph.tensors[op.outputs[0]]
        operators.append(
            (
                flatbuffer_utils.opcode_to_name(flat, op.opcodeIndex),
                output.name.decode(),
                flatbuffer_utils.type_to_name(output.type),
            )
        )
    return operators


def _tflite_converter(fn: ProbabilityFn, clip_samples: int) -> tf.lite.TFLiteConverter:
    """A converter for `fn` on [1, clip_samples]; the model's input is named `waveform`."""
    # jax2tf (jax 0.10) always serializes natively: the graph holds one XlaCallModule op with
    # fn's StableHLO, which the TFLite converter legalizes to builtin ops. Lowered for the
    # CPU whatever machine exports, since that is what TFLite's kernels compute like;
    # without the gradient wrapper, which inference never uses. The same replayed function
    # feeds the float and the int8 model, so both hold one graph.
    converted = jax2tf.convert(
        _one_clip(fn, clip_samples, _tflite_rewrite),
        with_gradient=False,
        native_serialization_platforms=("cpu",),
    )

    @tf.function(
        input_signature=[tf.TensorSpec([1, clip_samples], tf.float32, name="waveform")],
        autograph=False,
    )
    def serve(waveform):
        return converted(waveform)

    return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], serve)


def _float_prefix(model: bytes, scope: str) -> list[str]:
    """Output names of the operators up to the last one named inside `scope`."""
    names = [name for _, name, _ in tflite_operators(model)]
    marker = f"/{scope}/"
    inside = [i for i, name in enumerate(names) if marker in f"/{name}"]
    if not inside:
        raise ValueError(
            f"No operator of the converted model is named inside jax.named_scope({scope!r}): "
            "wrap the front end in it, or pass float_scope=None to quantize everything."
        )
    return names[: inside[-1] + 1]


def _onnx_ready(fn: ProbabilityFn, clip_samples: int) -> ProbabilityFn:
    """`fn` as jax2onnx converts it: one clip's computation replayed from lax primitives
    (never Flax modules, which its plugins would patch), with static shapes, mapped over
    the batch by `lax.map`."""
    one_clip = _one_clip(fn, clip_samples, _onnx_rewrite)
    return lambda waveforms: jax.lax.map(lambda clip: one_clip(clip[np.newaxis])[0], waveforms)


def _tidy_onnx(model: onnx.ModelProto) -> None:
    """Names the output's batch axis `batch`, as the input's (lax.map leaves a placeholder),
    and drops the loop body's unused constants, which ONNX Runtime reports on every load."""
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                used = _names_read(attr.g)
                kept = [init for init in attr.g.initializer if init.name in used]
                del attr.g.initializer[:]
                attr.g.initializer.extend(kept)


def _names_read(graph: onnx.GraphProto) -> set[str]:
    """Every value name read by `graph`'s nodes or outputs, nested graphs included."""
    names = {output.name for output in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                names |= _names_read(sub)
    return names


def _one_clip(fn: ProbabilityFn, clip_samples: int, rewrite) -> ProbabilityFn:
    """`fn` on [1, clip_samples], traced once with nested jits inlined and replayed
    primitive by primitive, with `rewrite` computing some primitives another way."""
    with jax.disable_jit():
        traced = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct((1, clip_samples), np.float32))
    return lambda waveform: _replay(traced.jaxpr, traced.consts, waveform, rewrite)


def _replay(jaxpr, consts, waveform, rewrite):
    """Evaluates a one-input, one-output jaxpr like jax.core.eval_jaxpr, under each
    equation's own name scope (int8's float_scope reads it); `rewrite(eqn, inputs)` may
    return the equation's outputs computed otherwise, or None."""
    env = dict(zip(jaxpr.constvars, consts, strict=True))
    env[jaxpr.invars[0]] = waveform

    def read(var):
        return var.val if isinstance(var, jax.extend.core.Literal) else env[var]

    for eqn in jaxpr.eqns:
        inputs = [read(var) for var in eqn.invars]
        scope = str(eqn.source_info.name_stack)
        with jax.named_scope(scope) if scope else contextlib.nullcontext():
            outputs = rewrite(eqn, inputs)
            if outputs is None:
                params = eqn.primitive.get_bind_params(eqn.params)
                outputs = eqn.primitive.bind(*inputs, **params)
                if not eqn.primitive.multiple_results:
                    outputs = [outputs]
        env.update(zip(eqn.outvars, outputs, strict=True))
    (out,) = jaxpr.outvars
    return read(out)


def _tflite_rewrite(eqn, inputs) -> list | None:
    """A padded max pool as edge padding + an unpadded pool.

    TFLite pads it with -inf, which int8 calibration turns into a scale of ~1e36 shared by
    the pool's output (LiteRT then aborts on the next ADD); edge copies give the same maxima
    whenever each padding is narrower than its window.
    """
    params = eqn.params
    if eqn.primitive is not jax.lax.reduce_window_max_p or not _is_plain_pool(params):
        return None
    padding = params["padding"]
    if not any(lo or hi for lo, hi in padding):
        return None
    if any(
        max(pad) >= size for pad, size in zip(padding, params["window_dimensions"], strict=True)
    ):
        return None
    padded = jnp.pad(inputs[0], padding, mode="edge")
    return [
        jax.lax.reduce_window(
            padded,
            -jnp.inf,
            jax.lax.max,
            params["window_dimensions"],
            params["window_strides"],
            "VALID",
        )
    ]


def _onnx_rewrite(eqn, inputs) -> list | None:
    """A max pool over the middle axes of NHWC (Flax's nnx.max_pool) as the same pool on
    [N*C, H, W]: jax2onnx lowers a rank-r window to an r-D ONNX MaxPool, and ONNX Runtime
    pools over at most three axes."""
    params = eqn.params
    if eqn.primitive is not jax.lax.reduce_window_max_p or not _is_plain_pool(params):
        return None
    window, strides, padding = (
        params[k] for k in ("window_dimensions", "window_strides", "padding")
    )
    if not (
        len(window) == 4
        and window[0] == window[3] == strides[0] == strides[3] == 1
        and tuple(padding[0]) == tuple(padding[3]) == (0, 0)
    ):
        return None
    n, h, w, c = inputs[0].shape
    planes = jnp.transpose(inputs[0], (0, 3, 1, 2)).reshape(n * c, h, w)
    pooled = jax.lax.reduce_window(
        planes,
        -jnp.inf,
        jax.lax.max,
        (1, *window[1:3]),
        (1, *strides[1:3]),
        ((0, 0), *padding[1:3]),
    )
    return [jnp.transpose(pooled.reshape(n, c, *pooled.shape[1:]), (0, 2, 3, 1))]


def _is_plain_pool(params: dict) -> bool:
    """No base or window dilation."""
    return set(params["base_dilation"]) == set(params["window_dilation"]) == {1}


@contextlib.contextmanager
def _quiet_jax2onnx():
    """Hides jax2onnx's noise that says nothing about this model.

    Its dm_pix plugins fail to import against jax 0.10 (logged with tracebacks on first
    use), onnx_ir warns about shape tensors it leaves untyped, and one lowering prints a
    debug line to stdout.
    """
    loggers = [std_logging.getLogger(n) for n in ("jax2onnx.plugins.plugin_system", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(std_logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _check_function(fn: ProbabilityFn, clip_samples: int) -> None:
    """`fn` must map float32 [b, clip_samples] to float32 [b, k] (checked by tracing only)."""
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct((2, clip_samples), np.float32))
    if not (hasattr(out, "shape") and len(out.shape) == 2 and out.shape[0] == 2):
        raise ValueError(
            f"fn must return [batch, num_classes]; on [2, {clip_samples}] it gave {out}"
        )
    if out.dtype != np.float32:
        raise ValueError(f"fn must return float32 probabilities, not {out.dtype}")


def _check_calibration(calibration: np.ndarray, clip_samples: int) -> np.ndarray:
    calibration = np.asarray(calibration, np.float32)
    if calibration.ndim != 2 or calibration.shape[1] != clip_samples or not len(calibration):
        raise ValueError(
            f"calibration must be [n >= 1, {clip_samples}] waveforms, got {calibration.shape}"
        )
    if not np.all(np.isfinite(calibration)):
        raise ValueError("calibration waveforms contain NaN or infinite samples")
    return calibration


def _make_out_dir(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create the export folder {out_dir}: {e.strerror}.") from e


def _write(path: str, data: bytes) -> int:
    """Writes `data` to `path`; returns its size."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise UserError(f"Cannot write {path}: {e.strerror}.") from e
    return len(data)


def _timed(export: Callable[..., dict], *args) -> dict:
    """Runs one export_* function; adds the seconds it took to its facts."""
    start = time.perf_counter()
    facts = export(*args)
    return {**facts, "seconds": round(time.perf_counter() - start, 3)}


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"
