"""Every model's train step (float32 and bfloat16, two batch sizes) and the JAX inference
function, in one process, within a time budget; what `benchmarks/gpu_check.sh` runs.

Needs jax, flax, optax and ml_collections only (no TensorFlow): the train step is
`benchmarks/models.py`'s, the inference function is `speechjax.inference.Classifier`'s
(waveform -> JAX log-mel front end -> network -> softmax) around random weights, since a
fresh machine has no checkpoint. Each figure is printed as a plain line, appended to
`<out>/train_steps.jsonl` / `<out>/inference.jsonl` as it is measured, and summed up in a
table at the end (also `<out>/summary.md`). Past `--deadline` seconds the remaining runs are
listed as skipped. XLA compiles a GPU train step in seconds to a minute, one after another;
`--compile-workers N` first compiles them in N processes into JAX's persistent cache
(JAX_COMPILATION_CACHE_DIR), then times them one at a time. Those compilations autotune
their kernels with the others running beside them on the GPU, which can pick a slower
kernel now and then; the timing itself is alone on the device.

    JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache python benchmarks/gpu_check.py --out gpu_out \
        --deadline 330 --compile-workers 5
    JAX_PLATFORMS=cpu python benchmarks/gpu_check.py --smoke   # a few tiny runs on a CPU
"""

import argparse
import fnmatch
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import models as bench  # noqa: E402  (benchmarks/models.py)

NUM_CLASSES = 35


def model_inputs():
    """(config file, model name, input shape) for every registered model at its config's
    input size, and ResNet18 at the original's 224 x 224 x 3; most informative first."""
    import ml_collections

    from configs import alexnet, densenet121, resnet18, resnet32, resnet34, resnet50
    from speechjax import frontend_settings

    runs = []
    for module in (resnet32, resnet18, resnet50, resnet34, alexnet, densenet121):
        config = module.get_config()
        shape = frontend_settings.output_shape(
            ml_collections.ConfigDict(config.features.to_dict()),
            round(config.data.clip_seconds * config.data.sample_rate),
            config.data.sample_rate,
        )
        runs.append((module.__name__, config.model.name, tuple(int(v) for v in shape)))
    runs.insert(2, ("configs.seed", "resnet18", (224, 224, 3)))
    return runs


def append_jsonl(path: Path | None, record: dict) -> None:
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def run_key(model: str, shape_or_input, batch: int, dtype: str) -> str:
    """model-input-batch-dtype, e.g. resnet18-224x224x3-256-bfloat16."""
    text = shape_or_input if isinstance(shape_or_input, str) else "x".join(map(str, shape_or_input))
    return f"{model}-{text}-{batch}-{dtype}"


def train_runs(args) -> list[tuple[str, str, tuple[int, int, int], int, str]]:
    """(config, model, shape, batch, dtype) of every train-step run, in the order timed."""
    runs = model_inputs()
    if args.models:
        runs = [r for r in runs if r[1] in args.models.split(",")]
    runs = [
        (config_name, model_name, shape, int(batch), dtype)
        for config_name, model_name, shape in runs
        for batch in args.batches.split(",")
        for dtype in args.dtypes.split(",")
    ]
    if args.select:
        patterns = args.select.split(",")
        runs = [r for r in runs if any(fnmatch.fnmatch(run_key(*r[1:]), p) for p in patterns)]
    return runs


def count_flops_worker(args, path: Path) -> None:
    """Appends {"key", "flops"} per train run to `path` (run with JAX_PLATFORMS=cpu)."""
    for _config, model_name, shape, batch, dtype in train_runs(args):
        try:
            flops = bench.count_flops(model_name, shape, batch, dtype, NUM_CLASSES)
        except Exception as e:
            print(f"[flops] {run_key(model_name, shape, batch, dtype)}: {e!r}", flush=True)
            continue
        append_jsonl(path, {"key": run_key(model_name, shape, batch, dtype), "flops": flops})


