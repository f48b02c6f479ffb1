"""The ledger: which restore points of a subvolume should exist offsite.

A deleted manifest leaves no trace in the bucket, so deleting the newest ones rolls a
target back silently. The ledger closes that:

- `SUBVOL/ledger.json` lists every restore point (uuid and time) the writer left
  there, with a generation that grows by one at every write, MAC'd with the manifest
  key. `offsite` writes it after a manifest (a new point) and before deleting one
  (retention), so a crash leaves at worst a point not yet listed, which counts as
  present and is listed next time.
- A listed point without an authenticated manifest is gone: deleted, or rolled back.
  It stays listed, and `check`, `verify` and `restore` report it, until the keep
  policy would have dropped it anyway (or its snapshot is sent again).
- This host caches the newest ledger it has seen in the state dir. A bucket ledger of
  a lower generation than the cache is a rollback (an older ledger replayed); then the
  cached one is the reference. The cache only ever moves forward.
- After the state dir is lost the bucket's ledger is trusted as found (invariant 12:
  the truth is in the bucket). A rollback made before that loss, to a ledger the
  attacker kept, can then no longer be told from the real history; it still shows
  as a stale layer once the newest point is older than the cadence allows.
- A ledger that fails authentication is reported and never trusted; `offsite`
  replaces it only by a ledger built from the authenticated manifests and the cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from subvault.offsite import layout
from subvault.offsite.manifest import MacKey
from subvault.plan.retention import Point, Policy, plan_retention
from subvault.stores.base import ObjectNotFound, Store

FORMAT = 1


@dataclass(frozen=True)
class Ledger:
    subvolume: str
    generation: int
    points: Mapping[str, datetime] = field(default_factory=dict)
    order: Mapping[str, int] = field(default_factory=dict)  # chain length: orders points of the same second

    def payload(self) -> bytes:
        data = {"format": FORMAT, "subvolume": self.subvolume, "generation": self.generation,
                "points": {u: t.isoformat() for u, t in sorted(self.points.items())},
                "order": {u: n for u, n in sorted(self.order.items()) if u in self.points}}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _parse(data: dict[str, Any]) -> Ledger:
    if data.get("format") != FORMAT:
        raise ValueError(f"format {data.get('format')!r}")
    points = {str(u): datetime.fromisoformat(t) for u, t in data["points"].items()}
    order = {str(u): int(n) for u, n in data.get("order", {}).items()}
    return Ledger(str(data["subvolume"]), int(data["generation"]), points, order)


def load(store: Store, key: MacKey | None, subvolume: str) -> tuple[Ledger | None, str | None]:
    """Return (ledger, None), (None, None) when there is none, or (None, why) when it is not to be trusted."""
    lkey = layout.ledger_key(subvolume)
    try:
        raw = json.loads(store.get(lkey))
        ledger = _parse(raw["ledger"])
        authentic = key is None or key.check_bytes(ledger.payload(), raw["mac"])
    except ObjectNotFound:
        return None, None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, f"{lkey}: unreadable ledger (replaced?); it is not trusted"
    if not authentic or ledger.subvolume != subvolume:
        return None, f"{lkey} fails authentication (forged, or another installation's); it is not trusted"
    return ledger, None


def save(store: Store, key: MacKey, ledger: Ledger) -> None:
    payload = ledger.payload()
    body = {"ledger": json.loads(payload), "mac": key.mac_bytes(payload)}
    store.put(layout.ledger_key(ledger.subvolume), (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())


def cache_path(state_dir: Path, target: str, subvolume: str) -> Path:
    return state_dir / f"offsite-ledger-{target}-{subvolume}.json"


def read_cache(path: Path) -> Ledger | None:
    try:
        return _parse(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remember(path: Path, ledger: Ledger | None) -> None:
    """Cache ledger unless the cache already holds a newer generation (the cache never goes back)."""
    if ledger is None:
        return
    cached = read_cache(path)
    if cached is not None and cached.generation > ledger.generation:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(ledger.payload())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Judgement:
    """What the ledger says about a subvolume's points. Pure result of `judge`."""

    reference: Ledger | None
    gone: Mapping[str, datetime]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def judge(subvolume: str, ledger: Ledger | None, distrust: str | None, cached: Ledger | None,
          present: Iterable[str]) -> Judgement:
    """Compare the bucket's ledger and this host's cache with the uuids that have an authenticated manifest."""
    present = set(present)
    problems: list[str] = []
    warnings: list[str] = []
    lkey = layout.ledger_key(subvolume)
    if distrust:
        problems.append(distrust)
    reference = ledger
    if cached is not None and (ledger is None or cached.generation > ledger.generation):
        reference = cached
        if ledger is not None:
            problems.append(f"{lkey} is generation {ledger.generation} but this host saw generation "
                            f"{cached.generation}: the bucket was rolled back")
        elif distrust is None:
            problems.append(f"{lkey} is gone but this host saw generation {cached.generation}: "
                            "the bucket was rolled back or emptied")
    elif ledger is None and distrust is None and present:
        warnings.append(f"{lkey} does not exist yet; the next `subvault offsite` writes it")
    gone = {u: t for u, t in (reference.points.items() if reference else ()) if u not in present}
    for uuid, when in sorted(gone.items(), key=lambda x: x[1]):
        problems.append(f"restore point {subvolume} {uuid} of {when:%Y-%m-%d %H:%M} is gone from the bucket "
                        "(deleted, or the bucket rolled back); it is reported until the keep policy would drop it")
    return Judgement(reference, gone, tuple(problems), tuple(warnings))


def newer_gone(judgement: Judgement, created: datetime, order: int, when: datetime) -> list[tuple[datetime, str]]:
    """Return (time, uuid) of gone points newer than a point (created, chain length) and not after `when`, oldest first."""
    known = judgement.reference.order if judgement.reference else {}
    return sorted((t, u) for u, t in judgement.gone.items() if (t, known.get(u, 0)) > (created, order) and t <= when)


def next_ledger(subvolume: str, judgement: Judgement, ledger: Ledger | None, present: Mapping[str, datetime],
                dropped: Iterable[str], policy: Policy, now: datetime, tz: tzinfo,
                order: Mapping[str, int] | None = None) -> Ledger:
    """Return the ledger to write: the present points (minus those being deleted) and the gone ones still kept.

    A gone point is listed until the keep policy, applied to every point the ledger
    knows, would drop it: a lost backup is reported for as long as it would have been kept.
    """
    dropped = set(dropped)
    points = {u: t for u, t in present.items() if u not in dropped}
    if judgement.gone:
        every = {**judgement.gone, **points}
        kept = {d.key for d in plan_retention([Point(u, t) for u, t in every.items()], policy, now, tz) if d.keep}
        points.update({u: t for u, t in judgement.gone.items() if u in kept and u not in dropped})
    base = max((judgement.reference.generation if judgement.reference else 0), (ledger.generation if ledger else 0))
    known = {**(judgement.reference.order if judgement.reference else {}), **(order or {})}
    return Ledger(subvolume, base + 1, points, {u: n for u, n in known.items() if u in points})
