"""Moving a stream between pipes inside the kernel, for the few cases where bytes must
pass through this process (a metered stream whose stage the kernel cannot count).

splice(2) moves them pipe to pipe without a copy through Python; where it cannot (a
sink that is no pipe, no os.splice) they are copied in CHUNK pieces. Pipes are widened
to PIPE_BYTES, so each wake-up moves that much, not one 64 KiB default pipe's worth.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
from collections.abc import Callable

from subvault.process.meter import Meter

PIPE_BYTES = 1 << 20  # the default /proc/sys/fs/pipe-max-size
CHUNK = 1 << 20


def widen_pipe(fd: int) -> None:
    """Ask for a PIPE_BYTES pipe buffer on fd (best effort: a file, or a lower limit, just keeps its size)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass


def big_pipe() -> tuple[int, int]:
    """Return an os.pipe() (read end, write end) widened to PIPE_BYTES where the kernel allows."""
    rfd, wfd = os.pipe()
    widen_pipe(wfd)
    return rfd, wfd


def pump(src_fd: int, sink_fd: int, meter: Meter) -> int:
    """Move bytes from src_fd to sink_fd until the end of the stream; return the count.

    Both directions are waited on through the meter, so a stalled reader or a stalled
    writer is noticed (StalledTransfer). Return early, with the count so far, when a
    stage failed while we waited (the caller's wait reports it). Raise BrokenPipeError
    when the sink's reader has gone.
    """
    total = 0
    for fd in (src_fd, sink_fd):
        widen_pipe(fd)
    use_splice = hasattr(os, "splice")
    while meter.wait(src_fd, select.POLLIN):
        try:
            if use_splice:
                n = os.splice(src_fd, sink_fd, PIPE_BYTES, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            else:
                n = copy_chunk(src_fd, sink_fd)
        except BlockingIOError:
            # The source is readable, so the sink is full: wait for the reader.
            if not meter.wait(sink_fd, select.POLLOUT):
                break
            continue
        except OSError as exc:
            if exc.errno == errno.EINVAL and use_splice:
                use_splice = False  # a sink splice cannot write to; copy instead
                continue
            raise
        if n == 0:
            break
        total += n
        meter.moved(total)
    return total


def copy_chunk(src_fd: int, sink_fd: int) -> int:
    """Copy up to CHUNK bytes through user space (when splice cannot be used); return the count."""
    chunk = os.read(src_fd, CHUNK)
    view = memoryview(chunk)
    while view:
        view = view[os.write(sink_fd, view):]
    return len(chunk)


def read_full(fd: int, buf: bytearray, seen: Callable[[memoryview], None] | None = None) -> int:
    """Read fd into buf until buf is full or the stream ends; return the bytes read.

    `seen` is given each chunk as it arrives (e.g. to hash it while it is in cache).
    """
    got = 0
    with memoryview(buf) as view:
        while got < len(buf):
            k = os.readv(fd, [view[got:]])
            if not k:
                break
            if seen is not None:
                seen(view[got:got + k])
            got += k
    return got
