"""speechjax.stop_requests on one process: a first signal asks for a checkpoint, a second
stops at once, however the two arrive."""

import os
import signal
import sys

import pytest

from speechjax import stop_requests
from speechjax.stop_requests import StopRequests


def test_a_first_signal_asks_for_a_checkpoint_and_a_second_stops_at_once():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequests() as requests:
        assert not requests.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert requests.should_stop(2) and requests.reason == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            signal.getsignal(signal.SIGINT)  # a bytecode boundary, where Python runs handlers
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_second_signal_inside_the_first_ones_handler_still_stops_at_once(monkeypatch):
    # Signals sent back to back: the second can interrupt the first one's handler before it
    # has recorded anything but the signal. Simulated by running the second handler from
    # the first one's signal-name lookup.
    requests = StopRequests()
    real_signals = signal.Signals

    def second_signal_arrives(signum):
        monkeypatch.setattr(stop_requests.signal, "Signals", real_signals)
        requests._handle(signal.SIGTERM, None)
        return real_signals(signum)

    monkeypatch.setattr(stop_requests.signal, "Signals", second_signal_arrives)
    with pytest.raises(KeyboardInterrupt):
        requests._handle(signal.SIGINT, None)


class _RaisesWhenCollected:
    def __init__(self, error):
        self.error = error

    def __del__(self):
        raise self.error


def test_a_swallowed_second_interrupt_stops_at_the_next_step_without_a_traceback(monkeypatch):
    # In CI the second signal's handler ran inside one of XLA's gc callbacks: Python ignored
    # the KeyboardInterrupt and printed "Exception ignored in ... Traceback" under main.py's
    # one-line message. Other errors Python cannot raise are still reported.
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    with StopRequests() as requests:
        _RaisesWhenCollected(KeyboardInterrupt())  # before any signal: not a stop request
        assert [type(u.exc_value) for u in reported] == [KeyboardInterrupt]
        os.kill(os.getpid(), signal.SIGINT)
        try:
            # As if the main thread were in a finaliser when the second signal's handler ran.
            os.kill(os.getpid(), signal.SIGTERM)
            signal.getsignal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        _RaisesWhenCollected(KeyboardInterrupt())
        _RaisesWhenCollected(ValueError("a finaliser's own bug"))
        assert [type(u.exc_value) for u in reported] == [KeyboardInterrupt, ValueError]
        with pytest.raises(KeyboardInterrupt):
            requests.should_stop(3)
    assert sys.unraisablehook == reported.append
