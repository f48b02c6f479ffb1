"""Retention planner: grammar, exact examples, DST, clock jumps, and properties.

The properties are checked against `reference_keep`, a slow brute-force planner that
works on bucket start times (truncate the wall clock, step the calendar backwards from
now) instead of the integer bucket indices the real planner uses.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subvault.plan.cadence import due
from subvault.plan.retention import (
    REASON_FUTURE,
    REASON_NEWEST,
    REASON_UNPLACED,
    UNITS,
    Decision,
    Point,
    Policy,
    RetentionSyntaxError,
    parse_policy,
    plan_keep_newest,
    plan_retention,
)

UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


class FallBackTwoHours(tzinfo):
    """A zone at +02:00 that falls back to +00:00 at SWITCH, so wall 00:30-02:30 repeats.

    The repeated range crosses an hour boundary, so a point just before now can sit in a
    later local hour than now: the case no IANA zone used here produces.
    """

    SWITCH = datetime(2026, 6, 1, 0, 30)  # UTC, naive
    BEFORE = timedelta(hours=2)
    AFTER = timedelta(0)

    def utcoffset(self, dt: datetime | None) -> timedelta:
        assert dt is not None
        wall = dt.replace(tzinfo=None)
        if wall < self.SWITCH:
            return self.BEFORE
        if wall >= self.SWITCH + self.BEFORE:
            return self.AFTER
        return self.AFTER if dt.fold else self.BEFORE

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "FB2"

    def fromutc(self, dt: datetime) -> datetime:
        utc = dt.replace(tzinfo=None)
        if utc < self.SWITCH:
            return (utc + self.BEFORE).replace(tzinfo=self)
        fold = 1 if utc < self.SWITCH + self.BEFORE else 0
        return utc.replace(tzinfo=self, fold=fold)


FALLBACK2 = FallBackTwoHours()


def at(*fields: int, tz: tzinfo = UTC, fold: int = 0) -> datetime:
    return datetime(*fields, tzinfo=tz, fold=fold)


def pts(*times: datetime) -> list[Point]:
    return [Point(f"p{i:02d}", t) for i, t in enumerate(times)]


def kept(decisions: list[Decision]) -> list[str]:
    return [d.key for d in decisions if d.keep]


def reasons(decisions: list[Decision]) -> dict[str, tuple[str, ...]]:
    return {d.key: d.reasons for d in decisions}


# --------------------------------------------------------------------------- reference


def _truncate(unit: str, wall: datetime, week_start: int) -> datetime:
    """Return the start of the bucket holding `wall`."""
    day = wall.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    if unit == "h":
        return wall.replace(minute=0, second=0, microsecond=0, fold=0)
    if unit == "d":
        return day
    if unit == "w":
        return day - timedelta(days=(day.weekday() - week_start) % 7)
    if unit == "m":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _step_back(unit: str, start: datetime) -> datetime:
    """Return the start of the bucket before the one starting at `start`."""
    if unit == "h":
        return start - timedelta(hours=1)
    if unit == "d":
        return start - timedelta(days=1)
    if unit == "w":
        return start - timedelta(days=7)
    if unit == "m":
        return start.replace(year=start.year - 1, month=12) if start.month == 1 else start.replace(month=start.month - 1)
    return start.replace(year=start.year - 1)


def reference_keep(
    points: list[Point], policy: Policy, now: datetime, tz: tzinfo, held: dict[str, str], week_start: int = 6
) -> set[str]:
    """Slow, obviously-correct planner: the set of keys kept."""
    now_utc = now.astimezone(UTC)
    past = [p for p in points if p.time.astimezone(UTC) <= now_utc]
    keep = {p.key for p in points if p.key in held or p.time.astimezone(UTC) > now_utc}
    if past:
        keep.add(max(past, key=lambda p: (p.time.astimezone(UTC), p.key)).key)
    if policy.keep_all:
        return {p.key for p in points}
    now_wall = now.astimezone(tz).replace(tzinfo=None)
    for unit, count in policy.counts.items():
        start0 = _truncate(unit, now_wall, week_start)
        window = set()
        start = start0
        for _ in range(count or 0):
            window.add(start)
            start = _step_back(unit, start)
        buckets: dict[datetime, list[Point]] = {}
        for p in past:
            wall = p.time.astimezone(tz).replace(tzinfo=None)
            buckets.setdefault(_truncate(unit, wall, week_start), []).append(p)
        for start, members in buckets.items():
            inside = count is None or (count > 0 and (start > start0 or start in window))
            if inside:
                keep.add(min(members, key=lambda p: (p.time.astimezone(UTC), p.key)).key)
    return keep


# --------------------------------------------------------------------------- grammar

VALID = {
    "24h 7d 4w": ({"h": 24, "d": 7, "w": 4}, "h"),
    "24h 8d 5w": ({"h": 24, "d": 8, "w": 5}, "h"),
    "8d 5w 12m": ({"d": 8, "w": 5, "m": 12}, "d"),
    "24h 7d 4w 6m": ({"h": 24, "d": 7, "w": 4, "m": 6}, "h"),
    "*d": ({"d": None}, "d"),
    "5y 12m": ({"y": 5, "m": 12}, "m"),
    "  48h\t*y ": ({"h": 48, "y": None}, "h"),
    "0h 7d": ({"h": 0, "d": 7}, "d"),
    "0d": ({"d": 0}, "d"),
}


@pytest.mark.parametrize("text", sorted(VALID))
def test_parse_valid_counts(text: str) -> None:
    counts, cadence = VALID[text]
    policy = parse_policy(text)
    assert policy.counts == counts
    assert not policy.keep_all and not policy.latest_only
    assert policy.cadence() == cadence
    assert policy.text == " ".join(text.split())
    assert parse_policy(policy.describe()) == parse_policy(str(policy))


def test_parse_all_and_latest() -> None:
    assert parse_policy("all") == Policy(keep_all=True, text="all")
    assert parse_policy(" latest ") == Policy(latest_only=True, text="latest")
    assert parse_policy("all").cadence() is None
    assert parse_policy("latest").cadence() is None
    assert str(parse_policy("all")) == "all"


def test_describe_orders_units_finest_first() -> None:
    assert parse_policy("4w 24h *y").describe() == "24h 4w *y"
    assert parse_policy("4w 24h *y").text == "4w 24h *y"
    assert parse_policy("4w 24h *y") == parse_policy("24h  4w *y")


INVALID = ["", "   ", "24x", "h", "-1d", "24h 24h", "1d 2d", "all 24h", "latest all", "24 h", "1.5d",
           "24H", "ALL", "\u00b2d", "24h,7d", "*", "**d", "d24", "24hh", "+3d", "all latest"]


@pytest.mark.parametrize("text", INVALID)
def test_parse_invalid_has_exact_message(text: str) -> None:
    with pytest.raises(RetentionSyntaxError) as info:
        parse_policy(text)
    assert str(info.value) == f'"{text}" is not a retention (expected e.g. "24h 8d 5w")'
    assert isinstance(info.value, ValueError)


def test_parse_invalid_message_example_from_brief() -> None:
    with pytest.raises(ValueError, match=r'^"24x" is not a retention \(expected e\.g\. "24h 8d 5w"\)$'):
        parse_policy("24x")


def test_policy_rejects_contradictions() -> None:
    with pytest.raises(ValueError):
        Policy(counts={"x": 1})
    with pytest.raises(ValueError):
        Policy(counts={"h": -1})
    with pytest.raises(ValueError):
        Policy(keep_all=True, latest_only=True)
    with pytest.raises(ValueError):
        Policy(counts={"h": 1}, keep_all=True)
    assert hash(parse_policy("24h")) == hash(parse_policy("24h"))


# --------------------------------------------------------------------------- exact examples


def test_hourly_and_daily_exact() -> None:
    now = at(2026, 11, 26, 3, 30)
    start = at(2026, 11, 24, 0, 10)
    points = pts(*(start + timedelta(minutes=30 * i) for i in range(101)))  # to 26th 02:10
    decisions = plan_retention(points, parse_policy("3h 2d"), now, UTC)
    assert [d.key for d in decisions] == [p.key for p in points]
    by_time = {d.time: d for d in decisions if d.keep}
    assert sorted(by_time) == [
        at(2026, 11, 25, 0, 10),
        at(2026, 11, 26, 0, 10),
        at(2026, 11, 26, 1, 10),
        at(2026, 11, 26, 2, 10),
    ]
    assert by_time[at(2026, 11, 25, 0, 10)].reasons == ("daily 2026-11-25",)
    assert by_time[at(2026, 11, 26, 0, 10)].reasons == ("daily 2026-11-26",)
    assert by_time[at(2026, 11, 26, 1, 10)].reasons == ("hourly 2026-11-26 01:00",)
    assert by_time[at(2026, 11, 26, 2, 10)].reasons == ("hourly 2026-11-26 02:00", "newest")
    deleted = [d for d in decisions if not d.keep]
    assert len(deleted) == 97
    assert {d.reasons for d in deleted} == {("outside 3h 2d",)}


def test_held_reason_follows_period_reason() -> None:
    now = at(2026, 11, 26, 3, 30)
    points = pts(at(2026, 11, 26, 3, 0), at(2026, 11, 26, 3, 10), at(2026, 11, 26, 3, 20))
    decisions = plan_retention(points, parse_policy("24h 7d 4w"), now, UTC, held={"p00": "incremental base for pi", "p01": "pinned"})
    assert reasons(decisions) == {
        "p00": ("hourly 2026-11-26 03:00", "daily 2026-11-26", "weekly 2026-11-22", "held: incremental base for pi"),
        "p01": ("held: pinned",),
        "p02": ("newest",),
    }


def test_week_start_changes_which_points_are_first() -> None:
    fri, sat, sun, mon = (at(2026, 11, d, 10) for d in (20, 21, 22, 23))
    now = at(2026, 11, 24, 12)
    points = pts(fri, sat, sun, mon)
    sunday = plan_retention(points, parse_policy("2w"), now, UTC)
    assert kept(sunday) == ["p00", "p02", "p03"]
    assert reasons(sunday)["p00"] == ("weekly 2026-11-15",)
    assert reasons(sunday)["p02"] == ("weekly 2026-11-22",)
    monday = plan_retention(points, parse_policy("2w"), now, UTC, week_start=0)
    assert kept(monday) == ["p00", "p03"]
    assert reasons(monday)["p03"] == ("weekly 2026-11-23", "newest")


def test_months_and_years() -> None:
    now = at(2026, 3, 15)
    points = pts(at(2025, 12, 31, 23), at(2026, 1, 1), at(2026, 1, 15), at(2026, 2, 1), at(2026, 2, 10), at(2026, 3, 1))
    assert kept(plan_retention(points, parse_policy("2m"), now, UTC)) == ["p03", "p05"]
    assert kept(plan_retention(points, parse_policy("2m 1y"), now, UTC)) == ["p01", "p03", "p05"]
    assert kept(plan_retention(points, parse_policy("2m 2y"), now, UTC)) == ["p00", "p01", "p03", "p05"]
    assert kept(plan_retention(points, parse_policy("*m"), now, UTC)) == ["p00", "p01", "p03", "p05"]
    # in Berlin 2025-12-31 23:00 UTC is already 2026-01-01 00:00: first of January and of 2026
    berlin = plan_retention(points, parse_policy("1y"), now, BERLIN)
    assert kept(berlin) == ["p00", "p05"]
    assert reasons(berlin)["p00"] == ("yearly 2026",)


def test_all_and_latest() -> None:
    now = at(2026, 11, 26, 12)
    points = pts(at(2026, 11, 1), at(2026, 11, 2), at(2026, 11, 3), at(2026, 11, 27))
    everything = plan_retention(points, parse_policy("all"), now, UTC)
    assert kept(everything) == ["p00", "p01", "p02", "p03"]
    assert reasons(everything)["p00"] == ("all",)
    latest = plan_retention(points, parse_policy("latest"), now, UTC, held={"p00": "base"})
    assert kept(latest) == ["p00", "p02", "p03"]
    assert reasons(latest) == {
        "p00": ("held: base",),
        "p01": ("not the newest (latest)",),
        "p02": (REASON_NEWEST,),
        "p03": (REASON_FUTURE,),
    }


def test_zero_count_keeps_only_the_always_kept() -> None:
    now = at(2026, 11, 26, 12)
    points = pts(at(2026, 11, 26, 9), at(2026, 11, 26, 10), at(2026, 11, 26, 11))
    assert kept(plan_retention(points, parse_policy("0h"), now, UTC)) == ["p02"]


def test_empty_input() -> None:
    assert plan_retention([], parse_policy("24h"), at(2026, 1, 1), UTC) == []


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="naive"):
        Point("a", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        plan_retention([], parse_policy("1d"), datetime(2026, 1, 1), UTC)
    with pytest.raises(ValueError, match="more than once"):
        plan_retention(pts(at(2026, 1, 1)) * 2, parse_policy("1d"), at(2026, 1, 2), UTC)
    with pytest.raises(ValueError, match="week_start"):
        plan_retention([], parse_policy("1d"), at(2026, 1, 2), UTC, week_start=7)


# --------------------------------------------------------------------------- DST, exact


def test_berlin_fall_back_repeated_hour_is_one_bucket() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET at 01:00 UTC; local hour 02 spans 00:00-02:00 UTC
    start = at(2026, 10, 24, 23)
    points = pts(*(start + timedelta(minutes=20 * i) for i in range(12)))  # to 02:40 UTC
    now = at(2026, 10, 25, 2, 50)
    decisions = plan_retention(points, parse_policy("24h"), now, BERLIN)
    assert [d.time for d in decisions if d.keep] == [at(2026, 10, 24, 23), at(2026, 10, 25, 0), at(2026, 10, 25, 2), at(2026, 10, 25, 2, 40)]
    assert [d.reasons for d in decisions if d.keep] == [
        ("hourly 2026-10-25 01:00",),
        ("hourly 2026-10-25 02:00",),
        ("hourly 2026-10-25 03:00",),
        ("newest",),
    ]


def test_new_york_spring_forward_skipped_hour_counts_in_the_window() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT at 07:00 UTC; local 02:00 never exists
    points = pts(*(at(2026, 3, 8, h) for h in (5, 6, 7, 8, 9)))  # local 00, 01, 03, 04, 05
    now = at(2026, 3, 8, 9, 30)
    decisions = plan_retention(points, parse_policy("4h"), now, NEW_YORK)
    assert kept(decisions) == ["p02", "p03", "p04"]  # buckets 05 04 03 and the empty 02
    assert reasons(decisions)["p02"] == ("hourly 2026-03-08 03:00",)


def test_lord_howe_half_hour_fall_back() -> None:
    # 2026-04-05 02:00 +11 -> 01:30 +10:30 at 15:00 UTC on the 4th; local 01:30-02:00 repeats
    start = at(2026, 4, 4, 14)
    points = pts(*(start + timedelta(minutes=15 * i) for i in range(9)))  # to 16:00 UTC
    local = [p.time.astimezone(LORD_HOWE).strftime("%H:%M") for p in points]
    assert local == ["01:00", "01:15", "01:30", "01:45", "01:30", "01:45", "02:00", "02:15", "02:30"]
    decisions = plan_retention(points, parse_policy("24h"), at(2026, 4, 4, 16, 5), LORD_HOWE)
    assert kept(decisions) == ["p00", "p06", "p08"]


def test_point_in_a_later_local_hour_than_now_is_inside_the_window() -> None:
    points = pts(at(2026, 6, 1, 0, 5), at(2026, 6, 1, 0, 20), at(2026, 6, 1, 0, 40))  # walls 02:05 02:20 00:40
    now = at(2026, 6, 1, 0, 50)  # wall 00:50, after the fall-back
    decisions = plan_retention(points, parse_policy("1h"), now, FALLBACK2)
    assert kept(decisions) == ["p00", "p02"]
    assert set(kept(decisions)) == reference_keep(points, parse_policy("1h"), now, FALLBACK2, {})


# --------------------------------------------------------------------------- clock jumps


def test_clock_jumped_back_keeps_everything_after_now() -> None:
    points = pts(*(at(2026, 11, 26, h) for h in range(13)))
    now = at(2026, 11, 26, 8, 30)  # the clock went back after the 12:00 snapshot
    decisions = plan_retention(points, parse_policy("2h"), now, UTC)
    assert kept(decisions) == ["p07", "p08", "p09", "p10", "p11", "p12"]
    assert reasons(decisions)["p08"] == ("hourly 2026-11-26 08:00", "newest")
    assert reasons(decisions)["p12"] == (REASON_FUTURE,)


def test_unsorted_input_and_duplicate_timestamps() -> None:
    t = at(2026, 11, 26, 10, 15)
    points = [Point("b", t), Point("z", at(2026, 11, 26, 11)), Point("a", t), Point("c", at(2026, 11, 26, 10, 5))]
    decisions = plan_retention(points, parse_policy("24h"), at(2026, 11, 26, 12), UTC)
    assert [d.key for d in decisions] == ["c", "a", "b", "z"]
    assert kept(decisions) == ["c", "z"]
    same = [Point("b", t), Point("a", t)]
    assert kept(plan_retention(same, parse_policy("24h"), at(2026, 11, 26, 12), UTC)) == ["a", "b"]  # a first, b newest


def test_same_instant_in_different_representations_sorts_by_instant() -> None:
    # wall 02:30 CEST (00:30 UTC) is earlier than wall 02:10 CET (01:10 UTC): fold must not be ignored
    first = at(2026, 10, 25, 2, 30, tz=BERLIN, fold=0)
    second = at(2026, 10, 25, 2, 10, tz=BERLIN, fold=1)
    decisions = plan_retention([Point("second", second), Point("first", first)], parse_policy("24h"), at(2026, 10, 25, 3), BERLIN)
    assert [d.key for d in decisions] == ["first", "second"]
    assert kept(decisions) == ["first", "second"]
    assert reasons(decisions)["first"] == ("hourly 2026-10-25 02:00",)
    # now itself in the repeated hour, earlier on the wall clock than a point it follows
    early = Point("early", at(2026, 10, 25, 2, 40, tz=BERLIN, fold=0))
    late = Point("late", at(2026, 10, 25, 2, 5, tz=BERLIN, fold=1))
    decisions = plan_retention([late, early], parse_policy("24h"), at(2026, 10, 25, 2, 10, tz=BERLIN, fold=1), BERLIN)
    assert reasons(decisions) == {"early": ("hourly 2026-10-25 02:00",), "late": ("newest",)}


def test_far_past_and_far_future() -> None:
    points = [
        Point("year1", datetime(1, 1, 1, tzinfo=UTC)),
        Point("y1900", at(1900, 1, 1)),
        Point("now", at(2026, 11, 26)),
        Point("y9999", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
        Point("y9999plus", datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=5)))),
        Point("year1minus", datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))),
    ]
    decisions = plan_retention(points, parse_policy("24h 7d 4w *y"), at(2026, 11, 26, 1), NEW_YORK)
    assert [d.key for d in decisions] == ["year1minus", "year1", "y1900", "now", "y9999plus", "y9999"]
    assert reasons(decisions) == {
        "year1minus": (REASON_UNPLACED,),
        "year1": (REASON_UNPLACED,),
        "y1900": ("yearly 1899",),
        "now": ("hourly 2026-11-25 19:00", "daily 2026-11-25", "weekly 2026-11-22", "yearly 2026", "newest"),
        "y9999plus": (REASON_FUTURE,),
        "y9999": (REASON_FUTURE,),
    }
    # at +11 midnight of year 1 UTC is on the calendar, so it is simply old; 23:30 UTC of year 0 is not
    assert kept(plan_retention(points, parse_policy("1d"), at(2026, 11, 26, 1), LORD_HOWE)) == ["year1minus", "now", "y9999plus", "y9999"]


# --------------------------------------------------------------------------- keep newest


def test_keep_newest_by_count() -> None:
    points = pts(*(at(2026, 11, d) for d in range(1, 6)))
    decisions = plan_keep_newest(list(reversed(points)), 3, held={"p00": "restore in progress"})
    assert [d.key for d in decisions] == ["p00", "p01", "p02", "p03", "p04"]
    assert reasons(decisions) == {
        "p00": ("held: restore in progress",),
        "p01": ("beyond the newest 3",),
        "p02": ("among the newest 3",),
        "p03": ("among the newest 3",),
        "p04": ("among the newest 3",),
    }
    assert kept(plan_keep_newest(points, 0)) == []
    assert kept(plan_keep_newest(points, 10)) == [p.key for p in points]


def test_keep_newest_future_points_do_not_use_the_count() -> None:
    points = pts(*(at(2026, 11, d) for d in range(1, 6)))
    decisions = plan_keep_newest(points, 2, now=at(2026, 11, 3, 12))
    assert kept(decisions) == ["p01", "p02", "p03", "p04"]
    assert reasons(decisions)["p04"] == (REASON_FUTURE,)
    with pytest.raises(ValueError):
        plan_keep_newest(points, -1)


# --------------------------------------------------------------------------- is_due


def test_is_due_hourly() -> None:
    hourly = parse_policy("24h 7d 4w")
    now = at(2026, 11, 26, 3, 30)
    assert due(None, hourly, now, UTC).is_due
    assert due(at(2026, 11, 26, 2, 59), hourly, now, UTC).is_due
    assert not due(at(2026, 11, 26, 3, 0), hourly, now, UTC).is_due
    assert not due(at(2026, 11, 26, 3, 29), hourly, now, UTC).is_due
    assert due(at(2026, 11, 25, 3, 10), hourly, now, UTC).is_due


def test_is_due_daily_and_default_cadence() -> None:
    daily = parse_policy("7d 4w")
    now = at(2026, 11, 26, 3, 30)
    assert not due(at(2026, 11, 26, 0, 1), daily, now, UTC).is_due
    assert due(at(2026, 11, 25, 23, 59), daily, now, UTC).is_due
    assert not due(at(2026, 11, 25, 23, 59), daily, now, BERLIN).is_due  # 00:59 local on the 26th
    assert due(at(2026, 11, 26, 2, 0), parse_policy("all"), now, UTC).is_due
    assert not due(at(2026, 11, 26, 3, 0), parse_policy("latest"), now, UTC).is_due
    assert not due(at(2026, 11, 26, 2, 0), parse_policy("latest"), now, UTC, default_cadence="d").is_due


def test_is_due_berlin_fall_back_hour() -> None:
    hourly = parse_policy("24h")
    newest = at(2026, 10, 25, 0, 10)  # 02:10 CEST
    assert not due(newest, hourly, at(2026, 10, 25, 1, 5), BERLIN).is_due  # 02:05 CET, same local hour
    assert not due(newest, hourly, at(2026, 10, 25, 1, 59), BERLIN).is_due
    assert due(newest, hourly, at(2026, 10, 25, 2, 0), BERLIN).is_due  # 03:00 CET
    assert due(newest, hourly, at(2026, 10, 25, 1, 5), UTC).is_due


def test_is_due_spring_forward_and_future_newest() -> None:
    hourly = parse_policy("24h")
    assert due(at(2026, 3, 8, 6, 59), hourly, at(2026, 3, 8, 7, 0), NEW_YORK).is_due  # 01:59 EST -> 03:00 EDT
    now = at(2026, 11, 26, 3, 30)
    assert not due(at(2026, 11, 26, 3, 45), hourly, now, UTC).is_due
    assert due(at(2026, 11, 26, 9, 0), hourly, now, UTC).is_due
    with pytest.raises(ValueError):
        due(datetime(2026, 1, 1), hourly, now, UTC)


# --------------------------------------------------------------------------- properties


def _transitions(tz: tzinfo, year: int) -> list[datetime]:
    """Return UTC instants (to 30 minutes) where the zone's offset changes during `year`."""
    found = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    before = t.astimezone(tz).utcoffset()
    while t.year == year:
        t += timedelta(minutes=30)
        offset = t.astimezone(tz).utcoffset()
        if offset != before:
            found.append(t)
        before = offset
    return found


