"""Evaluation: the loop over a split, and `--mode eval` (restore a checkpoint, report a split)."""

import dataclasses
import os

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from speechjax import checkpoints, input_pipeline, reporting, sharding
from speechjax.input_pipeline import LABEL, MASK


@dataclasses.dataclass
class EvalResult:
    loss: float
    accuracy: float
    num_examples: int
    # confusion[true, predicted] counts, over real (unpadded) examples only.
    confusion: np.ndarray

    def per_class_accuracy(self) -> np.ndarray:
        return np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=1), 1)


def evaluate_split(
    eval_step, state, pipeline: input_pipeline.DataPipeline, split: str, batch_size: int, mesh
) -> EvalResult:
    """Runs `eval_step` over every example of `split` exactly once."""
    num_classes = len(pipeline.class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    loss_sum = correct_sum = count = 0.0
    batches = pipeline.eval_batches(split, batch_size)
    for batch in tqdm(batches, desc=f"eval {split}", leave=False, unit="batch"):
        metrics = jax.device_get(eval_step(state, sharding.put_batch(batch, mesh)))
        loss_sum += float(metrics["loss_sum"])
        correct_sum += float(metrics["correct_sum"])
        count += float(metrics["count"])
        # Predictions come back for the global batch; this process's rows are its slice.
        real = batch[MASK] > 0
        offset = jax.process_index() * len(real)
        predictions = np.asarray(metrics["predictions"])[offset : offset + len(real)][real]
        np.add.at(confusion, (batch[LABEL][real], predictions), 1)
    if count == 0:
        raise ValueError(f"split {split!r} has no examples to evaluate")
    return EvalResult(loss_sum / count, correct_sum / count, int(count), confusion)


def per_class_lines(result: EvalResult, class_names) -> list[str]:
    accuracy = result.per_class_accuracy()
    support = result.confusion.sum(axis=1)
    return [
        f"  {name:>12s}  acc {acc:.3f}  (n={n})"
        for name, acc, n in zip(class_names, accuracy, support, strict=True)
    ]


def write_report(result: EvalResult, class_names, workdir: str, split: str, step: int) -> dict:
    """Writes eval_<split>.json and the confusion-matrix plot; returns the JSON record."""
    record = {
        "split": split,
        "step": step,
        "accuracy": result.accuracy,
        "loss": result.loss,
        "num_examples": result.num_examples,
        "per_class_accuracy": dict(
            zip(class_names, map(float, result.per_class_accuracy()), strict=True)
        ),
        "confusion_matrix": result.confusion.tolist(),
        "class_names": list(class_names),
    }
    reporting.write_json(os.path.join(workdir, f"eval_{split}.json"), record)
    reporting.plot_confusion(
        result.confusion,
        class_names,
        os.path.join(workdir, f"confusion_{split}.png"),
        title=f"{split}: accuracy {result.accuracy:.3f} (step {step})",
    )
    return record


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """`--mode eval`: restores a checkpoint of `workdir` and evaluates `config.eval.split`."""
    # Imported here: train imports this module for its evaluation loop.
    from speechjax import train

    manager = checkpoints.create_manager(workdir)
    step = checkpoints.choose_step(manager, config.eval.step, workdir)
    meta = checkpoints.restore_meta(manager, step)
    norm_stats = input_pipeline.NormStats.from_dict(meta["norm_stats"])
    pipeline = input_pipeline.create_pipeline(
        config,
        workdir,
        norm_stats=norm_stats,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    train.check_classes(pipeline, meta)
    session = train.Session(config, pipeline, steps_per_epoch=1)
    state, _ = checkpoints.restore(manager, step, session.state, session.replicated)
    split = config.eval.split
    result = evaluate_split(
        session.eval_step, state, pipeline, split, session.eval_batch_size, session.mesh
    )
    record = write_report(result, pipeline.class_names, workdir, split, step)
    logging.info(
        "Per-class accuracy on %s:\n%s",
        split,
        "\n".join(per_class_lines(result, pipeline.class_names)),
    )
    print(
        f"{split}: accuracy {result.accuracy:.4f}  loss {result.loss:.4f}  "
        f"examples {result.num_examples}  checkpoint step {step}  "
        f"-> {os.path.join(workdir, f'eval_{split}.json')}"
    )
    return record
