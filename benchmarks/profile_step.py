"""Where one train step's time goes, operation by operation: speechjax (XLA) against PyTorch.

speechjax: the step vs_pytorch.py times, traced with `jax.profiler`; each event of XLA's
thunk executor is one compiled HLO instruction (a fusion, a convolution, a copy), named as
in the compiled module, whose metadata says which JAX operation it came from and whether
it belongs to the forward pass (`jvp`), the backward pass (`transpose(jvp)`) or the
optimiser. Backward convolutions whose output has the batch dimension are input
gradients; the others are kernel gradients. PyTorch: `torch.profiler` on the same step
(eager, in the worker interpreter, `--layout`), self CPU time per operator. Times are per
step, averaged over `--steps` profiled steps after warm-up.

    python benchmarks/profile_step.py --torch-python /tmp/benchvenv/bin/python --model resnet32
"""

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import vs_pytorch

_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%?(?P<name>[\w.\-]+) = (?P<shape>.+?) (?P<op>[a-z][\w\-]*)\("
)
_NUMBER = re.compile(r"[.]\d+$")
_OP_NAME = re.compile(r'op_name="(?P<op_name>[^"]*)"')


def hlo_instructions(hlo_text: str) -> dict[str, dict]:
    """name -> {op, shape, pass, source} for every instruction of the compiled module."""
    table = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        op_name = _OP_NAME.search(line)
        source = op_name["op_name"] if op_name else ""
        if "transpose(jvp" in source:
            pass_ = "backward"
        elif "jvp(" in source:
            pass_ = "forward"
        elif source:
            pass_ = "optimiser/loss"
        else:
            pass_ = "added by XLA"  # copies for layout changes carry no JAX metadata
        table[match["name"]] = {
            "op": match["op"],
            "shape": match["shape"].split("{")[0],
            "pass": pass_,
            "source": source.rsplit("/", 1)[-1],
        }
    return table


def category(name: str, info: dict, batch_size: int) -> str:
    """A row of the summary: pass and kind of operation (a fusion by XLA's name for it and the
    JAX operation at its root)."""
    if info["op"] == "convolution":
        if info["pass"] != "backward":
            return "convolution forward"
        batch_first = info["shape"].split("[", 1)[-1].split(",")[0] == str(batch_size)
        return f"convolution {'input' if batch_first else 'kernel'} gradient"
    kind = info["op"]
    if kind == "fusion":
        kind = f"{_NUMBER.sub('', name)} ({info['source'] or '-'})"
    return f"{info['pass']}: {kind}"


def profile_jax(model: str, batch_size: int, steps: int, trace_dir: str):
    """(ms per step untraced, {instruction name: ms per step}, instructions, events' union)."""
    import jax

    config = vs_pytorch.config_for(model, "float32")
    shape = vs_pytorch.input_shape(config)
    step, state, batch = vs_pytorch.jax_train_step(config, shape, batch_size)
    hlo = hlo_instructions(step.lower(state, batch).compile().as_text())

    def run(state, n):
        for _ in range(n):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        return state

    state = run(state, 3)
    start = time.perf_counter()
    state = run(state, steps)
    wall_ms = 1000 * (time.perf_counter() - start) / steps
    jax.profiler.start_trace(trace_dir)
    state = run(state, steps)
    jax.profiler.stop_trace()
    path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
    per_op = collections.Counter()
    intervals = []
    for plane in jax.profiler.ProfileData.from_file(path).planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in hlo:
                    per_op[event.name] += event.duration_ns / 1e6 / steps
                    intervals.append((event.start_ns, event.start_ns + event.duration_ns))
    return wall_ms, per_op, hlo, _union_ms(intervals) / steps


def _union_ms(intervals) -> float:
    """Time covered by at least one event (thunks may run concurrently on two threads)."""
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total / 1e6


