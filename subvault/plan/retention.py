"""Retention planning: which snapshots a policy keeps. Pure: no I/O, no clock.

Rules (btrbk's grammar and rule, "the first snapshot of each period is kept"):

- A policy is whitespace-separated `<N><unit>` tokens, unit in `h d w m y`, N a
  non-negative integer or `*` (unlimited), each unit at most once; or the single word
  `all` (keep everything) or `latest` (keep only the newest).
- Periods are calendar buckets on the local wall clock of a zone: hour, day, week
  (starting on `week_start`, Monday=0 ... Sunday=6), month, year. An aware time is
  converted to the zone and bucketed by its naive wall-clock fields, so the repeated
  hour of a fall-back is one bucket and the skipped hour of a spring-forward is an
  empty bucket.
- For unit u with count N, a point is kept by u when it is the first (oldest by
  instant, ties broken by key) point of its u-bucket and that bucket is among the N
  most recent u-buckets counting back from now's bucket: index(now) - index(bucket) < N,
  where indices count hours/days/weeks/months/years on the local calendar. A bucket
  after now's on the wall clock (only possible for a point just before now across a
  fall-back that crosses a bucket boundary) is inside the window. N=None keeps the first
  of every bucket; N=0 keeps none for that unit.
- Always kept, whatever the policy: the newest point not dated after now; every point
  named in `held`; every point dated after now (the clock moved back, or it is
  future-dated: what cannot be placed in time is never deleted); a point whose time
  cannot be placed on the local calendar (beyond the range of `datetime`).

Planning again over exactly the kept points, with the same now, zone and held, keeps
all of them: a point kept as the first of its bucket stays the first of that bucket
among any subset that contains it, the window depends only on now, and the newest,
held and future points stay what they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from subvault.errors import ConfigError

UNITS = ("h", "d", "w", "m", "y")  # finest first

_UNIT_NAMES = {"h": "hourly", "d": "daily", "w": "weekly", "m": "monthly", "y": "yearly"}
_EXAMPLE = "24h 8d 5w"
_MICRO = timedelta(microseconds=1)

KEEP_ALL = "all"
KEEP_LATEST = "latest"
REASON_NEWEST = "newest"
REASON_FUTURE = "dated after now"
REASON_UNPLACED = "cannot be placed on the local calendar"


class RetentionSyntaxError(ConfigError, ValueError):
    """A retention string does not follow the grammar."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(f'"{text}" is not a retention (expected e.g. "{_EXAMPLE}")')


@dataclass(frozen=True)
class Policy:
    """A parsed retention policy. Build it with `parse_policy`."""

    counts: dict[str, int | None] = field(default_factory=dict, hash=False)
    keep_all: bool = False
    latest_only: bool = False
    text: str = field(default="", compare=False)  # as written; equality is by meaning

    def __post_init__(self) -> None:
        """Raise ValueError if the fields contradict each other or name unknown units."""
        for unit, count in self.counts.items():
            if unit not in UNITS:
                raise ValueError(f"unknown retention unit {unit!r} (expected one of {' '.join(UNITS)})")
            if count is not None and (not isinstance(count, int) or count < 0):
                raise ValueError(f"retention count for {unit!r} must be a non-negative integer or None")
        if self.keep_all and self.latest_only:
            raise ValueError("a retention policy cannot be both 'all' and 'latest'")
        if (self.keep_all or self.latest_only) and self.counts:
            raise ValueError("'all' and 'latest' take no unit counts")

    def cadence(self) -> str | None:
        """Return the finest unit that keeps something ("h" for "24h 7d 4w").

        A unit with count 0 keeps nothing, so it sets no cadence unless every unit is 0,
        then the finest unit present is returned. Return None for `all` and `latest`.
        """
        present = [u for u in UNITS if u in self.counts]
        keeping = [u for u in present if self.counts[u] != 0]
        chosen = keeping or present
        return chosen[0] if chosen else None

    def describe(self) -> str:
        """Return the canonical text of the policy, units finest first ("24h 7d 4w")."""
        if self.keep_all:
            return KEEP_ALL
        if self.latest_only:
            return KEEP_LATEST
        return " ".join(f"{'*' if self.counts[u] is None else self.counts[u]}{u}" for u in UNITS if u in self.counts)

    def __str__(self) -> str:
        return self.describe()


