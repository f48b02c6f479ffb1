"""Drill verdicts, pure: RTO and RPO, fstab resolution, UUID comparison, the report value.

The executor (drill.py) gathers facts about the restored disk; these functions judge them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from subvault.dr.manifest import Manifest
from subvault.dr.parse import FstabEntry, PartitionTable
from subvault.dr.plan import Choice
from subvault.timeutil import format_age

RESOLVABLE = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=", "/dev/disk/by-uuid/", "/dev/disk/by-label/")


@dataclass(frozen=True)
class RestoredFs:
    """A filesystem as found on the restored disk (blkid of its partition)."""

    disk: str
    partition: int
    type: str | None
    uuid: str | None
    label: str | None
    part_uuid: str | None = None
    part_label: str | None = None
    subvolumes: frozenset[str] = frozenset()  # btrfs: every subvolume path


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


class BootOutcome(Protocol):
    """What the report reads of the boot's result, a boot.BootResult (boot.py imports Check
    from here, so naming its type here would close an import cycle)."""

    method: str
    accelerator: str
    ok: bool
    reason: str
    milestone: str
    seconds: float
    tail: list[str]
    log: str
    way_note: str
    firmware_not_proven: str

    def to_json(self) -> dict[str, object]: ...


@dataclass
class DrillReport:
    source: str
    at: str
    rto_seconds: float
    rpo_seconds: float
    restore_points: dict[str, str]  # subvolume -> ISO time of the point restored
    checks: list[Check] = field(default_factory=list)
    bytes_received: int = 0
    image: str = ""
    boot: BootOutcome | None = None  # set when the drill booted the machine
    id: str = ""  # the drill's start time (UTC, %Y%m%dT%H%M%SZ): names its serial log

    @property
    def boot_seconds(self) -> float:
        return self.boot.seconds if self.boot is not None else 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and bool(self.checks)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok, "id": self.id, "source": self.source, "at": self.at,
            "rto_seconds": round(self.rto_seconds, 3), "rpo_seconds": round(self.rpo_seconds, 3),
            "restore_points": self.restore_points, "bytes_received": self.bytes_received, "image": self.image,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "boot": self.boot.to_json() if self.boot is not None else None,
            "booted": bool(self.boot is not None and self.boot.ok),
        }


def rpo(choices: dict[str, Choice], now: datetime) -> timedelta:
    """The recovery point objective achieved: the age of the oldest restore point chosen."""
    if not choices:
        return timedelta(0)
    return max(timedelta(0), now - min(c.time for c in choices.values()))


def render_report(report: DrillReport) -> list[str]:
    lines = [f"drill from {report.source} (at {report.at}): {'ok' if report.ok else 'FAILED'}"]
    if report.boot is not None:
        rto = f"RTO {report.rto_seconds:.1f}s (restore and verify {report.rto_seconds - report.boot_seconds:.1f}s, boot {report.boot_seconds:.1f}s)"
    else:
        rto = f"RTO {report.rto_seconds:.1f}s (restore and verify)"
    lines.append(f"{rto}   RPO {format_age(timedelta(seconds=report.rpo_seconds))} (oldest restore point)")
    for c in report.checks:
        lines.append(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}{': ' + c.detail if c.detail else ''}")
    b = report.boot
    if b is not None:
        lines.append(f"boot: {b.method} on {b.accelerator.upper()}, {'milestone ' + repr(b.milestone) if b.ok else 'FAILED: ' + b.reason} after {b.seconds:.1f}s")
        if b.way_note:
            lines.append(f"  way: {b.way_note}")
        if b.firmware_not_proven:
            lines.append(f"  firmware: {b.firmware_not_proven}")
        if b.log:
            lines.append(f"  serial log: {b.log}")
        if not b.ok:
            lines.append(f"  last {len(b.tail)} console lines:")
            lines += [f"    | {t}" for t in b.tail]
    return lines


def _matches(spec: str, fs: RestoredFs) -> bool:
    key, _, value = spec.partition("=")
    value = value.strip('"')
    if spec.startswith("/dev/disk/by-uuid/"):
        return fs.uuid == spec.rsplit("/", 1)[-1]
    if spec.startswith("/dev/disk/by-label/"):
        return fs.label == spec.rsplit("/", 1)[-1]
    wanted = {"UUID": fs.uuid, "LABEL": fs.label, "PARTUUID": fs.part_uuid, "PARTLABEL": fs.part_label}.get(key)
    return wanted is not None and wanted.lower() == value.lower()


def resolve_fstab(entries: list[FstabEntry], restored: list[RestoredFs]) -> list[Check]:
    """For each fstab entry naming a filesystem, check it resolves on the restored disk (and its subvol= exists)."""
    checks = []
    for e in entries:
        if not e.spec.startswith(RESOLVABLE):
            continue
        found = [fs for fs in restored if _matches(e.spec, fs)]
        name = f"fstab {e.file}"
        if not found:
            checks.append(Check(name, False, f"{e.spec} matches no restored filesystem"))
            continue
        sub = e.subvol
        if sub and found[0].type == "btrfs" and sub not in found[0].subvolumes:
            checks.append(Check(name, False, f"{e.spec} has no subvolume {sub}"))
            continue
        checks.append(Check(name, True, f"{e.spec}{' subvol=' + sub if sub else ''}"))
    return checks


def compare_ids(manifest: Manifest, tables: dict[str, PartitionTable | None], restored: list[RestoredFs]) -> list[Check]:
    """Check the restored partition tables (None: no table) and filesystems carry the captured ids."""
    checks = []
    for disk in manifest.disks:
        got = tables.get(disk.name)
        if disk.table.whole_disk:
            checks.append(Check(f"partition table {disk.name}", got is None, "none, as captured" if got is None else f"{got.label} table where the capture has none"))
            continue
        ok = got is not None and (got.id or "").lower() == (disk.table.id or "").lower() and [
            (p.number, p.start, p.size, p.type.lower(), (p.uuid or "").lower()) for p in got.partitions
        ] == [(p.number, p.start, p.size, p.type.lower(), (p.uuid or "").lower()) for p in disk.table.partitions]
        checks.append(Check(f"partition table {disk.name}", ok, f"label-id {disk.table.id}" if ok else "differs from the capture"))
    by_place = {(f.disk, f.partition): f for f in restored}
    for fs in manifest.filesystems:
        found = by_place.get((fs.disk, fs.partition))
        ok = found is not None and found.type == fs.type and (found.uuid or "").lower() == (fs.uuid or "").lower() and (found.label or None) == (fs.label or None)
        detail = f"{fs.type} {fs.uuid}" if ok else f"expected {fs.type} {fs.uuid} {fs.label or ''}, found {found.type if found else None} {found.uuid if found else None}"
        checks.append(Check(f"filesystem {fs.disk}:{fs.partition}", ok, detail))
    return checks
