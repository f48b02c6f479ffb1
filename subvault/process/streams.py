"""A pipeline's end read or written from Python: `PipelineReader` hands the caller the
last stage's output (the offsite layer cuts it into parts), `PipelineWriter` feeds the
first stage (a restore's decrypted parts).

Both are built on `Pipeline` (which still starts every process, checks every stage and
stops the siblings on failure, invariant 9) by handing it one end of a pipe and running
it in a thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from subvault.errors import SubvaultError
from subvault.process.pipeline import Pipeline, pipeline
from subvault.process.splice import big_pipe, read_full


class StageStoppedReading(SubvaultError):
    """A pipeline's first stage exited successfully without reading all its input."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_libc.tee.restype = ctypes.c_ssize_t


def _tee(fd_in: int, fd_out: int, n: int) -> int:
    """tee(2): duplicate up to n bytes from pipe fd_in into pipe fd_out (blocking); return the count."""
    while True:
        got: int = _libc.tee(fd_in, fd_out, n, 0)
        if got >= 0:
            return got
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


class PipelineReader:
    """Run stages with the last one's stdout readable by the caller.

    Use as a context manager. `read(n)` returns up to n bytes (fewer only at the end of
    the stream). `finish()` waits for every stage and raises the pipeline's error (the
    first stage that failed, with its stderr tail). Leaving the block early kills every
    stage still running.
    """

    def __init__(self, stages: Sequence[Sequence[str]], *, what: str = "", stdin: int | None = None) -> None:
        self._pipeline = pipeline(stages, what=what, stdin=stdin, stdout=None)
        self._rfd, self._wfd = -1, -1
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._finished = False
        self._check_r, self._check_w = -1, -1
        self.bytes_read = 0

    def __enter__(self) -> PipelineReader:
        self._rfd, self._wfd = big_pipe()
        self._pipeline.stdout = self._wfd
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._pipeline.run()
        except BaseException as exc:  # handed to the reading thread by finish()
            self._error = exc
        finally:
            os.close(self._wfd)

    def read(self, n: int) -> bytearray:
        """Return the next n bytes, or fewer at the end of the stream."""
        buf = bytearray(n)
        del buf[self.fill(buf):]
        return buf

    def fill(self, buf: bytearray) -> int:
        """Read into buf until it is full or the stream ends; return the number of bytes read.

        Reusing one buffer per slice keeps the process from faulting in fresh pages for
        every part (that cost more system time than the copying itself).
        """
        got = read_full(self._rfd, buf)
        self.bytes_read += got
        return got

    def pass_to(self, fd: int, n: int, scratch: memoryview, check: Callable[[memoryview], None]) -> int:
        """Move up to n bytes of the stream to the pipe fd, showing check() a copy of them.

        Return the number moved, 0 at the end of the stream. The bytes go to fd by
        splice(2) and are duplicated for check() by tee(2), so Python reads them once
        and never writes them. Raise BrokenPipeError if fd's reader has gone.
        """
        if self._check_r < 0:
            self._check_r, self._check_w = big_pipe()
        got = _tee(self._rfd, self._check_w, min(n, len(scratch)))
        moved = 0
        while moved < got:
            moved += os.splice(self._rfd, fd, got - moved)
        seen = 0
        while seen < got:
            k = os.readv(self._check_r, [scratch[seen:got]])
            seen += k
        check(scratch[:got])
        self.bytes_read += got
        return got

    def readinto(self, view: memoryview) -> int:
        """Read what is available (at least 1 byte, blocking) into view; return 0 at the end."""
        got = os.readv(self._rfd, [view])
        self.bytes_read += got
        return got

    def kill(self) -> None:
        """Stop every stage; the reader then sees the end of the stream."""
        self._pipeline.kill()

    def finish(self) -> None:
        """Wait for every stage; raise the pipeline's error if a stage failed."""
        assert self._thread is not None
        self._thread.join()
        self._finished = True
        if self._error is not None:
            raise self._error

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._finished:
            self._pipeline.kill()
            # Drain so a stage blocked on a full pipe sees SIGTERM promptly.
            if self._thread is not None:
                while self._thread.is_alive():
                    if not os.read(self._rfd, 1 << 20):
                        break
                self._thread.join()
        if self._rfd >= 0:
            os.close(self._rfd)
            self._rfd = -1
        for fd in (self._check_r, self._check_w):
            if fd >= 0:
                os.close(fd)
        self._check_r = self._check_w = -1


class PipelineWriter:
    """Run stages with the first one's stdin written by the caller.

    Use as a context manager; `write(data)` feeds the first stage, `finish()` closes its
    stdin, waits for every stage and raises the pipeline's error. Leaving the block
    without `finish()` kills every stage. The last stage's stdout goes to `stdout`
    (an fd; default: discarded).
    """

    def __init__(self, stages: Sequence[Sequence[str]], *, what: str = "", stdout: int | None = None) -> None:
        self._stages = [list(s) for s in stages]
        self._what = what
        self._stdout = os.open(os.devnull, os.O_WRONLY) if stdout is None else stdout
        self._own_stdout = stdout is None
        self._pipeline: Pipeline | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._rfd, self._wfd = -1, -1
        self._finished = False

    def __enter__(self) -> PipelineWriter:
        self._rfd, self._wfd = os.pipe()
        self._pipeline = pipeline(self._stages, what=self._what, stdin=self._rfd, stdout=self._stdout)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._pipeline is not None
        try:
            self._pipeline.run()
        except BaseException as exc:  # handed to the writing thread by finish()
            self._error = exc

    def write(self, data: bytes) -> None:
        """Feed data to the first stage. Raise the pipeline's error if it stopped reading."""
        assert self._thread is not None
        view = memoryview(data)
        while view:
            # Our copy of the read end keeps the pipe open, so a stage that died would
            # leave a plain write blocked forever: wait for room, watching the stages.
            _, writable, _ = select.select([], [self._wfd], [], 0.5)
            if not writable:
                if not self._thread.is_alive():
                    self.finish()
                    raise StageStoppedReading(f"{self._what or 'pipeline'}: the receiving command stopped reading its input")
                continue
            view = view[os.write(self._wfd, view[: 1 << 16]):]

    def _close_write(self) -> None:
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1
        if self._rfd >= 0:
            os.close(self._rfd)
            self._rfd = -1

    def finish(self) -> None:
        """Close the first stage's stdin, wait for every stage, raise the first failure."""
        assert self._thread is not None
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1
        self._thread.join()
        self._finished = True
        self._close_write()
        if self._error is not None:
            raise self._error

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._finished and self._pipeline is not None:
            self._pipeline.kill()
            self._close_write()
            if self._thread is not None:
                self._thread.join()
        self._close_write()
        if self._own_stdout:
            os.close(self._stdout)
