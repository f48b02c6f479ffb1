"""Snapper's on-disk layout, the part a new snapshot needs: <subvolume>/.snapshots/<N>/
with its PENDING marker and info.xml. Reading info.xml back is `btrfs/snapper.py`.

Nothing heavier than os and datetime is imported here, not even pathlib (paths are
strings): `snap-all`'s fast start (`cli/fast.py`) writes through this module, and its
start-up is measured.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

SNAPSHOTS_DIR = ".snapshots"
PENDING = ".subvault-pending"
OWNER_KEY = "subvault"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


# XML 1.0 cannot hold these characters at all, escaped or not; snapper could not read the info.xml.
_NOT_XML = frozenset([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF])


def description_problem(text: str) -> str | None:
    """Why `text` cannot be a snapshot's description in info.xml, or None when it can."""
    if not text.strip():
        return "is empty"
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            return "is not UTF-8 text (pass the description as UTF-8)"
        if code in _NOT_XML:
            what = f"the control character 0x{code:02x}" if code < 0x20 else f"the character U+{code:04X}"
            return f"holds {what}, which snapper's info.xml cannot hold"
    return None


def escape(text: str) -> str:
    """XML-escape text (xml.sax.saxutils would pull in urllib: 40 ms of start-up)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def info_xml(num: int, date: datetime, description: str, cleanup: str, userdata: tuple[tuple[str, str], ...],
             *, kind: str = "single") -> str:
    """Return info.xml text in the form snapper writes and reads (date: aware)."""
    lines = [
        '<?xml version="1.0"?>',
        "<snapshot>",
        f"  <type>{escape(kind)}</type>",
        f"  <num>{num}</num>",
        f"  <date>{date.astimezone(UTC).strftime(DATE_FORMAT)}</date>",
    ]
    if description:
        lines.append(f"  <description>{escape(description)}</description>")
    if cleanup:
        lines.append(f"  <cleanup>{escape(cleanup)}</cleanup>")
    for key, value in userdata:
        lines.append(f"  <userdata>\n    <key>{escape(key)}</key>\n    <value>{escape(value)}</value>\n  </userdata>")
    lines.append("</snapshot>")
    return "\n".join(lines) + "\n"


def write_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o644, *, durable: bool = True) -> None:
    """Write text to path so that readers see the old file or the whole new one.

    With durable=False the caller makes it durable later (one syncfs for many files).
    """
    parent, name = os.path.split(os.fspath(path))
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:  # any failure, even an interrupt: no temp file is left behind; re-raised
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dirfd = os.open(parent or ".", os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def snapshots_dir(sub_path: str | os.PathLike[str]) -> str:
    """Return <sub>/.snapshots, where a subvolume's snapshots live."""
    return os.path.join(sub_path, SNAPSHOTS_DIR)


def numbered_dirs(sdir: str | os.PathLike[str]) -> list[int]:
    """Return the numbers of every numeric entry under .snapshots, sorted."""
    nums = []
    try:
        entries = os.listdir(sdir)
    except FileNotFoundError:
        return []
    for name in entries:
        if name.isascii() and name.isdigit():  # "²".isdigit() is true, and int() refuses it
            nums.append(int(name))
    return sorted(nums)