ZONES: list[tuple[tzinfo, list[datetime]]] = [
    (BERLIN, _transitions(BERLIN, 2026)),
    (NEW_YORK, _transitions(NEW_YORK, 2026)),
    (LORD_HOWE, _transitions(LORD_HOWE, 2026)),
    (FALLBACK2, [FallBackTwoHours.SWITCH.replace(tzinfo=UTC)]),
    (UTC, [at(2026, 12, 31, 23)]),
]
assert all(len(anchors) >= 1 for _, anchors in ZONES[:3])
REPRESENTATIONS: list[tzinfo] = [UTC, BERLIN, NEW_YORK, LORD_HOWE, timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-3))]

counts = st.one_of(st.none(), st.integers(0, 40))
policies = st.one_of(
    st.dictionaries(st.sampled_from(UNITS), counts, min_size=1).map(lambda c: Policy(counts=c)),
    st.sampled_from([parse_policy("all"), parse_policy("latest"), parse_policy("24h 7d 4w 6m"), parse_policy("24h 8d 5w")]),
)
TIGHT = st.integers(-3 * 3600, 3 * 3600)
offsets = st.one_of(
    TIGHT,
    st.integers(-10 * 86400, 2 * 86400),
    st.integers(-800 * 86400, 20 * 86400),
)


