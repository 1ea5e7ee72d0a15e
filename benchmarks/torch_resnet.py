"""PyTorch's eager train step for torchvision's ResNet18, the baseline `gpu_check.sh` puts
beside speechjax's (`benchmarks/models.py`) on the same device.

The same step as speechjax's: forward, cross-entropy, backward, Adam (lr 1e-3) on a fixed
random batch, 35 classes, dropout 0.1 before the last layer, the stem convolution taking
the input's channels. float32 allows TF32 (what XLA does with float32 convolutions and
matmuls at JAX's default precision on NVIDIA GPUs); bfloat16 is autocast with float32
parameters (as speechjax's model.dtype=bfloat16). Both memory layouts are timed, NCHW and
channels-last; `--jax-results` (gpu_check.py's train_steps.jsonl) adds the ratio
speechjax / PyTorch's faster layout. PyTorch is a benchmark-only dependency.

    python benchmarks/torch_resnet.py --shapes 224,224,3 101,64,1 --batches 32 256
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch_models import make_train_step


def measure(shape, batch, dtype, layout, device, min_time, repeats) -> dict:
    """shape is speechjax's (frames, bins, channels); PyTorch gets [B, channels, frames, bins]."""
    step, sync = make_train_step("resnet18", shape, batch, dtype, layout, device)

    def run(n):
        loss = None
        for _ in range(n):
            loss = step()
        sync()
        return loss

    run(3)  # warm-up: cuDNN's algorithm search (benchmark mode), allocator, Adam state
    start = time.perf_counter()
    run(3)
    per_step = (time.perf_counter() - start) / 3
    steps = max(3, min(1000, int(min_time / max(per_step, 1e-6))))
    times = []
    loss = None
    for _ in range(repeats):
        start = time.perf_counter()
        loss = run(steps)
        times.append((time.perf_counter() - start) / steps)
    seconds = statistics.median(times)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "framework": "pytorch",
        "model": "resnet18",
        "input": "x".join(map(str, shape)),
        "batch": batch,
        "dtype": dtype,
        "layout": layout,
        "device": name,
        "seconds_per_step": seconds,
        "examples_per_s": batch / seconds,
        "timed_steps": steps,
        "repeats": repeats,
        "loss": float(loss.detach()),
    }


def jax_rows(path: str) -> dict:
    rows = {}
    if path and Path(path).exists():
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            if "examples_per_s" in r:
                rows[(r["model"], r["input"], r["dtype"], r["batch"])] = r
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["224,224,3", "101,64,1"])
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--layouts", nargs="+", default=["channels_last", "nchw"])
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds for all runs")
    parser.add_argument("--out", default="", help="JSONL file the records are appended to")
    parser.add_argument("--jax-results", default="", help="gpu_check.py's train_steps.jsonl")
    args = parser.parse_args()

    import torchvision

    start = time.monotonic()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + ", cudnn.benchmark, TF32 allowed for float32 (as XLA's default)",
        flush=True,
    )
    results = []
    for shape_text in args.shapes:
        shape = tuple(int(v) for v in shape_text.split(","))
        for batch in args.batches:
            for dtype in args.dtypes:
                for layout in args.layouts:
                    label = f"pytorch resnet18 {shape_text} batch {batch} {dtype} {layout}"
                    if time.monotonic() - start > args.deadline:
                        print(f"SKIPPED (time budget): {label}", flush=True)
                        continue
                    try:
                        r = measure(
                            shape, batch, dtype, layout, device, args.min_time, args.repeats
                        )
                    except Exception as e:
                        print(f"FAILED: {label}: {type(e).__name__}: {e}", flush=True)
                        continue
                    print(
                        f"{label} on {r['device']}: {r['examples_per_s']:.1f} examples/s "
                        f"({r['seconds_per_step'] * 1000:.2f} ms/step, median of "
                        f"{r['repeats']} x {r['timed_steps']} steps; loss {r['loss']:.3f})",
                        flush=True,
                    )
                    results.append(r)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps(r) + "\n")
                    if device.type == "cuda":
                        torch.cuda.empty_cache()

    jax_results = jax_rows(args.jax_results)
    best = {}
    for r in results:
        key = ("resnet18", r["input"], r["dtype"], r["batch"])
        if key not in best or r["examples_per_s"] > best[key]["examples_per_s"]:
            best[key] = r
    print("\n| input | dtype | batch | PyTorch ex/s (layout) | speechjax ex/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, r in best.items():
        j = jax_results.get(key)
        ours = f"{j['examples_per_s']:,.0f}" if j else "n/a"
        ratio = f"{j['examples_per_s'] / r['examples_per_s']:.2f}x" if j else "n/a"
        print(
            f"| {r['input']} | {r['dtype']} | {r['batch']} | "
            f"{r['examples_per_s']:,.0f} ({r['layout']}) | {ours} | {ratio} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
