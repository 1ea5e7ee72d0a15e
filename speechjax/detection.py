"""Finding commands in a stream of per-window class posteriors: pure numpy, no JAX.

A long recording is scanned with a one-clip window every hop; each window gives class
probabilities (from speechjax, an exported TFLite/ONNX model, anything). The detector
follows the semantics of TensorFlow's `RecognizeCommands` (the streaming recogniser of its
speech-commands example): posteriors are averaged over the windows of the last
`average_s` seconds, and a command is reported when the averaged top score reaches
`threshold` and the same label was not reported within `suppress_s` seconds. Labels that
are not commands (`_silence_`, `_unknown_`, `silence`, `unknown`) are never reported.

It imports nothing but numpy, so the same logic runs beside any runtime:

    from speechjax.detection import CommandDetector
    detector = CommandDetector(labels, clip_seconds=1.0)
    for start_s, probabilities in windows:          # in time order
        if (found := detector.update(start_s, probabilities)) is not None:
            print(found)
"""

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

NOT_COMMANDS = frozenset({"_silence_", "_unknown_", "silence", "unknown"})


@dataclasses.dataclass(frozen=True)
class Detection:
    """A command heard in [start_s, end_s) (the window that scored it highest)."""

    label: str
    score: float
    start_s: float
    end_s: float

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "score": round(self.score, 6),
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
        }


class CommandDetector:
    """Streaming detector over (window start, posteriors) pairs; see the module docstring."""

    def __init__(
        self,
        class_names: Sequence[str],
        clip_seconds: float,
        average_s: float = 0.5,
        threshold: float = 0.8,
        suppress_s: float = 1.5,
    ):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if average_s < 0 or suppress_s < 0 or clip_seconds <= 0:
            raise ValueError("average_s and suppress_s must be >= 0, clip_seconds > 0")
        self.class_names = list(class_names)
        self.clip_seconds = clip_seconds
        self.average_s = average_s
        self.threshold = threshold
        self.suppress_s = suppress_s
        self._commands = np.array([name not in NOT_COMMANDS for name in self.class_names])
        if not self._commands.any():
            raise ValueError("every class is a non-command label; nothing can be detected")
        self._recent: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._last_reported: dict[str, float] = {}
        self._last_start = -np.inf

    def update(self, start_s: float, posteriors: np.ndarray) -> Detection | None:
        """Adds the window starting at `start_s` (later than the last); returns a detection
        if this window completes one."""
        posteriors = np.asarray(posteriors, np.float64).reshape(-1)
        if len(posteriors) != len(self.class_names):
            raise ValueError(f"{len(posteriors)} posteriors for {len(self.class_names)} classes")
        if start_s <= self._last_start:
            raise ValueError(f"windows must come in time order: {start_s} after {self._last_start}")
        self._last_start = start_s = float(start_s)
        self._recent.append((start_s, posteriors))
        # A small tolerance keeps windows exactly average_s back despite float hops.
        while self._recent[0][0] < start_s - self.average_s - 1e-9:
            self._recent.popleft()
        average = np.mean([p for _, p in self._recent], axis=0)
        scores = np.where(self._commands, average, -np.inf)
        best = int(np.argmax(scores))
        label, score = self.class_names[best], float(average[best])
        if score < self.threshold:
            return None
        last = self._last_reported.get(label)
        if last is not None and start_s - last <= self.suppress_s:
            return None
        self._last_reported[label] = start_s
        peak_start = max(self._recent, key=lambda item: item[1][best])[0]
        return Detection(label, score, peak_start, peak_start + self.clip_seconds)


def detect(
    window_starts_s: Sequence[float],
    posteriors: np.ndarray,
    class_names: Sequence[str],
    clip_seconds: float,
    average_s: float = 0.5,
    threshold: float = 0.8,
    suppress_s: float = 1.5,
) -> list[Detection]:
    """Every detection in a whole recording's windows ([n] starts, [n, classes] posteriors)."""
    detector = CommandDetector(class_names, clip_seconds, average_s, threshold, suppress_s)
    found = (detector.update(t, p) for t, p in zip(window_starts_s, posteriors, strict=True))
    return [d for d in found if d is not None]
