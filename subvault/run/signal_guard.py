"""Signals during a pre-change: SIGTERM, SIGINT and SIGHUP interrupt the quiesce steps,
and are only recorded once cleanup (resuming Flux) has begun (invariant 6)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from subvault.errors import SubvaultError


class PrechangeInterrupted(SubvaultError):
    """A signal (SIGTERM, SIGINT, SIGHUP) stopped the run; Flux is resumed on the way out."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class SignalGuard:
    """Turns SIGTERM/SIGINT/SIGHUP into PrechangeInterrupted until `defer()`, then only records them.

    Installed only in the main thread; the old handlers come back on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._deferred = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if not self._deferred:
            self._deferred = True
            raise PrechangeInterrupted(signum)

    def defer(self) -> None:
        """From now on, signals are recorded and do not interrupt (cleanup is running)."""
        self._deferred = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
