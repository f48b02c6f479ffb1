"""One command fed from Python: `Filter` collects its output into a buffer, `FdFilter`
sends it to a file descriptor, `filter_bytes` runs it over bytes (age over a part).

Each runs through `Pipeline`, so a failure raises CommandFailed naming the command, with
its stderr tail (invariant 9).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from types import TracebackType

from subvault.process.pipeline import pipeline
from subvault.process.splice import CHUNK, big_pipe
from subvault.process.streams import PipelineReader, StageStoppedReading


def filter_bytes(argv: Sequence[str], data: bytes | bytearray | memoryview, *, what: str = "") -> bytes:
    """Given a command and input bytes, return its stdout. Raise CommandFailed if it fails."""
    out = bytearray()
    n, _, _ = filter_bytes_hashed(argv, data, out, what=what)
    return bytes(memoryview(out)[:n])


def filter_bytes_hashed(
    argv: Sequence[str], data: bytes | bytearray | memoryview, out: bytearray, *, what: str = ""
) -> tuple[int, str, str]:
    """Run argv with data as stdin, its stdout read into out (grown if needed, reused if not).

    Return the output length and the SHA-256 (hex) of the input and of the output, each
    computed while the bytes pass. Raise CommandFailed if the command fails.
    """
    in_hash = hashlib.sha256()
    with Filter(argv, out, what=what) as job:
        with memoryview(data) as view:
            for start in range(0, len(view), CHUNK):
                chunk = view[start:start + CHUNK]
                if not job.write(chunk):
                    break
                in_hash.update(chunk)
        n, out_sha = job.result()
    return n, in_hash.hexdigest(), out_sha


class _FedCommand:
    """The stdin side shared by Filter and FdFilter: a pipe the caller writes or splices into,
    and the wait for the thread that runs the command."""

    _argv: list[str]
    _what: str
    _in_w: int
    _stopped: bool
    _done: bool
    _error: BaseException | None

    @property
    def stdin(self) -> int:
        """The write end of the command's stdin, a pipe (for splice)."""
        return self._in_w

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Feed data to the command's stdin. Return False if it stopped reading (result() says why)."""
        with memoryview(data) as view:
            while view:
                try:
                    view = view[os.write(self._in_w, view):]
                except BrokenPipeError:
                    self._stopped = True
                    return False
        return True

    def end_input(self) -> None:
        """Close the command's stdin (it sees the end of its input)."""
        if self._in_w >= 0:
            os.close(self._in_w)
            self._in_w = -1

    def _wait(self, thread: threading.Thread | None) -> None:
        """End the input, wait for the thread that runs the command, and raise what went wrong:
        its error (CommandFailed), or StageStoppedReading if it exited without reading all its input."""
        self.end_input()
        assert thread is not None
        thread.join()
        self._done = True
        if self._error is not None:
            raise self._error
        if self._stopped:
            raise StageStoppedReading(f"{self._what or self._argv[0]}: the command exited without reading all its input")


class Filter(_FedCommand):
    """Run one command whose stdin the caller writes and whose stdout a thread collects.

    The output goes into `out` (grown only if it is too small, so a buffer reused across
    calls is faulted in once) and is hashed (SHA-256) while it is hot in the cache.
    Use as a context manager: `write()` feeds stdin, `result()` ends the input, waits
    for the command and returns (output length, output SHA-256). Leaving the block
    without `result()` kills the command. The command runs through `process.pipeline`,
    so a failure raises CommandFailed naming it, with its stderr tail (invariant 9).
    """

    def __init__(self, argv: Sequence[str], out: bytearray, *, what: str = "") -> None:
        self._argv, self._out, self._what = list(argv), out, what
        self._in_r, self._in_w = -1, -1
        self._reader: PipelineReader | None = None
        self._collector: threading.Thread | None = None
        self._got = 0
        self._out_hash = hashlib.sha256()
        self._error: BaseException | None = None
        self._stopped = False
        self._done = False

    def __enter__(self) -> Filter:
        self._in_r, self._in_w = big_pipe()
        self._reader = PipelineReader([self._argv], what=self._what, stdin=self._in_r).__enter__()
        self._collector = threading.Thread(target=self._collect, daemon=True, name="filter-out")
        self._collector.start()
        return self

    def _collect(self) -> None:
        """Read stdout to its end, then wait for the command (its error is kept for result())."""
        assert self._reader is not None
        try:
            while True:
                if len(self._out) - self._got < CHUNK:
                    self._out.extend(bytes(max(CHUNK, len(self._out) // 8)))
                with memoryview(self._out) as view:
                    k = self._reader.readinto(view[self._got:])
                    self._out_hash.update(view[self._got:self._got + k])
                if not k:
                    break
                self._got += k
        except BaseException as exc:  # re-raised by result() in the caller's thread
            self._error = exc
        finally:
            # The command closed its stdout. Closing our copy of its stdin lets a writer
            # blocked on a command that stopped reading see EPIPE instead of hanging.
            os.close(self._in_r)
            self._in_r = -1
        try:
            self._reader.finish()
        except BaseException as exc:
            self._error = self._error or exc

    def kill(self) -> None:
        """End the input and stop the command; result() or leaving the block still waits for it."""
        self.end_input()
        if self._reader is not None:
            self._reader.kill()

    def result(self) -> tuple[int, str]:
        """End the input, wait for the command; return (output length, output SHA-256 hex).

        Raise CommandFailed if it failed, StageStoppedReading if it exited without
        reading all its input.
        """
        self._wait(self._collector)
        return self._got, self._out_hash.hexdigest()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.end_input()
        if self._reader is not None and not self._done:
            self._reader.kill()
            assert self._collector is not None
            self._collector.join()
            self._done = True
        if self._reader is not None:
            self._reader.__exit__(None, None, None)


class FdFilter(_FedCommand):
    """Run one command whose stdin the caller writes and whose stdout is a file descriptor.

    Nothing the command writes passes through Python (point stdout at the file that
    will hold the result). Use as a context manager: `write()` feeds stdin (or splice
    into `stdin`), `result()` ends the input, waits for the command and raises
    CommandFailed naming it, with its stderr tail (invariant 9), or StageStoppedReading.
    Leaving the block without `result()` kills the command.
    """

    def __init__(self, argv: Sequence[str], stdout: int, *, what: str = "") -> None:
        self._argv, self._what = list(argv), what
        self._pipeline = pipeline([self._argv], what=what, stdin=None, stdout=stdout)
        self._in_r, self._in_w = -1, -1
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stopped = False
        self._done = False

    def __enter__(self) -> FdFilter:
        self._in_r, self._in_w = big_pipe()
        self._pipeline.stdin = self._in_r
        self._thread = threading.Thread(target=self._run, daemon=True, name="filter")
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._pipeline.run()
        except BaseException as exc:  # re-raised by result() in the caller's thread
            self._error = exc
        finally:
            # The command has exited: closing our copy of its stdin's read end lets a
            # writer blocked on a command that stopped reading see EPIPE.
            os.close(self._in_r)

    def kill(self) -> None:
        """End the input and stop the command; result() or leaving the block still waits for it."""
        self.end_input()
        self._pipeline.kill()

    def result(self) -> None:
        """End the input and wait for the command; raise if it failed or stopped reading."""
        self._wait(self._thread)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._done:
            self.kill()
            if self._thread is not None:
                self._thread.join()
            self._done = True
        self.end_input()

