"""The meter: progress and stall detection for a pipeline's stream.

A stall is judged by progress, never by a wall-clock limit: no new bytes for
`stall_seconds` stops the whole pipeline and raises StalledTransfer. The count comes
from the kernel's I/O accounting of one stage (`IoMeter`, no byte passes through us)
or, where the kernel keeps no such count, from the bytes spliced through this process
(`Meter.moved`, see splice.py).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

from subvault.errors import StalledTransfer
from subvault.process.launch import Stage

ProgressCallback = Callable[[int], None]


class Meter:
    """Waits on one fd at a time, with stall detection by progress, and reports progress.

    `failed()` says whether a stage has failed (the wait then gives up); `stop()` stops
    every stage (on a stall, before StalledTransfer is raised).
    """

    def __init__(
        self,
        what: str,
        stall_seconds: float | None,
        progress: ProgressCallback | None,
        watch: ProgressCallback | None,
        *,
        failed: Callable[[], bool],
        stop: Callable[[], None],
    ) -> None:
        self.what = what
        self.watch = watch
        self.stall_seconds = stall_seconds
        self.progress = progress
        self.failed = failed
        self.stop = stop
        self.last_move = time.monotonic()
        self.last_report = 0.0
        self.pollers: dict[tuple[int, int], select.poll] = {}

    def close(self) -> None:
        self.pollers.clear()

    def wait(self, fd: int, event: int) -> bool:
        """Block until fd is ready; return False if a stage failed meanwhile. Raise StalledTransfer."""
        key = (fd, event)
        poller = self.pollers.get(key)
        if poller is None:
            poller = self.pollers[key] = select.poll()
            poller.register(fd, event | select.POLLERR | select.POLLHUP)
        while not poller.poll(1000):
            self.check_stall(time.monotonic())
            if self.failed():
                return False
        return True

    def check_stall(self, now: float) -> None:
        """Raise StalledTransfer, after stopping every stage, when no byte moved for stall_seconds."""
        if self.stall_seconds and now - self.last_move > self.stall_seconds:
            self.stop()
            raise StalledTransfer(
                f"{self.what or 'transfer'} stalled: no data for {int(self.stall_seconds)}s; "
                "check the network and the target, then run again (it resumes)"
            )

    def moved(self, total: int) -> None:
        """total bytes have moved so far: restart the stall clock, tell watch, and progress at most twice a second."""
        now = time.monotonic()
        self.last_move = now
        if self.watch:
            self.watch(total)
        if self.progress and now - self.last_report >= 0.5:
            self.progress(total)
            self.last_report = now


class IoMeter(Meter):
    """Counts the stream from the kernel's I/O accounting (/proc/PID/io): no byte passes through us.

    The count is a stage's writes (wchar) or, after an ssh stage, the next stage's reads
    (rchar; see counted_stage). For `btrfs send` it is exactly the stream (the kernel's
    writes for its ioctl are accounted to it); for zstd what it wrote.
    """

    TICK = 0.25

    def __init__(self, stage: Stage, field: str, what: str, stall_seconds: float | None,
                 progress: ProgressCallback | None, watch: ProgressCallback | None, *,
                 failed: Callable[[], bool], stop: Callable[[], None]) -> None:
        super().__init__(what, stall_seconds, progress, watch, failed=failed, stop=stop)
        self.stage = stage
        self.field = field.encode() + b":"
        self.path = f"/proc/{stage.proc.pid}/io"
        self.total = 0

    def sample(self, alive: bool = True) -> None:
        """Read the count (while the stage is alive); report news; raise StalledTransfer (after stopping every stage) on a stall."""
        count = io_count(self.path, self.field) if alive else None
        if count is not None and count > self.total:
            self.total = count
            self.moved(count)
            return
        self.check_stall(time.monotonic())


def counted_stage(argvs: list[list[str]], after: int) -> tuple[int, str] | None:
    """Return (stage index, /proc/PID/io field) whose count is the stream leaving stage `after`.

    Normally that stage's writes (wchar). An ssh client, though, may be a ControlMaster
    client that hands its pipes to the master: then count what the next stage reads
    (rchar). None when neither can be counted (ssh is the last stage), or the kernel
    keeps no counts: splice instead.
    """
    if not io_accounting():
        return None
    if argvs[after][:1] != ["ssh"]:
        return after, "wchar"
    if after + 1 < len(argvs):
        return after + 1, "rchar"
    return None


def io_count(path: str, field: bytes = b"wchar:") -> int | None:
    """Return one field (b"wchar:", b"rchar:") of a /proc/PID/io file, or None once the process is gone."""
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


_IO_ACCOUNTING: bool | None = None


def io_accounting() -> bool:
    """True when the kernel keeps per-process I/O counts this process may read (CONFIG_TASK_IO_ACCOUNTING)."""
    global _IO_ACCOUNTING
    if _IO_ACCOUNTING is None:
        _IO_ACCOUNTING = io_count(f"/proc/{os.getpid()}/io") is not None
    return _IO_ACCOUNTING
