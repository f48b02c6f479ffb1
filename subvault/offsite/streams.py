"""Reading a pipeline's output from Python, and filtering bytes through a command.

`subvault.process.Pipeline` connects stages to each other and to file descriptors; the
offsite layer must also cut the last stage's output into parts and pass each part
through `age`. Both are built here on `Pipeline` (which still starts every process,
checks every stage and stops the siblings on failure, invariant 9) by handing it one
end of an `os.pipe()` and running it in a thread. This belongs in process.py; it
lives here until the lead moves it (`Pipeline.open_stdout()` / `process.filter_bytes`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import select
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from subvault import process
from subvault.errors import PermanentError


class StageStoppedReading(PermanentError):
    """A pipeline's first stage exited successfully without reading all its input."""


PIPE_SIZE = 1 << 20


_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_libc.tee.restype = ctypes.c_ssize_t


def _tee(fd_in: int, fd_out: int, n: int) -> int:
    """tee(2): duplicate up to n bytes from pipe fd_in into pipe fd_out (blocking); return the count."""
    while True:
        got = _libc.tee(fd_in, fd_out, n, 0)
        if got >= 0:
            return got
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


def _big_pipe() -> tuple[int, int]:
    """Return an os.pipe() enlarged to PIPE_SIZE where the kernel allows (fewer wakeups)."""
    rfd, wfd = os.pipe()
    try:
        fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size: the default size still works
    return rfd, wfd


class PipelineReader:
    """Run stages with the last one's stdout readable by the caller.

    Use as a context manager. `read(n)` returns up to n bytes (fewer only at the end of
    the stream). `finish()` waits for every stage and raises the pipeline's error (the
    first stage that failed, with its stderr tail). Leaving the block early kills every
    stage still running.
    """

    def __init__(self, stages: Sequence[Sequence[str]], *, what: str = "", stdin: int | None = None) -> None:
        self._pipeline = process.pipeline(stages, what=what, stdin=stdin, stdout=None)
        self._rfd, self._wfd = -1, -1
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._finished = False
        self._check_r, self._check_w = -1, -1
        self.bytes_read = 0

    def __enter__(self) -> PipelineReader:
        self._rfd, self._wfd = _big_pipe()
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
        got = 0
        with memoryview(buf) as view:
            while got < len(buf):
                k = os.readv(self._rfd, [view[got:]])
                if not k:
                    break
                got += k
        self.bytes_read += got
        return got

    def pass_to(self, fd: int, n: int, scratch: memoryview, check: Callable[[memoryview], None]) -> int:
        """Move up to n bytes of the stream to the pipe fd, showing check() a copy of them.

        Return the number moved, 0 at the end of the stream. The bytes go to fd by
        splice(2) and are duplicated for check() by tee(2), so Python reads them once
        and never writes them. Raise BrokenPipeError if fd's reader has gone.
        """
        if self._check_r < 0:
            self._check_r, self._check_w = _big_pipe()
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


CHUNK = 1 << 20


class _FedCommand:
    """The stdin side shared by Filter and FdFilter: a pipe the caller writes or splices into."""

    _in_w: int
    _stopped: bool

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
        self._in_r, self._in_w = _big_pipe()
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
        self.end_input()
        assert self._collector is not None
        self._collector.join()
        self._done = True
        if self._error is not None:
            raise self._error
        if self._stopped:
            raise StageStoppedReading(f"{self._what or self._argv[0]}: the command exited without reading all its input")
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
        self._pipeline = process.pipeline([self._argv], what=what, stdin=None, stdout=stdout)
        self._in_r, self._in_w = -1, -1
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stopped = False
        self._done = False

    def __enter__(self) -> FdFilter:
        self._in_r, self._in_w = _big_pipe()
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
        self.end_input()
        assert self._thread is not None
        self._thread.join()
        self._done = True
        if self._error is not None:
            raise self._error
        if self._stopped:
            raise StageStoppedReading(f"{self._what or self._argv[0]}: the command exited without reading all its input")

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._done:
            self.kill()
            if self._thread is not None:
                self._thread.join()
            self._done = True
        self.end_input()


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
        self._pipeline: process.Pipeline | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._rfd, self._wfd = -1, -1
        self._finished = False

    def __enter__(self) -> PipelineWriter:
        self._rfd, self._wfd = os.pipe()
        self._pipeline = process.pipeline(self._stages, what=self._what, stdin=self._rfd, stdout=self._stdout)
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