def parse_policy(text: str) -> Policy:
    """Given a retention string ("24h 7d 4w", "*d", "all", "latest"), return its Policy.

    Raise RetentionSyntaxError if it is empty, has an unknown unit or a bad count, or
    names a unit twice.
    """
    if not isinstance(text, str):
        raise RetentionSyntaxError(str(text))
    tokens = text.split()
    if tokens == [KEEP_ALL]:
        return Policy(keep_all=True, text=KEEP_ALL)
    if tokens == [KEEP_LATEST]:
        return Policy(latest_only=True, text=KEEP_LATEST)
    if not tokens:
        raise RetentionSyntaxError(text)
    counts: dict[str, int | None] = {}
    for token in tokens:
        number, unit = token[:-1], token[-1:]
        if unit not in UNITS or unit in counts or not _is_count(number):
            raise RetentionSyntaxError(text)
        counts[unit] = None if number == "*" else int(number)
    return Policy(counts=counts, text=" ".join(tokens))


def _is_count(number: str) -> bool:
    """Return True if `number` is "*" or ASCII decimal digits."""
    return number == "*" or (number.isascii() and number.isdigit())


@dataclass(frozen=True)
class Point:
    """A restore point to plan over: an opaque key and an aware time."""

    key: str
    time: datetime

    def __post_init__(self) -> None:
        """Raise ValueError if the time is naive."""
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError(f"point {self.key!r} has a naive time {self.time.isoformat()}; times must be aware")


@dataclass(frozen=True)
class Decision:
    """Whether one point is kept, and why (or why it is deleted)."""

    key: str
    time: datetime
    keep: bool
    reasons: tuple[str, ...]


def instant(t: datetime) -> int:
    """Given an aware time, return microseconds since 0001-01-01 UTC (never overflows).

    Aware datetimes sharing a tzinfo compare by wall clock and ignore `fold`; this
    integer orders by the real instant in every case.
    """
    offset = t.utcoffset()
    if offset is None:
        raise ValueError(f"naive time {t.isoformat()}; times must be aware")
    # (t's wall clock - 0001-01-01) in microseconds, from its fields (datetime.replace costs 10x)
    wall = ((t.toordinal() - 1) * 86400 + t.hour * 3600 + t.minute * 60 + t.second) * 1_000_000 + t.microsecond
    return wall - offset // _MICRO


def local_wall(t: datetime, tz: tzinfo) -> datetime | None:
    """Given an aware time and a zone, return the naive local wall clock, or None if out of range."""
    try:
        return t.astimezone(tz).replace(tzinfo=None)
    except (OverflowError, ValueError):
        return None


def bucket_index(unit: str, wall: datetime, week_start: int = 6) -> int:
    """Given a unit and a naive wall-clock time, return its bucket's index on the local calendar.

    Consecutive buckets have consecutive indices, so index differences count buckets.
    Weeks start on `week_start` (Monday=0 ... Sunday=6).
    """
    if unit == "h":
        return wall.toordinal() * 24 + wall.hour
    if unit == "d":
        return wall.toordinal()
    if unit == "w":
        # ordinal 1 (0001-01-01) is a Monday, so ordinal o falls on weekday (o - 1) % 7
        return (wall.toordinal() - 1 - week_start) // 7
    if unit == "m":
        return wall.year * 12 + wall.month - 1
    if unit == "y":
        return wall.year
    raise ValueError(f"unknown retention unit {unit!r}")


def bucket_label(unit: str, wall: datetime, week_start: int = 6) -> str:
    """Given a unit and a wall-clock time, return the reason text naming its bucket."""
    name = _UNIT_NAMES[unit]
    if unit == "h":
        return f"{name} {wall:%Y-%m-%d %H}:00"
    if unit == "d":
        return f"{name} {wall:%Y-%m-%d}"
    if unit == "w":
        start_ordinal = wall.toordinal() - (wall.weekday() - week_start) % 7
        start = date.fromordinal(start_ordinal) if start_ordinal >= 1 else wall.date()
        return f"{name} {start:%Y-%m-%d}"
    if unit == "m":
        return f"{name} {wall:%Y-%m}"
    return f"{name} {wall:%Y}"


def check_week_start(week_start: int) -> None:
    if not isinstance(week_start, int) or not 0 <= week_start <= 6:
        raise ValueError(f"week_start must be 0 (Monday) ... 6 (Sunday), not {week_start!r}")


def _ordered(points: Iterable[Point]) -> tuple[list[Point], list[int]]:
    """Return the points oldest first (ties by key) and each one's instant, computed once.

    Raise ValueError on a repeated key.
    """
    listed = list(points)
    if len({p.key for p in listed}) != len(listed):
        seen: set[str] = set()
        for p in listed:
            if p.key in seen:
                raise ValueError(f"point key {p.key!r} appears more than once")
            seen.add(p.key)
    # keys are unique, so the tuples never compare their points
    rows = sorted([(instant(p.time), p.key, p) for p in listed])
    return [r[2] for r in rows], [r[0] for r in rows]


