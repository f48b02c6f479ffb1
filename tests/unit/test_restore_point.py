"""`--at` on every restore source: a snapshot number, a uuid (prefix) or a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from subvault.errors import NotFound, UsageError
from subvault.plan.restore_point import Point, choose

UTC = UTC
T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
# 2 and 3 were made in the same second (snapshot --force), 3 incremental on 2
POINTS = [
    Point("aaaaaaaa-0000-0000-0000-000000000001", T0, 1, 1),
    Point("bbbbbbbb-0000-0000-0000-000000000002", T0 + timedelta(hours=1), 1, 2),
    Point("cccccccc-0000-0000-0000-000000000003", T0 + timedelta(hours=1), 2, 3),
]


def pick(at: str, points=POINTS) -> Point:
    return choose(points, at, NOW, UTC, where="offsite (data)")


def test_a_snapshot_number_names_its_point() -> None:
    assert pick("1").uuid.startswith("aaaaaaaa")
    assert pick("2").uuid.startswith("bbbbbbbb")
    with pytest.raises(NotFound, match=r"no restore point #7; offsite \(data\) holds #3 "):
        pick("7")


def test_points_of_the_same_second_are_told_apart_by_number_and_uuid() -> None:
    assert {pick("2").uuid, pick("3").uuid} == {POINTS[1].uuid, POINTS[2].uuid}
    assert pick("bbbbbbbb").uuid == POINTS[1].uuid
    assert pick(POINTS[2].uuid).uuid == POINTS[2].uuid
    # by time, the later link of the chain is the newer one
    assert pick("2026-11-20T04:00+00:00").uuid == POINTS[2].uuid


def test_time_age_and_latest_pick_the_newest_at_or_before() -> None:
    assert pick("latest").uuid == POINTS[2].uuid
    assert pick("2026-11-20T03:30+00:00").uuid == POINTS[0].uuid
    assert pick("23h").uuid == POINTS[2].uuid
    with pytest.raises(NotFound, match="at or before"):
        pick("2026-11-19T00:00+00:00")


def test_a_number_known_twice_or_a_short_prefix_is_refused_not_guessed() -> None:
    twice = [*POINTS, Point("dddddddd-0000-0000-0000-000000000004", T0 + timedelta(hours=2), 1, 1)]
    with pytest.raises(UsageError, match="#1 names 2 restore points"):
        pick("1", twice)
    same_start = [Point("abcdef01-1", T0), Point("abcdef01-2", T0)]
    with pytest.raises(UsageError, match="start of 2 uuids"):
        pick("abcdef01", same_start)


def test_anything_else_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a snapshot number, uuid or time"):
        pick("yesterday")
    with pytest.raises(NotFound, match="no restore point with uuid"):
        pick("eeeeeeee-0000")


@pytest.mark.parametrize("at", ["²", "٣", "①"])
def test_a_digit_that_is_not_ascii_is_no_number_and_no_crash(at):
    with pytest.raises(UsageError):
        pick(at)
