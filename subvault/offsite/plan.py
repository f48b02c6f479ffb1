"""Offsite chain planning. Pure: no I/O, no clock (now is an argument).

Rules:
- What to upload: the newest local snapshot, when it is newer than every restore point
  offsite. Its parent is the newest restore point offsite that still exists locally
  and whose whole chain is offsite; without one, or when that chain's full is
  `full_every` or more older than the snapshot, it is a full. The reason says why
  (a damaged point that is still local is named), never the kind: the executor names it. An unfinished upload of
  a snapshot that still qualifies (exists locally, newer than everything offsite, its
  recorded parent still a valid base) is resumed first; other unfinished uploads are
  abandoned.
- What to delete: `keep` is applied to restore points (the manifests), with the
  newest restore point and the planned upload's parent held. Every restore point in
  the chain of a kept point stays, manifest and parts (invariant 4). The rest is
  deleted, chain-free points first being whatever the policy dropped.
- What to hold locally: the next incremental parent and the snapshot owed to the
  target; the local pruner must not delete them (invariants 1 and 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Protocol, TypeVar

from subvault.plan.retention import Point, Policy, plan_retention


@dataclass(frozen=True)
class RestorePoint:
    """A snapshot whose manifest is offsite. `chain` runs from its full to itself."""

    uuid: str
    created: datetime
    parent_uuid: str | None
    chain: tuple[str, ...]

    @property
    def order(self) -> int:
        """Among points created in the same second, the longer chain is the newer."""
        return len(self.chain)


@dataclass(frozen=True)
class LocalSnapshot:
    """A read-only snapshot on the source (identity is its btrfs uuid, invariant 7)."""

    uuid: str
    created: datetime
    number: int = 0  # the snapper number: orders snapshots taken in the same second

    @property
    def order(self) -> int:
        return self.number


@dataclass(frozen=True)
class UploadStep:
    """Send `uuid` (incremental from `parent_uuid`, or full when None) as `chain`'s last link."""

    uuid: str
    parent_uuid: str | None
    chain: tuple[str, ...]
    reason: str
    resume: bool = False


@dataclass(frozen=True)
class Deletion:
    """Delete every object of `uuid` (manifest last-written, so it goes first)."""

    uuid: str
    reason: str
    manifest: bool = True


@dataclass(frozen=True)
class OffsitePlan:
    upload: UploadStep | None
    delete: tuple[Deletion, ...]
    keep: Mapping[str, tuple[str, ...]]
    hold_local: Mapping[str, str]
    notes: tuple[str, ...] = field(default=())


class _Dated(Protocol):
    """What `_newest` orders by: RestorePoint and LocalSnapshot alike."""

    @property
    def uuid(self) -> str: ...
    @property
    def created(self) -> datetime: ...
    @property
    def order(self) -> int: ...


_D = TypeVar("_D", bound=_Dated)


def _newest(items: Iterable[_D]) -> _D | None:
    ordered = sorted(items, key=lambda x: (x.created, x.order, x.uuid))
    return ordered[-1] if ordered else None


def _chain_whole(point: RestorePoint, offsite: Mapping[str, RestorePoint]) -> bool:
    return all(u in offsite for u in point.chain)


def choose_upload(
    offsite: Mapping[str, RestorePoint],
    local: Mapping[str, LocalSnapshot],
    full_every: timedelta,
    in_progress: Mapping[str, str | None] | None = None,
    damaged: Mapping[str, str] | None = None,
) -> tuple[UploadStep | None, str]:
    """Return the next upload (or None) and why. `damaged`: uuid -> why, of points offsite that cannot be restored."""
    newest_off = _newest(offsite.values())
    floor = newest_off.created if newest_off else None

    def qualifies(snap: LocalSnapshot) -> bool:
        # >=: snapshots taken in the same second (snapshot --force) are still newer ones
        return snap.uuid not in offsite and (floor is None or snap.created >= floor)

    def base_for(snap: LocalSnapshot) -> tuple[RestorePoint | None, str]:
        bases = [p for p in offsite.values() if p.uuid in local
                 and (local[p.uuid].created, local[p.uuid].order) < (snap.created, snap.order)
                 and _chain_whole(p, offsite)]
        base = _newest(bases)
        if base is None:
            lost = _newest(s for s in local.values() if s.uuid in (damaged or {})
                           and (s.created, s.order) <= (snap.created, snap.order))
            if lost is not None:
                return None, f"the offsite copy of {lost.uuid} cannot be restored ({(damaged or {})[lost.uuid]})"
            return None, "no restore point offsite that still exists locally"
        age = snap.created - offsite[base.chain[0]].created
        if age >= full_every:
            return None, f"the chain's full is {age.days}d old (full_every {full_every.days}d)"
        return base, f"from {base.uuid}"

    for uuid, parent in sorted((in_progress or {}).items()):
        snap = local.get(uuid)
        if snap is None or not qualifies(snap):
            continue
        base, _ = base_for(snap)
        if parent is None or (base is not None and base.uuid == parent):
            chain = (base.chain if base is not None and parent else ()) + (uuid,)
            return UploadStep(uuid, parent, chain, "resume the unfinished upload", resume=True), "resume"
    newest_local = _newest(local.values())
    if newest_local is None:
        return None, "no local snapshot to upload"
    if not qualifies(newest_local):
        return None, "up to date: the newest local snapshot is offsite"
    base, why = base_for(newest_local)
    chain = (base.chain if base else ()) + (newest_local.uuid,)
    return UploadStep(newest_local.uuid, base.uuid if base else None, chain, why), why


