"""Text for a terminal line: `printable` escapes what a terminal would not show as itself,
and `outcome_rows` lays out a command's outcome as aligned rows.

Nothing heavier than os is imported here: snap-all's fast start (`cli/fast.py`) prints
through this module as the full CLI (`cli/render.py`) does, so both print the same text.
"""

from __future__ import annotations

import codecs
import os
import sys

# (typing is not imported: with the re and enum it pulls in, 8 ms of the fast start.)


def write_line(line: str, *, err: bool = False) -> None:
    """Write one line to stdout (stderr) as click.echo does, and flush it, so lines of the
    two keep their order in one file: in the stream's own encoding, except that a stream
    set to ASCII is written as UTF-8 (click takes that for a misconfigured locale). A
    closed stream (None): nothing. Raise OSError, or UnicodeEncodeError as click would."""
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    if codecs.lookup(getattr(stream, "encoding", None) or "ascii").name == "ascii":
        stream.flush()
        stream.buffer.write(line.encode("utf-8", "replace") + b"\n")
        stream.buffer.flush()
    else:
        stream.write(line + "\n")
        stream.flush()


def settle_stdout() -> None:
    """Flush stdout; when it cannot be written (a closed pipe, a full disk), point it at
    /dev/null, so the interpreter's own flush at exit cannot make the exit code Python's 120."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def outcome_rows(rows: list[tuple[str, str, str]], prefix: str = "") -> str:
    """(subject, action, detail) rows as aligned lines: subject and action padded, detail last."""
    w_subject = max(len(printable(r[0])) for r in rows)
    w_action = max(len(r[1]) for r in rows)
    lines = []
    for subject, action, detail in rows:
        line = f"{prefix}{printable(subject):<{w_subject}}  {action:<{w_action}}  {printable(detail)}"
        lines.append(line.rstrip())
    return "\n".join(lines)


_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {10: "\\n", 9: "\\t", 13: "\\r", 127: "\\x7f", ord("\\"): "\\\\"}


def printable(text: str) -> str:
    """Return text safe for one line of a terminal: control characters and backslashes
    escaped as in C (`new\\nline`), bytes that are not UTF-8 as \\xNN, and any other
    character a terminal would not print as itself (a line separator, a bidi override)
    as \\xNN or \\uNNNN. Printable text, the common case, is returned as it is."""
    if text.isprintable() and "\\" not in text:
        return text
    out = text.translate(_CONTROL)
    return out if out.isprintable() else "".join(ch if ch.isprintable() else _escape(ch) for ch in out)


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"