def _always_kept(ordered: list[Point], instants: list[int], now_i: int, held: Mapping[str, str]) -> dict[str, list[str]]:
    """Return, for the keys that have some, the reasons that keep a point under every policy (held, future, newest)."""
    reasons: dict[str, list[str]] = {}
    past = [p for p, t in zip(ordered, instants, strict=True) if t <= now_i]
    if past:
        reasons[past[-1].key] = [REASON_NEWEST]
    for p, t in zip(ordered, instants, strict=True):
        if p.key in held:
            reasons.setdefault(p.key, []).append(f"held: {held[p.key]}")
        if t > now_i:
            reasons.setdefault(p.key, []).append(REASON_FUTURE)
    return reasons


def _period_reasons(
    ordered: list[Point], instants: list[int], policy: Policy, now: datetime, tz: tzinfo, week_start: int
) -> dict[str, list[str]]:
    """Return, per key, the "first of a period inside the window" reasons from the unit counts.

    Points dated after now take no part; points that cannot be placed get REASON_UNPLACED.
    """
    now_wall = now.astimezone(tz).replace(tzinfo=None)
    now_i = instant(now)
    units = [u for u in UNITS if u in policy.counts]
    now_index = {u: bucket_index(u, now_wall, week_start) for u in units}
    seen: dict[str, set[int]] = {u: set() for u in units}
    reasons: dict[str, list[str]] = {}
    for p, t in zip(ordered, instants, strict=True):
        if t > now_i:
            continue
        try:
            wall = p.time.astimezone(tz)  # aware, but only its wall-clock fields are read (local_wall without the copy)
        except (OverflowError, ValueError):
            reasons.setdefault(p.key, []).append(REASON_UNPLACED)
            continue
        for u in units:
            index = bucket_index(u, wall, week_start)
            if index in seen[u]:
                continue
            seen[u].add(index)
            count = policy.counts[u]
            if count is None or (count > 0 and now_index[u] - index < count):
                reasons.setdefault(p.key, []).append(bucket_label(u, wall, week_start))
    return reasons


def plan_retention(
    points: Iterable[Point],
    policy: Policy,
    now: datetime,
    tz: tzinfo,
    held: Mapping[str, str] | None = None,
    week_start: int = 6,
) -> list[Decision]:
    """Given points, a policy, an aware now and the zone whose calendar defines periods, decide each point.

    `held` maps keys that must survive (an incremental base, a pinned snapshot) to why.
    Return one Decision per point, oldest first (ties by key). Runs in O(n log n).
    Raise ValueError if now is naive, a key repeats, or week_start is not 0..6.
    """
    check_week_start(week_start)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now {now.isoformat()} is naive; it must be aware")
    held = held or {}
    ordered, instants = _ordered(points)
    always = _always_kept(ordered, instants, instant(now), held)
    periods = _period_reasons(ordered, instants, policy, now, tz, week_start) if policy.counts else {}
    deleted = (_deletion_reason(policy),)
    decisions = []
    for p in ordered:
        reasons = periods.get(p.key, []) + always.get(p.key, [])
        if policy.keep_all:
            reasons.append(KEEP_ALL)
        if reasons:
            decisions.append(Decision(p.key, p.time, True, tuple(reasons)))
        else:
            decisions.append(Decision(p.key, p.time, False, deleted))
    return decisions


def _deletion_reason(policy: Policy) -> str:
    if policy.latest_only:
        return "not the newest (latest)"
    return f"outside {policy.describe()}"


def plan_keep_newest(
    points: Iterable[Point],
    count: int,
    held: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[Decision]:
    """Given points and a count, keep the `count` newest (by instant, ties by key) and delete the rest.

    Held points are always kept. When `now` is given, points dated after it are kept
    too and do not use up the count. Return one Decision per point, oldest first.
    Raise ValueError if count is negative or a key repeats.
    """
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, not {count!r}")
    held = held or {}
    ordered, instants = _ordered(points)
    now_i = instant(now) if now is not None else None
    future = {p.key for p, t in zip(ordered, instants, strict=True) if now_i is not None and t > now_i}
    countable = [p for p in ordered if p.key not in future]
    # Rule: the newest `count` of the countable points; max() because a negative start
    # would wrap around and keep fewer than `count` when there are fewer points than that.
    newest = {p.key for p in countable[max(0, len(countable) - count) :]}
    decisions = []
    for p in ordered:
        reasons = []
        if p.key in newest:
            reasons.append(f"among the newest {count}")
        if p.key in held:
            reasons.append(f"held: {held[p.key]}")
        if p.key in future:
            reasons.append(REASON_FUTURE)
        keep = bool(reasons)
        decisions.append(Decision(p.key, p.time, keep, tuple(reasons) if keep else (f"beyond the newest {count}",)))
    return decisions
