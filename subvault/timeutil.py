"""Time parsing shared by every command: durations, `--at`, local zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

from subvault.errors import BadArgument

_DURATION = re.compile(r"^\s*(\d+)\s*(s|min|h|d|w|m|y)\s*$")
_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> timedelta:
    """Given "30d", "1h", "90min", return a timedelta. Raise ValueError if malformed."""
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f'"{text}" is not a duration (expected e.g. "1h", "30d", "90min")')
    try:
        return timedelta(seconds=int(m.group(1)) * _SECONDS[m.group(2)])
    except OverflowError:  # beyond timedelta's 999,999,999 days
        raise ValueError(f'"{text}" is too long (expected at most a few years, e.g. "5y")') from None


def local_zone(name: str | None = None) -> tzinfo:
    """Return the named IANA zone, else the system's local zone. Raise ValueError for an unknown name."""
    if name:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'"{name}" is not a time zone (expected an IANA name such as "Europe/Berlin" or "UTC")') from None
    return datetime.now().astimezone().tzinfo or UTC


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_at(text: str, now: datetime, tz: tzinfo, *, what: str = "--at") -> datetime:
    """Given --at (ISO time in local zone, "latest"/"now", or an age like "2d"), return an aware time.

    Raise BadArgument (a usage error, and a ValueError) naming `what` if it is none of those.
    """
    t = text.strip()
    if t in ("latest", "now"):
        return now
    try:
        return now - parse_duration(t)
    except ValueError:
        pass
    except OverflowError:  # an age older than the calendar (99999999d)
        raise BadArgument(f'{what} "{text}" reaches before year 1; give a shorter age or a time') from None
    try:
        parsed = datetime.fromisoformat(t)
    except ValueError:
        raise BadArgument(f'{what} "{text}" is not a time (expected "2026-11-20T03:00", "latest" or an age like "2d")') from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed


def format_age(delta: timedelta) -> str:
    """Render an age compactly: 45s, 12m, 3h, 2d."""
    s = int(delta.total_seconds())
    if s < 0:
        return "future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
