"""The renames that bring btrbk's history into subvault's layout. Pure.

A rename keeps a subvolume's uuid and received_uuid, so what moves stays what it was.

Rules:
- btrbk's local snapshots move into `<sub>/.snapshots/N/snapshot`, oldest first, as
  subvault timeline snapshots marked adopted=btrbk; the newest is the parent of the
  first incremental send.
- btrbk's verified target entries (read-only, with a received_uuid) move from
  `<dir>/<name>.<btrbk timestamp>` to `<dir>/<host>/<sub>/<sub>.<UTC>Z`, oldest first:
  they stay restore points, and the newest stays the incremental base.
- An entry that fails that check is left in place and reported (with the command that
  finishes it when an interrupted --apply left it writable with its received_uuid).
- A target that could not be listed gets no move; adopt --apply finishes it later.
"""

from __future__ import annotations

from subvault.adopt.btrbk_conf import BtrbkTarget
from subvault.adopt.found import BtrbkSnapshot, FoundBtrbk
from subvault.adopt.planned import Action, AdoptPlan, TargetPlan
from subvault.plan.replication import entry_name


def entry_moves(plan: AdoptPlan, host: str, fb: FoundBtrbk, t: BtrbkTarget, tp: TargetPlan, name: str,
                found: tuple[BtrbkSnapshot, ...] | str) -> None:
    """Plan the moves of subvolume `name`'s entries `found` in btrbk target t (adopted as tp)."""
    if isinstance(found, str):
        plan.manual.append(f"{tp.name}: could not list {t.url} ({found}); run adopt --apply again once it is reachable")
        return
    container = f"{tp.btrbk_dir.rstrip('/')}/{host}/{name}"
    if container not in tp.containers:
        tp.containers.append(container)  # an interrupted --apply may have left its staging container to finish
    taken: set[str] = set()
    moved = 0
    for e in sorted(found, key=lambda e: (e.time, e.suffix, e.name)):
        if not (e.readonly and e.received_uuid):
            plan.manual.append(_unverified(tp, e))
            continue
        final = entry_name(name, e.time, taken, e.suffix or moved + 1)
        taken.add(final)
        moved += 1
        src, dst = f"{tp.btrbk_dir.rstrip('/')}/{e.name}", f"{container}/{final}"
        plan.actions.append(Action("move-entry", f"{name}→{tp.name}", f"{src} → {dst}",
                                   data={"target": tp.name, "src": src, "dst": dst, "container": container}))
    if moved:
        plan.found.append(f"{tp.name}: {moved} btrbk entries of {fb.sub.snapshot_name} in {tp.btrbk_dir} (restore points, kept by keep {tp.keep})")


def _unverified(tp: TargetPlan, e: BtrbkSnapshot) -> str:
    """What the user is told about an entry that is not a verified receive."""
    lacks = " and ".join(x for x in ("is writable" if not e.readonly else "",
                                     "has no received_uuid" if not e.received_uuid else "") if x)
    hint = ""
    if e.received_uuid:  # writable with a received_uuid: an adopt --apply was interrupted
        hint = (f"; if it is whole (an adopt --apply interrupted between its flip and its rename), "
                f"`btrfs property set -ts {tp.btrbk_dir}/{e.name} ro true` and run adopt --apply again")
    return (f"{tp.name}: {tp.btrbk_dir}/{e.name} {lacks}, so it is not a verified receive; "
            f"left in place, not a restore point for subvault{hint}")


def local_moves(plan: AdoptPlan, fb: FoundBtrbk, name: str, path: str) -> None:
    """Plan the moves of btrbk's local snapshots of subvolume `name` (at path) into its .snapshots."""
    for s in sorted(fb.snapshots, key=lambda s: (s.time, s.suffix, s.name)):
        src = f"{fb.sub.snapshot_dir}/{s.name}"
        plan.actions.append(Action(
            "move-local", name, f"{src} → {path}/.snapshots/N/snapshot (timeline, adopted=btrbk, dated {s.time:%Y-%m-%d %H:%M} UTC)",
            data={"src": src, "sub_path": path, "time": s.time.isoformat(), "btrbk_name": s.name, "uuid": s.uuid,
                  "btrbk_sub_path": fb.sub.full_path},
        ))
