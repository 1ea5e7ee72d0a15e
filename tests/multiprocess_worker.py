"""One process of a multi-process test run (tests/test_distributed.py starts two of them).

python tests/multiprocess_worker.py steps PROCESS_ID NUM_PROCESSES PORT OUT.npz
    A few train steps of tests/tiny_config.py's model through `train.Session` on fixed
    global batches, each process feeding its rows; process 0 writes the losses and the
    final train state to OUT.npz. NUM_PROCESSES=1 runs alone, on every local device.

python tests/multiprocess_worker.py main [main.py flags...]
    main.py as a user runs it. With SPEECHJAX_TEST_SIGTERM_AT=EPOCH,BATCH in its
    environment this process sends itself SIGTERM while reading that training batch,
    then reads each later batch slowly (STEP_DELAY_SECONDS), so that the stop request
    reaches every process while the epoch is still running.
"""

import os
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

STEPS = 3
GLOBAL_BATCH = 8
# JAX's preemption service polls for the notice about once a second.
STEP_DELAY_SECONDS = 0.4


def train_steps(process_id: int, num_processes: int, port: int, out: str) -> None:
    import types

    import jax
    import numpy as np

    from speechjax import distributed, frontend_settings, sharding, train
    from speechjax.batch_keys import LABEL, MASK, SPECTROGRAM
    from tests import tiny_config

    if num_processes > 1:
        distributed.initialize(f"localhost:{port}", num_processes, process_id)
    config = tiny_config.get_config()
    input_shape = frontend_settings.output_shape(config.features, 16000, 16000)
    pipeline = types.SimpleNamespace(class_names=tiny_config.WORDS, input_shape=input_shape)
    session = train.Session(config, pipeline, steps_per_epoch=STEPS)
    rng = np.random.default_rng(0)
    rows = slice(
        process_id * GLOBAL_BATCH // num_processes, (process_id + 1) * GLOBAL_BATCH // num_processes
    )
    state, losses = session.state, []
    for _ in range(STEPS):
        batch = {
            SPECTROGRAM: rng.standard_normal((GLOBAL_BATCH, *input_shape), np.float32),
            LABEL: rng.integers(0, len(tiny_config.WORDS), GLOBAL_BATCH).astype(np.int32),
            MASK: np.ones(GLOBAL_BATCH, np.float32),
        }
        local = {name: values[rows] for name, values in batch.items()}
        state, metrics = session.train_step(state, sharding.put_batch(local, session.mesh))
        losses.append(float(metrics["loss_sum"]) / float(metrics["count"]))
    leaves = jax.tree_util.tree_leaves_with_path(state)
    arrays = {
        jax.tree_util.keystr(path): np.asarray(
            jax.random.key_data(leaf)
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
            else leaf
        )
        for path, leaf in leaves
    }
    if process_id == 0:
        np.savez(out, losses=np.array(losses), **arrays)


def signal_during_training(signal_epoch_batch: str) -> None:
    from speechjax import input_pipeline

    name, *when = signal_epoch_batch.split(",")
    sent, when = signal.Signals[name], tuple(int(n) for n in when)
    original = input_pipeline.DataPipeline.train_batches

    def train_batches(self, epoch, batch_size):
        signalled = False
        for index, batch in enumerate(original(self, epoch, batch_size), start=1):
            if (epoch, index) == when:
                os.kill(os.getpid(), sent)
                signalled = True
            elif signalled:
                time.sleep(STEP_DELAY_SECONDS)
            yield batch

    input_pipeline.DataPipeline.train_batches = train_batches


def run_main(argv: list[str]) -> None:
    os.chdir(REPO)
    from absl import app

    import main

    if os.environ.get("SPEECHJAX_TEST_SIGNAL_AT"):
        signal_during_training(os.environ["SPEECHJAX_TEST_SIGNAL_AT"])
    sys.argv = ["main.py", *argv]
    app.run(main.main, flags_parser=main.parse_flags)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "steps":
        train_steps(int(rest[0]), int(rest[1]), int(rest[2]), rest[3])
    else:
        run_main(rest)
