"""Carry out a restore plan's steps in order on the new disks (or images), resumably.

Rules:
- Each step first checks whether it is already done and then skips it (the table is as
  captured, the filesystem has the captured UUID, the subvolume exists, the received copy
  is verified), so running the same steps again after an interruption resumes them.
- Before the first step, a subvolume that would be skipped as present must be a copy of
  the restore point asked for (by uuid, invariant 7); else the restore is refused
  (OtherRestorePoint) before anything is written.
- A partial received copy from an interrupted run is deleted and received again (invariant 3).
- The boot steps live in bootsteps.py; this module runs them like the others.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter
from subvault.dr.bootsteps import BOOT_STEPS
from subvault.dr.disks import NO_CACHE, fs_made, table_as_captured
from subvault.dr.manifest import FsRecord, Manifest
from subvault.dr.parse import render_sfdisk_script, vfat_volume_id
from subvault.dr.plan import RESTORE_AREA, Choice, RestorePlan, Step
from subvault.dr.source import TargetSource
from subvault.dr.workspace import Workspace
from subvault.errors import CommandFailed, Refused, SubvaultError
from subvault.units import human_size

OnReceived = Callable[[str, Path, frozenset[str]], None]


@dataclass
class Restored:
    devices: dict[tuple[str, int], str] = field(default_factory=dict)  # (disk, partition) -> device
    tops: dict[str, Path] = field(default_factory=dict)  # btrfs fs uuid -> top-level mount
    bytes: int = 0
    done: list[str] = field(default_factory=list)  # one line per step: done or skipped


class Executor:
    """Runs a RestorePlan's steps in order inside a Workspace."""

    def __init__(self, plan: RestorePlan, manifest: Manifest, capture: Path, source: TargetSource, ws: Workspace,
                 say: Callable[[str], None] = lambda s: None, on_received: OnReceived | None = None, *, scratch: bool = False) -> None:
        self.plan, self.m, self.capture, self.source, self.ws = plan, manifest, capture, source, ws
        self.say = say
        self.on_received = on_received
        # Rule: scratch images (a drill's) mount btrfs with nobarrier. A commit then does not
        # make the loop device fsync its image file: the writable snapshot after each receive
        # (which commits) costs the copy into the image's page cache, not a write to the
        # host's disk of data that is verified from the filesystem and then deleted. A
        # restore onto real disks keeps barriers.
        self.scratch = scratch
        # Rule: a scratch image's loop device switches to direct I/O (Workspace.direct_io)
        # once the streams received into its filesystem pass direct_io_from() bytes, as
        # counted while they flow. Below that, the data goes through the host's page cache,
        # is verified and deleted before it would reach the disk (measured here: 1 GiB
        # drills 2.50 s buffered, 3.07 s direct). Above, a buffered loop copies it a second
        # time into the image file's page cache, which at 2 GiB cost 3.7-4.1 s of loop-worker
        # CPU (drill 8.6 s buffered, 5.9 s direct); direct I/O writes it to the image file
        # without that copy. What is read back and verified is the same either way.
        self.received: dict[str, int] = {}  # fs uuid -> bytes received into it so far
        self.direct: set[str] = set()  # fs uuids whose device was switched to direct I/O
        self.out = Restored()

    def run(self) -> Restored:
        """Run every step; after each receive call on_received(name, received copy, nested subvolume paths).

        Raise OtherRestorePoint before the first step if the disk holds another point (check_points).
        """
        self.check_points()
        for i, step in enumerate(self.plan.steps, start=1):
            handler = self._handler(step.kind)
            self.say(f"[{i}/{len(self.plan.steps)}] {step.kind} {step.subject}: {step.detail}")
            result = handler(step)
            self.out.done.append(f"{step.kind} {step.subject}: {result}")
            if step.kind == "receive" and self.on_received:
                got = self.top(step.args["fs_uuid"]) / RESTORE_AREA / step.args["entry"]
                self.on_received(step.subject, got, nested_subvolumes(self.plan.steps, step))
        return self.out

    def _handler(self, kind: str) -> Callable[[Step], str]:
        if kind in BOOT_STEPS:
            return partial(BOOT_STEPS[kind], self)
        handler: Callable[[Step], str] = getattr(self, "_" + kind.replace("-", "_"))
        return handler

    # ---- access to the new disks
    def device(self, disk: str, number: int) -> str:
        key = (disk, number)
        if key not in self.out.devices:
            rec = next(d for d in self.m.disks if d.name == disk)
            if rec.table.whole_disk:  # the filesystem fills the disk: the original's size from byte 0
                self.out.devices[key] = self.ws.attach(self.plan.disks[disk], 0, rec.size_bytes)
                return self.out.devices[key]
            p = rec.table.partition(number)
            ss = rec.table.sector_size
            self.out.devices[key] = self.ws.attach(self.plan.disks[disk], p.start * ss, p.size * ss)
        return self.out.devices[key]

    def fs_device(self, uuid: str) -> tuple[FsRecord, str]:
        fs = self.m.filesystem(uuid)
        return fs, self.device(fs.disk, fs.partition)

    def top(self, fs_uuid: str) -> Path:
        if fs_uuid not in self.out.tops:
            _, dev = self.fs_device(fs_uuid)
            self.out.tops[fs_uuid] = self.ws.mount(dev, f"top-{fs_uuid[:8]}", "btrfs", "subvolid=5" + (",nobarrier" if self.scratch else ""))
        return self.out.tops[fs_uuid]

    # ---- steps
    def _partition(self, step: Step) -> str:
        disk = step.args["disk"]
        if step.args.get("whole"):
            return _no_table(disk)
        table = next(d for d in self.m.disks if d.name == step.subject).table
        if table_as_captured(disk, table):
            return "already as captured"
        # An image file has no kernel partitions to re-read (sfdisk would wait for them).
        quiet_kernel = [] if stat.S_ISBLK(os.stat(disk).st_mode) else ["--no-reread", "--no-tell-kernel"]
        process.run(["sfdisk", "-q", "--wipe", "always", *quiet_kernel, disk], input=render_sfdisk_script(table), what=f"sfdisk {disk}")
        return "written"

    def _mkfs(self, step: Step) -> str:
        a = step.args
        dev = self.device(a["disk"], int(a["partition"]))
        if fs_made(dev, a["type"], a["uuid"]):
            return "already made"
        argv = mkfs_argv(a["type"], a["uuid"], a["label"], a["version"], dev)
        try:
            process.run(argv, env=NO_CACHE, what=f"mkfs.{a['type']} {dev}")
        except CommandFailed as exc:
            if "not unique" not in exc.stderr_tail and "non-unique" not in exc.stderr_tail:
                raise
            # The UUID is on this host already (a drill of the live machine): see isolate.py.
            process.run(["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-m", "subvault.dr.isolate", *argv],
                        what=f"mkfs.{a['type']} {dev} (isolated)")
        return "made"

    def _receive(self, step: Step) -> str:
        a = step.args
        area = self.top(a["fs_uuid"]) / RESTORE_AREA
        area.mkdir(mode=0o700, exist_ok=True)
        got = area / a["entry"]
        if got.exists():
            shown = adapter.show(got)
            if shown.readonly and shown.received_uuid == a["received_uuid"]:
                return "already received"
            adapter.delete(got)  # a partial from an interrupted run (invariant 3)
        choice = Choice(a["name"], a["entry"], self.m.captured_at, a["received_uuid"])
        fs_uuid, before = a["fs_uuid"], self.received.get(a["fs_uuid"], 0)
        n = self.source.receive(choice, area, progress=lambda total: self._received(fs_uuid, before + total))
        self._received(fs_uuid, before + n)
        self.out.bytes += n
        return f"received {human_size(n)}"

    def _received(self, fs_uuid: str, total: int) -> None:
        """total bytes have been received into fs_uuid so far: switch a scratch image's device to direct I/O past the threshold."""
        self.received[fs_uuid] = total
        if self.scratch and fs_uuid not in self.direct and total >= direct_io_from():
            self.direct.add(fs_uuid)
            self.ws.direct_io(self.fs_device(fs_uuid)[1])

    def _snapshot(self, step: Step) -> str:
        a = step.args
        top = self.top(a["fs_uuid"])
        dest = top / a["path"]
        if not _prepare(dest):
            other = self._other_point(step)
            if other:
                raise OtherRestorePoint(self._refusal([other]))
            return "already present"
        adapter.snapshot(top / RESTORE_AREA / a["entry"], dest, readonly=False)
        return "made writable copy"

    def _other_point(self, step: Step) -> str | None:
        """If the subvolume at the snapshot step's path is not a copy of the step's restore point, say why; else None.

        The same point means (invariant 7, by uuid): the received copy `.subvault-dr/<entry>`
        is verified (read-only, received_uuid the chosen point's), and the subvolume is a
        snapshot of it (its parent_uuid is that copy's uuid). A name proves nothing.
        """
        a = step.args
        top = self.top(a["fs_uuid"])
        dest, got = top / a["path"], top / RESTORE_AREA / a["entry"]
        if not dest.exists() or not adapter.is_subvolume(dest):
            return None
        here = adapter.show(dest)
        if not got.exists():
            return f"/{a['path']} (no received copy {a['entry']} it could be a snapshot of)"
        copy = adapter.show(got)
        if copy.readonly and copy.received_uuid == a["received_uuid"] and here.parent_uuid == copy.uuid:
            return None
        return f"/{a['path']} (not a snapshot of {a['entry']})"

    def _refusal(self, others: list[str]) -> str:
        disks = ", ".join(self.plan.disks.values())
        return (f"{disks} holds another restore point than the one asked for: {'; '.join(others)}; nothing more was written. "
                f"To restore this point there, wipe the disk first (wipefs -a on each partition, then on the disk)")

    def check_points(self) -> None:
        """Before any step runs: refuse if a subvolume the plan would skip as present holds another restore point.

        Reads only (it attaches and mounts what is already there). Filesystems that the
        partition or mkfs steps will make anew are not looked at: they hold nothing yet.
        """
        others = []
        present: dict[str, bool] = {}  # per filesystem: one look at its disk's table, not one per subvolume
        for step in self.plan.of_kind("snapshot"):
            fs_uuid = step.args["fs_uuid"]
            if fs_uuid not in present:
                present[fs_uuid] = self._fs_present(fs_uuid)
            if present[fs_uuid]:
                why = self._other_point(step)
                if why:
                    others.append(why)
        if others:
            raise OtherRestorePoint(self._refusal(others))

    def _fs_present(self, fs_uuid: str) -> bool:
        """Whether the disk has its captured table and the partition the captured btrfs (so its steps may be skipped)."""
        fs = self.m.filesystem(fs_uuid)
        rec = next(d for d in self.m.disks if d.name == fs.disk)
        if not table_as_captured(self.plan.disks[fs.disk], rec.table):
            return False
        return fs_made(self.device(fs.disk, fs.partition), fs.type, fs_uuid)

    def _create(self, step: Step) -> str:
        dest = self.top(step.args["fs_uuid"]) / step.args["path"]
        if not _prepare(dest):
            return "already present"
        adapter.create_subvolume(dest)
        return "created"

    def _set_default(self, step: Step) -> str:
        top = self.top(step.args["fs_uuid"])
        sub_id = adapter.show(top / step.args["path"]).id
        if adapter.get_default(top) == sub_id:
            return "already default"
        adapter.set_default(sub_id, top)
        return f"default is id {sub_id}"


