"""Reading `btrfs receive --dump` lines: the text form of a send stream.

Each line is a command, the path it acts on (relative, starting with the received
subvolume's name, spaces escaped as '\\ '), then key=value details.
"""

from __future__ import annotations

import re
import tempfile

from subvault import process

_C_ESCAPES = {"a": 7, "b": 8, "e": 27, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
_ESCAPE = re.compile(r"\\([0-7]{3}|.)", re.DOTALL)


def unescape(text: str) -> str:
    """Undo btrfs-progs' path escaping: \\ooo octal bytes, C escapes (\\n, \\t, …), and
    a backslash before any other character (space, backslash, '=') standing for itself.

    Octal escapes are bytes of the name (UTF-8 or not), so the result is decoded with
    surrogateescape: a name that is not valid UTF-8 still maps back to its exact bytes.
    """
    if "\\" not in text:
        return text
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8", "surrogateescape")
        code = m.group(1)
        if len(code) == 3:
            out.append(int(code, 8))
        elif code in _C_ESCAPES:
            out.append(_C_ESCAPES[code])
        else:
            out += code.encode("utf-8", "surrogateescape")
        pos = m.end()
    out += text[pos:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "surrogateescape")


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


def metadata_dump(parent: str | None, snapshot: str) -> str:
    """Return the `btrfs receive --dump` text of a metadata-only send of snapshot (from parent).

    The stream goes through a temporary file, not a pipe: `receive --dump` stops reading
    at the stream's end marker, and send can then die of SIGPIPE on a stream that was
    complete (seen with ~10,000 changes). With a file each side is checked on its own.
    """
    with tempfile.NamedTemporaryFile(prefix="subvault-dump-") as stream:
        process.run(
            ["btrfs", "send", "--no-data", "-q", "-f", stream.name, *(["-p", parent] if parent else []), snapshot],
            what="btrfs send --no-data",
        )
        return process.run(["btrfs", "receive", "--dump", "-f", stream.name], what="btrfs receive --dump").stdout
