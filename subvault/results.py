"""Result values that commands return and the CLI renders (text or versioned JSON)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from subvault.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, about, describe

JSON_VERSION = 1


@dataclass
class Item:
    """One line of work: a subvolume (or target) and what happened to it."""

    subject: str
    action: str  # created, not-due, deleted, kept, would-delete, failed, …
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a command did. `errors` are the per-subvolume/per-target failures, one line each."""

    command: str
    items: list[Item] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    def fail(self, subject: str, error: BaseException) -> None:
        message = describe(error)
        self.errors.append(about(subject, message))
        self.items.append(Item(subject, "failed", message))

    def merge(self, other: Outcome) -> None:
        self.items.extend(other.items)
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)

    @property
    def exit_code(self) -> int:
        if not self.errors:
            return EXIT_OK
        succeeded = any(i.action != "failed" for i in self.items)
        return EXIT_PARTIAL if succeeded else EXIT_FAILED


_SCALARS = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, paths, times and durations into JSON-ready values.

    Durations are seconds (a number); times are ISO 8601; sets are sorted lists. Any
    other object becomes its string, so that `--json` output is always valid JSON.
    Runs once per field of 10,000 snapshots in `list --json`: scalars are answered
    first and each dataclass's field names are looked up once.
    """
    kind = type(value)
    if kind in _SCALARS:
        return value
    names = _FIELD_NAMES.get(kind)
    if names is None and dataclasses.is_dataclass(kind):
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(kind))
    if names is not None:
        return {n: to_jsonable(getattr(value, n)) for n in names}
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=str)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def envelope(command: str, payload: Any, exit_code: int = EXIT_OK) -> dict[str, Any]:
    """The versioned JSON document every `--json` prints: version, command, exit_code, result."""
    return {"version": JSON_VERSION, "command": command, "exit_code": exit_code, "result": to_jsonable(payload)}


def error_envelope(command: str, message: str, exit_code: int) -> dict[str, Any]:
    """The versioned JSON document of a command that stopped with an error (no result)."""
    return {"version": JSON_VERSION, "command": command, "exit_code": exit_code, "error": message}
