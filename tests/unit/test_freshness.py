"""Freshness planner: the newest copy per layer is within cadence + slack; drills are recent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from subvault.plan.coverage import ProblemKind
from subvault.plan.freshness import (
    DEFAULT_DRILL_MAX_AGE,
    LayerFreshness,
    allowed_age,
    default_slack,
    human_age,
    plan_drill,
    plan_freshness,
)

NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def item(age: timedelta | None, cadence: timedelta = HOUR, slack: timedelta | None = None) -> LayerFreshness:
    return LayerFreshness("var_lib_pvc", "replica:pi", None if age is None else NOW - age, cadence, slack)


def test_fresh_layer_has_no_problem() -> None:
    assert plan_freshness([item(timedelta(minutes=50))], NOW) == []


def test_stale_by_old_snapshot_date_not_by_sleeping() -> None:
    [problem] = plan_freshness([item(timedelta(hours=5))], NOW)
    assert problem.kind == ProblemKind.STALE
    assert problem.subject == "var_lib_pvc replica:pi"
    assert "5h old, limit 2h" in problem.message
    assert "subvault run" in problem.message


def test_missing_copy_is_a_problem() -> None:
    [problem] = plan_freshness([item(None)], NOW)
    assert "no copy yet" in problem.message


def test_exactly_at_limit_is_fresh() -> None:
    assert plan_freshness([item(2 * HOUR)], NOW) == []
    assert plan_freshness([item(2 * HOUR + timedelta(seconds=1))], NOW) != []


def test_explicit_slack_is_used() -> None:
    assert plan_freshness([item(timedelta(hours=3), slack=3 * HOUR)], NOW) == []
    assert plan_freshness([item(timedelta(hours=3), slack=timedelta(minutes=10))], NOW) != []


def test_default_slack_is_one_cadence_at_least_15_minutes() -> None:
    assert default_slack(timedelta(days=1)) == timedelta(days=1)
    assert default_slack(timedelta(minutes=5)) == timedelta(minutes=15)


def test_future_dated_copy_means_a_wrong_clock() -> None:
    [problem] = plan_freshness([item(-3 * HOUR)], NOW)
    assert "in the future" in problem.message and "clock" in problem.message


def test_drill_age() -> None:
    assert plan_drill(NOW - timedelta(days=3), NOW) == []
    [old] = plan_drill(NOW - timedelta(days=45), NOW)
    assert old.kind == ProblemKind.DRILL and "45d ago (limit 30d)" in old.message
    [never] = plan_drill(None, NOW)
    assert "subvault drill" in never.message
    assert plan_drill(NOW - timedelta(days=45), NOW, max_age=timedelta(days=60)) == []
    assert DEFAULT_DRILL_MAX_AGE == timedelta(days=30)


def test_human_age() -> None:
    assert [human_age(timedelta(seconds=s)) for s in (5, 125, 7300, 200000)] == ["5s", "2m", "2h", "2d"]


@settings(deadline=None)  # timing is not what these properties test
@given(
    age_s=st.integers(min_value=-10_000, max_value=10_000_000),
    cadence_s=st.integers(min_value=60, max_value=40 * 86400),
    slack_s=st.none() | st.integers(min_value=0, max_value=40 * 86400),
)
def test_property_problem_iff_older_than_cadence_plus_slack(age_s: int, cadence_s: int, slack_s: int | None) -> None:
    entry = item(timedelta(seconds=age_s), timedelta(seconds=cadence_s), None if slack_s is None else timedelta(seconds=slack_s))
    problems = plan_freshness([entry], NOW)
    limit = allowed_age(entry)
    slack = limit - entry.cadence
    stale = timedelta(seconds=age_s) > limit
    future = timedelta(seconds=-age_s) > slack
    assert bool(problems) == (stale or future)
    assert all("\n" not in p.message for p in problems)
