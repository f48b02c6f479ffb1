"""Reading `btrfs receive --dump` lines: the text form of a send stream. Pure.

Each line is a command, the path it acts on (relative, starting with the received
subvolume's name, spaces escaped as '\\ '), then key=value details.
"""

from __future__ import annotations

import re


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def inside(path: str) -> str:
    """Dump paths start with the received subvolume's name; return the part inside it."""
    parts = path.removeprefix("./").split("/", 1)
    return parts[1] if len(parts) > 1 else ""


def split_line(line: str) -> tuple[str, str, str]:
    """Split a dump line into (command, path inside the subvolume, the rest)."""
    parts = re.split(r"(?<!\\)\s+", line.strip(), maxsplit=2)
    cmd = parts[0] if parts else ""
    path = unescape(parts[1]) if len(parts) > 1 else ""
    rest = parts[2] if len(parts) > 2 else ""
    return cmd, inside(path), rest


_EXTENT = re.compile(r"offset=(\d+)\s+len=(\d+)")


def extents(text: str) -> list[tuple[str, int, int]]:
    """Given the dump of a --no-data send, return (path, offset, length) of each extent it would send, in stream order."""
    out = []
    for line in text.splitlines():
        if not line.startswith("update_extent"):
            continue
        _, path, rest = split_line(line)
        m = _EXTENT.search(rest)
        if m and path:
            out.append((path, int(m.group(1)), int(m.group(2))))
    return out
