"""Ctrl-C and SIGTERM as a request to stop at a safe point, not a crash in mid-write.

A terminal sends SIGINT, a cluster's scheduler SIGTERM at a job's time limit. Training
stops after writing a checkpoint at the step it reached; a study asks its trials to do the
same. Both need the same thing: the signal turned into a flag the program checks.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


class StopSignals:
    """While entered, SIGINT and SIGTERM set `received` (the signal's number) instead of
    ending the process. `on_first` runs at the first signal; with `again_stops_now`, a
    second raises KeyboardInterrupt, for a user who will not wait."""

    def __init__(self, on_first: Callable[[int], None] | None = None,
                 again_stops_now: bool = False):
        self.received: int | None = None
        self.on_first = on_first
        self.again_stops_now = again_stops_now
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers; the signals end it as before
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        if self.received is not None:
            if self.again_stops_now:
                raise KeyboardInterrupt
            return
        self.received = number
        if self.on_first is not None:
            self.on_first(number)
