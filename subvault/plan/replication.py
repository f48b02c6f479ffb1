"""Replication planning: what to send to one btrfs target, from which parent, and what to prune there.

Pure: inputs are the source's snapshots, the target's received subvolumes and the
target's keep policy; the output is a plan with reasons. No I/O, no clock.

Rules:
- Identity is the UUID (invariant 7): a target entry holds source snapshot S when its
  received_uuid equals S.uuid (or S.received_uuid, when S was itself received).
- An entry counts only when verified: read-only, received_uuid set, not in the
  incoming area. Everything else is a partial: deleted before the next receive and
  never a parent (invariant 3) — except a complete receive whose rename was cut off:
  still under the stream's name but read-only, with the received_uuid of a source
  snapshot the target lacks. That is exactly what verification checks, so it is
  adopted (renamed to its final name before the next receive), not sent again.
- A writable entry WITH a received_uuid under a final name is not a partial (an
  interrupted receive never has one, and receives land in the incoming area): someone
  made it writable, or an adopt move was cut off. It is never deleted and never a
  parent: it is `stranded`, to report (make it read-only if it is a complete copy), and
  its name is never reused. (In the incoming area it stays a partial: only our
  receives write there, under the stream's name the next receive needs.)
- A complete receive (read-only, received) under another subvolume's final name
  (`<other>.<stamp>`) that no source snapshot accounts for is not a partial either: a
  receive lands under the stream's name and a wrong one is deleted at once, so it came
  from a rename of a container cut off before its entries (run/renamed.py), and it may
  be the only copy of an old snapshot. It is `stranded` too: never deleted, never a
  parent, never pruned, reported with the `mv` that gives it this subvolume's name.
- Retention runs over the union of the source's timeline snapshots and the target's
  verified entries, with the target's keep policy. Source snapshots it keeps that the
  target lacks are sent, oldest first; target entries it drops are pruned. The newest
  source snapshot is always sent.
- The parent of a send is the newest snapshot both sides share at or before it (after
  earlier sends of the same plan); failing that the oldest shared one after it; a full
  send only when nothing is shared. The nearest shared snapshot after it, if any, is
  offered as a clone source.
- The incremental base (newest shared snapshot), before and after the sends, is held on
  the target and locally (invariant 1); snapshots still owed are held locally (2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from subvault.model import Entry
from subvault.plan.retention import Point, Policy, bucket_index, local_wall, parse_policy, plan_retention

NAME_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_NAME_RE = re.compile(r"^(?P<sub>.+)\.(?P<ts>\d{8}T\d{6}Z)(?:_(?P<n>\d+))?$")


@dataclass(frozen=True)
class Source:
    """A source snapshot that may be sent: its uuid, its time and where it lives."""

    uuid: str
    time: datetime  # aware
    path: str
    received_uuid: str | None = None
    number: int = 0


@dataclass(frozen=True)
class Send:
    """One transfer: the source snapshot, its parent and clone sources (uuids), the name on the target."""

    uuid: str
    name: str
    parent: str | None
    clones: tuple[str, ...] = ()
    reason: str = ""

    @property
    def full(self) -> bool:
        return self.parent is None


@dataclass(frozen=True)
class Removal:
    """A target entry to delete, with why."""

    name: str
    incoming: bool
    reason: str


@dataclass(frozen=True)
class Adoption:
    """A complete, verified receive still under the stream's name: rename it to `final`."""

    name: str
    final: str
    uuid: str  # the source snapshot it holds


@dataclass
class ReplicationPlan:
    partials: list[Removal] = field(default_factory=list)
    stranded: list[Removal] = field(default_factory=list)  # writable but received, or under another name: reported, never deleted
    adopt: list[Adoption] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    prune: list[Removal] = field(default_factory=list)
    base_before: str | None = None  # source uuid of the newest shared snapshot now
    base_after: str | None = None  # ... once every send succeeded
    local_holds: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)  # target entry name -> why kept


