"""Choose the restore point an `--at` names, on any source. Pure: no I/O.

`--at` takes, everywhere:
- a snapshot number (`3`): the source's snapper number, as `subvault list` shows it;
- a uuid, or a unique prefix of one (8 hex digits or more): the btrfs uuid of the
  snapshot (invariant 7), which tells apart points made in the same second;
- an ISO time, `latest`/`now` or an age (`2d`): the newest point at or before it;
  points made in the same second are ordered by `order` (chain length offsite).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from subvault.errors import NotFound, UsageError
from subvault.timeutil import parse_at

_UUID_PREFIX = re.compile(r"^[0-9a-f]{8}[0-9a-f-]*$")
MAX_LISTED = 5


def looks_like_uuid(text: str) -> bool:
    t = text.strip().lower()
    return bool(_UUID_PREFIX.match(t)) and not (t.isascii() and t.isdigit())


@dataclass(frozen=True)
class Point:
    """One restore point a source offers: its uuid, time, order within a second and snapper number if known."""

    uuid: str
    created: datetime
    order: int = 0
    number: int | None = None

    def label(self, tz: tzinfo) -> str:
        num = f"#{self.number} " if self.number is not None else ""
        return f"{num}{self.uuid} ({self.created.astimezone(tz):%Y-%m-%d %H:%M:%S})"


def _newness(p: Point) -> tuple[datetime, int, int, str]:
    return (p.created, p.order, p.number if p.number is not None else -1, p.uuid)


def _listed(points: list[Point], tz: tzinfo) -> str:
    newest = sorted(points, key=_newness)[-MAX_LISTED:]
    return ", ".join(p.label(tz) for p in reversed(newest)) + (f" and {len(points) - MAX_LISTED} older" if len(points) > MAX_LISTED else "")


def choose(points: Iterable[Point], at: str, now: datetime, tz: tzinfo, *, where: str, what: str = "--at") -> Point:
    """Return the point `at` names among points (of `where`, e.g. "offsite holds no … of data").

    Raise NotFound when none matches (naming what there is), UsageError when `at` is
    not a number, uuid or time, or when a number or prefix matches more than one point.
    """
    points = list(points)
    text = at.strip()
    there = f"; {where} holds {_listed(points, tz)}" if points else f"; {where} holds no restore point"
    if text.isascii() and text.isdigit():
        found = [p for p in points if p.number == int(text)]
        if not found:
            raise NotFound(f"{where}: no restore point #{text}{there}")
        if len(found) > 1:
            raise UsageError(f"{where}: #{text} names {len(found)} restore points ({_listed(found, tz)}); give --at the uuid")
        return found[0]
    if looks_like_uuid(text):
        found = [p for p in points if p.uuid.lower().startswith(text.lower())]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UsageError(f"{where}: {text} is the start of {len(found)} uuids; give more of it")
    try:
        when = parse_at(text, now, tz)
    except ValueError:
        if _UUID_PREFIX.match(text.lower()):
            raise NotFound(f"{where}: no restore point with uuid {text}{there}") from None
        raise UsageError(f'{what} "{at}" is not a snapshot number, uuid or time (expected 3, a uuid, "2026-11-20T03:00", "latest" or an age like "2d")') from None
    found = [p for p in points if p.created <= when]
    if not found:
        raise NotFound(f"{where}: no restore point at or before {when.astimezone(tz):%Y-%m-%d %H:%M}{there}")
    return max(found, key=_newness)


def time_of(at: str, points: Iterable[Point], now: datetime, tz: tzinfo) -> datetime | None:
    """Return the time `at` stands for, or None when it names a point by number or uuid."""
    text = at.strip()
    if (text.isascii() and text.isdigit()) or (_UUID_PREFIX.match(text.lower()) and any(p.uuid.lower().startswith(text.lower()) for p in points)):
        return None
    try:
        return parse_at(text, now, tz)
    except ValueError:
        return None
