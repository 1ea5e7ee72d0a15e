"""The numpy command detector on scripted posterior streams."""

import subprocess
import sys

import numpy as np
import pytest

from speechjax.detection import CommandDetector, detect
from tests.helpers import REPO

CLASSES = ["yes", "no", "_silence_", "_unknown_"]
HOP = 0.1


def stream(rows: list[list[float]]):
    """Window starts every HOP seconds and the given posteriors."""
    return np.arange(len(rows)) * HOP, np.asarray(rows, np.float64)


YES = [0.9, 0.05, 0.03, 0.02]
NO = [0.05, 0.9, 0.03, 0.02]
SILENCE = [0.01, 0.01, 0.97, 0.01]
UNKNOWN = [0.02, 0.02, 0.01, 0.95]
UNSURE = [0.5, 0.4, 0.05, 0.05]


def run(rows, **kw):
    starts, posteriors = stream(rows)
    settings = dict(clip_seconds=1.0, average_s=0.0, threshold=0.8, suppress_s=1.0)
    settings.update(kw)
    return detect(starts, posteriors, CLASSES, **settings)


def test_threshold_decides():
    assert run([UNSURE] * 5) == []
    found = run([UNSURE, YES, UNSURE])
    assert [(d.label, d.start_s, d.end_s) for d in found] == [("yes", pytest.approx(0.1), 1.1)]
    assert found[0].score == pytest.approx(0.9)
    assert run([YES], threshold=0.95) == []


def test_non_command_labels_are_never_reported():
    assert run([SILENCE] * 3 + [UNKNOWN] * 3) == []
    # ...and do not hide a command: the top score is taken over commands only.
    assert [d.label for d in run([[0.85, 0.0, 0.15, 0.0]])] == ["yes"]


def test_same_label_is_suppressed_within_suppress_s_but_a_new_label_is_not():
    rows = [YES] * 5 + [NO] * 3 + [YES] * 3
    found = run(rows, suppress_s=1.0)
    # yes at 0.0; yes again at 0.1-0.4 suppressed; no at 0.5; yes at 0.8 is within 1 s of 0.0.
    assert [(d.label, round(d.start_s, 2)) for d in found] == [("yes", 0.0), ("no", 0.5)]
    found = run(rows, suppress_s=0.25)
    assert [(d.label, round(d.start_s, 2)) for d in found] == [
        ("yes", 0.0),
        ("yes", 0.3),
        ("no", 0.5),
        ("yes", 0.8),
    ]


def test_averaging_needs_a_sustained_score():
    one_spike = [UNSURE, UNSURE, YES, UNSURE, UNSURE]
    assert [d.label for d in run(one_spike, average_s=0.0)] == ["yes"]
    # Averaged over 0.2 s (three windows) a single confident window is not enough...
    assert run(one_spike, average_s=0.2) == []
    # ...three in a row are; the detection points at the window that scored highest.
    peak = [0.85, 0.1, 0.03, 0.02]
    found = run([UNSURE, peak, YES, peak, UNSURE], average_s=0.2)
    assert [(d.label, round(d.start_s, 2)) for d in found] == [("yes", 0.2)]
    assert found[0].score == pytest.approx((0.85 + 0.9 + 0.85) / 3)


def test_streaming_equals_batch_and_checks_its_input():
    rng = np.random.default_rng(0)
    posteriors = rng.dirichlet([0.2] * 4, size=200)
    starts = np.arange(200) * HOP
    batch = detect(starts, posteriors, CLASSES, 1.0, average_s=0.3, threshold=0.6)
    detector = CommandDetector(CLASSES, 1.0, average_s=0.3, threshold=0.6)
    streamed = [d for t, p in zip(starts, posteriors, strict=True) if (d := detector.update(t, p))]
    assert streamed == batch and len(batch) >= 3
    with pytest.raises(ValueError, match="time order"):
        detector.update(starts[-1], posteriors[0])
    with pytest.raises(ValueError, match="3 posteriors for 4 classes"):
        detector.update(1e6, posteriors[0][:3])
    with pytest.raises(ValueError, match="threshold"):
        CommandDetector(CLASSES, 1.0, threshold=1.5)


def test_detector_imports_without_jax():
    code = (
        "import sys; import speechjax.detection; "
        "assert 'jax' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
