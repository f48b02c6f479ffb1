"""Result values that commands return and the CLI renders (text or versioned JSON)."""

from __future__ import annotations

import dataclasses
import enum
import operator
from collections.abc import Callable
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


_SCALARS = frozenset((str, int, float, bool, type(None)))
_CONVERTERS: dict[type, Callable[[Any], Any]] = {}


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, paths, times and durations into JSON-ready values.

    Durations are seconds (a number); times are ISO 8601; sets are sorted lists. Any
    other object becomes its string, so that `--json` output is always valid JSON.
    Runs once per field of 10,000 snapshots in `list --json`: scalars are answered
    inline, and the conversion of every other type is chosen once per type.
    """
    kind = type(value)
    if kind in _SCALARS:
        return value
    convert = _CONVERTERS.get(kind)
    if convert is None:
        convert = _CONVERTERS[kind] = _converter(kind)
    return convert(value)


def _converter(kind: type) -> Callable[[Any], Any]:
    """How values of exactly this type are converted (the order of the checks is the rule)."""
    if dataclasses.is_dataclass(kind):
        names = tuple(f.name for f in dataclasses.fields(kind))
        if not names:
            return lambda value: {}
        values = operator.attrgetter(*names) if len(names) > 1 else (lambda value: (getattr(value, names[0]),))

        def fields(value: Any) -> dict[str, Any]:
            return {n: v if type(v) in _SCALARS else to_jsonable(v) for n, v in zip(names, values(value), strict=True)}

        return fields
    if issubclass(kind, enum.Enum):
        return lambda value: to_jsonable(value.value)
    if issubclass(kind, (bool, int, float, str)):
        return lambda value: value
    if issubclass(kind, dict):
        return lambda value: {str(k): v if type(v) in _SCALARS else to_jsonable(v) for k, v in value.items()}
    if issubclass(kind, (list, tuple)):
        return lambda value: [v if type(v) in _SCALARS else to_jsonable(v) for v in value]
    if issubclass(kind, (set, frozenset)):
        return lambda value: sorted((to_jsonable(v) for v in value), key=str)
    if issubclass(kind, datetime):
        return lambda value: value.isoformat()
    if issubclass(kind, timedelta):
        return _seconds
    if issubclass(kind, Path):
        return str
    if issubclass(kind, bytes):
        return lambda value: value.decode("utf-8", "replace")
    return str


def _seconds(value: timedelta) -> int | float:
    seconds = value.total_seconds()
    return int(seconds) if seconds.is_integer() else seconds


def envelope(command: str, payload: Any, exit_code: int = EXIT_OK) -> dict[str, Any]:
    """The versioned JSON document every `--json` prints: version, command, exit_code, result."""
    return {"version": JSON_VERSION, "command": command, "exit_code": exit_code, "result": to_jsonable(payload)}


def error_envelope(command: str, message: str, exit_code: int) -> dict[str, Any]:
    """The versioned JSON document of a command that stopped with an error (no result)."""
    return {"version": JSON_VERSION, "command": command, "exit_code": exit_code, "error": message}
