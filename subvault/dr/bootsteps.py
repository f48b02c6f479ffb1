"""The boot steps of a restore: boot files, boot sectors, the bootloader and the SELinux relabel.

Rules:
- Boot files are extracted with owners, modes, xattrs and ACLs, except onto vfat, which
  has none. A vfat this kernel cannot mount (a rescue kernel) is written through mtools.
- Boot sectors: only the MBR's first 440 bytes (the boot code, never the partition table)
  and GRUB's core area are written, as captured.
- BIOS: grub-install runs in a chroot of the restored root, for the disk as the chroot
  sees it; only the boot dirs that hold /boot/grub are mounted for it.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from subvault import process
from subvault.dr import fat
from subvault.dr.disks import device_size
from subvault.dr.manifest import FsRecord, Manifest
from subvault.dr.plan import Step
from subvault.dr.workspace import Workspace
from subvault.errors import CommandFailed


class Restoring(Protocol):
    """What the boot steps use of the restore in progress (the executor): the capture, the workspace, the new filesystems."""

    m: Manifest
    capture: Path
    ws: Workspace

    def top(self, fs_uuid: str) -> Path: ...

    def fs_device(self, uuid: str) -> tuple[FsRecord, str]: ...


def boot_files(ex: Restoring, step: Step) -> str:
    """Extract a boot dir's archive into its restored filesystem (at the dir it held inside it)."""
    a = step.args
    root: Path | None
    if a["fs_type"] == "btrfs":
        root = ex.top(a["fs_uuid"])
    else:
        fs, dev = ex.fs_device(a["fs_uuid"])
        root = _mounted(ex, fs, dev)
        if root is None:
            return _fat_files(ex, step, dev)
    dest = root / a["dest"] if a["dest"] else root
    dest.mkdir(parents=True, exist_ok=True)
    keep_owner = [] if a["fs_type"] == "vfat" else ["--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-p"]
    flags = ["--no-same-owner", "--no-same-permissions"] if a["fs_type"] == "vfat" else []
    process.run(["tar", *keep_owner, *flags, "-C", str(dest), "-xf", str(ex.capture / a["archive"])], what=f"restore {step.subject}")
    return f"extracted into {a['fs_type']} {a['fs_uuid']}"


def _mounted(ex: Restoring, fs: FsRecord, dev: str) -> Path | None:
    """Return where fs is mounted (mounting it once); None for a vfat this kernel cannot mount."""
    name = f"fs-{(fs.uuid or dev).replace('/', '_')}"
    where = ex.ws.root / name
    if not os.path.ismount(where):
        try:
            ex.ws.mount(dev, name, fs.type)
        except CommandFailed as exc:
            if fs.type == "vfat" and "unknown filesystem type" in str(exc) + exc.stderr_tail:
                return None
            raise
    return where


def _fat_files(ex: Restoring, step: Step, dev: str) -> str:
    """Put a boot archive onto a FAT filesystem through mtools (no vfat in this kernel)."""
    a = step.args
    staging = ex.ws.root / f"fat-{a['fs_uuid']}"
    if staging.exists():
        shutil.rmtree(staging)
    top = staging / a["dest"] if a["dest"] else staging
    top.mkdir(parents=True)
    try:
        process.run(["tar", "--no-same-owner", "--no-same-permissions", "-C", str(top), "-xf", str(ex.capture / a["archive"])],
                    what=f"restore {step.subject}")
        fat.copy_in(staging, dev)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"extracted into {a['fs_type']} {a['fs_uuid']} (mtools)"


def boot_sectors(ex: Restoring, step: Step) -> str:
    """Write the captured boot code (the MBR's first 440 bytes: never its partition table) and GRUB's core area."""
    a = step.args
    with open(a["disk"], "r+b") as fh:
        fh.write((ex.capture / a["code"]).read_bytes()[:440])
        if a["core"]:
            fh.seek(int(a["offset"]))
            fh.write((ex.capture / a["core"]).read_bytes())
        fh.flush()
        os.fsync(fh.fileno())
    return "written as captured"


def bootloader(ex: Restoring, step: Step) -> str:
    """BIOS: grub-install in a chroot of the restored root, for the disk as the chroot sees it.

    Only the boot dirs that hold /boot/grub are mounted: grub-install --target=i386-pc
    never reads the ESP, which a rescue kernel without vfat could not mount anyway.
    """
    if step.args.get("skip"):
        return "nothing to do"
    root = ex.top(step.args["fs_uuid"]) / step.args["path"]
    for d in ("dev", "proc", "sys"):
        ex.ws.bind(f"/{d}", root / d)
    for b in ex.m.boot_dirs:
        if b.fs_type != "btrfs" and b.fs_uuid and holds_grub(b.path):
            fs, dev = ex.fs_device(b.fs_uuid)
            ex.ws.mount(dev, os.path.relpath(root / b.path.lstrip("/"), ex.ws.root), fs.type)
    disk = _disk_in_chroot(ex, step.args["disk"])
    grub = "grub2-install" if (root / "usr/sbin/grub2-install").exists() else "grub-install"
    process.run(["chroot", str(root), grub, "--target=i386-pc", disk], what=grub)
    return f"{grub} {disk}" + (f" ({step.args['disk']})" if disk != step.args["disk"] else "")


def _disk_in_chroot(ex: Restoring, disk: str) -> str:
    """The disk's name inside the chroot (which sees the host's /dev): a block device's /dev path, or a loop device for an image."""
    real = os.path.realpath(disk)
    if stat.S_ISBLK(os.stat(real).st_mode) and real.startswith("/dev/"):
        return real
    return ex.ws.attach(disk, 0, device_size(disk))


def autorelabel(ex: Restoring, step: Step) -> str:
    """SELinux: have the restored system relabel its files on first boot."""
    (ex.top(step.args["fs_uuid"]) / step.args["path"] / ".autorelabel").touch()
    return "touched /.autorelabel"


def holds_grub(boot_dir: str) -> bool:
    """Whether the boot dir boot_dir (a mount point) holds /boot/grub or /boot/grub2."""
    p = boot_dir.rstrip("/")
    return any(g == p or g.startswith(p + "/") for g in ("/boot/grub", "/boot/grub2"))


BOOT_STEPS: dict[str, Callable[[Restoring, Step], str]] = {
    "boot-files": boot_files, "boot-sectors": boot_sectors, "bootloader": bootloader, "autorelabel": autorelabel,
}
