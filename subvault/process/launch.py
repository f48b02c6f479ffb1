"""What every process this package starts has in common: argv as text, a redacted log
line, errors as typed values, and a stage that dies with the thread that started it."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from subvault.errors import CommandFailed, NoSpace
from subvault.secrets import redact

log = logging.getLogger("subvault.process")

STDERR_TAIL_LINES = 20


@dataclass
class Stage:
    """One started process of a pipeline (the meter watches one of them)."""

    argv: list[str]
    proc: subprocess.Popen[bytes]
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    reader: threading.Thread | None = None


def as_text(argv: Sequence[object]) -> list[str]:
    """Return argv with every element as a string (paths, numbers)."""
    return [str(a) for a in argv]


def describe(argv: Sequence[str]) -> str:
    """Return argv as one line for a log or a message, secrets replaced by ***."""
    return redact(" ".join(argv))


def not_found(argv: Sequence[str], what: str) -> CommandFailed:
    """Return the error for a program that is not installed."""
    return CommandFailed(list(argv), 127, f"{argv[0]}: command not found; install it", what)


def raise_for(argv: Sequence[str], returncode: int, stderr: str, what: str) -> NoReturn:
    """Raise NoSpace when stderr says the disk is full, else CommandFailed with the stderr tail (redacted)."""
    stderr = redact(stderr)
    if "No space left on device" in stderr or "ENOSPC" in stderr:
        raise NoSpace(f"{what or describe(argv[:3])}: no space left on device; free space or prune, then retry")
    raise CommandFailed([redact(a) for a in argv], returncode, stderr, what)


def dies_with_us(argv: list[str]) -> list[str]:
    """Return argv run so that it is killed when the thread that started it ends (PR_SET_PDEATHSIG).

    A stage's bytes never pass through this process, so nothing else would stop a send
    | receive whose subvault was killed: it would finish unattended while the next run
    may already be clearing its destination. Every Pipeline is waited for by the thread
    that started it, so that thread ends only after its stages (util-linux's setpriv;
    without it the stage runs as given).
    """
    setpriv = _setpriv()
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def wait_armed(pid: int) -> None:
    """Return once the child started through `dies_with_us` carries its death signal.

    setpriv sets it, then execs the program; a parent killed before that would leave
    the program running. Popen returns once setpriv runs, so this waits (a few ms at
    most) for the child's executable to be something else than setpriv, or for the
    child to be gone.
    """
    setpriv = _setpriv()
    if not setpriv:
        return
    real = os.path.realpath(setpriv)
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        try:
            if os.readlink(f"/proc/{pid}/exe") != real:
                return
        except OSError:  # gone, or a zombie already
            return
        time.sleep(0.0005)


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")