@st.composite
def scenarios(
    draw: st.DrawFn, zones: list[tuple[tzinfo, list[datetime]]] = ZONES, tight: bool = False
) -> tuple[list[Point], Policy, datetime, tzinfo, dict[str, str], int]:
    tz, anchors = draw(st.sampled_from(zones))
    anchor = draw(st.sampled_from(anchors))
    keys = draw(st.lists(st.text("abcdef", min_size=1, max_size=3), unique=True, max_size=30))
    spread = TIGHT if tight else draw(st.sampled_from([TIGHT, offsets]))  # TIGHT: everything within 3h of the transition
    pool = draw(st.lists(spread, min_size=1, max_size=8))  # shared instants make ties
    points = []
    for key in keys:
        seconds = draw(st.one_of(spread, st.sampled_from(pool)))
        rep = draw(st.sampled_from(REPRESENTATIONS + [tz]))
        points.append(Point(key, (anchor + timedelta(seconds=seconds)).astimezone(rep)))
    now_offset = draw(TIGHT if tight else st.one_of(TIGHT, st.integers(-2 * 86400, 3 * 86400)))
    now = (anchor + timedelta(seconds=now_offset)).astimezone(draw(st.sampled_from(REPRESENTATIONS + [tz])))
    held = {k: f"reason {k}" for k in draw(st.lists(st.sampled_from(keys), max_size=3)) } if keys else {}
    week_start = draw(st.integers(0, 6))
    return points, draw(policies), now, tz, held, week_start


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenarios())
def test_matches_reference(scenario) -> None:
    points, policy, now, tz, held, week_start = scenario
    decisions = plan_retention(points, policy, now, tz, held=held, week_start=week_start)
    assert set(kept(decisions)) == reference_keep(points, policy, now, tz, held, week_start)


