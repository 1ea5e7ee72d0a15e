"""The masked evaluation loop over a split, and what it measures.

Training (validation every epoch, the final test) and `--mode eval` both use it, so it
sits below both. Every example of the split counts exactly once: the pipeline pads the
last batch and masks the padding; with several processes each evaluates its own part and
the rows are gathered, so every process gets the whole split's confusion and predictions.
"""

import dataclasses

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from speechjax import reporting, sharding
from speechjax.input_pipeline import LABEL, MASK, DataPipeline


@dataclasses.dataclass
class EvalResult:
    loss: float
    accuracy: float
    num_examples: int
    # confusion[true, predicted] counts, over real (unpadded) examples only.
    confusion: np.ndarray
    # Predicted class of each example of the split, in the split's listed order.
    predictions: np.ndarray

    def per_class_accuracy(self) -> np.ndarray:
        """Recall of each class: the fraction of its examples predicted as it."""
        return np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=1), 1)

    def per_class_precision(self) -> np.ndarray:
        """Of the examples predicted as each class, the fraction that are it (0 if none)."""
        return np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=0), 1)

    def per_class_f1(self) -> np.ndarray:
        precision, recall = self.per_class_precision(), self.per_class_accuracy()
        return np.where(
            precision + recall > 0,
            2 * precision * recall / np.maximum(precision + recall, 1e-12),
            0.0,
        )

    def most_confused(self, count: int) -> list[tuple[int, int, int]]:
        """Up to `count` (true, predicted, n) off-diagonal cells, most frequent first."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:count]
        cells = [np.unravel_index(i, off.shape) for i in order]
        return [(int(t), int(p), int(off[t, p])) for t, p in cells if off[t, p] > 0]


def evaluate_split(
    eval_step, state, pipeline: DataPipeline, split: str, batch_size: int, mesh
) -> EvalResult:
    """Runs `eval_step` over every example of `split` exactly once; with several processes
    each reads its own part, and every process returns the result of the whole split."""
    num_classes = len(pipeline.class_names)
    loss_sum = correct_sum = count = 0.0
    labels, predicted = [], []
    batches = pipeline.eval_batches(split, batch_size)
    chief = jax.process_index() == 0
    for batch in tqdm(batches, desc=f"eval {split}", leave=False, unit="batch", disable=not chief):
        metrics = jax.device_get(eval_step(state, sharding.put_batch(batch, mesh)))
        loss_sum += float(metrics["loss_sum"])
        correct_sum += float(metrics["correct_sum"])
        count += float(metrics["count"])
        # Predictions come back for the global batch; this process's rows are its slice.
        real = batch[MASK] > 0
        offset = jax.process_index() * len(real)
        predicted.append(np.asarray(metrics["predictions"])[offset : offset + len(real)][real])
        labels.append(batch[LABEL][real])
    if count == 0:
        raise ValueError(f"split {split!r} has no examples to evaluate")
    positions, labels, predicted = _whole_split(
        pipeline.positions(split),
        np.concatenate(labels),
        np.concatenate(predicted),
        largest_part=-(-pipeline.num_examples[split] // jax.process_count()),
    )
    if len(positions) != int(count):
        raise RuntimeError(f"evaluation of {split!r} saw {len(positions)} rows, counted {count}")
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    in_split_order = np.empty_like(predicted)
    in_split_order[positions] = predicted
    return EvalResult(loss_sum / count, correct_sum / count, int(count), confusion, in_split_order)


def _whole_split(
    positions, labels, predicted, largest_part: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every process's (positions, labels, predictions), gathered from all processes.

    process_allgather needs one shape everywhere: parts differ by up to one example when the
    split does not divide, so each is padded to the largest with position -1.
    """
    if jax.process_count() == 1:
        return positions, labels, predicted
    rows = np.stack([positions, labels, predicted], axis=1).astype(np.int64)
    padded = np.full((largest_part, 3), -1, np.int64)
    padded[: len(rows)] = rows
    gathered = multihost_utils.process_allgather(padded).reshape(-1, 3)
    gathered = gathered[gathered[:, 0] >= 0]
    return gathered[:, 0], gathered[:, 1], gathered[:, 2]


# Off-diagonal cells of the confusion matrix listed in a report.
_CONFUSED_PAIRS = 10


def write_report(
    result: EvalResult, class_names, path: str, plot_path: str, split: str, step: int
) -> dict:
    """Writes the JSON report to `path` and the confusion-matrix plot to `plot_path`."""
    names = list(class_names)

    def per_class(values: np.ndarray) -> dict[str, float]:
        return dict(zip(names, map(float, values), strict=True))

    record = {
        "split": split,
        "step": step,
        "accuracy": result.accuracy,
        "loss": result.loss,
        "num_examples": result.num_examples,
        "per_class_accuracy": per_class(result.per_class_accuracy()),
        "per_class_precision": per_class(result.per_class_precision()),
        "per_class_recall": per_class(result.per_class_accuracy()),
        "per_class_f1": per_class(result.per_class_f1()),
        "support": dict(zip(names, map(int, result.confusion.sum(axis=1)), strict=True)),
        "most_confused": [
            {"true": names[t], "predicted": names[p], "count": n}
            for t, p, n in result.most_confused(_CONFUSED_PAIRS)
        ],
        "confusion_matrix": result.confusion.tolist(),
        "class_names": names,
    }
    reporting.write_json(path, record)
    reporting.plot_confusion(
        result.confusion,
        names,
        plot_path,
        title=f"{split}: accuracy {result.accuracy:.3f} (step {step})",
    )
    return record


def report_lines(result: EvalResult, class_names) -> list[str]:
    """Per-class precision, recall, F1 and support, then the most confused pairs."""
    names = list(class_names)
    lines = [f"  {'class':>12s}  precision  recall     f1  support"]
    for name, precision, recall, f1, n in zip(
        names,
        result.per_class_precision(),
        result.per_class_accuracy(),
        result.per_class_f1(),
        result.confusion.sum(axis=1),
        strict=True,
    ):
        lines.append(f"  {name:>12s}  {precision:9.3f}  {recall:6.3f}  {f1:5.3f}  {n:7d}")
    pairs = result.most_confused(5)
    if pairs:
        lines.append(
            "  most confused: " + ", ".join(f"{names[t]} -> {names[p]} ({n})" for t, p, n in pairs)
        )
    return lines