def entry_name(sub_name: str, time: datetime, taken: set[str] | None = None, number: int = 0) -> str:
    """Return `<sub>.<UTC YYYYMMDDTHHMMSSZ>`, suffixed `_<number>` if that name is taken."""
    name = f"{sub_name}.{time.astimezone(UTC).strftime(NAME_TIME_FORMAT)}"
    if taken and name in taken:
        name = f"{name}_{number}"
    return name


def parse_entry_time(sub_name: str, name: str) -> datetime | None:
    """Return the UTC time encoded in an entry name of sub_name, or None if it is not one of ours."""
    m = _NAME_RE.match(name)
    if not m or m.group("sub") != sub_name:
        return None
    return datetime.strptime(m.group("ts"), NAME_TIME_FORMAT).replace(tzinfo=UTC)


def renamed_entry(sub_name: str, name: str) -> str | None:
    """Return name (another subvolume's final name) under sub_name's prefix, same stamp; None if it is not a final name."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    return f"{sub_name}.{m.group('ts')}" + (f"_{m.group('n')}" if m.group("n") else "")


def is_verified(entry: Entry) -> bool:
    """Invariant 3: an entry counts only when read-only, received, and under a final name."""
    return entry.readonly and bool(entry.received_uuid) and not entry.incoming


def _identity(src: Source) -> set[str]:
    return {src.uuid} | ({src.received_uuid} if src.received_uuid else set())


def plan_replication(
    sub_name: str,
    sources: Sequence[Source],
    entries: Iterable[Entry],
    keep: str,
    now: datetime,
    tz: tzinfo,
) -> ReplicationPlan:
    """Given one subvolume's timeline snapshots, the target's entries and its keep policy, plan one run.

    Return the partials to remove, the sends (oldest first), the target entries to prune,
    the incremental base before and after, and the local holds.
    Raise ValueError if now is naive or keep is not a retention.
    """
    plan = ReplicationPlan()
    srcs = sorted(sources, key=lambda s: (s.time, s.number, s.uuid))
    verified = _sort_entries(sub_name, srcs, list(entries), plan)
    by_received = _dedupe(verified, sub_name, plan)
    shared = [s for s in srcs if _identity(s) & by_received.keys()]
    shared_uuids = {s.uuid for s in shared}
    plan.base_before = shared[-1].uuid if shared else None

    points, entry_of_key = _points(sub_name, srcs, by_received)
    newest = {srcs[-1].uuid: "newest on the source"} if srcs else {}
    decisions = plan_retention(points, parse_policy(keep), now, tz, held=newest)
    keep_keys = {d.key for d in decisions if d.keep}
    reasons = {d.key: "; ".join(d.reasons) for d in decisions}

    taken = set(by_received_names(by_received)) | {r.name for r in plan.stranded}
    for src in srcs:
        if src.uuid not in keep_keys or src.uuid in shared_uuids:
            continue
        parent, clones = choose_parent(src, srcs, shared_uuids)
        name = entry_name(sub_name, src.time, taken, src.number)
        taken.add(name)
        plan.sends.append(Send(src.uuid, name, parent, clones, reasons[src.uuid]))
        shared_uuids.add(src.uuid)
    after = [s for s in srcs if s.uuid in shared_uuids]
    plan.base_after = after[-1].uuid if after else None

    bases = {b for b in (plan.base_before, plan.base_after) if b}
    for key, entry in entry_of_key.items():
        if key in keep_keys:
            plan.kept[entry.name] = reasons[key]
        elif key in bases:
            plan.kept[entry.name] = "incremental base (invariant 1)"
        else:
            plan.prune.append(Removal(entry.name, False, reasons[key]))
    for send in plan.sends:
        plan.local_holds[send.uuid] = f"owed to the target: {send.reason}"
    for b in bases:
        plan.local_holds.setdefault(b, "incremental base of the target (invariant 1)")
    return plan


def _sort_entries(sub_name: str, srcs: list[Source], entries: list[Entry], plan: ReplicationPlan) -> list[Entry]:
    """Return the verified entries; a whole receive still under its incoming name is adopted
    (and returned under its final name); the rest go to plan.partials or plan.stranded."""
    verified = [e for e in entries if is_verified(e)]
    held = {e.received_uuid for e in verified}
    taken = {e.name for e in verified}
    by_identity = {ident: s for s in srcs for ident in _identity(s)}
    for e in entries:
        if is_verified(e):
            continue
        src = by_identity.get(e.received_uuid or "")
        if e.incoming and e.readonly and src is not None and e.received_uuid not in held:
            final = entry_name(sub_name, src.time, taken, src.number)
            taken.add(final)
            held.add(e.received_uuid)
            plan.adopt.append(Adoption(e.name, final, src.uuid))
            verified.append(Entry(final, e.uuid, e.received_uuid, readonly=True))
            continue
        if e.received_uuid and not e.readonly and not e.incoming:
            plan.stranded.append(Removal(e.name, e.incoming, "writable but received (it has a received_uuid): not a partial"))
            continue
        if e.incoming and e.readonly and e.received_uuid and e.received_uuid not in held and _NAME_RE.match(e.name):
            plan.stranded.append(Removal(e.name, e.incoming, "a complete receive under another subvolume's name: not a partial"))
            continue
        why = "in the receive area" if e.incoming else ("not read-only" if not e.readonly else "no received_uuid")
        plan.partials.append(Removal(e.name, e.incoming, f"partial ({why}); never a parent"))
    return verified


def by_received_names(by_received: dict[str, Entry]) -> list[str]:
    return [e.name for e in by_received.values()]


def _dedupe(verified: list[Entry], sub_name: str, plan: ReplicationPlan) -> dict[str, Entry]:
    """Index verified entries by received_uuid; a second copy of the same snapshot is pruned."""
    out: dict[str, Entry] = {}
    for e in sorted(verified, key=lambda e: (parse_entry_time(sub_name, e.name) is None, e.name)):
        assert e.received_uuid is not None
        if e.received_uuid in out:
            plan.prune.append(Removal(e.name, False, f"duplicate of {out[e.received_uuid].name}"))
            continue
        out[e.received_uuid] = e
    return out


def _points(sub_name: str, srcs: list[Source], by_received: dict[str, Entry]) -> tuple[list[Point], dict[str, Entry]]:
    """Return retention points over sources ∪ target entries (one per identity), and entry per key.

    A target entry whose time cannot be read from its name and has no source is left out:
    what cannot be placed in time is never pruned.
    """
    points: list[Point] = []
    entry_of_key: dict[str, Entry] = {}
    matched: set[str] = set()
    for s in srcs:
        points.append(Point(s.uuid, s.time))
        for ident in _identity(s):
            if ident in by_received and ident not in matched:
                entry_of_key[s.uuid] = by_received[ident]
                matched.add(ident)
                break
    for received, e in by_received.items():
        if received in matched or received in entry_of_key:
            continue
        t = parse_entry_time(sub_name, e.name)
        if t is None:
            continue
        points.append(Point(received, t))
        entry_of_key[received] = e
    return points, entry_of_key


def choose_parent(src: Source, srcs: Sequence[Source], shared: set[str]) -> tuple[str | None, tuple[str, ...]]:
    """Given a snapshot to send and the uuids both sides share, return (parent uuid or None, clone uuids).

    Parent: the newest shared snapshot at or before src; else the oldest shared after it.
    Clone: the nearest shared snapshot after src, when it is not the parent.
    """
    key = (src.time, src.number, src.uuid)
    before = [s for s in srcs if s.uuid in shared and (s.time, s.number, s.uuid) < key]
    after = [s for s in srcs if s.uuid in shared and (s.time, s.number, s.uuid) > key]
    if before:
        parent = before[-1].uuid
        clones = (after[0].uuid,) if after else ()
        return parent, clones
    if after:
        return after[0].uuid, ()
    return None, ()


@dataclass(frozen=True)
class Received:
    """A subvolume in a container as the receiving host itself sees it: nothing here is chosen by a client."""

    name: str  # for reporting only: a client chose it
    id: int  # the receiving filesystem's subvolume id: ids only grow, so this is the order of receipt
    otime: datetime  # aware: the receiving host's clock when the receive created it
    verified: bool  # read-only with a received_uuid: a complete receive
    received_uuid: str | None = None  # from the stream: a client chose it; reported, never planned on


def plan_received_prune(received: Iterable[Received], keep: str, now: datetime, tz: tzinfo) -> ReplicationPlan:
    """Plan pruning on a receiving side by what that side knows itself, never by what a client reported.

    Rules (the threat model: a client's key may add entries, never cause one to be pruned):
    - An entry is dated by its creation time on the receiving filesystem (otime, the
      receiving host's clock) and ordered by subvolume id (the order it was received),
      never by its name, the times a sender reported or the uuids in its stream. An
      entry received later is never older than one received before it, so it can never
      take an existing entry's place as the first of its period.
    - Only verified entries (read-only, received) are planned. Anything else is returned
      as a partial, to report: the sender clears it before its next receive.
    - Held whatever the policy says: the newest entry (the base of the next incremental
      send, invariant 1); every entry received inside the policy's finest window
      (received_window: the last 24 hours of "24h 8d 5w", today under "1d"); and the
      newest entry received before that window. So a receive moves no hold while it is
      itself inside the window: nothing a client adds causes an existing entry to be
      pruned until the addition has been on this host for the whole finest window,
      which is the time to notice a compromised sender (`latest` has no window).
    Raise ValueError as plan_retention.
    """
    plan = ReplicationPlan()
    policy = parse_policy(keep)
    listed = sorted(received, key=lambda r: r.id)
    by_key = {f"{r.id:020d}": r for r in listed if r.verified}
    for r in listed:
        if not r.verified:
            plan.partials.append(Removal(r.name, False, "not a complete receive (writable or no received_uuid)"))
    # An otime that goes backwards between two receives (the host's clock was set back)
    # is raised to its predecessor's, so the order of receipt stays the order in time.
    points: list[Point] = []
    floor: datetime | None = None
    for key, r in by_key.items():
        floor = r.otime if floor is None or r.otime > floor else floor
        points.append(Point(key, floor))
    if not points:
        return plan
    held = {points[-1].key: "newest received: the base of the next incremental send (invariant 1)"}
    inside = received_window(policy, now, tz)
    before = [p for p in points if not inside(p.time) and p.time <= now]
    for p in points:
        if inside(p.time):
            held.setdefault(p.key, f"received inside the finest window of {policy.describe()}: no later receive releases it yet")
    if before and before[-1].key != points[-1].key:
        held.setdefault(before[-1].key, "newest received before the finest window: held until a later receive has left it")
    for d in plan_retention(points, policy, now, tz, held=held):
        name = by_key[d.key].name
        if d.keep:
            plan.kept[name] = "; ".join(d.reasons)
        else:
            plan.prune.append(Removal(name, False, "; ".join(d.reasons)))
    return plan


def received_window(policy: Policy, now: datetime, tz: tzinfo) -> Callable[[datetime], bool]:
    """Return a predicate: is a receive time inside the policy's finest window (its finest keeping
    unit's last N periods on the local calendar, now's included)? Never for `all`, `latest` or all-zero counts.
    """
    unit = policy.cadence()
    count = policy.counts.get(unit) if unit else 0
    if unit is None or count == 0:
        return lambda t: False
    now_index = bucket_index(unit, now.astimezone(tz).replace(tzinfo=None))

    def inside(t: datetime) -> bool:
        wall = local_wall(t, tz)
        if wall is None or t > now:
            return False
        return count is None or now_index - bucket_index(unit, wall) < count

    return inside


def holds_when_unreachable(sources: Sequence[Source], target: str) -> dict[str, str]:
    """Given the source snapshots and an unreachable target, hold every one (it may be the base or owed)."""
    return {s.uuid: f"target {target} unreachable: held until it can be listed" for s in sources}
