"""What a run leaves for people: log.txt lines, TensorBoard scalars, JSON results, plots."""

import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging


class RunLog:
    """Appends human-readable lines to `workdir/log.txt` (the original's log) and echoes them.

    write=False (every process but the first of a multi-process run) only echoes: one
    process writes the run's files.
    """

    def __init__(self, workdir: str, write: bool = True):
        self.path = os.path.join(workdir, "log.txt")
        self._write = write

    def line(self, text: str) -> None:
        logging.info("%s", text)
        if self._write:
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
        if self._write and ending != lines:
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


def plot_detections(
    waveform: np.ndarray,
    sample_rate: int,
    window_starts_s: np.ndarray,
    clip_seconds: float,
    posteriors: np.ndarray,
    class_names: Sequence[str],
    detections: Sequence,
    threshold: float,
    path: str,
    title: str,
) -> None:
    """A long recording's log-mel spectrogram with the detected commands marked, above each
    command class's posterior per window (at the window's centre) and the threshold."""
    import librosa

    plt = _pyplot()
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=sample_rate, n_fft=512, hop_length=160, n_mels=64
    )
    duration = len(waveform) / sample_rate
    fig, (ax_spec, ax_score) = plt.subplots(
        2, 1, figsize=(max(8.0, duration * 0.5), 6), sharex=True, height_ratios=(3, 2)
    )
    ax_spec.imshow(
        librosa.power_to_db(mel, ref=np.max),
        origin="lower",
        aspect="auto",
        extent=(0, duration, 0, mel.shape[0]),
        cmap="magma",
    )
    for found in detections:
        ax_spec.axvspan(found.start_s, found.end_s, color="cyan", alpha=0.25)
        ax_spec.text(
            (found.start_s + found.end_s) / 2,
            mel.shape[0] * 0.92,
            f"{found.label} {found.score:.2f}",
            ha="center",
            color="white",
            fontsize=8,
            weight="bold",
        )
    ax_spec.set(ylabel="mel band", title=f"{title}: {len(detections)} detections")
    centres = np.asarray(window_starts_s) + clip_seconds / 2
    reported = {found.label for found in detections}
    for index, name in enumerate(class_names):
        if name in reported:
            ax_score.plot(centres, posteriors[:, index], label=name, linewidth=1.2)
        else:
            ax_score.plot(centres, posteriors[:, index], color="0.75", linewidth=0.6)
    ax_score.axhline(threshold, color="red", linestyle="--", linewidth=1, label="threshold")
    ax_score.set(xlabel="seconds", ylabel="posterior (per window)", ylim=(0, 1.02))
    ax_score.legend(fontsize=7, ncol=4, loc="upper right")
    ax_score.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_batch(
    clean: np.ndarray,
    augmented: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str,
    title: str,
) -> None:
    """Pairs of spectrograms [n, T, F, C] (first channel), clean beside augmented, each
    titled with its label: what the network sees in training."""
    plt = _pyplot()
    count = len(labels)
    columns = 4  # two pairs a row
    rows = -(-count // 2)
    fig, axes = plt.subplots(rows, columns, figsize=(12, 2.2 * rows), squeeze=False)
    low = min(float(clean[..., 0].min()), float(augmented[..., 0].min()))
    high = max(float(clean[..., 0].max()), float(augmented[..., 0].max()))
    for ax in axes.flat:
        ax.axis("off")
    for index in range(count):
        for column, (images, kind) in enumerate(((clean, "clean"), (augmented, "augmented"))):
            ax = axes[index // 2, 2 * (index % 2) + column]
            ax.imshow(
                images[index, :, :, 0].T,
                origin="lower",
                aspect="auto",
                vmin=low,
                vmax=high,
                cmap="magma",
            )
            ax.set_title(f"{class_names[labels[index]]} ({kind})", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