class OtherRestorePoint(Refused):
    """The disk holds (part of) a restore of another point than the one asked for."""


SUBVOLUME_STEPS = ("receive", "create")


def nested_subvolumes(steps: list[Step], receive: Step) -> frozenset[str]:
    """Paths, relative to the received subvolume, of the subvolumes the plan makes beneath it."""
    prefix, fs = receive.args["path"] + "/", receive.args["fs_uuid"]
    return frozenset(
        t.args["path"][len(prefix):] for t in steps
        if t.kind in SUBVOLUME_STEPS and t.args.get("fs_uuid") == fs and t.args.get("path", "").startswith(prefix)
    )


def _prepare(dest: Path) -> bool:
    """Make room for a subvolume at dest; return False if one is already there.

    A snapshot keeps an empty directory where a nested subvolume was; it is removed.
    Raise SubvaultError if dest is a non-empty directory or a file.
    """
    if dest.exists():
        if adapter.is_subvolume(dest):
            return False
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        else:
            raise SubvaultError(f"{dest} exists and is not a subvolume; the restore cannot put one there")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return True


def direct_io_from() -> int:
    """Bytes received into a scratch filesystem from which its loop device uses direct I/O:
    half the kernel's background writeback threshold (2.17 GiB on the 2-core VM, where
    1 GiB drills were faster buffered and 2 GiB ones direct); 1 GiB when unknown."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("nr_dirty_background_threshold "):
                return int(line.split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2
    except (OSError, ValueError):
        pass
    return 1 << 30


def _no_table(disk: str) -> str:
    """Leave disk without a partition table (the captured disk had none); filesystems are left to mkfs."""
    if process.run(["sfdisk", "--dump", disk], check=False).returncode != 0:
        return "already without a partition table"
    process.run(["wipefs", "-q", "--force", "-a", "-t", "gpt,PMBR,dos", disk], what=f"wipefs {disk}")
    return "removed the partition table"


def mkfs_argv(fstype: str, uuid: str, label: str, version: str, dev: str) -> list[str]:
    """Return the mkfs argv that makes fstype on dev with the given UUID and label."""
    lab = label or None
    if fstype == "btrfs":
        return ["mkfs.btrfs", "-q", "-f", "-U", uuid, *(["-L", lab] if lab else []), dev]
    if fstype == "vfat":
        bits = {"FAT32": ["-F", "32"], "FAT16": ["-F", "16"], "FAT12": ["-F", "12"]}.get(version, [])
        return ["mkfs.vfat", *bits, "-i", vfat_volume_id(uuid), *(["-n", lab] if lab else []), dev]
    if fstype in ("ext2", "ext3", "ext4"):
        return [f"mkfs.{fstype}", "-q", "-F", "-U", uuid, *(["-L", lab] if lab else []), dev]
    if fstype == "xfs":
        return ["mkfs.xfs", "-q", "-f", "-m", f"uuid={uuid}", *(["-L", lab] if lab else []), dev]
    if fstype == "swap":
        return ["mkswap", "-U", uuid, *(["-L", lab] if lab else []), dev]
    raise SubvaultError(f"cannot make a {fstype} filesystem")
