"""Secrets files: read only when nobody but the owner can read them (invariant 11)."""

from __future__ import annotations

import stat
from pathlib import Path

from subvault.errors import PermanentError


class SecretsFileExposed(PermanentError):
    """A secrets file is missing, unreadable, or readable by group or others."""


def read_private(path: str | Path, what: str) -> str:
    """Return the text of a secrets file. Raise SecretsFileExposed unless only its owner can access it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecretsFileExposed(f"{what} {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsFileExposed(
            f"{what} {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    try:
        return path.read_text()
    except OSError as exc:
        raise SecretsFileExposed(f"{what} {path}: {exc.strerror}") from None
