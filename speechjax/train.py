"""The training loop: epochs of jitted steps, validation, checkpoints, early stopping.

A run is a function of its config and workdir. Everything it needs to continue lives in
the latest checkpoint, and every source of randomness is derived from `config.seed`,
the epoch and the step, so a resumed run ends with exactly the metrics of an
uninterrupted one.
"""

import collections
import itertools
import math
import os
import time

import jax
import ml_collections
from absl import logging
from tqdm import tqdm

from speechjax import (
    checkpoints,
    eval_loop,
    input_pipeline,
    optim,
    reporting,
    sharding,
    warm_start,
)
from speechjax.early_stopping import EarlyStopping
from speechjax.errors import Interrupted, UserError
from speechjax.run import RunMetadata, Workdir
from speechjax.stop_requests import StopRequests
from speechjax.train_state import (
    create_train_state,
    make_eval_step,
    make_split_train_step,
    make_train_step,
    use_split_step,
)

# How often (in steps) the progress bar fetches the running loss from the device;
# fetching every step would stall the device queue.
PROGRESS_EVERY = 10
QUEUED_STEPS = 2


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class Session:
    """Mesh, model definition, optimiser, state and the compiled steps of one run."""

    def __init__(self, config: ml_collections.ConfigDict, pipeline, steps_per_epoch: int):
        self.mesh = sharding.create_mesh()
        self.replicated = sharding.replicated(self.mesh)
        self.train_batch_size = sharding.check_batch_size(
            config.train.batch_size, "train.batch_size"
        )
        # Evaluation pads its batches anyway, so round up to a multiple of the devices.
        devices = jax.device_count()
        eval_global = math.ceil(config.eval.batch_size / devices) * devices
        self.eval_batch_size = eval_global // jax.process_count()
        num_classes = len(pipeline.class_names)
        self.tx = optim.create_optimizer(config.train, steps_per_epoch)
        model_def, state = create_train_state(config, num_classes, pipeline.input_shape, self.tx)
        self.state = sharding.put_replicated(state, self.mesh)
        data = sharding.batch_sharded(self.mesh)
        if use_split_step(config):
            forward, backward = make_split_train_step(model_def, self.tx, config, num_classes)
            forward = jax.jit(forward, in_shardings=(self.replicated, data))
            # The residuals keep the layout the forward gave them. The state is donated, as
            # in the one-program step; the residuals are not: few of them match an output's
            # shape, and XLA warns about every one it cannot reuse.
            backward = jax.jit(
                backward, out_shardings=(self.replicated, self.replicated), donate_argnums=0
            )
            self.train_step = lambda state, batch: backward(state, forward(state, batch), batch)
        else:
            self.train_step = jax.jit(
                make_train_step(model_def, self.tx, config, num_classes),
                in_shardings=(self.replicated, data),
                out_shardings=(self.replicated, self.replicated),
                donate_argnums=0,
            )
        self.eval_step = jax.jit(
            make_eval_step(model_def.eval_graph, num_classes),
            in_shardings=(self.replicated, data),
            out_shardings=self.replicated,
        )


def _sums_to_floats(sums) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(sums).items()}


def _add(sums, metrics):
    return metrics if sums is None else jax.tree.map(lambda a, b: a + b, sums, metrics)


def _check_finite(loss_sum: float, epoch: int, step: int, last_saved: int | None, workdir: Workdir):
    if math.isfinite(loss_sum):
        return
    kept = (
        f"the last good checkpoint (step {last_saved}) is kept in {workdir.checkpoints}"
        if last_saved is not None
        else "no checkpoint had been saved yet"
    )
    raise TrainingDiverged(
        f"The training loss became {loss_sum} in epoch {epoch} (step {step}); {kept}. "
        "Lower --config.train.lr, or set --config.train.grad_clip_norm=1.0."
    )


def _fresh_meta() -> dict:
    return {
        "epoch": 0,  # epochs completed
        "batches_done": 0,  # batches of the current epoch done (non-zero after an interrupt)
        "partial_sums": None,
        "history": [],
        "early_stopping": None,
        "finished": False,
        "train_seconds": 0.0,
    }


