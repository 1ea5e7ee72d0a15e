"""Train-step throughput of one model on this machine (examples/s).

A full step: forward, backward and an Adam update, jitted with donated state, on a fixed
random batch. XLA reads XLA_FLAGS once per process, so `--compare-ynn` reruns this script
with and without `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`.

    python benchmarks/models.py --model resnet32 --input-shape 101,40,1 --compare-ynn
"""

import argparse
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--input-shape", default="101,40,1", help="frames,bins,channels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps after warm-up")
    parser.add_argument("--num-classes", type=int, default=35)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--model-field",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set a model config field, e.g. width_factor=1 (repeatable)",
    )
    parser.add_argument(
        "--compare-ynn", action="store_true", help=f"run without and with {YNN_FLAG}"
    )
    return parser.parse_args()


def compare_ynn(argv):
    """Rerun this script in fresh processes, once per XLA_FLAGS setting."""
    argv = [a for a in argv if a != "--compare-ynn"]
    base = os.environ.get("XLA_FLAGS", "").replace(YNN_FLAG, "").strip()
    for flags in (base, f"{base} {YNN_FLAG}".strip()):
        env = {**os.environ, "XLA_FLAGS": flags}
        subprocess.run([sys.executable, __file__, *argv], env=env, check=True)


def benchmark(args):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from configs import default
    from speechjax.models import create_model, set_training

    shape = tuple(int(v) for v in args.input_shape.split(","))
    config = default.get_config().model
    config.unlock()
    config.name, config.dtype = args.model, args.dtype
    for item in args.model_field:
        field, value = item.split("=", 1)
        config[field] = type(config[field])(value)
    model = create_model(config, args.num_classes, shape, nnx.Rngs(params=0, dropout=1))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @partial(nnx.jit, donate_argnums=(0, 1))
    def step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    x = jax.random.normal(jax.random.key(0), (args.batch_size, *shape))
    y = jnp.arange(args.batch_size) % args.num_classes
    set_training(model, False)  # a closed-over model may not update its statistics in jit
    hlo = jax.jit(lambda x: model(x)).lower(x).as_text()
    set_training(model, True)
    convs = hlo.count("stablehlo.convolution")
    nhwc = hlo.count("[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]")
    start = time.perf_counter()
    jax.block_until_ready(step(model, optimizer, x, y))  # compile + one step
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(model, optimizer, x, y)
    jax.block_until_ready(loss)
    elapsed = time.perf_counter() - start
    print(
        f"{args.model} {' '.join(args.model_field)} {shape} batch {args.batch_size} {args.dtype} "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}: "
        f"{args.batch_size * args.steps / elapsed:.1f} examples/s "
        f"({elapsed / args.steps * 1000:.0f} ms/step, first step {compile_s:.1f} s, "
        f"{convs} convolutions in the forward HLO, {nhwc} of them NHWC/HWIO, "
        f"loss {float(loss):.3f})",
        flush=True,
    )


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.compare_ynn:
        compare_ynn(sys.argv[1:])
    else:
        benchmark(arguments)
