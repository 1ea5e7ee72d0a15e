"""Train-step throughput of one model on this machine (examples/s), with its FLOPs on request.

A full step as `speechjax.train_state` builds it: the NNX model split into graph and
arrays, merged inside one pure `jax.jit` function (forward, backward, Adam update) with the
state donated, on a fixed random batch. XLA reads XLA_FLAGS once per process, so
`--compare-ynn` reruns this script with and without
`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`.

`--flops` adds the step's floating-point operations as XLA's cost analysis of the step
before optimisation counts them (in a CPU-only process when the step runs on a GPU: the
CUDA plugin's analysis of the compiled step leaves out the cuDNN convolutions), the
achieved FLOP/s and, on a GPU whose peak is known (PEAK_TFLOPS), the model FLOP
utilisation (MFU): achieved FLOP/s over the peak of the precision the step runs
in (bfloat16: dense bf16 tensor cores; float32: TF32 tensor cores, which XLA uses for
float32 convolutions and matmuls on NVIDIA GPUs at JAX's default precision).

    python benchmarks/models.py --model resnet32 --input-shape 101,40,1 --compare-ynn
    python benchmarks/models.py --model resnet18 --input-shape 101,64,1 --dtype bfloat16 --flops
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
FLOPS = "XLA cost analysis of the step before optimisation"
FLOPS_ON_CPU = f"{FLOPS}, counted on the CPU"

# Dense (no sparsity) datasheet peaks in TFLOP/s, by a substring of jax's device_kind:
# (bfloat16 tensor cores, TF32 tensor cores). First match wins, so PCIe/NVL come first.
PEAK_TFLOPS = (
    ("H100 PCIe", (756.5, 378.0)),
    ("H100 NVL", (835.5, 417.5)),
    ("H100", (989.4, 494.7)),  # SXM5 (device_kind "NVIDIA H100 80GB HBM3")
    ("H200", (989.4, 494.7)),
    ("A100", (312.0, 156.0)),
)


def peak_flops(device_kind: str, dtype: str) -> tuple[float, str] | None:
    """(peak FLOP/s, what it is) for a step in `dtype` on `device_kind`; None if unknown."""
    for name, (bf16, tf32) in PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            if dtype == "bfloat16":
                return bf16 * 1e12, f"{name} dense bf16 {bf16:g} TFLOP/s"
            return tf32 * 1e12, f"{name} dense TF32 {tf32:g} TFLOP/s"
    return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--input-shape", default="101,40,1", help="frames,bins,channels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps after warm-up")
    parser.add_argument("--num-classes", type=int, default=35)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--flops", action="store_true", help="report XLA's FLOPs per step, FLOP/s and MFU"
    )
    parser.add_argument(
        "--compare-ynn", action="store_true", help=f"run without and with {YNN_FLAG}"
    )
    parser.add_argument("--count-flops-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def count_flops_on_cpu(args) -> float | None:
    """count_flops in a fresh process pinned to the CPU (for a GPU run's MFU)."""
    argv = [sys.executable, __file__, "--count-flops-only", "--model", args.model]
    argv += ["--input-shape", args.input_shape, "--batch-size", str(args.batch_size)]
    argv += ["--dtype", args.dtype, "--num-classes", str(args.num_classes)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    value = done.stdout.strip().splitlines()[-1]
    return None if value == "None" else float(value)


def compare_ynn(argv):
    """Rerun this script in fresh processes, once per XLA_FLAGS setting."""
    argv = [a for a in argv if a != "--compare-ynn"]
    base = os.environ.get("XLA_FLAGS", "").replace(YNN_FLAG, "").strip()
    for flags in (base, f"{base} {YNN_FLAG}".strip()):
        env = {**os.environ, "XLA_FLAGS": flags}
        subprocess.run([sys.executable, __file__, *argv], env=env, check=True)


def _cost(analysis) -> dict:
    """compiled/lowered .cost_analysis() is a dict, or a list of one in older jax."""
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else {}
    return dict(analysis or {})


def make_step(model_name, shape, dtype, num_classes=35, seed=0):
    """(init, step, eval graph) of one model: `init() -> (params, model_state, opt_state)`
    (jitted) and the pure train step `(params, model_state, opt_state, x, y) -> (same three,
    loss)`, built as `speechjax.train_state` builds them."""
    import jax
    import optax
    from flax import nnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from configs import default
    from speechjax.models import create_model, set_training

    config = default.get_config().model
    config.unlock()
    config.name, config.dtype = model_name, dtype
    tx = optax.adam(1e-3)

    def build():
        rngs = nnx.Rngs(params=jax.random.key(seed, impl="rbg"), dropout=seed + 1)
        return create_model(config, num_classes, shape, rngs)

    # Graphs from an abstract model, arrays from one compiled init (as train_state does).
    abstract = nnx.eval_shape(build)
    train_graph, _, _ = nnx.split(abstract, nnx.Param, ...)
    set_training(abstract, False)
    eval_graph, _, _ = nnx.split(abstract, nnx.Param, ...)

    @jax.jit
    def init():
        _, params, model_state = nnx.split(build(), nnx.Param, ...)
        return params, model_state, tx.init(params)

    def step(params, model_state, opt_state, x, y):
        model = nnx.merge(train_graph, params, model_state)

        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        _, params, model_state = nnx.split(model, nnx.Param, ...)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), model_state, opt_state, loss

    return init, step, eval_graph


def build_step(model_name, shape, batch_size, dtype, num_classes=35, seed=0):
    """(compiled step, lowered step, (params, model_state, opt_state), x, y, eval forward).

    The step (see make_step) donates its three state arguments; `eval forward` is
    `x -> logits` in inference mode (for the HLO count).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    init, step, eval_graph = make_step(model_name, shape, dtype, num_classes, seed)
    state = init()
    x = jax.random.normal(jax.random.key(1), (batch_size, *shape), jnp.float32)
    y = jnp.arange(batch_size, dtype=jnp.int32) % num_classes
    lowered = jax.jit(step, donate_argnums=(0, 1, 2)).lower(*state, x, y)
    compiled = lowered.compile()

    def forward(x):
        return nnx.merge(eval_graph, state[0], state[1])(x)

    return compiled, lowered, state, x, y, forward


def count_flops(model_name, shape, batch_size, dtype, num_classes=35) -> float | None:
    """FLOPs of one train step by XLA's cost analysis of the step as written (before
    optimisation), from shapes alone: nothing is compiled or run.

    Use it on a CPU backend (JAX_PLATFORMS=cpu): the CUDA plugin offers no cost analysis of
    a lowered step, and its analysis of the compiled step leaves out the convolutions that
    cuDNN runs (measured with jax 0.11.2 on an H100: ResNet-32 at batch 32 came to 0.46
    GFLOP/step against 26 by this count).
    """
    import jax
    import jax.numpy as jnp

    init, step, _ = make_step(model_name, shape, dtype, num_classes)
    state = jax.eval_shape(init)
    x = jax.ShapeDtypeStruct((batch_size, *shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    return _cost(jax.jit(step).lower(*state, x, y).cost_analysis()).get("flops")


def add_utilisation(result: dict, flops: float | None, source: str) -> dict:
    """Sets flops, flop_per_s and, on a GPU whose peak is known, mfu in a measure() result."""
    for key in ("flops", "flop_per_s", "peak_flop_per_s", "peak", "mfu"):
        result.pop(key, None)
    result["flops"], result["flops_source"] = flops, source
    if flops and result.get("seconds_per_step"):
        result["flop_per_s"] = flops / result["seconds_per_step"]
        if result.get("platform") == "gpu":
            peak = peak_flops(result["device"], result["dtype"])
            if peak:
                result["peak_flop_per_s"], result["peak"] = peak
                result["mfu"] = result["flop_per_s"] / peak[0]
    return result


def time_steps(compiled, state, x, y, steps=None, min_time=1.0, repeats=3):
    """Per-step seconds (median over `repeats` blocks of `steps` steps, or of as many steps
    as take about `min_time` seconds) after two warm-up steps; returns (seconds, steps, loss,
    state)."""
    import jax

    def run(n, state):
        loss = None
        for _ in range(n):
            *state, loss = compiled(*state, x, y)
        jax.block_until_ready(loss)
        return state, loss

    state, loss = run(2, state)  # warm-up: first-run allocations, autotuned kernels loaded
    if steps is None:
        start = time.perf_counter()
        state, loss = run(3, state)
        per_step = (time.perf_counter() - start) / 3
        steps = max(3, min(1000, int(min_time / max(per_step, 1e-6))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, loss = run(steps, state)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times), steps, float(loss), state


def measure(
    model_name,
    shape,
    batch_size,
    dtype,
    steps=None,
    min_time=1.0,
    repeats=3,
    num_classes=35,
    count_convolutions=False,
) -> dict:
    """One model's train step: compile, time, count FLOPs. Returns the figures as a dict."""
    import jax

    start = time.perf_counter()
    compiled, lowered, state, x, y, forward = build_step(
        model_name, shape, batch_size, dtype, num_classes
    )
    compile_s = time.perf_counter() - start
    result = {
        "model": model_name,
        "input": "x".join(str(v) for v in shape),
        "batch": batch_size,
        "dtype": dtype,
        "device": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        "compile_s": compile_s,
    }
    if count_convolutions:
        hlo = jax.jit(forward).lower(x).as_text()
        result["convolutions"] = hlo.count("stablehlo.convolution")
        result["nhwc"] = hlo.count("[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]")
    # What XLA's cost analysis says of the compiled step; on a GPU it misses the cuDNN
    # convolutions (see count_flops), so it is kept apart and used only on a CPU.
    try:
        result["flops_compiled"] = _cost(compiled.cost_analysis()).get("flops")
    except Exception as e:  # not every backend offers it
        result["flops_compiled"] = None
        result["flops_compiled_error"] = f"{type(e).__name__}: {e}"
    seconds, timed_steps, loss, state = time_steps(
        compiled, state, x, y, steps=steps, min_time=min_time, repeats=repeats
    )
    del state
    result.update(
        seconds_per_step=seconds,
        timed_steps=timed_steps,
        repeats=repeats,
        examples_per_s=batch_size / seconds,
        loss=loss,
    )
    if result["platform"] == "cpu":
        try:
            add_utilisation(
                result, count_flops(model_name, shape, batch_size, dtype, num_classes), FLOPS
            )
        except Exception as e:
            result["flops_error"] = f"{type(e).__name__}: {e}"
    return result


