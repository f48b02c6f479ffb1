"""Property tests for the replication planner (subvault.plan.replication)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from subvault.model import Entry
from subvault.plan.replication import (
    Received,
    Source,
    entry_name,
    parse_entry_time,
    plan_received_prune,
    plan_replication,
)

UTC = UTC
NOW = datetime(2026, 11, 26, 3, 30, tzinfo=UTC)
KEEPS = ["24h 8d 5w", "latest", "all", "3h 2d", "0h 1d", "*d"]


@st.composite
def scenarios(draw):
    n = draw(st.integers(0, 40))
    gaps = draw(st.lists(st.integers(1, 30 * 60), min_size=n, max_size=n))
    t = NOW
    sources = []
    for i, gap in enumerate(gaps):
        t = t - timedelta(minutes=gap)
        sources.append(Source(uuid=f"src-{i}", time=t, path=f"/s/.snapshots/{i}/snapshot", number=1000 - i))
    sources.reverse()
    entries = []
    for s in sources:
        state = draw(st.sampled_from(["absent", "absent", "ok", "ok", "rw", "noreceived", "incoming"]))
        if state == "incoming" and any(e.incoming for e in entries):
            state = "absent"  # the stream's name is the same for all: one at most
        name = entry_name("sub", s.time)
        if state == "ok":
            entries.append(Entry(name, f"t-{s.uuid}", s.uuid, True))
        elif state == "rw":
            entries.append(Entry(name, f"t-{s.uuid}", s.uuid, False))
        elif state == "noreceived":
            entries.append(Entry(name, f"t-{s.uuid}", None, True))
        elif state == "incoming":
            entries.append(Entry("snapshot", f"t-{s.uuid}", s.uuid, True, incoming=True))
    orphans = draw(st.integers(0, 5))
    for j in range(orphans):
        t = NOW - timedelta(days=draw(st.integers(1, 60)), minutes=j)
        if entry_name("sub", t) not in {e.name for e in entries}:  # one directory: names are unique
            entries.append(Entry(entry_name("sub", t), f"o-{j}", f"gone-{j}", True))
    keep = draw(st.sampled_from(KEEPS))
    return sources, entries, keep


def _verified(entries, sources) -> dict:
    """received_uuid -> entry for what counts on the target: verified entries, and adoptable receives."""
    out = {e.received_uuid: e for e in entries if e.readonly and e.received_uuid and not e.incoming}
    known = {s.uuid for s in sources}
    for e in entries:
        if e.incoming and e.readonly and e.received_uuid in known and e.received_uuid not in out:
            out[e.received_uuid] = e
    return out


def _apply(plan, sources, entries):
    """Return the target's entries after the plan ran to completion."""
    by_uuid = {s.uuid: s for s in sources}
    adopted = {a.name: a.final for a in plan.adopt}
    entries = [Entry(adopted[e.name], e.uuid, e.received_uuid, True) if e.incoming and e.name in adopted else e for e in entries]
    removed = {(r.name, r.incoming) for r in plan.partials + plan.prune}
    after = [e for e in entries if (e.name, e.incoming) not in removed]
    for send in plan.sends:
        after.append(Entry(send.name, f"t-{send.uuid}", by_uuid[send.uuid].uuid, True))
    return after


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_invariant_1_incremental_base_never_deleted(sc):
    sources, entries, keep = sc
    plan = plan_replication("sub", sources, entries, keep, NOW, UTC)
    pruned = {r.name for r in plan.prune}
    verified = _verified(entries, sources)
    final = {a.name: a.final for a in plan.adopt}
    for base in (plan.base_before, plan.base_after):
        if base is None:
            continue
        assert base in plan.local_holds, "the base must be held locally"
        if base in verified:
            name = verified[base].name
            assert final.get(name, name) not in pruned, "the base must not be pruned on the target"
    shared = [s for s in sources if s.uuid in verified]
    assert plan.base_before == (shared[-1].uuid if shared else None)
    if plan.sends:
        assert plan.base_after is not None
    after = _apply(plan, sources, entries)
    if plan.base_after:
        assert any(e.received_uuid == plan.base_after for e in after)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_invariant_2_owed_snapshots_held_locally(sc):
    sources, entries, keep = sc
    plan = plan_replication("sub", sources, entries, keep, NOW, UTC)
    for send in plan.sends:
        assert send.uuid in plan.local_holds
    if sources:
        newest = sources[-1].uuid
        on_target = newest in _verified(entries, sources)
        assert on_target or newest in {s.uuid for s in plan.sends}, "the newest snapshot is always owed"


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_invariant_3_partials_removed_and_never_parents(sc):
    sources, entries, keep = sc
    plan = plan_replication("sub", sources, entries, keep, NOW, UTC)
    counted = _verified(entries, sources)
    partial = [e for e in entries if counted.get(e.received_uuid) is not e and not (e.received_uuid and not e.readonly and not e.incoming)]
    assert sorted((r.name, r.incoming) for r in plan.partials) == sorted((e.name, e.incoming) for e in partial)
    stranded = [e for e in entries if e.received_uuid and not e.readonly and not e.incoming]
    assert sorted(r.name for r in plan.stranded) == sorted(e.name for e in stranded)
    assert not {r.name for r in plan.prune} & {e.name for e in stranded}
    assert not {x.name for x in plan.sends} & {e.name for e in stranded}  # its name is never reused
    assert {a.name for a in plan.adopt} == {e.name for e in counted.values() if e.incoming}
    usable = set(counted)
    for send in plan.sends:
        for ref in (send.parent, *send.clones):
            if ref is not None:
                assert ref in usable, f"{ref} is not a verified snapshot on the target"
        usable.add(send.uuid)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_invariant_7_identity_is_uuid_not_name(sc):
    sources, entries, keep = sc
    known = {s.uuid for s in sources}
    renamed = [
        Entry(e.name + "x" if e.received_uuid in known and not e.incoming else e.name, e.uuid, e.received_uuid, e.readonly, e.incoming)
        for e in entries
    ]
    a = plan_replication("sub", sources, entries, keep, NOW, UTC)
    b = plan_replication("sub", sources, renamed, keep, NOW, UTC)
    assert [(s.uuid, s.parent) for s in a.sends] == [(s.uuid, s.parent) for s in b.sends]
    assert a.base_before == b.base_before


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_full_send_only_when_nothing_shared_and_sends_oldest_first(sc):
    sources, entries, keep = sc
    plan = plan_replication("sub", sources, entries, keep, NOW, UTC)
    order = {s.uuid: i for i, s in enumerate(sources)}
    assert [order[s.uuid] for s in plan.sends] == sorted(order[s.uuid] for s in plan.sends)
    fulls = [s for s in plan.sends if s.full]
    if plan.base_before is not None:
        assert not fulls
    else:
        assert len(fulls) <= 1 and (not fulls or plan.sends[0].full)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_replanning_after_success_is_a_no_op(sc):
    sources, entries, keep = sc
    plan = plan_replication("sub", sources, entries, keep, NOW, UTC)
    again = plan_replication("sub", sources, _apply(plan, sources, entries), keep, NOW, UTC)
    assert again.sends == [] and again.partials == []
    # The only thing left is the old base, released once the new one exists.
    final = {a.name: a.final for a in plan.adopt}
    assert {r.name for r in again.prune} <= {final.get(e.name, e.name) for e in entries if e.received_uuid == plan.base_before}
    third = plan_replication("sub", sources, _apply(again, sources, _apply(plan, sources, entries)), keep, NOW, UTC)
    assert third.sends == [] and third.partials == [] and third.prune == []


