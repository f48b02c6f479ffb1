"""`dr restore`: carry out a restore plan on real disks (or images), step by step, resumably.

Each step first checks whether it is already done and then skips it (the table is as
captured, the filesystem has the captured UUID, the subvolume exists, the received copy
is verified), so running the same command again after an interruption resumes it.
Nothing is written before the plan was shown and confirmed (see `restore_disks`).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter
from subvault.context import host_name
from subvault.dr import fat
from subvault.dr.capture import device_size
from subvault.dr.manifest import FsRecord, Manifest
from subvault.dr.parse import parse_blkid_export, parse_fstab, parse_sfdisk_dump, render_sfdisk_script, vfat_volume_id
from subvault.dr.plan import RESTORE_AREA, Choice, DiskFacts, RestorePlan, Step, plan_restore, render_plan, require_confirmation
from subvault.dr.settings import DrSettings
from subvault.dr.source import TargetSource, find_capture
from subvault.dr.workspace import WorkLock, Workspace, find_leftovers, remove_workdir
from subvault.errors import CommandFailed, NotFound, Refused, SubvaultError
from subvault.results import Item, Outcome
from subvault.timeutil import parse_at
from subvault.units import human_size

NO_CACHE = {"BLKID_FILE": "/dev/null"}  # probe the device itself, never a stale cache
OnReceived = Callable[[str, Path, frozenset[str]], None]


RUN_DIR = "/run/subvault"  # loop devices and mounts last until reboot, and so does /run


def restore_workdir(disks: list[str]) -> Path:
    """The one directory a `dr restore` of these disks works in: the same on every run, so a rerun finds what an interrupted one left."""
    import hashlib

    key = hashlib.sha256("\0".join(os.path.realpath(d) for d in disks).encode()).hexdigest()[:16]
    base = Path(RUN_DIR) if os.path.isdir(os.path.dirname(RUN_DIR)) else Path(tempfile.gettempdir()) / "subvault"
    return base / f"restore-{key}"


def disk_facts(path: str, ours: frozenset[str] = frozenset()) -> DiskFacts:
    """Find out a target disk's size, whether it is in use, and its current table. Raise NotFound if missing.

    ours: loop devices an interrupted restore of this disk left (released before writing), not counted as use.
    """
    if not os.path.exists(path):
        raise NotFound(f"disk {path} does not exist")
    in_use = _in_use(path, ours)
    res = process.run(["sfdisk", "--dump", path], check=False, what="sfdisk --dump")
    try:
        current = parse_sfdisk_dump(res.stdout) if res.returncode == 0 else None
    except ValueError:
        current = None
    return DiskFacts(path, device_size(path), in_use, current)


def _in_use(path: str, ours: frozenset[str] = frozenset()) -> str | None:
    if stat.S_ISBLK(os.stat(path).st_mode):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_EXCL)  # fails with EBUSY when mounted or held
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return "mounted, or held by swap, LVM, RAID or a loop device"
            raise
        os.close(fd)
    loops = process.run(["losetup", "-j", path], check=False).stdout.strip()
    others = [d for d in (line.split(":", 1)[0] for line in loops.splitlines()) if d not in ours]
    if others:
        return "attached to " + ", ".join(others)
    return None


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
        self.out = Restored()

    def run(self) -> Restored:
        """Run every step; after each receive call on_received(name, received copy, nested subvolume paths).

        Raise OtherRestorePoint before the first step if the disk holds another point (check_points).
        """
        self.check_points()
        for i, step in enumerate(self.plan.steps, start=1):
            handler = getattr(self, "_" + step.kind.replace("-", "_"))
            self.say(f"[{i}/{len(self.plan.steps)}] {step.kind} {step.subject}: {step.detail}")
            result = handler(step)
            self.out.done.append(f"{step.kind} {step.subject}: {result}")
            if step.kind == "receive" and self.on_received:
                got = self.top(step.args["fs_uuid"]) / RESTORE_AREA / step.args["entry"]
                self.on_received(step.subject, got, nested_subvolumes(self.plan.steps, step))
        return self.out

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
        if _table_as_captured(disk, table):
            return "already as captured"
        # An image file has no kernel partitions to re-read (sfdisk would wait for them).
        quiet_kernel = [] if stat.S_ISBLK(os.stat(disk).st_mode) else ["--no-reread", "--no-tell-kernel"]
        process.run(["sfdisk", "-q", "--wipe", "always", *quiet_kernel, disk], input=render_sfdisk_script(table), what=f"sfdisk {disk}")
        return "written"

    def _mkfs(self, step: Step) -> str:
        a = step.args
        dev = self.device(a["disk"], int(a["partition"]))
        if _made(dev, a["type"], a["uuid"]):
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
        n = self.source.receive(choice, area)
        self.out.bytes += n
        return f"received {human_size(n)}"

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
        if not _table_as_captured(self.plan.disks[fs.disk], rec.table):
            return False
        return _made(self.device(fs.disk, fs.partition), fs.type, fs_uuid)

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

    def _boot_files(self, step: Step) -> str:
        a = step.args
        if a["fs_type"] == "btrfs":
            root = self.top(a["fs_uuid"])
        else:
            fs, dev = self.fs_device(a["fs_uuid"])
            root = self._mounted(fs, dev)
            if root is None:
                return self._fat_files(step, dev)
        dest = root / a["dest"] if a["dest"] else root
        dest.mkdir(parents=True, exist_ok=True)
        keep_owner = [] if a["fs_type"] == "vfat" else ["--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-p"]
        flags = ["--no-same-owner", "--no-same-permissions"] if a["fs_type"] == "vfat" else []
        process.run(["tar", *keep_owner, *flags, "-C", str(dest), "-xf", str(self.capture / a["archive"])], what=f"restore {step.subject}")
        return f"extracted into {a['fs_type']} {a['fs_uuid']}"

    def _mounted(self, fs: FsRecord, dev: str) -> Path | None:
        """Return where fs is mounted (mounting it once); None for a vfat this kernel cannot mount."""
        name = f"fs-{(fs.uuid or dev).replace('/', '_')}"
        where = self.ws.root / name
        if not os.path.ismount(where):
            try:
                self.ws.mount(dev, name, fs.type)
            except CommandFailed as exc:
                if fs.type == "vfat" and "unknown filesystem type" in str(exc) + exc.stderr_tail:
                    return None
                raise
        return where

    def _fat_files(self, step: Step, dev: str) -> str:
        """Put a boot archive onto a FAT filesystem through mtools (no vfat in this kernel)."""
        a = step.args
        staging = self.ws.root / f"fat-{a['fs_uuid']}"
        if staging.exists():
            shutil.rmtree(staging)
        top = staging / a["dest"] if a["dest"] else staging
        top.mkdir(parents=True)
        try:
            process.run(["tar", "--no-same-owner", "--no-same-permissions", "-C", str(top), "-xf", str(self.capture / a["archive"])],
                        what=f"restore {step.subject}")
            fat.copy_in(staging, dev)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return f"extracted into {a['fs_type']} {a['fs_uuid']} (mtools)"

    def _boot_sectors(self, step: Step) -> str:
        """Write the captured boot code (the MBR's first 440 bytes: never its partition table) and GRUB's core area."""
        a = step.args
        with open(a["disk"], "r+b") as fh:
            fh.write((self.capture / a["code"]).read_bytes()[:440])
            if a["core"]:
                fh.seek(int(a["offset"]))
                fh.write((self.capture / a["core"]).read_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        return "written as captured"

    def _bootloader(self, step: Step) -> str:
        """BIOS: grub-install in a chroot of the restored root, for the disk as the chroot sees it.

        Only the boot dirs that hold /boot/grub are mounted: grub-install --target=i386-pc
        never reads the ESP, which a rescue kernel without vfat could not mount anyway.
        """
        if step.args.get("skip"):
            return "nothing to do"
        root = self.top(step.args["fs_uuid"]) / step.args["path"]
        for d in ("dev", "proc", "sys"):
            self.ws.bind(f"/{d}", root / d)
        for b in self.m.boot_dirs:
            if b.fs_type != "btrfs" and b.fs_uuid and holds_grub(b.path):
                fs, dev = self.fs_device(b.fs_uuid)
                self.ws.mount(dev, os.path.relpath(root / b.path.lstrip("/"), self.ws.root), fs.type)
        disk = self._disk_in_chroot(step.args["disk"])
        grub = "grub2-install" if (root / "usr/sbin/grub2-install").exists() else "grub-install"
        process.run(["chroot", str(root), grub, "--target=i386-pc", disk], what=grub)
        return f"{grub} {disk}" + (f" ({step.args['disk']})" if disk != step.args["disk"] else "")

    def _disk_in_chroot(self, disk: str) -> str:
        """The disk's name inside the chroot (which sees the host's /dev): a block device's /dev path, or a loop device for an image."""
        real = os.path.realpath(disk)
        if stat.S_ISBLK(os.stat(real).st_mode) and real.startswith("/dev/"):
            return real
        return self.ws.attach(disk, 0, device_size(disk))

    def _autorelabel(self, step: Step) -> str:
        (self.top(step.args["fs_uuid"]) / step.args["path"] / ".autorelabel").touch()
        return "touched /.autorelabel"