def plan_offsite(
    offsite_points: Iterable[RestorePoint],
    local_snapshots: Iterable[LocalSnapshot],
    policy: Policy,
    full_every: timedelta,
    now: datetime,
    tz: tzinfo,
    in_progress: Mapping[str, str | None] | None = None,
    damaged: Mapping[str, str] | None = None,
) -> OffsitePlan:
    """Given what is offsite, what is local, the target's keep and full_every, decide everything.

    `in_progress` maps the uuid of each unfinished upload (a journal, no manifest) to
    the parent it was started with; `damaged` (uuid -> why) names points offsite that
    cannot be restored, only to say why a full is sent. Raise ValueError if a uuid repeats.
    """
    offsite = _index(offsite_points, "restore point")
    local = _index(local_snapshots, "local snapshot")
    upload, _ = choose_upload(offsite, local, full_every, in_progress, damaged)
    held: dict[str, str] = {}
    newest_off = _newest(offsite.values())
    if newest_off is not None:
        held[newest_off.uuid] = "newest restore point offsite"
    if upload and upload.parent_uuid:
        held[upload.parent_uuid] = f"parent of the next upload {upload.uuid}"
    decisions = plan_retention([Point(p.uuid, p.created) for p in offsite.values()], policy, now, tz, held=held)
    keep: dict[str, list[str]] = {d.key: list(d.reasons) for d in decisions if d.keep}
    for uuid in list(keep):
        for link in offsite[uuid].chain[:-1]:
            if link in offsite:
                keep.setdefault(link, []).append(f"in the chain of {uuid}")
    deletions = [Deletion(d.key, "; ".join(d.reasons)) for d in decisions if d.key not in keep]
    for uuid in sorted(in_progress or {}):
        if uuid not in offsite and (upload is None or upload.uuid != uuid):
            deletions.append(Deletion(uuid, "abandoned unfinished upload", manifest=False))
    return OffsitePlan(
        upload=upload,
        delete=tuple(deletions),
        keep={u: tuple(r) for u, r in keep.items()},
        hold_local=local_holds(offsite.values(), local.values(), upload),
    )


def local_holds(
    offsite_points: Iterable[RestorePoint],
    local_snapshots: Iterable[LocalSnapshot],
    upload: UploadStep | None = None,
) -> dict[str, str]:
    """Return the local snapshots the pruner must keep for this target, with why.

    Held: the newest restore point offsite that still exists locally (the next
    incremental parent), and the planned upload and its parent (owed to the target).
    """
    offsite = {p.uuid: p for p in offsite_points}
    local = {s.uuid: s for s in local_snapshots}
    holds: dict[str, str] = {}
    bases = [p for p in offsite.values() if p.uuid in local and _chain_whole(p, offsite)]
    base = _newest(bases)
    if base is not None:
        holds[base.uuid] = "offsite incremental base"
    if upload is not None:
        holds[upload.uuid] = "owed to the offsite target"
        if upload.parent_uuid:
            holds[upload.parent_uuid] = "parent of the pending offsite upload"
    return holds


def _index(items: Iterable[_D], what: str) -> dict[str, _D]:
    out: dict[str, _D] = {}
    for item in items:
        if item.uuid in out:
            raise ValueError(f"{what} {item.uuid} appears twice")
        out[item.uuid] = item
    return out


def lock_until(created: datetime, policy: Policy, full_every: timedelta) -> datetime | None:
    """Return the S3 Object Lock retain-until for the objects of a snapshot created at `created`.

    Its objects are needed while it or a later link of its chain is kept; later links
    are made within `full_every` of the chain's full, and each is kept at most the
    policy's horizon (count x unit, months as 31 days, years as 366). Return None when
    the policy has no horizon (`all`, or a `*` count): lock nothing rather than forever.
    """
    if policy.keep_all or any(c is None for c in policy.counts.values()):
        return None
    longest = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1),
               "m": timedelta(days=31), "y": timedelta(days=366)}
    horizon = max((c * longest[u] for u, c in policy.counts.items() if c), default=timedelta(0))
    return created + full_every + horizon