def print_jax(model, wall_ms, per_op, hlo, covered_ms, batch_size, top):
    total = sum(per_op.values())
    print(
        f"\n## speechjax (XLA CPU) {model}: {wall_ms:.1f} ms/step untraced; traced instructions "
        f"sum to {total:.1f} ms/step (covering {covered_ms:.1f} ms of wall time)"
    )
    summary = collections.Counter()
    for name, ms in per_op.items():
        summary[category(name, hlo[name], batch_size)] += ms
    print("\n| pass / kind | ms/step | share |\n| --- | ---: | ---: |")
    for kind, ms in summary.most_common():
        if ms >= 0.005 * total:  # the long tail of tiny fusions says nothing
            print(f"| {kind} | {ms:.1f} | {100 * ms / total:.0f}% |")
    # The thunk runtime launches convolutions on Eigen's pool and moves on, so their events
    # can end before their work does; what no event covers is that work plus dispatch.
    print(f"| (no instruction event: asynchronous work, dispatch) | {wall_ms - covered_ms:.1f} | |")
    print(f"\n| top {top} instructions | from | shape | ms/step |\n| --- | --- | --- | ---: |")
    for name, ms in per_op.most_common(top):
        info = hlo[name]
        print(f"| {name} | {category(name, info, batch_size)} | {info['shape']} | {ms:.2f} |")


def profile_torch(model, shape, batch_size, layout, steps, top, threads) -> None:
    """Runs in the torch interpreter: prints PyTorch's top operators by self CPU time."""
    import torch
    from torch_models import make_train_step

    torch.set_num_threads(threads)
    step, _ = make_train_step(model, shape, batch_size, "float32", layout, torch.device("cpu"))
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall_ms = 1000 * (time.perf_counter() - start) / steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in averages) / 1000 / steps
    print(
        f"\n## PyTorch {torch.__version__} eager {model} {layout}: {wall_ms:.1f} ms/step "
        f"unprofiled; operators' self CPU time sums to {total:.1f} ms/step"
    )
    print(f"\n| top {top} operators | calls/step | self ms/step |\n| --- | ---: | ---: |")
    for e in averages[:top]:
        ms = e.self_cpu_time_total / 1000 / steps
        print(f"| {e.key} | {e.count / steps:g} | {ms:.2f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet32", choices=vs_pytorch.MODELS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--layout", default="channels_last", choices=vs_pytorch.LAYOUTS)
    parser.add_argument("--torch-python", default="", help="interpreter with torch ('' = skip)")
    parser.add_argument("--threads", type=int, default=vs_pytorch.threads())
    parser.add_argument("--torch-only", default="", help=argparse.SUPPRESS)  # shape, as JSON
    args = parser.parse_args()
    if args.torch_only:
        shape = tuple(json.loads(args.torch_only))
        profile_torch(args.model, shape, args.batch_size, args.layout, args.steps, args.top,
                      args.threads)  # fmt: skip
        return

    sys.path.insert(0, str(vs_pytorch.ROOT))
    from speechjax import accelerator

    accelerator.select_platform()
    accelerator.use_fast_cpu_convolutions()  # as main.py on a CPU; this profile is CPU-only
    import jax

    flags = os.environ.get("XLA_FLAGS", "")
    print(f"jax {jax.__version__}, XLA_FLAGS={flags!r}, {args.threads} threads, "
          f"batch {args.batch_size}, float32, Adam", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as trace_dir:
        wall_ms, per_op, hlo, covered = profile_jax(
            args.model, args.batch_size, args.steps, trace_dir
        )
    print_jax(args.model, wall_ms, per_op, hlo, covered, args.batch_size, args.top)
    if args.torch_python:
        shape = vs_pytorch.input_shape(vs_pytorch.config_for(args.model, "float32"))
        argv = [args.torch_python, __file__, "--torch-only", json.dumps(list(shape))]
        argv += ["--model", args.model, "--batch-size", str(args.batch_size)]
        argv += ["--steps", str(args.steps), "--top", str(args.top), "--layout", args.layout]
        argv += ["--threads", str(args.threads)]
        subprocess.run(argv, check=True)


if __name__ == "__main__":
    main()