class OtherRestorePoint(Refused):
    """The disk holds (part of) a restore of another point than the one asked for."""


def _table_as_captured(disk: str, table) -> bool:
    """Whether disk has exactly the captured table (same label id and partitions)."""
    res = process.run(["sfdisk", "--dump", disk], check=False)
    if res.returncode != 0:
        return False
    try:
        now = parse_sfdisk_dump(res.stdout)
    except ValueError:
        return False
    return (now.id or "").lower() == (table.id or "").lower() and now.partitions == table.partitions


def _made(dev: str, fstype: str, uuid: str) -> bool:
    """Whether dev holds a filesystem of fstype with uuid (identity is the UUID, invariant 7)."""
    res = process.run(["blkid", "-p", "-o", "export", dev], check=False, env=NO_CACHE)
    probes = parse_blkid_export(res.stdout) if res.returncode == 0 else []
    return bool(probes) and probes[0].type == fstype and (probes[0].uuid or "").lower() == uuid.lower()


SUBVOLUME_STEPS = ("receive", "create")


def holds_grub(boot_dir: str) -> bool:
    """Whether the boot dir boot_dir (a mount point) holds /boot/grub or /boot/grub2."""
    p = boot_dir.rstrip("/")
    return any(g == p or g.startswith(p + "/") for g in ("/boot/grub", "/boot/grub2"))


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


