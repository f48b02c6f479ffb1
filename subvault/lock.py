"""One subvault at a time: an flock on <state_dir>/lock.

The lock file holds the owner's pid for the message; the lock itself is the flock, so
a crashed owner never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from subvault.errors import LockHeld, SubvaultError


@contextmanager
def exclusive(state_dir: str | os.PathLike[str], *, wait: float = 0.0) -> Iterator[None]:
    """Hold the subvault lock for the duration of the block.

    Wait up to `wait` seconds for another run to finish; raise LockHeld naming its pid.
    """
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SubvaultError(f"state_dir {os.fspath(state_dir)} is not a directory; move that file aside, or set "
                            "defaults.state_dir to a directory") from None
    path = os.path.join(state_dir, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not _flock(fd, wait):
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LockHeld(f"another subvault (pid {owner}) is running and holds {path}; wait for it, or pass --wait SECONDS")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextmanager
def on_directory(directory: str | os.PathLike[str], *, wait: float = 0.0) -> Iterator[None]:
    """Hold an flock on a directory itself (no file is written there): two processes
    working on one directory exclude each other whatever their state dirs.

    Raise LockHeld after `wait` seconds.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not _flock(fd, wait):
            raise LockHeld(f"another subvault works on {directory}; wait for it, or pass --wait SECONDS")
        yield
    finally:
        os.close(fd)


def _flock(fd: int, wait: float) -> bool:
    """Take an exclusive flock on fd, waiting up to `wait` seconds; return whether it was taken."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)  # polling an flock held by another process
