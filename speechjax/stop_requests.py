"""When training stops for a signal: every process at the same step, after a checkpoint.

One process: the first SIGINT or SIGTERM becomes a flag the loop reads after each step,
which then saves a checkpoint and stops; a second signal stops at once (KeyboardInterrupt).

Several processes: a flag per process is not enough. A process that stops to save while
the others keep stepping waits forever in the checkpoint's collectives (and they in the
next step's). JAX's preemption service (started by `jax.distributed.initialize`) hears
SIGTERM on any process, tells all of them, and agrees on the first step that every
process can still reach; `multihost_utils.reached_preemption_sync_point(step)` is true
there on every process. It hears only SIGTERM, through its own C++ handler, so no Python
SIGTERM handler may replace that one here; a first Ctrl-C (SIGINT) is passed on to it as a
SIGTERM to this process, and a second one still stops at once.
"""

import os
import signal
import sys

import jax
from absl import logging
from jax.experimental import multihost_utils


class StopRequests:
    """Context manager: `should_stop(step)` after each train step; `reason` says why."""

    def __init__(self):
        self.reason: str | None = None
        self._previous = {}
        self._agreed = jax.process_count() > 1
        # Every signal heard, appended first thing in the handler (one C call, so a handler
        # that interrupts another still counts it; a check-then-set on `reason` could lose it).
        self._received: list[int] = []
        self._previous_unraisablehook = None

    def __enter__(self):
        self._previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        signals = (signal.SIGINT,) if self._agreed else (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self._received.append(signum)
        if len(self._received) > 1:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        logging.warning("%s received: saving a checkpoint, then stopping.", self.reason)
        if self._agreed:
            os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption service, as above

    def _unraisable(self, unraisable):
        # A second signal's KeyboardInterrupt raised where Python can only ignore it (a gc
        # callback of XLA's, measured in CI) would print a traceback under the one-line
        # message; should_stop raises it again, so it is not lost. Anything else is reported
        # as before.
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and len(self._received) > 1:
            return
        self._previous_unraisablehook(unraisable)

    def should_stop(self, step: int) -> bool:
        """True at the step where this process (and, with several, every process) saves and
        stops. With several processes it must be called at every step, by every process.

        Raises KeyboardInterrupt after a second signal whose own KeyboardInterrupt did not
        reach the loop: it can be raised in code that swallows exceptions (a finaliser, a
        callback from C), and the user still asked to stop at once."""
        if len(self._received) > 1:
            raise KeyboardInterrupt
        if not self._agreed:
            return self.reason is not None
        if multihost_utils.reached_preemption_sync_point(step):
            self.reason = self.reason or (
                f"stop request (SIGTERM or Ctrl-C on one of {jax.process_count()} processes)"
            )
            return True
        return False

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = self._previous_unraisablehook
