"""Parsers for btrfs-progs output, shared by the local adapter and the remote endpoints. Pure.

Output is read by key, never by column position, so a btrfs-progs that adds fields
does not break them.
"""

from __future__ import annotations

import re

_SHOW_RE = re.compile(r"^\s*([A-Za-z][A-Za-z ()]*?):\s*(.*)$")


def list_line(line: str) -> dict[str, str]:
    """Parse one `btrfs subvolume list` line into a dict keyed by field name ("path" last)."""
    head, sep, path = line.partition(" path ")
    if not sep:
        return {}
    out: dict[str, str] = {"path": path}
    tokens = head.split()
    i = 0
    while i < len(tokens):
        if tokens[i] == "top" and i + 2 < len(tokens) and tokens[i + 1] == "level":
            out["top level"] = tokens[i + 2]
            i += 3
        elif tokens[i] == "otime" and i + 2 < len(tokens):
            out["otime"] = f"{tokens[i + 1]} {tokens[i + 2]}"
            i += 3
        elif i + 1 < len(tokens):
            out[tokens[i]] = tokens[i + 1]
            i += 2
        else:
            i += 1
    return out


def show_fields(text: str) -> tuple[str, dict[str, str]]:
    """Parse `btrfs subvolume show` output: (its first line, {field: value})."""
    lines = text.splitlines()
    fields: dict[str, str] = {}
    for line in lines[1:]:
        m = _SHOW_RE.match(line)
        if m:
            fields.setdefault(m.group(1).strip(), m.group(2).strip())
    return (lines[0].strip() if lines else ""), fields


def uuid_or_none(value: str | None) -> str | None:
    """btrfs prints "-" for an absent uuid."""
    return None if value in (None, "", "-") else value