def _check_resumable(run: RunMetadata, config, class_names, workdir: Workdir) -> None:
    """A run resumes only with the model, front end, classes and data.train_on_validation it
    was started with.

    class_names None: checks the config alone (before any data is read).
    """
    conflicts = run.conflicts(config)
    # It decides which checkpoint is kept: a run keeps one rule from start to end.
    if run.trained_on_validation != config.data.train_on_validation:
        conflicts.append(
            f"data.train_on_validation: checkpoint {run.trained_on_validation}, "
            f"config {config.data.train_on_validation}"
        )
    if class_names is not None and list(run.class_names) != list(class_names):
        conflicts.append(
            f"classes: checkpoint {list(run.class_names)[:5]}... ({len(run.class_names)}), "
            f"data {list(class_names)[:5]}... ({len(class_names)})"
        )
    if conflicts:
        raise UserError(
            f"Cannot resume {workdir.path}: the config contradicts its checkpoint ("
            + "; ".join(conflicts)
            + "). These define the model; use a new --workdir to change them."
        )


def _write_run_header(config, pipeline, workdir: Workdir, log) -> None:
    """A new run's config.json, norm_stats.json and the first lines of its log.txt."""
    with open(workdir.config_json, "w") as f:
        f.write(config.to_json_best_effort(indent=2) + "\n")
    pipeline.norm_stats.save(workdir.norm_stats)  # a copy for people; never read back
    log.line(
        f"model: {config.model.name} lr: {config.train.lr} dropout: {config.model.dropout} "
        f"batch: {config.train.batch_size} features: {config.features.kind} "
        f"input: {pipeline.input_shape} devices: {jax.device_count()} "
        f"train/val/test: {pipeline.num_examples['train']}/"
        f"{pipeline.num_examples['validation']}/{pipeline.num_examples['test']}"
    )
    if config.data.train_on_validation:
        log.line(
            "data.train_on_validation: the training split includes validation's "
            f"{pipeline.num_examples['validation']}; the last epoch is kept and tested, "
            "early stopping is off."
        )
    if config.train.init_from:
        log.line(f"train.init_from: starts from the weights of {config.train.init_from}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir_path: str) -> dict:
    """Trains (or resumes) in `workdir_path`, then tests the best checkpoint; returns results."""
    workdir = Workdir(workdir_path)
    os.makedirs(workdir.path, exist_ok=True)
    is_chief = jax.process_index() == 0
    manager = checkpoints.create_manager(workdir, keep_latest=config.checkpoint.keep_latest)
    resume_step = manager.latest_step()
    # A resumed run normalises with the statistics in its checkpoint, never recomputed.
    stored_run = checkpoints.restore_run(manager, resume_step) if resume_step is not None else None
    if stored_run is not None:
        _check_resumable(stored_run, config, None, workdir)
    pipeline = input_pipeline.create_pipeline(
        config,
        stored_run.norm_stats if stored_run else None,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    session_batch = sharding.check_batch_size(config.train.batch_size, "train.batch_size")
    steps_per_epoch = pipeline.steps_per_epoch(session_batch)
    if steps_per_epoch == 0:
        raise UserError(
            f"The training split has {pipeline.num_examples['train']} examples, fewer than one "
            f"batch (config.train.batch_size={config.train.batch_size}); lower the batch size."
        )
    session = Session(config, pipeline, steps_per_epoch)
    log = reporting.RunLog(workdir.path, write=is_chief)
    tensorboard = reporting.TensorBoard(workdir.path) if is_chief else None
    run = RunMetadata.from_config(config, pipeline.class_names, pipeline.norm_stats)

    state, meta = session.state, _fresh_meta()
    if stored_run is not None:
        _check_resumable(stored_run, config, pipeline.class_names, workdir)
        state, meta = checkpoints.restore(manager, resume_step, session.state, session.replicated)
        logging.info(
            "Resuming from %s step %d (epoch %d done, %d batches into the next).",
            workdir.checkpoints,
            resume_step,
            meta["epoch"],
            meta["batches_done"],
        )
    else:
        if config.train.init_from:
            state = sharding.put_replicated(
                warm_start.warm_start(
                    session.state, config, pipeline.class_names, pipeline.input_shape
                ),
                session.mesh,
            )
        if is_chief:
            _write_run_header(config, pipeline, workdir, log)
    stopper = (
        EarlyStopping.from_dict(meta["early_stopping"], config.train.patience)
        if meta["early_stopping"]
        else EarlyStopping(config.train.patience)
    )
    # Validation that was trained on picks no checkpoint and stops nothing.
    held_out = not config.data.train_on_validation
    if meta["finished"] and not stopper.exhausted:
        # A run that stopped early, resumed with a larger train.patience: it goes on.
        meta["finished"] = False
        log.line(
            f"Continuing a run that had stopped early: train.patience is now "
            f"{config.train.patience}, {stopper.epochs_without_improvement} epochs since the "
            "best validation loss."
        )
    global_batch = config.train.batch_size
    lr_at = optim.learning_rate_schedule(config.train, steps_per_epoch)

    with StopRequests() as stop_requests:
        while not meta["finished"] and meta["epoch"] < config.train.epochs:
            epoch = meta["epoch"] + 1
            start = time.time()
            skip = meta["batches_done"]
            sums = meta["partial_sums"]
            batches = itertools.islice(pipeline.train_batches(epoch, session_batch), skip, None)
            # A context, so the bar ends its line however the epoch ends (a second Ctrl-C
            # included): the message printed next must start a line of its own.
            with tqdm(
                total=steps_per_epoch * global_batch,
                initial=skip * global_batch,
                desc=f"epoch {epoch}/{config.train.epochs}",
                unit="ex",
                disable=not is_chief,
                dynamic_ncols=True,
            ) as bar:
                # Steps are queued asynchronously; the bar counts a step when it has finished,
                # keeping QUEUED_STEPS in flight so the device never waits for the host.
                in_flight = collections.deque()
                for batch_index, batch in enumerate(batches, start=skip + 1):
                    state, metrics = session.train_step(
                        state, sharding.put_batch(batch, session.mesh)
                    )
                    sums = _add(sums, metrics)
                    in_flight.append(metrics["count"])
                    if len(in_flight) > QUEUED_STEPS:
                        in_flight.popleft().block_until_ready()
                        bar.update(global_batch)
                    if batch_index % PROGRESS_EVERY == 0 or batch_index == steps_per_epoch:
                        running = _sums_to_floats(sums)
                        _check_finite(
                            running["loss_sum"],
                            epoch,
                            int(state.step),
                            manager.latest_step(),
                            workdir,
                        )
                        bar.set_postfix(
                            loss=f"{running['loss_sum'] / running['count']:.4f}",
                            acc=f"{running['correct_sum'] / running['count']:.3f}",
                        )
                    # The step number on the host: reading state.step would wait for the device.
                    if stop_requests.should_stop((epoch - 1) * steps_per_epoch + batch_index):
                        partial_sums = _sums_to_floats(sums)
                        _check_finite(
                            partial_sums["loss_sum"],
                            epoch,
                            int(state.step),
                            manager.latest_step(),
                            workdir,
                        )
                        meta.update(
                            batches_done=batch_index,
                            partial_sums=partial_sums,
                            train_seconds=meta["train_seconds"] + time.time() - start,
                        )
                        checkpoints.save(manager, int(state.step), state, meta, run, metrics=None)
                        raise Interrupted(
                            f"{stop_requests.reason}: saved checkpoint step {int(state.step)} "
                            f"(epoch {epoch}, batch {batch_index}/{steps_per_epoch}) in "
                            f"{workdir.checkpoints}; run the same command to resume."
                        )
                bar.update(global_batch * len(in_flight))
            train_sums = _sums_to_floats(sums)
            _check_finite(
                train_sums["loss_sum"], epoch, int(state.step), manager.latest_step(), workdir
            )
            val = eval_loop.evaluate_split(
                session.eval_step,
                state,
                pipeline,
                "validation",
                session.eval_batch_size,
                session.mesh,
            )
            seconds = time.time() - start
            record = {
                "epoch": epoch,
                "step": int(state.step),
                "train_loss": train_sums["loss_sum"] / train_sums["count"],
                "train_accuracy": train_sums["correct_sum"] / train_sums["count"],
                "val_loss": val.loss,
                "val_accuracy": val.accuracy,
                "lr": float(lr_at(int(state.step))),
                "seconds": seconds,
            }
            stop = held_out and stopper.update(val.loss)
            meta.update(
                epoch=epoch,
                batches_done=0,
                partial_sums=None,
                history=meta["history"] + [record],
                early_stopping=stopper.to_dict(),
                # Only early stopping ends a run for good: a larger train.epochs continues it.
                finished=stop,
                train_seconds=meta["train_seconds"] + seconds,
            )
            checkpoints.save(
                manager,
                int(state.step),
                state,
                meta,
                run,
                metrics={checkpoints.BEST_METRIC: val.accuracy} if held_out else None,
            )
            if is_chief:
                _report_epoch(log, tensorboard, record, config, steps_per_epoch, workdir, meta)
            if stop:
                log.line(
                    f"Early stopping: validation loss has not improved for "
                    f"{config.train.patience} epochs (best {stopper.best_loss:.4f})."
                )
    return _finish(config, workdir, session, pipeline, manager, log)


def _report_epoch(log, tensorboard, record, config, steps_per_epoch, workdir, meta):
    examples = steps_per_epoch * config.train.batch_size
    log.line(
        f"Epoch {record['epoch']}/{config.train.epochs} "
        f"train Loss: {record['train_loss']:.4f} Acc: {record['train_accuracy']:.4f} "
        f"val Loss: {record['val_loss']:.4f} Acc: {record['val_accuracy']:.4f} "
        f"({examples / record['seconds']:.1f} ex/s, {record['seconds']:.1f} s, "
        f"lr {record['lr']:.2e})"
    )
    tensorboard.scalars(
        record["step"], {k: v for k, v in record.items() if k not in ("epoch", "step")}
    )
    reporting.plot_history(meta["history"], workdir.history_plot)


def _finish(config, workdir, session, pipeline, manager, log) -> dict:
    """Tests the best checkpoint (the last, with data.train_on_validation) and writes
    results.json."""
    best_step = checkpoints.choose_step(manager, -1)
    state, _ = checkpoints.restore(manager, best_step, session.state, session.replicated)
    meta = checkpoints.restore_meta(manager, manager.latest_step())
    best = next(h for h in meta["history"] if h["step"] == best_step)
    test = eval_loop.evaluate_split(
        session.eval_step, state, pipeline, "test", session.eval_batch_size, session.mesh
    )
    results = {
        "model": config.model.name,
        "best_val_accuracy": best["val_accuracy"],
        "best_step": best_step,
        "best_epoch": best["epoch"],
        # Whether the best_* checkpoint is simply the last (validation was trained on).
        "train_on_validation": bool(config.data.train_on_validation),
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "test_examples": test.num_examples,
        "epochs_run": len(meta["history"]),
        "train_seconds": meta["train_seconds"],
        "history": meta["history"],
    }
    kept = "Last (validation trained on)" if config.data.train_on_validation else "Best"
    if jax.process_index() == 0:
        eval_loop.write_report(
            test,
            pipeline.class_names,
            workdir.eval_report("test"),
            workdir.confusion_plot("test"),
            "test",
            best_step,
        )
        reporting.write_json(workdir.results, results)
        log.summary(
            [
                f"Training time: {meta['train_seconds']:.1f} s",
                f"{kept} val Acc: {best['val_accuracy']:.4f} "
                f"(epoch {best['epoch']}, step {best_step})",
                f"Test Acc: {test.accuracy:.4f} ({test.num_examples} clips)",
            ]
        )
    return results
