"""What a run leaves for people: log.txt lines, TensorBoard scalars, JSON results, plots."""

import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging


class RunLog:
    """Appends human-readable lines to `workdir/log.txt` (the original's log) and echoes them."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "log.txt")

    def line(self, text: str) -> None:
        logging.info("%s", text)
        with open(self.path, "a") as f:
            f.write(text + "\n")

    def summary(self, lines: list[str]) -> None:
        """Appends a run's closing lines, unless the log already ends with them: rerunning a
        finished run tests it again, and its summary stays in the log once."""
        try:
            with open(self.path) as f:
                ending = f.read().splitlines()[-len(lines) :]
        except FileNotFoundError:
            ending = []
        for text in lines:
            logging.info("%s", text)
        if ending != lines:
            with open(self.path, "a") as f:
                f.write("".join(text + "\n" for text in lines))


class TensorBoard:
    def __init__(self, workdir: str):
        self._writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self._writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(name, value, step=step)
        self._writer.flush()


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _pyplot():
    # Agg: plots are files; no display is needed or wanted on servers and in CI.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: Sequence[dict], path: str) -> None:
    """Loss and accuracy per epoch, train and validation, side by side."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], marker="o", label=split)
        ax_acc.plot(epochs, [h[f"{split}_accuracy"] for h in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: str, title: str):
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
    plt = _pyplot()
    totals = confusion.sum(axis=1, keepdims=True)
    rates = confusion / np.maximum(totals, 1)
    size = max(6.0, 0.28 * len(class_names))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, class_names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