def start_flops_counter(args, path: Path):
    """count_flops_worker in a CPU-only subprocess, beside the GPU work."""
    argv = [sys.executable, __file__, "--count-flops", str(path), "--models", args.models]
    argv += ["--dtypes", args.dtypes, "--batches", args.batches, "--select", args.select]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return subprocess.Popen(argv, env=env)


FLOPS_SOURCE = bench.FLOPS_ON_CPU


def add_counted_flops(results: list[dict], path: Path) -> None:
    """Sets FLOPs, FLOP/s and MFU in the measured results from count_flops_worker's file."""
    flops = {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            flops[record["key"]] = record["flops"]
    for r in results:
        key = run_key(r["model"], r["input"], r["batch"], r["dtype"])
        if "seconds_per_step" in r and key in flops:
            bench.add_utilisation(r, flops[key], FLOPS_SOURCE)


# Rough relative compile cost, to hand the slowest compilations out first.
_COMPILE_WEIGHT = {"densenet121": 5, "resnet50": 4, "resnet34": 3, "resnet18": 2, "resnet32": 1.5}


def compile_worker(args, deadline: float) -> None:
    """Phase 1 (one of several processes): compile train steps into JAX's persistent cache.

    Workers take the runs slowest first, each claiming one by creating a file in
    `--claims`, until none is left or the deadline passes; the timing process then loads
    the executables from the cache instead of compiling them one after another.
    """
    runs = sorted(
        train_runs(args),
        key=lambda r: -_COMPILE_WEIGHT.get(r[1], 1) * r[2][0] * r[2][1] * r[2][2] ** 0.5,
    )
    claims = Path(args.claims)
    claims.mkdir(parents=True, exist_ok=True)
    for _config, model_name, shape, batch, dtype in runs:
        if time.monotonic() > deadline:
            return
        key = f"{model_name}-{'x'.join(map(str, shape))}-{batch}-{dtype}"
        try:
            os.close(os.open(claims / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        start = time.perf_counter()
        try:
            bench.build_step(model_name, shape, batch, dtype, NUM_CLASSES)
            print(f"[compile] {key}: {time.perf_counter() - start:.1f} s", flush=True)
        except Exception as e:
            print(f"[compile] {key} FAILED: {type(e).__name__}: {e}", flush=True)


def compile_in_parallel(args, seconds: float) -> None:
    """Runs `--compile-workers` compile_worker processes for at most `seconds`."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        print("no JAX_COMPILATION_CACHE_DIR: no parallel compilation", flush=True)
        return
    claims = tempfile.mkdtemp(prefix="gpu_check_claims_")
    argv = [sys.executable, __file__, "--compile-only", "--claims", claims]
    argv += ["--deadline", str(seconds), "--models", args.models, "--dtypes", args.dtypes]
    argv += ["--batches", args.batches, "--select", args.select]
    start = time.monotonic()
    workers = [subprocess.Popen(argv) for _ in range(args.compile_workers)]
    for worker in workers:
        try:
            worker.wait(timeout=max(1.0, start + seconds + args.compile_grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"[compile] stopping worker {worker.pid} (time budget)", flush=True)
            worker.kill()
            worker.wait()
    print(f"[compile] phase took {time.monotonic() - start:.0f} s", flush=True)


def train_sweep(args, out: Path | None, deadline: float) -> list[dict]:
    results = []
    for config_name, model_name, shape, batch, dtype in train_runs(args):
        label = f"{model_name} {'x'.join(map(str, shape))} batch {batch} {dtype}"
        left = deadline - time.monotonic()
        if left < args.min_left:
            print(f"SKIPPED (time budget, {left:.0f} s left): {label}", flush=True)
            record = {"model": model_name, "input": "x".join(map(str, shape))}
            record.update(batch=batch, dtype=dtype, skipped="time budget")
            results.append(record)
            append_jsonl(out and out / "train_steps.jsonl", record)
            continue
        try:
            r = bench.measure(
                model_name,
                shape,
                batch,
                dtype,
                steps=args.steps,
                min_time=args.min_time,
                repeats=args.repeats,
                num_classes=NUM_CLASSES,
            )
            r["config"] = config_name
            print(bench.describe(r), flush=True)
            print(bench.describe_flops(r), flush=True)
        except Exception as e:
            r = {"model": model_name, "input": "x".join(map(str, shape))}
            r.update(batch=batch, dtype=dtype, error=f"{type(e).__name__}: {e}")
            print(f"FAILED: {label}: {r['error']}", flush=True)
            traceback.print_exc()
        results.append(r)
        append_jsonl(out and out / "train_steps.jsonl", r)
    return results


def _median_seconds(fn, repeats=5, min_time=0.5):
    """Median seconds per call of fn() (which blocks), calls per repeat sized to min_time."""
    fn()
    start = time.perf_counter()
    fn()
    calls = max(1, min(500, int(min_time / max(time.perf_counter() - start, 1e-6))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times), calls


def classifier_for(config_module, dtype):
    """A `speechjax.inference.Classifier` for a config, with random weights."""
    import jax
    import ml_collections
    from flax import nnx

    from speechjax import inference, models
    from speechjax.normalization import NormStats
    from speechjax.run import RunMetadata

    config = config_module.get_config()
    config.unlock()
    config.model.dtype = dtype
    class_names = tuple(f"class{i}" for i in range(NUM_CLASSES))
    channels = int(config.features.channels)
    metadata = RunMetadata.from_config(config, class_names, NormStats.identity(channels))
    graph, _ = inference.abstract_model(metadata)
    shape = inference.input_shape(metadata)

    @jax.jit
    def init():
        # Built as inference.abstract_model builds it, so its graph fits these arrays.
        model = models.create_model(
            ml_collections.ConfigDict(metadata.model), NUM_CLASSES, shape, nnx.Rngs(0)
        )
        models.set_training(model, False)
        _, params, model_state = nnx.split(model, nnx.Param, ...)
        return params, model_state

    params, model_state = init()
    variables = inference.ModelVariables(params=params, model_state=model_state)
    return inference.Classifier(inference.TrainedModel(graph, variables, metadata, step=0)), shape


def inference_sweep(args, out: Path | None, deadline: float) -> list[dict]:
    """Classifier throughput: device-resident batches through its jitted function, and
    `predict` on host numpy clips (its own 64-clip chunks, host transfers included)."""
    import jax
    import numpy as np

    from configs import resnet18, resnet32

    results = []
    cases = [(resnet32, "float32"), (resnet18, "float32"), (resnet32, "bfloat16")]
    if args.smoke:
        cases = cases[:1]
    for module, dtype in cases:
        name = module.get_config().model.name
        if deadline - time.monotonic() < args.min_left:
            print(f"SKIPPED (time budget): inference {name} {dtype}", flush=True)
            results.append({"model": name, "dtype": dtype, "skipped": "time budget"})
            continue
        try:
            classifier, shape = classifier_for(module, dtype)
            rng = np.random.default_rng(0)
            for batch in args.inference_batches:
                waves = rng.uniform(-0.5, 0.5, (batch, classifier.clip_samples)).astype(np.float32)
                on_device = jax.device_put(waves)
                variables = classifier.model.variables
                # The jitted waveform -> probabilities function the serving modes call.
                jitted = classifier._jitted
                start = time.perf_counter()
                jax.block_until_ready(jitted(variables, on_device))
                compile_s = time.perf_counter() - start
                seconds, calls = _median_seconds(
                    lambda j=jitted, v=variables, w=on_device: jax.block_until_ready(j(v, w)),
                    min_time=args.min_time / 2,
                )
                r = {
                    "model": name,
                    "input": "x".join(map(str, shape)),
                    "dtype": dtype,
                    "what": "jitted waveform->probabilities, batch on device",
                    "batch": batch,
                    "clips_per_s": batch / seconds,
                    "ms_per_call": seconds * 1000,
                    "calls": calls,
                    "compile_s": compile_s,
                    "device": jax.devices()[0].device_kind,
                }
                print(
                    f"inference {name} {r['input']} {dtype} batch {batch} on {r['device']}: "
                    f"{r['clips_per_s']:.0f} clips/s ({r['ms_per_call']:.3f} ms/call, "
                    f"compile {compile_s:.1f} s)",
                    flush=True,
                )
                results.append(r)
                append_jsonl(out and out / "inference.jsonl", r)
            for clips in (1, args.predict_clips):
                waves = rng.uniform(-0.5, 0.5, (clips, classifier.clip_samples)).astype(np.float32)
                classifier.predict(waves)  # compiles the padded batch sizes it needs
                seconds, calls = _median_seconds(
                    lambda c=classifier, w=waves: c.predict(w), min_time=args.min_time / 2
                )
                r = {
                    "model": name,
                    "input": "x".join(map(str, shape)),
                    "dtype": dtype,
                    "what": "Classifier.predict(numpy clips), host transfers included",
                    "batch": clips,
                    "clips_per_s": clips / seconds,
                    "ms_per_call": seconds * 1000,
                    "calls": calls,
                    "device": jax.devices()[0].device_kind,
                }
                print(
                    f"inference {name} {dtype} Classifier.predict({clips} numpy clips): "
                    f"{r['clips_per_s']:.0f} clips/s ({r['ms_per_call']:.3f} ms/call)",
                    flush=True,
                )
                results.append(r)
                append_jsonl(out and out / "inference.jsonl", r)
        except Exception as e:
            print(f"FAILED: inference {name} {dtype}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
            results.append({"model": name, "dtype": dtype, "error": f"{type(e).__name__}: {e}"})
    return results


def summary(train: list[dict], infer: list[dict]) -> str:
    lines = [
        "| model | input | dtype | batch | examples/s | ms/step | GFLOP/step | TFLOP/s | MFU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in train:
        head = f"| {r['model']} | {r['input']} | {r['dtype']} | {r['batch']} |"
        if "examples_per_s" not in r:
            lines.append(f"{head} {r.get('skipped') or r.get('error', '?')} | | | | |")
            continue
        flops = r.get("flops")
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
        lines.append(
            f"{head} {r['examples_per_s']:,.0f} | {r['seconds_per_step'] * 1000:.2f} | "
            + (f"{flops / 1e9:,.1f} | {r['flop_per_s'] / 1e12:.1f} |" if flops else "n/a | n/a |")
            + f" {mfu} |"
        )
    peaks = sorted({r["peak"] for r in train if "peak" in r})
    if peaks:
        lines.append("")
        lines.append("MFU peaks: " + "; ".join(peaks))
    if infer:
        lines += [
            "",
            "| inference | input | dtype | what | batch | clips/s | ms/call |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in infer:
            if "clips_per_s" not in r:
                status = r.get("skipped") or r.get("error", "?")
                lines.append(f"| {r['model']} | | {r['dtype']} | {status} | | | |")
                continue
            lines.append(
                f"| {r['model']} | {r['input']} | {r['dtype']} | {r['what']} | {r['batch']} | "
                f"{r['clips_per_s']:,.0f} | {r['ms_per_call']:.3f} |"
            )
    return "\n".join(lines)


def recount(path: Path, out: Path | None) -> None:
    """FLOPs, FLOP/s and MFU for train-step records measured elsewhere (a GPU run whose
    FLOPs could not be counted there), counted here with count_flops."""
    results = [json.loads(line) for line in path.read_text().splitlines()]
    for r in results:
        if "seconds_per_step" not in r:
            continue
        if r.get("flops_source") == "compiled":  # an older record: the GPU's own count
            r["flops_compiled"] = r.get("flops")
        shape = tuple(int(v) for v in r["input"].split("x"))
        flops = bench.count_flops(r["model"], shape, r["batch"], r["dtype"], NUM_CLASSES)
        bench.add_utilisation(r, flops, FLOPS_SOURCE)
        print(f"{run_key(r['model'], r['input'], r['batch'], r['dtype'])}:", flush=True)
        print(bench.describe_flops(r), flush=True)
    table = summary(results, [])
    print(f"\n{table}", flush=True)
    if out:
        with open(out / "train_steps.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
        (out / "summary.md").write_text(table + "\n")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="", help="folder for the JSONL records and summary")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for all runs")
    parser.add_argument(
        "--inference-share",
        type=float,
        default=0.1,
        help="fraction of the deadline kept for the inference runs",
    )
    parser.add_argument("--min-left", type=float, default=15.0, help="start no run with less")
    parser.add_argument("--models", default="", help="comma-separated subset of the models")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="32,256")
    parser.add_argument("--steps", type=int, default=None, help="fixed timed steps per repeat")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inference-batches", default="64,1024")
    parser.add_argument("--predict-clips", type=int, default=1024)
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument(
        "--compile-workers",
        type=int,
        default=0,
        help="first compile every train step in this many processes into JAX's persistent "
        "cache (JAX_COMPILATION_CACHE_DIR), then time them one after another",
    )
    parser.add_argument(
        "--compile-share", type=float, default=0.45, help="fraction of the deadline for that"
    )
    parser.add_argument("--compile-grace", type=float, default=20.0, help="seconds past it")
    parser.add_argument(
        "--select",
        default="",
        help="comma-separated patterns of model-input-batch-dtype, e.g. 'resnet50-*,*-256-*'",
    )
    parser.add_argument(
        "--recount",
        default="",
        help="a train_steps.jsonl measured elsewhere: count its FLOPs here, print the table",
    )
    parser.add_argument("--count-flops", default="", help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--claims", default="", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="tiny runs to test this script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models = args.models or "resnet32,alexnet"
        args.batches, args.steps, args.repeats = "2", 1, 1
        args.inference_batches, args.predict_clips, args.min_time = "2", 3, 0.01
    args.inference_batches = [int(b) for b in str(args.inference_batches).split(",")]
    return args


def main():
    args = parse_args()
    start = time.monotonic()
    if args.compile_only:
        compile_worker(args, start + args.deadline)
        return
    if args.count_flops:
        count_flops_worker(args, Path(args.count_flops))
        return
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if args.recount:
        recount(Path(args.recount), out)
        return
    flops_path = Path(tempfile.mkdtemp(prefix="gpu_check_flops_")) / "flops.jsonl"
    counter = start_flops_counter(args, flops_path)
    if args.compile_workers > 0:
        compile_in_parallel(args, args.deadline * args.compile_share)
    import jax

    print(f"jax {jax.__version__}, devices {jax.devices()}", flush=True)
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    share = 0.0 if args.no_inference else args.inference_share
    train = train_sweep(args, out, start + args.deadline * (1 - share))
    try:
        counter.wait(timeout=max(5.0, start + args.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        print("[flops] counting did not finish in time: stopped", flush=True)
        counter.kill()
        counter.wait()
    add_counted_flops(train, flops_path)
    for r in train:
        if "flops" in r and "examples_per_s" in r:
            print(f"{run_key(r['model'], r['input'], r['batch'], r['dtype'])}:", flush=True)
            print(bench.describe_flops(r), flush=True)
    if out:  # the records again, now with their FLOPs and MFU
        with open(out / "train_steps.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in train)
    infer = [] if args.no_inference else inference_sweep(args, out, start + args.deadline)
    table = summary(train, infer)
    print(f"\n{table}\n\n(total {time.monotonic() - start:.0f} s)", flush=True)
    if out:
        (out / "summary.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
