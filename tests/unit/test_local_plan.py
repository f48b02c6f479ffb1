"""The local prune planner: policies, ownership and holds from other layers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from subvault.model import LocalSnapshot
from subvault.plan.local import plan_prune, timeline_due

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def snap(n: int, hours_ago: float, kind: str = "timeline", uuid: str | None = None) -> LocalSnapshot:
    return LocalSnapshot(
        subvolume="data", number=n, path=Path(f"/d/.snapshots/{n}/snapshot"), date=NOW - timedelta(hours=hours_ago),
        description=kind, cleanup="timeline" if kind == "timeline" else "number", kind=kind,  # type: ignore[arg-type]  # the tests pass only SnapshotKind values
        owned=kind != "foreign", uuid=uuid or f"u{n}",
    )


def test_invariant_2_owed_snapshot_survives_local_prune():
    snaps = [snap(i, 1000 - i) for i in range(10)]  # all far outside "1h"
    steps = plan_prune(snaps, timeline="1h", prechange_keep=0, now=NOW, tz=UTC, held={"u0": "owed to pi"})
    kept = {s.snapshot.number: s.reasons for s in steps if s.keep}
    assert 0 in kept and "held: owed to pi" in kept[0]
    assert 9 in kept  # newest
    assert {s.snapshot.number for s in steps if not s.keep} == set(range(1, 9))


def test_invariant_8_foreign_snapshots_get_no_step():
    snaps = [snap(1, 5000, kind="foreign"), snap(2, 1)]
    steps = plan_prune(snaps, timeline="1h", prechange_keep=0, now=NOW, tz=UTC)
    assert [s.snapshot.number for s in steps] == [2]


def test_prechange_by_count_in_creation_order_when_dates_tie():
    snaps = [snap(i, 1, kind="prechange") for i in range(1, 6)]
    steps = plan_prune(snaps, timeline="24h", prechange_keep=2, now=NOW, tz=UTC)
    assert [s.snapshot.number for s in steps if s.keep] == [4, 5]


@settings(max_examples=200)
@given(st.lists(st.floats(min_value=0, max_value=24 * 400), min_size=1, max_size=40), st.sets(st.integers(0, 39)))
def test_held_and_newest_always_kept(ages, held_idx):
    snaps = [snap(i, a) for i, a in enumerate(ages)]
    held = {f"u{i}": "base" for i in held_idx if i < len(snaps)}
    steps = plan_prune(snaps, timeline="24h 7d 4w", prechange_keep=0, now=NOW, tz=UTC, held=held)
    kept = {s.snapshot.uuid for s in steps if s.keep}
    assert set(held) <= kept
    newest = max(snaps, key=lambda s: (s.date, s.number))
    assert newest.uuid in kept


def test_timeline_due_hourly():
    assert timeline_due([], "24h", NOW, UTC)
    later = NOW + timedelta(minutes=40)
    assert not timeline_due([snap(1, 0)], "24h", later, UTC)  # same hour
    assert timeline_due([snap(1, 0.5)], "24h", later, UTC)  # 11:30, the hour before
    assert not timeline_due([snap(1, 5)], "7d", NOW, UTC)  # daily cadence