def test_entry_names_round_trip_and_foreign_names_ignored():
    t = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    assert entry_name("var_lib_pvc", t) == "var_lib_pvc.20261126T030000Z"
    assert parse_entry_time("var_lib_pvc", "var_lib_pvc.20261126T030000Z") == t
    assert parse_entry_time("var_lib_pvc", "var_lib_pvc.20261126T030000Z_7") == t
    assert parse_entry_time("var_lib_pvc", "root.20261126T030000Z") is None
    assert parse_entry_time("var_lib_pvc", "something-else") is None


def test_incremental_uses_newest_shared_parent():
    t0 = NOW - timedelta(hours=3)
    s = [Source(f"u{i}", t0 + timedelta(hours=i), f"/p{i}", number=i) for i in range(3)]
    entries = [Entry(entry_name("sub", s[0].time), "x0", "u0", True), Entry(entry_name("sub", s[1].time), "x1", "u1", True)]
    plan = plan_replication("sub", s, entries, "24h", NOW, UTC)
    assert [(x.uuid, x.parent) for x in plan.sends] == [("u2", "u1")]
    assert plan.base_before == "u1" and plan.base_after == "u2"


def test_invariant_3_writable_entry_with_a_received_uuid_is_never_deleted_as_a_partial():
    # An interrupted receive never has a received_uuid; a writable one that has it (an adopt
    # move cut off between its two flips) is someone's complete copy: reported, never deleted.
    s = [Source("u0", NOW - timedelta(hours=2), "/p0", number=0), Source("u1", NOW - timedelta(hours=1), "/p1", number=1)]
    final = entry_name("sub", s[0].time)
    plan = plan_replication("sub", s, [Entry(final, "t0", "u0", False)], "24h", NOW, UTC)
    assert plan.partials == [] and [r.name for r in plan.stranded] == [final]
    assert final not in {x.name for x in plan.sends} and not plan.prune


