"""speechjax's train step against PyTorch eager, model by model, at each config's input size.

speechjax: the real step (`speechjax.train_state`, jitted, state donated) in the form
training uses on this device (two programs on CPUs, see `train_state.use_split_step`), with
the XLA flags main.py sets (`speechjax.accelerator`). PyTorch: the same step in eager mode
(`benchmarks/torch_models.py`), NCHW and channels-last. Batch 32, Adam (lr 1e-3), float32
or bfloat16 (autocast on the PyTorch side), fixed random batch. PyTorch runs in a worker
process of its own interpreter (`--torch-python`, see benchmarks/requirements.txt), so
speechjax's environment never needs torch; both use the same number of threads. The two
frameworks alternate block by block within one run (drift in the machine's load hits
both), and each figure is the median of `--repeats` blocks of about `--min-time` s.

    python benchmarks/vs_pytorch.py --torch-python /tmp/benchvenv/bin/python
    python benchmarks/vs_pytorch.py --models resnet32 --dtype bfloat16   # on a GPU
"""

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("alexnet", "resnet18", "resnet32", "resnet50", "densenet121", "bcresnet")
LAYOUTS = ("nchw", "channels_last")
NUM_CLASSES = 35


def threads() -> int:
    """The cores this process may use: what XLA CPU sizes its thread pool to."""
    return len(os.sched_getaffinity(0))


# --- the PyTorch side (runs in the worker process, under the torch interpreter) ---


