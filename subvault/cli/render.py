"""Render result values as text or versioned JSON. The only place output is formatted.

Rules:
- `--json` prints exactly one versioned document on stdout, whatever happens: a result
  (`emit_json`) or, when the command stopped with an error, an error document (the
  CLI boundary calls `emit_json_error`, which prints nothing if a document is out).
- Text is for a person: sizes are human (`8.0 MiB`), columns are as wide as their
  longest cell, and a cell never holds a line break (control characters are escaped).
  JSON keeps the exact numbers and the raw strings.
"""

from __future__ import annotations

import json
from typing import Any

import click

from subvault.cli.textout import outcome_rows, printable
from subvault.results import Outcome, envelope, error_envelope
from subvault.units import human_size  # noqa: F401  (re-exported for the renderers)

_json_printed = False


def emit_json(command: str, payload: Any, exit_code: int = 0) -> int:
    """Print the versioned JSON document of a command's result; return exit_code."""
    global _json_printed
    click.echo(dumps_pretty(envelope(command, payload, exit_code)))
    _json_printed = True
    return exit_code


def emit_json_error(command: str, message: str, exit_code: int) -> None:
    """Print the versioned JSON document of a command that stopped with an error, unless one is out already."""
    global _json_printed
    if _json_printed:
        return
    click.echo(json.dumps(error_envelope(command, message, exit_code), indent=2))
    _json_printed = True


LONG_LIST = 64


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
        return emit_json(outcome.command, outcome, outcome.exit_code)
    prefix = "[dry-run] " if outcome.dry_run else ""
    kept: dict[str, int] = {}
    rows: list[tuple[str, str, str]] = []
    for item in outcome.items:
        if item.action == "failed":
            continue
        if item.action == "keep" and not verbose:
            kept[item.subject] = kept.get(item.subject, 0) + 1  # what stays is summed up; --json lists it
            continue
        rows.append((item.subject, item.action, item.detail))
    rows += [(subject, "keep", f"{n} snapshot{'s' if n != 1 else ''}") for subject, n in kept.items()]
    if rows:
        click.echo(outcome_rows(rows, prefix))
    for warning in outcome.warnings:
        click.echo(f"warning: {printable(warning)}", err=True)
    for error in outcome.errors:
        click.echo(f"error: {printable(error)}", err=True)
    return outcome.exit_code


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Plain table whose columns are as wide as their longest cell; cells are kept on one line."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in rows]
    return "\n".join(lines)