def test_received_source_matches_by_received_uuid():
    s = [Source("local-uuid", NOW - timedelta(hours=1), "/p", received_uuid="orig-uuid", number=1)]
    entries = [Entry(entry_name("sub", s[0].time), "t", "orig-uuid", True)]
    plan = plan_replication("sub", s, entries, "24h", NOW, UTC)
    assert plan.sends == [] and plan.base_before == "local-uuid"


def test_invariant_3_complete_receive_cut_off_before_its_rename_is_adopted_not_resent():
    t0 = NOW - timedelta(hours=2)
    a = Source("a", t0, "/s/.snapshots/1/snapshot", number=1)
    b = Source("b", t0 + timedelta(hours=1), "/s/.snapshots/2/snapshot", number=2)
    base = Entry(entry_name("sub", a.time), "t-a", "a", True)
    # complete: read-only, received from b → adopted under b's final name, nothing sent
    plan = plan_replication("sub", [a, b], [base, Entry("snapshot", "t-b", "b", True, incoming=True)], "all", NOW, UTC)
    assert [(x.name, x.final, x.uuid) for x in plan.adopt] == [("snapshot", entry_name("sub", b.time), "b")]
    assert plan.partials == [] and plan.sends == [] and plan.base_after == "b"
    # cut off mid-stream (still writable), or from a snapshot the source no longer has → a partial
    for cut in (Entry("snapshot", "t-b", "b", False, incoming=True), Entry("snapshot", "t-x", "gone", True, incoming=True)):
        plan = plan_replication("sub", [a, b], [base, cut], "all", NOW, UTC)
        assert plan.adopt == [] and [r.name for r in plan.partials] == ["snapshot"]
        assert [s.uuid for s in plan.sends] == ["b"] and plan.sends[0].parent == "a"
    # a second copy of what the target already holds → a partial too
    plan = plan_replication("sub", [a, b], [base, Entry("snapshot", "t-a2", "a", True, incoming=True)], "all", NOW, UTC)
    assert plan.adopt == [] and [r.name for r in plan.partials] == ["snapshot"]


@st.composite
def received_sets(draw):
    """Entries a receiving host holds (id order = receipt order, otime never earlier than the previous)."""
    n = draw(st.integers(0, 30))
    t = NOW - timedelta(days=40)
    out = []
    for i in range(n):
        t = t + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
        if t > NOW:
            break
        name = draw(st.sampled_from([f"sub.{i}", entry_name("sub", NOW - timedelta(days=365)), "snapshot", f"x{i}"]))
        out.append(Received(f"{name}#{i}", 100 + i, t, draw(st.booleans()) or True))
    return out


