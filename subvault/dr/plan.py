"""Restore planning: from a capture, facts about the target disks and the chosen restore
points, the ordered list of steps a bare-metal restore runs. Pure: no I/O, no clock.

Rules:
- Nothing is written before the whole plan exists and was confirmed; every refusal
  (disk too small, disk in use, capture missing, no restore point, no confirmation) is
  raised here, before the first step.
- Every step is idempotent: the executor checks whether it is already done (table as
  captured, filesystem with the captured UUID, subvolume present) and skips it, so an
  interrupted restore is resumed by running the same command again.
- A disk captured without a partition table (its filesystem fills it) gets none: its
  partition step removes any table the new disk has, and the filesystem is made at byte 0.
- Order: partition table, filesystems, subvolumes (depth first: each parent, then the
  subvolumes beneath it, so a subtree is complete before the next begins; protected
  ones received from the target, then a writable snapshot under the original name;
  everything else created empty), default subvolume, boot files, bootloader, relabel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from subvault.dr.manifest import BtrfsRecord, DiskRecord, Manifest
from subvault.dr.parse import WHOLE_DISK, FstabEntry, PartitionTable
from subvault.errors import Refused, SubvaultError, UsageError

MKFS_TYPES = ("btrfs", "vfat", "ext2", "ext3", "ext4", "xfs", "swap")
RESTORE_AREA = ".subvault-dr"


class DiskTooSmall(Refused):
    """The target disk is smaller than the captured one."""


class DiskInUse(Refused):
    """The target disk is mounted, held by another device, or attached to a loop device."""


class NoRestorePoint(SubvaultError):
    """A protected subvolume has no verified copy at or before --at on the source."""


class NotConfirmed(UsageError):
    """A destructive restore without --yes where nobody can be asked."""


@dataclass(frozen=True)
class DiskFacts:
    """What was found out about one target disk (gathered by the executor, judged here)."""

    path: str
    size_bytes: int
    in_use: str | None = None  # why it is busy, or None
    current: PartitionTable | None = None


@dataclass(frozen=True)
class Choice:
    """The restore point chosen for one protected subvolume."""

    name: str
    entry: str  # the entry's name on the source
    time: datetime
    received_uuid: str  # the original snapshot's uuid (what the receive must carry)


@dataclass(frozen=True)
class Step:
    kind: str  # partition, mkfs, receive, snapshot, create, set-default, boot-files, boot-sectors, bootloader, autorelabel
    subject: str
    detail: str
    reason: str
    args: dict[str, str] = field(default_factory=dict)


@dataclass
class RestorePlan:
    steps: list[Step]
    disks: dict[str, str]  # captured disk name -> target path
    warnings: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Step]:
        return [s for s in self.steps if s.kind == kind]


def require_confirmation(yes: bool, interactive: bool) -> None:
    """Raise NotConfirmed when a restore would run without --yes and nobody can be asked."""
    if not yes and not interactive:
        raise NotConfirmed("dr restore overwrites the disk: pass --yes to confirm when not running on a terminal")


def check_disks(manifest: Manifest, facts: list[DiskFacts]) -> dict[str, str]:
    """Pair captured disks with target disks in order; return name -> path. Raise on any refusal."""
    if len(facts) != len(manifest.disks):
        names = ", ".join(d.device for d in manifest.disks)
        raise UsageError(f"the capture has {len(manifest.disks)} disk(s) ({names}); give one --disk for each, in that order")
    pairs = {}
    for disk, fact in zip(manifest.disks, facts, strict=True):
        if fact.in_use:
            raise DiskInUse(f"{fact.path} is in use ({fact.in_use}); unmount it and stop what holds it first")
        need = max(disk.size_bytes, disk.table.required_bytes())
        if fact.size_bytes < need:
            raise DiskTooSmall(
                f"{fact.path} has {fact.size_bytes} bytes, smaller than the original {disk.device} ({need} bytes); use a disk at least as large"
            )
        pairs[disk.name] = fact.path
    return pairs


def plan_restore(
    manifest: Manifest,
    facts: list[DiskFacts],
    choices: dict[str, Choice],
    fstab: list[FstabEntry],
    *,
    source: str,
    drill: bool = False,
) -> RestorePlan:
    """Return the restore plan. Raise DiskInUse, DiskTooSmall, UsageError or NoRestorePoint first."""
    pairs = check_disks(manifest, facts)
    missing = sorted(p.name for p in manifest.protected if p.name not in choices)
    if missing:
        raise NoRestorePoint(f"{source} holds no verified restore point for: {', '.join(missing)}; pick another --at or --from")
    plan = RestorePlan([], pairs)
    _partition_steps(manifest, plan)
    _mkfs_steps(manifest, plan)
    for fs in manifest.btrfs:
        _subvolume_steps(manifest, fs, choices, source, plan)
    _boot_steps(manifest, fstab, plan, drill)
    return plan


def _partition_steps(manifest: Manifest, plan: RestorePlan) -> None:
    for disk in manifest.disks:
        t = disk.table
        if t.whole_disk:
            plan.steps.append(Step(
                "partition", disk.name, f"{plan.disks[disk.name]}: no partition table (the filesystem fills the whole disk)",
                "the original disk had none; a table left on the new disk would hide the filesystem",
                {"disk": plan.disks[disk.name], "dump": "", "whole": "1"},
            ))
            continue
        plan.steps.append(Step(
            "partition", disk.name,
            f"{plan.disks[disk.name]}: {t.label} table {t.id or ''}, {len(t.partitions)} partition(s) from {disk.dump_file}",
            "partition and table ids are what fstab, the bootloader and the firmware refer to",
            {"disk": plan.disks[disk.name], "dump": disk.dump_file},
        ))


def _mkfs_steps(manifest: Manifest, plan: RestorePlan) -> None:
    for fs in manifest.filesystems:
        where = f"{fs.disk} (whole disk)" if fs.partition == WHOLE_DISK else f"{fs.disk} partition {fs.partition}"
        if fs.type not in MKFS_TYPES or not fs.uuid:
            plan.warnings.append(f"{where}: {fs.type} is not recreated (subvault makes {', '.join(MKFS_TYPES)})")
            continue
        label = f" label {fs.label!r}" if fs.label else ""
        plan.steps.append(Step(
            "mkfs", where, f"mkfs {fs.type} UUID {fs.uuid}{label}",
            "fstab and the bootloader name filesystems by UUID, so the new ones get the original UUIDs",
            {"disk": fs.disk, "partition": str(fs.partition), "type": fs.type, "uuid": fs.uuid,
             "label": fs.label or "", "version": fs.version or ""},
        ))
        if fs.type not in ("btrfs", "swap") and not any(b.fs_uuid == fs.uuid for b in manifest.boot_dirs):
            plan.warnings.append(f"{where}: {fs.type} {fs.uuid} is made empty; no layer backs up its contents")


def _subvolume_steps(manifest: Manifest, fs: BtrfsRecord, choices: dict[str, Choice], source: str, plan: RestorePlan) -> None:
    protected = {p.path: p for p in manifest.protected if p.fs_uuid == fs.fs_uuid}
    for sub in sorted(fs.subvolumes, key=lambda s: s.path.split("/")):
        base = {"fs_uuid": fs.fs_uuid, "path": sub.path}
        p = protected.get(sub.path)
        if p is not None:
            c = choices[p.name]
            plan.steps.append(Step(
                "receive", p.name, f"{source}:{c.entry} → {RESTORE_AREA}/{c.entry} (read-only)",
                "a full receive of the chosen point; verified by received_uuid before it is used",
                {**base, "name": p.name, "entry": c.entry, "received_uuid": c.received_uuid},
            ))
            plan.steps.append(Step(
                "snapshot", p.name, f"{RESTORE_AREA}/{c.entry} → /{sub.path} (writable)",
                "a writable snapshot under the original name; the received copy keeps its received_uuid",
                {**base, "entry": c.entry, "received_uuid": c.received_uuid},
            ))
        elif sub.path == ".snapshots" or sub.path.endswith("/.snapshots"):
            plan.steps.append(Step("create", sub.path, f"empty subvolume /{sub.path}", "snapper's container; local snapshots are not restored", base))
        else:
            plan.steps.append(Step("create", sub.path, f"empty subvolume /{sub.path}", "not protected (excluded or not configured): created empty so its mount works", base))
    for p in protected.values():
        if p.path not in {s.path for s in fs.subvolumes}:
            plan.warnings.append(f"{p.name}: /{p.path} was not in the captured subvolume tree; not restored")
    if fs.default_path:
        plan.steps.append(Step(
            "set-default", fs.fs_uuid, f"default subvolume /{fs.default_path}",
            "a mount without subvol= (and the bootloader) finds the root there", {"fs_uuid": fs.fs_uuid, "path": fs.default_path},
        ))


def root_location(manifest: Manifest, fstab: list[FstabEntry]) -> tuple[str, str] | None:
    """Return (fs uuid, path inside it) of the root filesystem, from fstab's "/" entry (or None)."""
    for e in fstab:
        if e.file == "/" and e.uuid:
            sub = e.subvol
            if sub is None:
                fs = next((b for b in manifest.btrfs if b.fs_uuid == e.uuid), None)
                sub = fs.default_path if fs else ""
            return e.uuid, sub
    return None


