"""Which Flux suspensions `run` resumes and `check` reports after a pre-change died (invariant 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from subvault.k8s.client import FluxObject, ObjRef
from subvault.k8s.flux import ANNOTATION, SUSPENDED_AT, suspended_since
from subvault.run.flux_leftovers import Leftover, Owner, judge

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DELAY = timedelta(hours=1)


def left(name: str, owner: Owner, age: timedelta | None) -> Leftover:
    return Leftover(ObjRef("Kustomization", "flux-system", name), f"pre-change-{name}", NOW - age if age is not None else None, owner)


def names(items) -> list[str]:
    return [lo.ref.name for lo in items]


def test_a_dead_pre_change_is_resumed_and_reported_at_once() -> None:
    verdict = judge([left("a", Owner.DEAD, timedelta(seconds=5))], NOW, DELAY)
    assert names(verdict.resume) == ["a"] and names(verdict.overdue) == ["a"]


def test_a_live_pre_change_is_never_resumed_but_reported_once_overdue() -> None:
    verdict = judge([left("fresh", Owner.ALIVE, timedelta(minutes=5)), left("old", Owner.ALIVE, timedelta(hours=3))], NOW, DELAY)
    assert names(verdict.resume) == []
    assert names(verdict.overdue) == ["old"]


def test_an_unknown_owner_is_resumed_only_after_the_delay_as_the_timer_would() -> None:
    verdict = judge([left("fresh", Owner.UNKNOWN, timedelta(minutes=5)), left("old", Owner.UNKNOWN, timedelta(hours=3)),
                     left("undated", Owner.UNKNOWN, None)], NOW, DELAY)
    assert names(verdict.resume) == ["old"]
    assert names(verdict.overdue) == ["old", "undated"]


def test_message_names_the_object_and_the_command_that_resumes_it() -> None:
    text = left("apps", Owner.DEAD, timedelta(minutes=7)).describe(NOW, DELAY)
    assert "Kustomization/flux-system/apps" in text and "subvault pre-change --resume --run-id pre-change-apps" in text
    assert "no longer running" in text and "\n" not in text


def test_suspended_since_reads_the_annotation_or_the_run_id() -> None:
    ref = ObjRef("Kustomization", "ns", "x")
    at = FluxObject(ref, True, {ANNOTATION: "pre-change-20261126T030000-42", SUSPENDED_AT: "2026-11-26T02:00:00+00:00"})
    assert suspended_since(at) == datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    by_id = FluxObject(ref, True, {ANNOTATION: "pre-change-20261126T030000-42"})
    assert suspended_since(by_id) == datetime(2026, 11, 26, 3, 0).astimezone(UTC)
    assert suspended_since(FluxObject(ref, True, {ANNOTATION: "pre-change-x"})) is None


