"""An offsite target's state, between the store and the pure planner.

- `scan` reads what is offsite for one subvolume: the restore points (manifests that
  authenticate), the unfinished uploads (journals without a manifest), and problems.
- `apply_deletions` carries out the planner's deletions in the safe order: the
  manifest first (from then on the snapshot no longer exists offsite, invariant 4),
  then its parts, then any journal.
- `holds_for_pruner` tells the local pruner which snapshots this target still needs,
  even when the store cannot be reached: then the holds cached at the last successful
  scan are used, and with no cache every local snapshot is held (nothing the offsite
  chain needs is ever pruned because the bucket was down). The cache is only a cache
  (invariant 12): deleting it makes the next unreachable run hold everything.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from subvault.offsite import layout
from subvault.offsite.manifest import MacKey, Manifest
from subvault.offsite.plan import Deletion, LocalSnapshot, RestorePoint, local_holds
from subvault.offsite.restore import Problem, list_manifests
from subvault.stores.base import ObjectNotFound, Store, StoreUnreachable

log = logging.getLogger("subvault.offsite")


@dataclass(frozen=True)
class TargetState:
    manifests: tuple[Manifest, ...]
    in_progress: dict[str, str | None]
    problems: tuple[Problem, ...]

    @property
    def points(self) -> list[RestorePoint]:
        return [RestorePoint(m.uuid, m.created, m.parent_uuid, m.chain) for m in self.manifests]


def scan(store: Store, mac_key: MacKey | None, subvolume: str) -> TargetState:
    """Return what is offsite for subvolume. Raise StoreUnreachable/StoreAuthError from the store."""
    manifests, problems = list_manifests(store, mac_key, subvolume)
    have = {m.uuid for m in manifests}
    in_progress: dict[str, str | None] = {}
    for info in store.list(f"{layout.check_name('subvolume', subvolume)}/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == layout.JOURNAL and parts[1] not in have:
            try:
                in_progress[parts[1]] = json.loads(store.get(info.key))["journal"]["parent_uuid"]
            except (ObjectNotFound, ValueError, KeyError, TypeError):
                in_progress[parts[1]] = None
    return TargetState(tuple(manifests), in_progress, tuple(problems))


def apply_deletions(store: Store, subvolume: str, deletions: Iterable[Deletion]) -> list[str]:
    """Delete each planned snapshot's objects, manifest first; return the keys deleted."""
    deleted: list[str] = []
    for d in deletions:
        base = layout.snapshot_dir(subvolume, d.uuid)
        mkey = layout.manifest_key(subvolume, d.uuid)
        store.delete(mkey)
        deleted.append(mkey)
        for info in list(store.list(base + "/")):
            store.delete(info.key)
            deleted.append(info.key)
    return deleted


def holds_for_pruner(
    store: Store,
    mac_key: MacKey | None,
    subvolume: str,
    local: Iterable[LocalSnapshot],
    cache: Path,
) -> tuple[dict[str, str], str | None]:
    """Return {uuid: why} of local snapshots the pruner must keep for this target, and a warning or None.

    On a successful scan the answer is written to `cache`. If the store is unreachable,
    return the cached holds (those still local), or every local snapshot if there is
    no cache, with a warning saying so.
    """
    local = list(local)
    present = {s.uuid for s in local}
    try:
        state = scan(store, mac_key, subvolume)
    except StoreUnreachable as exc:
        cached = _read_cache(cache)
        if cached is None:
            return ({s.uuid: "offsite target unreachable and no cached chain state" for s in local},
                    f"{exc}; holding every local snapshot of {subvolume}")
        return ({u: f"{why} (cached: target unreachable)" for u, why in cached.items() if u in present},
                f"{exc}; using the offsite holds cached at the last successful run")
    holds = local_holds(state.points, local)
    for uuid, parent in state.in_progress.items():
        holds.setdefault(uuid, "unfinished offsite upload")
        if parent:
            holds.setdefault(parent, "parent of an unfinished offsite upload")
    holds = {u: why for u, why in holds.items() if u in present}
    _write_cache(cache, holds)
    return holds, None


def _read_cache(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data["holds"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_cache(path: Path, holds: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"holds": holds}, indent=1, sort_keys=True))
    os.replace(tmp, path)