@PROPERTY
@given(scenarios(zones=[z for z in ZONES if z[0] is not UTC] + [z for z in ZONES if z[0] is FALLBACK2] * 2, tight=True))
def test_matches_reference_across_transitions(scenario) -> None:
    points, policy, now, tz, held, week_start = scenario
    decisions = plan_retention(points, policy, now, tz, held=held, week_start=week_start)
    assert set(kept(decisions)) == reference_keep(points, policy, now, tz, held, week_start)
    again = plan_retention([p for p in points if p.key in set(kept(decisions))], policy, now, tz, held, week_start)
    assert all(d.keep for d in again)


@PROPERTY
@given(scenarios())
def test_always_kept_and_well_formed(scenario) -> None:
    points, policy, now, tz, held, week_start = scenario
    decisions = plan_retention(points, policy, now, tz, held=held, week_start=week_start)
    assert sorted(d.key for d in decisions) == sorted(p.key for p in points)
    order = [(d.time.astimezone(UTC), d.key) for d in decisions]
    assert order == sorted(order)
    by_key = {d.key: d for d in decisions}
    if points:
        newest = max(points, key=lambda p: (p.time.astimezone(UTC), p.key))
        assert by_key[newest.key].keep
        past = [p for p in points if p.time.astimezone(UTC) <= now.astimezone(UTC)]
        if past:
            assert by_key[max(past, key=lambda p: (p.time.astimezone(UTC), p.key)).key].keep
    for key, why in held.items():
        assert by_key[key].keep and f"held: {why}" in by_key[key].reasons
    for p in points:
        if p.time.astimezone(UTC) > now.astimezone(UTC):
            assert by_key[p.key].keep and REASON_FUTURE in by_key[p.key].reasons
        assert by_key[p.key].reasons