def describe(r: dict) -> str:
    """One plain line per measurement."""
    line = (
        f"{r['model']} {r['input']} batch {r['batch']} {r['dtype']} on {r['device']}: "
        f"{r['examples_per_s']:.1f} examples/s ({r['seconds_per_step'] * 1000:.2f} ms/step, "
        f"median of {r['repeats']} x {r['timed_steps']} steps; compile {r['compile_s']:.1f} s; "
        f"loss {r['loss']:.3f})"
    )
    if "convolutions" in r:
        line += f"; {r['convolutions']} convolutions in the forward HLO, {r['nhwc']} NHWC/HWIO"
    return line


def describe_flops(r: dict) -> str:
    if not r.get("flops"):
        gpu = r.get("platform") == "gpu"
        why = " (on a GPU: see count_flops / gpu_check.py)" if gpu else ""
        return f"  FLOPs: not counted{why}; compiled step's cost analysis {r.get('flops_compiled')}"
    line = f"  FLOPs/step {r['flops'] / 1e9:.2f} G ({r.get('flops_source')})"
    line += f"; {r['flop_per_s'] / 1e12:.2f} TFLOP/s achieved"
    if "mfu" in r:
        line += f"; MFU {100 * r['mfu']:.1f}% of {r['peak']}"
    else:
        line += "; MFU: no known peak for this device"
    return line


def benchmark(args):
    shape = tuple(int(v) for v in args.input_shape.split(","))
    result = measure(
        args.model,
        shape,
        args.batch_size,
        args.dtype,
        steps=args.steps,
        repeats=1,
        num_classes=args.num_classes,
        count_convolutions=True,
    )
    print(f"{describe(result)} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    if args.flops:
        if result["platform"] != "cpu":
            add_utilisation(result, count_flops_on_cpu(args), FLOPS_ON_CPU)
        print(describe_flops(result), flush=True)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.count_flops_only:
        shape_ = tuple(int(v) for v in arguments.input_shape.split(","))
        print(
            count_flops(
                arguments.model,
                shape_,
                arguments.batch_size,
                arguments.dtype,
                arguments.num_classes,
            )
        )
    elif arguments.compare_ynn:
        compare_ynn(sys.argv[1:])
    else:
        benchmark(arguments)
