"""The offsite chain planner: unit cases and a simulated history under hypothesis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subvault.offsite.plan import (
    LocalSnapshot,
    RestorePoint,
    local_holds,
    plan_offsite,
)
from subvault.plan.retention import parse_policy
from subvault.timeutil import parse_duration

UTC = UTC
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def rp(uuid: str, day: float, chain: tuple[str, ...]) -> RestorePoint:
    return RestorePoint(uuid, T0 + day * DAY, chain[-2] if len(chain) > 1 else None, chain)


def ls(uuid: str, day: float) -> LocalSnapshot:
    return LocalSnapshot(uuid, T0 + day * DAY)


def plan(offsite, local, keep="all", full_every="30d", now_day=100.0, in_progress=None, damaged=None):
    return plan_offsite(offsite, local, parse_policy(keep), parse_duration(full_every), T0 + now_day * DAY, UTC,
                        in_progress=in_progress, damaged=damaged)


def test_parse_duration() -> None:
    assert parse_duration("30d") == 30 * DAY
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == 14 * DAY
    for bad in ["", "30", "d", "3x", "1d 2h"]:
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_first_upload_is_a_full() -> None:
    p = plan([], [ls("a", 1), ls("b", 2)])
    assert p.upload is not None and (p.upload.uuid, p.upload.parent_uuid, p.upload.chain) == ("b", None, ("b",))
    assert p.hold_local == {"b": "owed to the offsite target"}


def test_incremental_from_newest_uploaded_still_local() -> None:
    p = plan([rp("a", 1, ("a",)), rp("b", 2, ("a", "b"))], [ls("a", 1), ls("b", 2), ls("c", 3)])
    assert p.upload is not None and (p.upload.parent_uuid, p.upload.chain) == ("b", ("a", "b", "c"))
    assert set(p.hold_local) == {"b", "c"}


def test_parent_falls_back_when_newest_uploaded_was_pruned_locally() -> None:
    p = plan([rp("a", 1, ("a",)), rp("b", 2, ("a", "b"))], [ls("a", 1), ls("c", 3)])
    assert p.upload is not None and p.upload.parent_uuid == "a" and p.upload.chain == ("a", "c")


def test_full_when_no_uploaded_snapshot_is_local() -> None:
    p = plan([rp("a", 1, ("a",))], [ls("c", 3)])
    assert p.upload is not None and p.upload.parent_uuid is None and "no restore point" in p.upload.reason


def test_full_every_bounds_the_chain() -> None:
    p = plan([rp("a", 1, ("a",)), rp("b", 20, ("a", "b"))], [ls("b", 20), ls("c", 31)], full_every="30d")
    assert p.upload is not None and p.upload.parent_uuid is None and "full_every" in p.upload.reason
    q = plan([rp("a", 1, ("a",)), rp("b", 20, ("a", "b"))], [ls("b", 20), ls("c", 30.5)], full_every="30d")
    assert q.upload is not None and q.upload.parent_uuid == "b"


def test_up_to_date_uploads_nothing_but_holds_the_base() -> None:
    p = plan([rp("a", 1, ("a",))], [ls("a", 1)])
    assert p.upload is None and p.hold_local == {"a": "offsite incremental base"}


def test_invariant_4_chain_links_of_kept_points_are_never_deleted() -> None:
    """Invariant 4: keep 'latest' keeps the newest, and its whole chain with it."""
    offsite = [rp("a", 1, ("a",)), rp("b", 2, ("a", "b")), rp("c", 3, ("a", "b", "c")),
               rp("d", 4, ("d",)), rp("e", 5, ("d", "e"))]
    p = plan(offsite, [], keep="latest")
    assert {d.uuid for d in p.delete} == {"a", "b", "c"}
    assert "in the chain of e" in p.keep["d"]


def test_old_chain_kept_by_policy_keeps_its_links() -> None:
    offsite = [rp("a", 1, ("a",)), rp("b", 2, ("a", "b")), rp("c", 40, ("c",))]
    p = plan(offsite, [], keep="*d", now_day=41)
    assert p.delete == ()


def test_unfinished_upload_is_resumed_first() -> None:
    offsite = [rp("a", 1, ("a",))]
    p = plan(offsite, [ls("a", 1), ls("b", 2), ls("c", 3)], in_progress={"b": "a"})
    assert p.upload is not None and p.upload.resume and (p.upload.uuid, p.upload.chain) == ("b", ("a", "b"))


def test_stale_unfinished_upload_is_abandoned() -> None:
    offsite = [rp("a", 1, ("a",)), rp("c", 3, ("a", "c"))]
    p = plan(offsite, [ls("a", 1), ls("c", 3), ls("d", 4)], in_progress={"b": "a"})
    assert p.upload is not None and p.upload.uuid == "d"
    assert [(d.uuid, d.manifest) for d in p.delete] == [("b", False)]


def test_local_holds_without_store_use_cached_points() -> None:
    holds = local_holds([rp("a", 1, ("a",)), rp("b", 2, ("a", "b"))], [ls("a", 1), ls("b", 2)])
    assert holds == {"b": "offsite incremental base"}


# A simulated history: snapshots appear, the planner's upload and deletions are applied,
# the local pruner deletes at random anything not held. Invariants hold at every step.

step = st.tuples(
    st.floats(min_value=0.05, max_value=10.0),  # days until the next snapshot
    st.booleans(),                              # upload this round
    st.lists(st.integers(0, 30), max_size=3),   # local snapshots the pruner tries to delete
)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(step, min_size=1, max_size=40),
    keep=st.sampled_from(["latest", "3d", "2d 2w", "8d 5w 12m", "all", "1h"]),
    full_every=st.sampled_from(["1d", "7d", "30d"]),
)
def test_invariant_4_simulated_history_keeps_every_chain_whole(steps, keep, full_every) -> None:
    offsite: dict[str, RestorePoint] = {}
    local: dict[str, LocalSnapshot] = {}
    now = T0
    for n, (gap, do_upload, prune) in enumerate(steps):
        now += gap * DAY
        local[f"s{n}"] = LocalSnapshot(f"s{n}", now)
        p = plan_offsite(offsite.values(), local.values(), parse_policy(keep), parse_duration(full_every), now, UTC)
        _check_plan(p, offsite, local, parse_duration(full_every))
        if do_upload and p.upload is not None:
            u = p.upload
            offsite[u.uuid] = RestorePoint(u.uuid, local[u.uuid].created, u.parent_uuid, u.chain)
            p = plan_offsite(offsite.values(), local.values(), parse_policy(keep), parse_duration(full_every), now, UTC)
            _check_plan(p, offsite, local, parse_duration(full_every))
        for d in p.delete:
            offsite.pop(d.uuid)
        for victim in prune:
            name = f"s{victim}"
            if name in local and name not in p.hold_local:
                del local[name]
        for point in offsite.values():
            assert all(link in offsite for link in point.chain), "a chain lost a link (invariant 4)"


def _check_plan(p, offsite, local, full_every) -> None:
    deleted = {d.uuid for d in p.delete}
    surviving = set(offsite) - deleted
    for uuid in surviving:
        assert not set(offsite[uuid].chain) & deleted
    if offsite:
        newest = max(offsite.values(), key=lambda r: (r.created, r.uuid))
        assert newest.uuid not in deleted
    assert set(p.hold_local) <= set(local)
    u = p.upload
    if u is not None:
        assert u.uuid in local and u.uuid not in offsite and u.chain[-1] == u.uuid
        assert u.uuid in p.hold_local
        if u.parent_uuid is not None:
            parent = offsite[u.parent_uuid]
            assert u.parent_uuid in local and u.parent_uuid in p.hold_local and u.parent_uuid not in deleted
            assert u.chain == parent.chain + (u.uuid,)
            assert local[u.uuid].created - offsite[u.chain[0]].created < full_every
            assert not set(u.chain) & deleted
        else:
            assert u.chain == (u.uuid,)


# ---------------------------------------------------------------- a chain whose full is lost


def test_a_full_for_a_lost_chain_says_which_point_cannot_be_restored() -> None:
    """The full `a` of the newest chain is gone, so `b` is damaged (only whole points reach the plan)."""
    p = plan([], [ls("a", 1), ls("b", 2)], damaged={"b": "a link of its chain: a is missing offsite"})
    assert p.upload is not None and (p.upload.uuid, p.upload.parent_uuid) == ("b", None)
    assert p.upload.reason == "the offsite copy of b cannot be restored (a link of its chain: a is missing offsite)"


def test_a_full_after_lost_parts_names_the_newest_damaged_local_point() -> None:
    damaged = {"a": "part a/part-000000.zst.age is missing or of the wrong size", "b": "a link of its chain: a is damaged"}
    p = plan([], [ls("a", 1), ls("b", 2), ls("c", 3)], damaged=damaged)
    assert p.upload is not None and (p.upload.uuid, p.upload.parent_uuid) == ("c", None)
    assert "offsite copy of b cannot be restored" in p.upload.reason


def test_reasons_name_the_cause_without_the_kind() -> None:
    """The executor prints `(full: REASON)`: a reason starting with the kind printed `full: full:`."""
    inc = plan([rp("a", 1, ("a",))], [ls("a", 1), ls("b", 2)]).upload
    full = plan([rp("a", 1, ("a",))], [ls("c", 3)]).upload
    old = plan([rp("a", 1, ("a",)), rp("b", 20, ("a", "b"))], [ls("b", 20), ls("c", 31)]).upload
    for step in (inc, full, old):
        assert step is not None and not step.reason.startswith(("full", "incremental")), step.reason