@PROPERTY
@given(scenarios())
def test_idempotent(scenario) -> None:
    points, policy, now, tz, held, week_start = scenario
    first = plan_retention(points, policy, now, tz, held=held, week_start=week_start)
    survivors = [p for p in points if p.key in set(kept(first))]
    again = plan_retention(survivors, policy, now, tz, held=held, week_start=week_start)
    assert all(d.keep for d in again)
    assert reasons(again) == {d.key: d.reasons for d in first if d.keep}


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(scenario, rng: random.Random) -> None:
    points, policy, now, tz, held, week_start = scenario
    shuffled = list(points)
    rng.shuffle(shuffled)
    assert plan_retention(points, policy, now, tz, held, week_start) == plan_retention(shuffled, policy, now, tz, held, week_start)


@PROPERTY
@given(scenarios(), st.sampled_from(UNITS), st.integers(1, 10))
def test_a_longer_window_keeps_a_superset(scenario, unit: str, more: int) -> None:
    points, policy, now, tz, held, week_start = scenario
    if policy.keep_all or policy.latest_only or policy.counts.get(unit, 0) is None:
        return
    larger = Policy(counts={**policy.counts, unit: policy.counts.get(unit, 0) + more})
    small = set(kept(plan_retention(points, policy, now, tz, held, week_start)))
    big = set(kept(plan_retention(points, larger, now, tz, held, week_start)))
    assert small <= big


