"""Secrets (invariant 11): the registry of values never shown (`mask`, `redact`), and
secrets files, read only when nobody but root or the running user can read or change them."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from subvault.errors import SubvaultError

_SECRETS: set[str] = set()


def mask(secret: str) -> None:
    """Register a secret so that it is replaced by *** in every message from here on."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


def redact(text: str) -> str:
    """Return text with every registered secret replaced by ***.

    Longest first: a secret that contains another (a whole URL and its token) is
    replaced whole, so no part of it is left showing, whatever the set's order.
    """
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class SecretsFileExposed(SubvaultError):
    """A secrets file is missing, unreadable, readable by group or others, or owned by another user."""


def exposure(st: os.stat_result, path: str | Path, what: str) -> str | None:
    """Return why a secrets file with this stat is refused, or None when it is private.

    Private: owned by root or the running user (an owner can read it, and rewrite it),
    and no access for group or others.
    """
    if st.st_uid not in (0, os.geteuid()):
        return f"{what} {path} is owned by uid {st.st_uid}, not by root or this user; run: chown {os.geteuid()} {path}"
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{what} {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
    return None


def read_private(path: str | Path, what: str) -> str:
    """Return the text of a secrets file. Raise SecretsFileExposed unless it is private (see `exposure`).

    The checks are made on the open file, so the file read is the file checked.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the open
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SecretsFileExposed(f"{what} {path}: is not a regular file (expected the file itself)")
            problem = exposure(st, path, what)
            if problem:
                raise SecretsFileExposed(problem)
            raw = f.read()
    except OSError as exc:
        raise SecretsFileExposed(f"{what} {path}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # never decoded into another secret; the byte itself is not shown
        raise SecretsFileExposed(f"{what} {path}: not UTF-8 text at byte {exc.start} (expected a UTF-8 file; re-save it as UTF-8)") from None


class RedactingFormatter(logging.Formatter):
    """A log formatter that replaces every registered secret (`mask`) with ***,
    in the message, its arguments and any traceback (invariant 11)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
