"""One jitted train step against the same step split into two jitted programs (forward with
`jax.vjp`, then backward + Adam: `speechjax.train_state.make_split_train_step`), alternating
in one process.

Why: in one XLA CPU program, the fusion pass folds the forward's elementwise chain (BatchNorm,
ReLU, residual add) into the copies that transpose each activation for its kernel-gradient
convolution, and since each block's input is the previous block's output, every such copy
recomputes the residual stream back to the stage's start (`profile_step.py` shows these
`transpose_copy_fusion`s). Across two programs the forward's activations are materialised
outputs that the backward can only read.

    python benchmarks/split_step.py --models resnet32 resnet18
"""

import argparse
import statistics
import sys
import time

import vs_pytorch


def split_step(config, shape, batch_size):
    """`run(n) -> (wall s, CPU s) per step` of `train_state.make_split_train_step`'s two
    programs (the backward donating the state), on `vs_pytorch.jax_train_step`'s batch."""
    import jax

    from speechjax import optim, train_state

    tx = optim.create_optimizer(config.train, steps_per_epoch=1)
    model_def, state = train_state.create_train_state(config, vs_pytorch.NUM_CLASSES, shape, tx)
    forward, backward = train_state.make_split_train_step(
        model_def, tx, config, vs_pytorch.NUM_CLASSES
    )
    forward, backward = jax.jit(forward), jax.jit(backward, donate_argnums=0)
    _, _, batch = vs_pytorch.jax_train_step(config, shape, batch_size)
    held = [state]

    def run(n):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            held[0], metrics = backward(held[0], forward(held[0], batch), batch)
        jax.block_until_ready(metrics)
        return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n

    return run


def one_step(config, shape, batch_size):
    """The same `run` for speechjax's real (one-program) train step."""
    import jax

    step, state, batch = vs_pytorch.jax_train_step(config, shape, batch_size)
    held = [state]

    def run(n):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            held[0], metrics = step(held[0], batch)
        jax.block_until_ready(metrics)
        return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet32"], choices=vs_pytorch.MODELS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed block")
    args = parser.parse_args()
    sys.path.insert(0, str(vs_pytorch.ROOT))
    from speechjax import accelerator

    accelerator.select_platform()
    accelerator.use_fast_cpu_convolutions()  # as main.py on a CPU
    for model in args.models:
        config = vs_pytorch.config_for(model, "float32")
        shape = vs_pytorch.input_shape(config)
        runs = {
            "one program": one_step(config, shape, args.batch_size),
            "forward, backward": split_step(config, shape, args.batch_size),
        }
        times = {name: [] for name in runs}
        for run in runs.values():
            run(2)  # compile, warm up
        for repeat in range(args.repeats):
            order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
            for name in order:
                times[name].append(runs[name](args.steps))
        for name, t in times.items():
            wall = 1000 * statistics.median(w for w, _ in t)
            cpu = 1000 * statistics.median(c for _, c in t)
            print(
                f"{model} {'x'.join(map(str, shape))} batch {args.batch_size}, {name}: "
                f"{wall:.1f} ms/step wall, {cpu:.1f} ms/step CPU (medians of {args.repeats} "
                f"x {args.steps} steps)",
                flush=True,
            )


if __name__ == "__main__":
    main()