@PROPERTY
@given(scenarios())
def test_is_due_agrees_with_planning(scenario) -> None:
    """Not due exactly when a past point shares now's cadence bucket with the newest past point."""
    points, policy, now, tz, _held, week_start = scenario
    past = [p for p in points if p.time.astimezone(UTC) <= now.astimezone(UTC)]
    newest = max((p.time for p in past), key=lambda t: t.astimezone(UTC), default=None)
    is_due = due(newest, policy, now, tz, week_start=week_start).is_due
    if newest is None:
        assert is_due
        return
    unit = policy.cadence() or "h"
    same = _truncate(unit, newest.astimezone(tz).replace(tzinfo=None), week_start) == _truncate(
        unit, now.astimezone(tz).replace(tzinfo=None), week_start
    )
    assert is_due == (not same)


# --------------------------------------------------------------------------- scale


@pytest.mark.timeout(60)
def test_ten_thousand_points_plan_in_one_pass() -> None:
    """O(n log n): 10,000 points over a year in Berlin; idempotent at scale too."""
    now = at(2026, 11, 26, 12)
    rng = random.Random(7)
    points = [Point(f"s{i:05d}", now - timedelta(minutes=rng.randrange(0, 366 * 24 * 60))) for i in range(10_000)]
    policy = parse_policy("24h 7d 4w 6m *y")
    decisions = plan_retention(points, policy, now, BERLIN)
    survivors = [p for p in points if p.key in set(kept(decisions))]
    assert len(decisions) == 10_000
    assert 30 <= len(survivors) <= 24 + 7 + 4 + 6 + 2 + 1
    assert all(d.keep for d in plan_retention(survivors, policy, now, BERLIN))
    newest_ten = sorted(points, key=lambda p: (p.time, p.key))[-10:]
    assert kept(plan_keep_newest(points, 10)) == [p.key for p in newest_ten]