def _root_disk(manifest: Manifest, root: tuple[str, str] | None) -> DiskRecord | None:
    """The captured disk holding the root filesystem, or None when the capture does not hold it."""
    if root is None:
        return None
    fs = next((f for f in manifest.filesystems if f.uuid == root[0]), None)
    return next((d for d in manifest.disks if fs is not None and d.name == fs.disk), None)


def _boot_steps(manifest: Manifest, fstab: list[FstabEntry], plan: RestorePlan, drill: bool) -> None:
    for b in manifest.boot_dirs:
        plan.steps.append(Step(
            "boot-files", b.path, f"{b.archive} → {b.fs_type} {b.fs_uuid}:/{b.dest}",
            "kernels, initramfs and bootloader files live outside the protected subvolumes",
            {"fs_uuid": b.fs_uuid or "", "fs_type": b.fs_type, "dest": b.dest, "archive": b.archive},
        ))
    root = root_location(manifest, fstab)
    boot_disk = _root_disk(manifest, root)
    for d in manifest.disks if manifest.firmware == "bios" else ():
        if d.boot_code:
            plan.steps.append(Step(
                "boot-sectors", d.name, f"{d.boot_code}{' and ' + d.boot_core if d.boot_core else ''} → the first sectors of {plan.disks.get(d.name, '')}",
                "BIOS starts the code in the disk's first sectors, which is not a file: written as captured (so a drill boots it too)",
                {"disk": plan.disks.get(d.name, ""), "code": d.boot_code, "core": d.boot_core, "offset": str(d.boot_core_offset)},
            ))
    if manifest.firmware == "bios" and (boot_disk is None or boot_disk.table.whole_disk):
        why = ("the capture holds no root filesystem (fstab's / is on a disk not captured)" if boot_disk is None
               else "the root filesystem fills a disk without a partition table, where grub-install has no room")
        plan.steps.append(Step("bootloader", "grub", "none: " + why, why, {"skip": "1"}))
        if not drill:
            plan.warnings.append(f"no bootloader is installed: {why}; install one by hand if the machine boots from these disks")
    elif manifest.firmware == "bios":
        disk = boot_disk.name if boot_disk else ""
        plan.steps.append(Step(
            "bootloader", "grub", f"grub-install {plan.disks.get(disk, '')} in a chroot of the restored root",
            "BIOS boots from code in the disk's first sectors, which is not a file" + ("; skipped in a drill (grub-install is never run on an image: the captured boot sectors are written instead)" if drill else ""),
            {"disk": plan.disks.get(disk, ""), "fs_uuid": root[0] if root else "", "path": root[1] if root else "", "skip": "1" if drill else ""},
        ))
    else:
        plan.steps.append(Step(
            "bootloader", "uefi", "none: the ESP files restored above are the bootloader",
            "UEFI firmware boots files from the ESP; nothing is written outside it", {"skip": "1"},
        ))
    if manifest.selinux:
        if root is None:
            plan.warnings.append("SELinux was enabled but fstab has no UUID entry for /; touch /.autorelabel by hand")
        else:
            plan.steps.append(Step(
                "autorelabel", "selinux", f"touch /.autorelabel in {root[0]}:/{root[1]}",
                "received files carry their labels, but a relabel on first boot makes sure", {"fs_uuid": root[0], "path": root[1]},
            ))


def render_plan(plan: RestorePlan) -> list[str]:
    """Return the plan as numbered lines for a terminal: step, subject, detail, and why."""
    lines = []
    for i, s in enumerate(plan.steps, start=1):
        lines.append(f"{i:>2}. {s.kind:<11} {s.subject}: {s.detail}")
        lines.append(f"    why: {s.reason}")
    lines += [f"warning: {w}" for w in plan.warnings]
    return lines
