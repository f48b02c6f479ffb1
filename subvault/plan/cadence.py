"""When the next timeline snapshot is due: the first snapshot of each period of the
policy's cadence (its finest unit), on the local wall clock. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from subvault.plan.retention import UNITS, Policy, bucket_index, check_week_start, local_wall


def is_due(
    newest: datetime | None,
    policy: Policy,
    now: datetime,
    tz: tzinfo,
    week_start: int = 6,
    default_cadence: str = "h",
) -> bool:
    """Given the newest snapshot's time (None if none), return True if a new timeline snapshot is due.

    Due when no snapshot is in now's bucket of the policy's cadence (its finest unit;
    `default_cadence` for `all` and `latest`), judged on the local wall clock of `tz`,
    so the repeated hour of a fall-back counts as one hour. Pass the newest snapshot
    dated at or before now: one dated later says nothing about now's bucket, and is
    only "not due" if it falls in now's bucket. Raise ValueError if a time is naive.
    """
    check_week_start(week_start)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now {now.isoformat()} is naive; it must be aware")
    if newest is None:
        return True
    if newest.tzinfo is None or newest.utcoffset() is None:
        raise ValueError(f"newest {newest.isoformat()} is naive; it must be aware")
    unit = policy.cadence() or default_cadence
    if unit not in UNITS:
        raise ValueError(f"unknown cadence {unit!r}")
    newest_wall = local_wall(newest, tz)
    if newest_wall is None:
        return True
    now_wall = now.astimezone(tz).replace(tzinfo=None)
    return bucket_index(unit, newest_wall, week_start) != bucket_index(unit, now_wall, week_start)


def next_due(
    newest: datetime | None,
    policy: Policy,
    now: datetime,
    tz: tzinfo,
    week_start: int = 6,
    default_cadence: str = "h",
) -> datetime:
    """Return when the next snapshot is due: the start of the calendar bucket after newest's.

    The same rule as `is_due` (first snapshot of each period), so an hourly snapshot
    taken at 10:59 makes the next one due at 11:00, not at 11:59. With no snapshot,
    or a newest one out of range, it is due now.
    """
    check_week_start(week_start)
    if newest is None:
        return now
    wall = local_wall(newest, tz)
    unit = policy.cadence() or default_cadence
    if wall is None or unit not in UNITS:
        return now
    try:
        return _bucket_after(unit, wall, week_start).replace(tzinfo=tz)
    except (OverflowError, ValueError):
        return now


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
