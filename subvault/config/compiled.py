"""The compiled config: the little snap-all's fast start needs from a config the schema validated.

The full CLI saves it when a command loaded the config and took the lock as root (never
in a dry run), one file per config path under RUNTIME_DIR (/run/subvault: a tmpfs, gone
at boot). The fast start (`cli/fast.py`) uses it only when all of these hold, and
otherwise declines so that the full CLI runs the command:
- the config file's text is, byte for byte, the text the schema validated;
- the code that validated it is the same: subvault's version, and the size and mtime of
  every subvault module the saving process had loaded (the schema, its rules and all
  they import among them), so an upgrade or an edited rule anywhere invalidates it;
- the saved file and its directory belong to the user reading them and are writable by
  no one else.
Nothing heavier than os and marshal is imported here: `save` is given plain values.
"""

from __future__ import annotations

import marshal
import os
import stat
import sys
import zlib

from subvault import __version__
from subvault.config.location import MAX_CONFIG_BYTES

FORMAT = 1
RUNTIME_DIR = "/run/subvault"


class Compiled:
    """What snap-all needs: where the lock is, and each subvolume's name and path, in config order."""

    __slots__ = ("state_dir", "subvolumes")

    def __init__(self, state_dir: str, subvolumes: list[tuple[str, str]]) -> None:
        self.state_dir = state_dir
        self.subvolumes = subvolumes


def runtime_dir() -> str:
    """Where compiled configs are kept ($SUBVAULT_RUNTIME_DIR for tests, else /run/subvault)."""
    return os.environ.get("SUBVAULT_RUNTIME_DIR") or RUNTIME_DIR


def save(config_file: str, text: str, compiled: Compiled) -> None:
    """Save what the schema made of `text`, the content of config_file (its real path). Raise OSError."""
    directory = runtime_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if not _private(os.stat(directory)):
        return  # not ours alone: never written to, never read from
    data = marshal.dumps({"format": FORMAT, "version": __version__, "code": _loaded_code(), "path": config_file, "text": text,
                          "state_dir": compiled.state_dir, "subvolumes": compiled.subvolumes})
    path = _file(directory, config_file)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.rename(tmp, path)
    except BaseException:  # any failure, even an interrupt: no temp file is left behind; re-raised
        os.unlink(tmp)
        raise


def load(config_file: str) -> Compiled | None:
    """The compiled form of config_file (its real path) if every rule above holds, else None."""
    text = _read_text(config_file)
    directory = runtime_dir()
    if text is None:
        return None
    try:
        if not _private(os.stat(directory)):
            return None
        fd = os.open(_file(directory, config_file), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            if not _private(os.fstat(fh.fileno())):
                return None
            saved = marshal.loads(fh.read(2 * MAX_CONFIG_BYTES + (1 << 20)))
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(saved, dict):
        return None
    if (saved.get("format"), saved.get("version"), saved.get("path"), saved.get("text")) != (FORMAT, __version__, config_file, text):
        return None
    if not _unchanged(saved.get("code")):
        return None
    return Compiled(saved["state_dir"], [(name, path) for name, path in saved["subvolumes"]])


def _read_text(config_file: str) -> str | None:
    """The config's text as `config/load.read_config` would read it, or None if that would refuse it."""
    try:
        fd = os.open(config_file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_CONFIG_BYTES:
        return None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None


def _private(st: os.stat_result) -> bool:
    """Owned by us and writable by no one else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _file(directory: str, config_file: str) -> str:
    # Two config paths with one checksum share a file: each save replaces the other's, and
    # `load` finds the path it wanted stored inside, or nothing.
    return os.path.join(directory, f"compiled-{zlib.crc32(os.fsencode(config_file)):08x}")


def _loaded_code() -> list[tuple[str, int, int]]:
    """(file, size, mtime) of every subvault module this process has loaded."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    files = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    code = []
    for path in sorted(f for f in files if isinstance(f, str) and f.startswith(package)):
        st = os.stat(path)
        code.append((path, st.st_size, st.st_mtime_ns))
    return code


def _unchanged(code: object) -> bool:
    """Whether every module recorded by `_loaded_code` is still the same file (a non-empty record)."""
    if not isinstance(code, list) or not code:
        return False
    try:
        for path, size, mtime in code:
            st = os.stat(path)
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                return False
    except (OSError, TypeError, ValueError):
        return False
    return True
