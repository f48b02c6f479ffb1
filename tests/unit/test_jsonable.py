"""to_jsonable: choosing the conversion once per type gives what checking each value did."""

import dataclasses
import enum
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from subvault.model import LocalSnapshot
from subvault.results import to_jsonable


def reference(value: Any) -> Any:
    """The rule as it was written before: every value checked in this order."""
    if isinstance(value, (str, int, float, bool, type(None))) and type(value) in (str, int, float, bool, type(None)):
        return value
    if dataclasses.is_dataclass(type(value)):
        return {f.name: reference(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return reference(value.value)
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): reference(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [reference(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((reference(v) for v in value), key=str)
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


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 2


class Name(enum.StrEnum):
    A = "a"


class Count(int):
    pass


@dataclasses.dataclass
class Empty:
    pass


@dataclasses.dataclass(frozen=True)
class One:
    only: Any


def test_every_kind_of_value_converts_as_before():
    snap = LocalSnapshot("home", 3, Path("/home/.snapshots/3/snapshot"), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                         "d", "timeline", "timeline", True, "u", None, {"subvault": "timeline"})
    value = {
        "snap": snap, "snaps": [snap, snap], "enums": (Color.RED, Level.HIGH, Name.A), "count": Count(4),
        1: {2: None, True: 1.5}, "set": {3, "a", 1}, "frozen": frozenset({b"x"}), "day": date(2026, 1, 2),
        "delta": [timedelta(seconds=90), timedelta(milliseconds=1500)], "pure": PurePosixPath("/x"),
        "bytes": b"\xff", "empty": Empty(), "one": One(One(Path("/y"))), "other": object.__new__(Empty).__class__,
    }
    assert to_jsonable(value) == reference(value)
    assert to_jsonable(value) == reference(value)  # the converters chosen the first time are reused
