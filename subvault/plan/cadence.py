"""When the next timeline snapshot is due: the first snapshot of each period of the
policy's cadence (its finest unit), on the local wall clock. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import NamedTuple

from subvault.plan.retention import UNITS, Policy, bucket_index, check_week_start, local_wall


class Due(NamedTuple):
    """Whether a timeline snapshot is due now, and when the next one is due."""

    is_due: bool
    next_at: datetime


def due(
    newest: datetime | None,
    policy: Policy,
    now: datetime,
    tz: tzinfo,
    week_start: int = 6,
    default_cadence: str = "h",
) -> Due:
    """Given the newest snapshot's time (None if none), say whether a timeline snapshot is due now and when next.

    Rule: the first snapshot of each period of the policy's cadence (its finest unit;
    `default_cadence` for `all` and `latest`), judged on the local wall clock of `tz`,
    so the repeated hour of a fall-back counts as one hour.
    - `is_due`: no snapshot is in now's bucket. Pass the newest snapshot dated at or
      before now: one dated later says nothing about now's bucket, and is only
      "not due" if it falls in now's bucket.
    - `next_at`: the start of the bucket after newest's, so an hourly snapshot taken at
      10:59 makes the next one due at 11:00, not at 11:59. With no snapshot, or a
      newest one out of range, it is now.
    Raise ValueError if a time is naive or the cadence unknown.
    """
    check_week_start(week_start)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now {now.isoformat()} is naive; it must be aware")
    if newest is None:
        return Due(True, now)
    if newest.tzinfo is None or newest.utcoffset() is None:
        raise ValueError(f"newest {newest.isoformat()} is naive; it must be aware")
    unit = policy.cadence() or default_cadence
    if unit not in UNITS:
        raise ValueError(f"unknown cadence {unit!r}")
    newest_wall = local_wall(newest, tz)
    if newest_wall is None:
        return Due(True, now)
    now_wall = now.astimezone(tz).replace(tzinfo=None)
    try:
        next_at = _bucket_after(unit, newest_wall, week_start).replace(tzinfo=tz)
    except (OverflowError, ValueError):
        next_at = now
    return Due(bucket_index(unit, newest_wall, week_start) != bucket_index(unit, now_wall, week_start), next_at)


def _bucket_after(unit: str, wall: datetime, week_start: int) -> datetime:
    """The naive wall-clock start of the bucket after the one holding wall."""
    if unit == "h":
        return wall.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if unit == "d":
        return datetime.combine(wall.date() + timedelta(days=1), datetime.min.time())
    if unit == "w":
        first = wall.date() - timedelta(days=(wall.weekday() - week_start) % 7)
        return datetime.combine(first + timedelta(days=7), datetime.min.time())
    if unit == "m":
        return datetime(wall.year + wall.month // 12, wall.month % 12 + 1, 1)
    return datetime(wall.year + 1, 1, 1)