# --------------------------------------------------------------------------- count policies against a reference


def reference_keep_newest(points: list[Point], count: int, held: dict[str, str], now: datetime | None) -> set[str]:
    """Brute force: a point is kept when held, dated after now, or fewer than `count`
    countable points are newer than it (ties broken by key)."""
    kept_keys = set(held)
    countable = [p for p in points if now is None or p.time <= now]
    kept_keys |= {p.key for p in points if now is not None and p.time > now}
    for p in countable:
        newer = sum(1 for q in countable if (q.time, q.key) > (p.time, p.key))
        if newer < count:
            kept_keys.add(p.key)
    return kept_keys


def test_keep_newest_every_size_against_reference_exhaustively() -> None:
    # Every size from 0 up, every count around it: fewer points than the count was the
    # case that deleted pre-change snapshots (9 snapshots, prechange_keep = 10).
    for size in range(0, 25):
        points = pts(*(at(2026, 11, 1) + timedelta(hours=h) for h in range(size)))
        for count in range(0, 2 * size + 3):
            got = set(kept(plan_keep_newest(points, count)))
            assert got == reference_keep_newest(points, count, {}, None), (size, count)
            assert len(got) == min(size, count), (size, count)


def test_nine_prechange_snapshots_with_keep_ten_are_all_kept() -> None:
    points = pts(*(at(2026, 11, d) for d in range(1, 10)))
    assert kept(plan_keep_newest(points, 10)) == [p.key for p in points]
    assert kept(plan_keep_newest(points[:2], 3)) == [p.key for p in points[:2]]