@settings(max_examples=300, deadline=None)
@given(received_sets(), st.integers(0, 30), st.sampled_from(KEEPS), st.integers(0, 29))
def test_attack_append_only_key_adds_entries_and_no_existing_entry_is_pruned_for_it(existing, extra, keep, minutes):
    """Whatever a client adds (any names, any count), no existing entry is pruned for it while the
    additions are inside the policy's finest window: not even the previous newest ("latest" has no window)."""
    last = existing[-1].otime if existing else NOW - timedelta(days=40)
    at = max(last, NOW - timedelta(minutes=minutes))  # NOW is 03:30: the current hour, inside every finest window
    added = [Received(entry_name("sub", NOW - timedelta(days=300)), 1000 + i, at, True) for i in range(extra)]
    alone = plan_received_prune(existing, keep, NOW, UTC)
    attacked = plan_received_prune([*existing, *added], keep, NOW, UTC)
    lost = {r.name for r in attacked.prune} & {e.name for e in existing}
    if keep == "latest" and existing:
        assert lost <= {r.name for r in alone.prune} | {existing[-1].name}
    else:
        assert lost <= {r.name for r in alone.prune}
    if existing:
        assert existing[-1].name in alone.kept


def test_received_prune_an_addition_releases_the_previous_newest_only_after_the_finest_window():
    real = Received("sub.real", 256, NOW - timedelta(days=3, hours=1), True)  # not first of its day
    first = Received("sub.first", 255, NOW - timedelta(days=3, hours=2), True)
    lie = Received("sub.lie", 300, NOW - timedelta(minutes=5), True)
    plan = plan_received_prune([first, real, lie], "24h 7d", NOW, UTC)
    assert plan.prune == [], "the addition is inside the last 24 hours: it releases nothing"
    assert "before the finest window" in plan.kept[real.name]
    later = NOW + timedelta(days=1, hours=1)
    plan = plan_received_prune([first, real, lie], "24h 7d", later, UTC)
    assert [r.name for r in plan.prune] == [real.name], "a day later the addition stands on the policy, and so does the old newest"


def test_received_prune_dates_by_the_receiving_host_never_by_names():
    # NOW is 03:30; the real backups of today arrived at 01:00 and 02:00
    first = Received(entry_name("sub", NOW - timedelta(hours=2, minutes=30)), 256, NOW - timedelta(hours=2, minutes=30), True)
    real = Received(entry_name("sub", NOW - timedelta(hours=1, minutes=30)), 257, NOW - timedelta(hours=1, minutes=30), True)
    # a client names a new receive as if it were taken at midnight, to be "first of the day"
    lie = Received("sub.20261126T000000Z", 300, NOW - timedelta(minutes=5), True)
    plan = plan_received_prune([first, real, lie], "1d", NOW, UTC)
    assert first.name in plan.kept and lie.name in plan.kept, "the lie is dated by when this host received it"
    assert plan.prune == [] and real.name in plan.kept, "the previous newest is not released by a receive of today"
    real = Received(entry_name("sub", NOW - timedelta(days=2)), 256, NOW - timedelta(days=2), True)
    plan = plan_received_prune([real, lie], "3d", NOW, UTC)
    assert plan.prune == [] and set(plan.kept) == {real.name, lie.name}
    partial = Received(entry_name("sub", NOW), 301, NOW, False)
    plan = plan_received_prune([real, partial], "1d", NOW, UTC)
    assert [r.name for r in plan.partials] == [partial.name] and real.name in plan.kept


def test_attack_a_complete_receive_under_another_names_prefix_is_stranded_never_deleted():
    """An unfinished rename of a container (run/renamed.py's printed fix cut off after its first mv)
    leaves `old.<stamp>` receives in `new/`: one whose source is gone locally may be the only copy."""
    src = Source(uuid="u2", time=NOW - timedelta(hours=1), path="/s/.snapshots/2/snapshot", number=2)
    old_only = Entry("data.20261120T000000Z", "t1", "u1", readonly=True, incoming=True)  # no local source any more
    old_known = Entry("data.20261126T023000Z", "t2", "u2", readonly=True, incoming=True)  # its source is here
    stream = Entry("snapshot", "t3", "u9", readonly=True, incoming=True)  # under the stream's name: a partial
    plan = plan_replication("files", [src], [old_only, old_known, stream], "1h", NOW, UTC)
    assert [r.name for r in plan.stranded] == ["data.20261120T000000Z"]
    assert [a.name for a in plan.adopt] == ["data.20261126T023000Z"]
    assert [r.name for r in plan.partials] == ["snapshot"]
    assert "data.20261120T000000Z" not in {r.name for r in plan.prune}
