"""The masked evaluation loop over a split, and what it measures.

Training (validation every epoch, the final test) and `--mode eval` both use it, so it
sits below both. Every example of the split counts exactly once: the pipeline pads the
last batch and masks the padding, and with several processes each reports its own rows.
"""

import dataclasses

import jax
import numpy as np
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
    # Predicted class of each of this process's examples, in the split's order.
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
    """Runs `eval_step` over every example of `split` exactly once."""
    num_classes = len(pipeline.class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    loss_sum = correct_sum = count = 0.0
    predicted = []
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
        predicted.append(predictions)
    if count == 0:
        raise ValueError(f"split {split!r} has no examples to evaluate")
    return EvalResult(
        loss_sum / count, correct_sum / count, int(count), confusion, np.concatenate(predicted)
    )


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