@PROPERTY
@given(
    st.lists(st.integers(0, 40), max_size=30),
    st.integers(0, 40),
    st.one_of(st.none(), st.integers(0, 40)),
    st.data(),
)
def test_keep_newest_matches_reference(hours: list[int], count: int, now_hour: int | None, data: st.DataObject) -> None:
    points = [Point(f"k{i:02d}", at(2026, 11, 1) + timedelta(hours=h)) for i, h in enumerate(hours)]
    held = {k: "held" for k in data.draw(st.lists(st.sampled_from([p.key for p in points]), max_size=3))} if points else {}
    now = None if now_hour is None else at(2026, 11, 1) + timedelta(hours=now_hour)
    got = set(kept(plan_keep_newest(points, count, held=held, now=now)))
    assert got == reference_keep_newest(points, count, held, now)


@PROPERTY
@given(st.integers(0, 30), st.sampled_from(["latest", "all", "1h", "3d", "2w", "1m", "1y", "5h 2d"]))
def test_calendar_latest_all_every_size(size: int, text: str) -> None:
    # Sizes from 0 up for every policy shape, against the brute-force reference.
    policy = parse_policy(text)
    now = at(2026, 11, 20, 12)
    points = pts(*(now - timedelta(hours=7 * h) for h in range(size)))
    decisions = plan_retention(points, policy, now, UTC)
    got = set(kept(decisions))
    if text == "all":
        assert got == {p.key for p in points}
    elif text == "latest":
        assert got == ({max(points, key=lambda p: (p.time, p.key)).key} if points else set())
    assert got == reference_keep(points, policy, now, UTC, {}, 6)
    if points:
        assert max(points, key=lambda p: (p.time, p.key)).key in got  # the newest is always kept
