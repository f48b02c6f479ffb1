"""An offsite target's state, between the store and the pure planner.

- `scan` reads what is offsite for one subvolume: the restore points (manifests that
  authenticate), the unfinished uploads (journals without a manifest), and problems.
  From the one listing it makes it also checks every part a manifest names: present
  and of the recorded size. A point with a part missing or of the wrong size, or one
  the last `verify` found with a wrong SHA-256 (`suspect`, until its manifest is
  written anew), is *damaged*; a point whose chain holds a damaged or absent link
  cannot be restored either. Only whole points are restore points: they are what
  `status` counts, what the planner builds on, and so a damaged newest point is sent
  again (or a new full started) instead of being called up to date.
  The ledger (offsite/ledger.py) adds the points that should exist and do not.
- Nothing is deleted because it fails to authenticate: a snapshot folder holding a
  manifest, authentic or not, is never an "unfinished upload".
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from subvault.offsite import layout
from subvault.offsite import ledger as ledgers
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
    damaged: Mapping[str, str] = field(default_factory=dict)  # uuid -> why it cannot be restored
    ledger: ledgers.Ledger | None = None
    judgement: ledgers.Judgement | None = None
    warnings: tuple[str, ...] = ()

    @property
    def whole(self) -> list[Manifest]:
        return [m for m in self.manifests if m.uuid not in self.damaged]

    @property
    def points(self) -> list[RestorePoint]:
        """The restore points that can be restored: manifest, parts and every chain link whole."""
        return [RestorePoint(m.uuid, m.created, m.parent_uuid, m.chain) for m in self.whole]


def scan(store: Store, mac_key: MacKey | None, subvolume: str, *, cache: Path | None = None,
         suspect: Mapping[str, str] | None = None) -> TargetState:
    """Return what is offsite for subvolume. Raise StoreUnreachable/StoreAuthError from the store.

    `cache` is this host's copy of the newest ledger seen (read, and moved forward);
    `suspect` maps uuid -> manifest MAC of points the last `verify` found corrupt.
    """
    manifests, problems = list_manifests(store, mac_key, subvolume)
    listing = {info.key: info.size for info in store.list(f"{layout.check_name('subvolume', subvolume)}/")}
    damaged: dict[str, str] = {}
    for m in manifests:
        for part in m.parts:
            size = listing.get(part.key)
            if size is None:
                problems.append(Problem(part.key, "missing"))
            elif size != part.size:
                problems.append(Problem(part.key, f"size {size}, manifest says {part.size}"))
            else:
                continue
            damaged.setdefault(m.uuid, f"part {part.key} is missing or of the wrong size")
        if (suspect or {}).get(m.uuid) == m.mac and m.uuid not in damaged:
            damaged[m.uuid] = "the last verify found a part with the wrong SHA-256"
            problems.append(Problem(m.key, "the last `subvault verify` found a corrupt part; the next offsite sends it again if it can"))
    have = {m.uuid: m for m in manifests}
    changed = True
    while changed:  # a point is whole only when every link of its chain is
        changed = False
        for m in manifests:
            bad = [link for link in m.chain[:-1] if link not in have or link in damaged]
            if m.uuid not in damaged and bad:
                what = f"{bad[0]} is missing offsite" if bad[0] not in have else f"{bad[0]} is damaged"
                damaged[m.uuid] = f"a link of its chain: {what}"
                problems.append(Problem(m.key, f"cannot be restored: a link of its chain: {what}"))
                changed = True
    in_progress: dict[str, str | None] = {}
    folders_with_manifest = {k.split("/")[1] for k in listing if k.count("/") == 2 and k.endswith("/" + layout.MANIFEST)}
    for key in listing:
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == layout.JOURNAL and parts[1] not in folders_with_manifest:
            try:
                in_progress[parts[1]] = json.loads(store.get(key))["journal"]["parent_uuid"]
            except (ObjectNotFound, ValueError, KeyError, TypeError):
                in_progress[parts[1]] = None
    ledger, distrust = ledgers.load(store, mac_key, subvolume)
    cached = ledgers.read_cache(cache) if cache is not None else None
    judgement = ledgers.judge(subvolume, ledger, distrust, cached, have)
    problems += [Problem(layout.ledger_key(subvolume), p) for p in judgement.problems]
    if cache is not None and distrust is None:
        ledgers.remember(cache, ledger)
    return TargetState(tuple(manifests), in_progress, tuple(problems), damaged, ledger, judgement, judgement.warnings)


def apply_deletions(store: Store, subvolume: str, deletions: Iterable[Deletion]) -> list[str]:
    """Delete each planned snapshot's objects, manifest first; return the keys deleted.

    An abandoned upload (no manifest planned) whose folder holds a manifest after all
    is left alone: that snapshot may be complete, under a key this host cannot verify.
    """
    deleted: list[str] = []
    for d in deletions:
        base = layout.snapshot_dir(subvolume, d.uuid)
        mkey = layout.manifest_key(subvolume, d.uuid)
        if not d.manifest:
            try:
                store.stat(mkey)
                log.warning("%s exists: not deleting %s/ as an abandoned upload", mkey, base)
                continue
            except ObjectNotFound:
                pass
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
    *,
    write_cache: bool = True,
) -> tuple[dict[str, str], str | None]:
    """Return {uuid: why} of local snapshots the pruner must keep for this target, and a warning or None.

    On a successful scan the answer is written to `cache` (unless write_cache is false: a dry run). If the store is unreachable,
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
    if write_cache:
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