def worker(num_threads: int) -> None:
    """Answers JSON requests on stdin, one a line: build a model's steps, time n of them."""
    import torch
    from torch_models import make_train_step

    torch.set_num_threads(num_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    # TF32 for float32, as XLA does at JAX's default precision on NVIDIA GPUs.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    steps = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "hello":
                name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
                reply = {"torch": torch.__version__, "device": name, "threads": num_threads}
            elif request["op"] == "build":
                steps.clear()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                for layout in LAYOUTS:
                    steps[layout] = make_train_step(
                        request["model"],
                        tuple(request["shape"]),
                        request["batch"],
                        request["dtype"],
                        layout,
                        device,
                    )
                reply = {}
            else:  # "time": n steps of one layout, seconds per step
                step, sync = steps[request["layout"]]
                start = time.perf_counter()
                for _ in range(request["steps"]):
                    loss = step()
                sync()
                reply = {"seconds": (time.perf_counter() - start) / request["steps"]}
                reply["loss"] = float(loss.detach())
        except Exception as e:  # reported to the parent, which prints it and goes on
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


class TorchWorker:
    """The parent's handle on the worker process."""

    def __init__(self, python: str, num_threads: int):
        argv = [python, __file__, "--worker", "--threads", str(num_threads)]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the PyTorch worker exited (see its error above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


# --- the speechjax side ---


def config_for(model: str, dtype: str):
    """configs/<model>.py, with the step made the same as PyTorch's (Adam at 1e-3, no
    schedule, decay, clipping, smoothing or mixup)."""
    sys.path.insert(0, str(ROOT))
    config = importlib.import_module(f"configs.{model}").get_config()
    config.model.dtype = dtype
    config.train.update(
        optimizer="adam", lr=1e-3, schedule="constant", weight_decay=0.0, grad_clip_norm=0.0
    )
    config.train.label_smoothing = 0.0
    config.augment.mixup_alpha = 0.0
    return config


def input_shape(config) -> tuple[int, int, int]:
    from speechjax import frontend_settings

    rate = config.data.sample_rate
    return frontend_settings.output_shape(
        config.features, int(round(config.data.clip_seconds * rate)), rate
    )


def jax_train_step(config, shape, batch_size, split: bool = False):
    """(jitted step, initial state, fixed random batch) of speechjax's train step; the step
    donates its state. split: as two programs (`train_state.make_split_train_step`)."""
    import jax
    import jax.numpy as jnp

    from speechjax import optim, train_state
    from speechjax.batch_keys import LABEL, MASK, SPECTROGRAM

    tx = optim.create_optimizer(config.train, steps_per_epoch=1)
    model_def, state = train_state.create_train_state(config, NUM_CLASSES, shape, tx)
    if split:
        forward, backward = train_state.make_split_train_step(model_def, tx, config, NUM_CLASSES)
        forward, backward = jax.jit(forward), jax.jit(backward, donate_argnums=0)

        def step(state, batch):
            return backward(state, forward(state, batch), batch)
    else:
        step = jax.jit(
            train_state.make_train_step(model_def, tx, config, NUM_CLASSES), donate_argnums=0
        )
    batch = {
        SPECTROGRAM: jax.random.normal(jax.random.key(1), (batch_size, *shape), jnp.float32),
        LABEL: jnp.arange(batch_size, dtype=jnp.int32) % NUM_CLASSES,
        MASK: jnp.ones((batch_size,), jnp.float32),
    }
    return step, state, batch


def jax_step(config, shape, batch_size):
    """`run(n) -> (seconds per step, loss)` over n steps of speechjax's train step, in the
    form training uses here (`train_state.use_split_step`)."""
    from speechjax import train_state

    split = train_state.use_split_step(config)
    step, state, batch = jax_train_step(config, shape, batch_size, split)
    holder = [state]

    def run(n):
        start = time.perf_counter()
        for _ in range(n):
            holder[0], metrics = step(holder[0], batch)
        loss = float(metrics["loss_sum"]) / batch_size  # waits for the device
        return (time.perf_counter() - start) / n, loss

    return run


def calibrated(run, min_time: float) -> int:
    """Warm up (compilation, allocations, autotuning), then steps per timed block."""
    run(2)
    per_step, _ = run(2)
    return max(2, min(1000, int(min_time / max(per_step, 1e-6))))


def compare(model, args, torch_worker) -> dict:
    config = config_for(model, args.dtype)
    shape = input_shape(config)
    row = {"model": model, "input": "x".join(map(str, shape)), "times": {}, "loss": {}}
    run_jax = jax_step(config, shape, args.batch_size)
    runners = {"speechjax": run_jax}
    try:
        torch_worker.ask(
            op="build", model=model, shape=shape, batch=args.batch_size, dtype=args.dtype
        )
        for layout in LAYOUTS:
            runners[f"pytorch {layout}"] = lambda n, layout=layout: _torch_run(
                torch_worker, layout, n
            )
    except RuntimeError as e:
        row["torch_error"] = str(e)
    steps = {name: calibrated(run, args.min_time) for name, run in runners.items()}
    times = {name: [] for name in runners}
    for repeat in range(args.repeats):
        # Rotate the order too, so neither framework always follows the other.
        names = list(runners)
        names = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in names:
            seconds, row["loss"][name] = runners[name](steps[name])
            times[name].append(seconds)
    row["times"] = {name: statistics.median(t) for name, t in times.items()}
    row["steps"] = steps
    return row


def _torch_run(torch_worker, layout, n):
    reply = torch_worker.ask(op="time", layout=layout, steps=n)
    return reply["seconds"], reply["loss"]


def print_table(rows) -> None:
    print(
        "\n| model | input | speechjax ms/step | PyTorch NCHW ms/step | PyTorch channels-last "
        "ms/step | speechjax / PyTorch-best (throughput) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        t = row["times"]
        cells = [f"{1000 * t[k]:.1f}" if k in t else "n/a" for k in ("speechjax", *_torch_keys())]
        best = min((t[k] for k in _torch_keys() if k in t), default=None)
        ratio = f"{best / t['speechjax']:.2f}x" if best else "n/a"
        print(f"| {row['model']} | {row['input']} | {' | '.join(cells)} | {ratio} |", flush=True)


def _torch_keys():
    return tuple(f"pytorch {layout}" for layout in LAYOUTS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per timed block")
    parser.add_argument("--torch-python", default=sys.executable, help="interpreter with torch")
    parser.add_argument("--threads", type=int, default=threads(), help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.threads)
        return

    sys.path.insert(0, str(ROOT))
    from speechjax import accelerator

    accelerator.select_platform()
    if os.environ.get("JAX_PLATFORMS") == "cpu":
        accelerator.use_fast_cpu_convolutions()  # as main.py does on a CPU
    import jax

    torch_worker = TorchWorker(args.torch_python, args.threads)
    hello = torch_worker.ask(op="hello")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind} "
        f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); torch {hello['torch']} on "
        f"{hello['device']}; {args.threads} threads each; batch {args.batch_size}, "
        f"{args.dtype}, Adam; median of {args.repeats} alternating blocks of ~{args.min_time} s",
        flush=True,
    )
    rows = []
    try:
        for model in args.models:
            row = compare(model, args, torch_worker)
            line = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in row["times"].items())
            print(f"{model} {row['input']}: {line}", flush=True)
            if "torch_error" in row:
                print(f"  PyTorch: {row['torch_error']}", flush=True)
            rows.append(row)
    finally:
        torch_worker.close()
    print_table(rows)


if __name__ == "__main__":
    main()