Confirm = Callable[[list[str], bool], bool]  # (plan lines, ask?) -> go on? Shows the plan either way.


@dataclass
class RestoreRequest:
    source: str  # target name
    at: str
    disks: list[str]
    capture: str | None = None  # --capture DIR; default: the one on the target
    host: str | None = None  # the name the machine had on the target; default: this host's
    yes: bool = False
    interactive: bool = False


def restore_disks(ctx, req: RestoreRequest, confirm: Confirm) -> Outcome:
    """Plan the restore, show it through confirm(lines), and carry it out if confirmed.

    Raise on every refusal before anything is written (plan.py lists them). With
    ctx.dry_run the plan is returned as items and nothing else happens. A failed step
    is returned as an error next to the steps done before it (the same command resumes).

    All of it works in restore_workdir(disks), under its lock: what an interrupted
    restore of the same disks left there (mounts, loop devices it journaled) is released
    before the first step, and is never counted as the disk being in use.
    """
    workdir = restore_workdir(req.disks)
    if ctx.dry_run:  # reads only: no lock, no directory (design.md, "Dry runs")
        return _restore_locked(ctx, req, confirm, workdir, find_leftovers(workdir))
    with WorkLock(workdir, f"dr restore of {', '.join(req.disks)}"):
        try:
            return _restore_locked(ctx, req, confirm, workdir, find_leftovers(workdir))
        finally:
            remove_workdir(workdir)  # only while holding the lock: never another run's directory


def _restore_locked(ctx, req: RestoreRequest, confirm: Confirm, workdir: Path, leftovers) -> Outcome:
    out = Outcome("dr restore", dry_run=ctx.dry_run)
    when = parse_at(req.at, ctx.now, ctx.tz)
    settings = DrSettings.from_config(ctx.config)
    with TargetSource(ctx.config.get_target(req.source), req.host or host_name()) as src:
        manifest, here = find_capture(src, ctx.config, settings.capture_dir, when, req.capture)
        choices = src.choose_all([p.name for p in manifest.protected], when)
        facts = [disk_facts(d, frozenset(leftovers.loops)) for d in req.disks]
        fstab = parse_fstab((here / "fstab").read_text())
        plan = plan_restore(manifest, facts, choices, fstab, source=src.name)
        if leftovers:
            plan.warnings.append(f"releasing {leftovers.describe()}")
        lines = render_plan(plan)
        if ctx.dry_run:
            out.items += [Item(s.subject, f"would-{s.kind}", s.detail, {"reason": s.reason}) for s in plan.steps]
            out.warnings += plan.warnings
            return out
        go = confirm(lines, not req.yes and req.interactive)
        require_confirmation(req.yes, req.interactive)
        if not go:
            out.warnings.append("not confirmed; nothing was written")
            return out
        leftovers.release()
        out.warnings += plan.warnings
        executor = None
        try:
            with _signals_raise(), Workspace(workdir, journal=True) as ws:
                executor = Executor(plan, manifest, here, src, ws, ctx.say)
                executor.run()
        except SubvaultError as exc:
            out.fail("restore", exc)
        finally:
            if executor is not None:
                out.items[:0] = [Item("restore", "done", line) for line in executor.out.done]
    return out


class RestoreInterrupted(SubvaultError):
    """SIGTERM or SIGHUP stopped the restore; what it attached and mounted was undone on the way out."""


@contextmanager
def _signals_raise():
    """Turn SIGTERM and SIGHUP into RestoreInterrupted, so the workspace is undone on the way out (SIGINT already raises)."""
    import signal

    def stop(signum, frame):  # noqa: ARG001
        raise RestoreInterrupted(f"stopped by {signal.Signals(signum).name}; run the same command again to resume")

    saved = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
