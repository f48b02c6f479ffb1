"""Render result values as text or versioned JSON. The only place output is formatted."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from subvault.run.results import Outcome, envelope


LONG_LIST = 64


def emit_json(command: str, payload: Any) -> None:
    click.echo(dumps_pretty(envelope(command, payload)))


def dumps_pretty(value: Any, level: int = 0) -> str:
    """JSON indented by two spaces, except that each element of a list longer than
    LONG_LIST goes on one line of its own.

    json's indent is pure Python (2,300 ms for 10,000 snapshots); whole elements go
    through its C encoder. Output equals json.dumps(value, indent=2) for short lists.
    """
    pad, inner = "\n" + "  " * level, "\n" + "  " * (level + 1)
    if isinstance(value, dict) and value:
        body = ("," + inner).join(f"{json.dumps(str(k))}: {dumps_pretty(v, level + 1)}" for k, v in value.items())
        return "{" + inner + body + pad + "}"
    if isinstance(value, list) and value:
        if len(value) > LONG_LIST:
            body = ("," + inner).join(map(_compact, value))
        else:
            body = ("," + inner).join(dumps_pretty(v, level + 1) for v in value)
        return "[" + inner + body + pad + "]"
    return json.dumps(value)


_compact = json.JSONEncoder(separators=(", ", ": ")).encode


def emit_outcome(outcome: Outcome, as_json: bool, *, verbose: bool = False) -> int:
    """Print an Outcome and return its exit code. In text, kept snapshots are counted unless verbose."""
    if as_json:
        emit_json(outcome.command, outcome)
        return outcome.exit_code
    prefix = "[dry-run] " if outcome.dry_run else ""
    kept: dict[str, int] = {}
    lines = []
    for item in outcome.items:
        if item.action == "failed":
            continue
        if item.action == "keep" and not verbose:
            kept[item.subject] = kept.get(item.subject, 0) + 1  # what stays is summed up; --json lists it
            continue
        detail = f"  {item.detail}" if item.detail else ""
        lines.append(f"{prefix}{item.subject:<20} {item.action:<13}{detail}")
    lines += [f"{prefix}{subject:<20} {'keep':<13}  {n} snapshots" for subject, n in kept.items()]
    if lines:
        click.echo("\n".join(lines))
    for warning in outcome.warnings:
        click.echo(f"warning: {warning}", err=True)
    for error in outcome.errors:
        click.echo(f"error: {error}", err=True)
    return outcome.exit_code


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Plain fixed-width table that fits 80 columns for typical content."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in rows]
    return "\n".join(lines)


def error(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def is_tty() -> bool:
    return sys.stderr.isatty()


_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {10: "\\n", 9: "\\t", 13: "\\r", 127: "\\x7f", ord("\\"): "\\\\"}


def printable(text: str) -> str:
    """Return text safe for one line of a terminal: control characters and backslashes
    escaped as in C (`new\\nline`), bytes that are not UTF-8 as \\xNN."""
    out = text.translate(_CONTROL)
    if any("\udc80" <= ch <= "\udcff" for ch in out):
        out = "".join(f"\\x{ord(ch) - 0xDC00:02x}" if "\udc80" <= ch <= "\udcff" else ch for ch in out)
    return out
