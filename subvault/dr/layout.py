"""This machine's layout as the running system reports it: firmware, SELinux, mounts, disks, btrfs devices.

Reads only. Rules:
- The disks a capture covers, unless [dr] disks names them, are those under the
  configured subvolumes and boot dirs.
- A btrfs on several devices is left out (with its subvolumes), with one line saying how
  to recreate it by hand (`multi_device_line`): `dr restore` makes single-device
  filesystems only. When nothing is left, the capture is refused (UnsupportedLayout).
"""

from __future__ import annotations

import os
from pathlib import Path

from subvault import process
from subvault.config.schema import Config
from subvault.dr import manifest as M
from subvault.dr.parse import Mount, parse_findmnt_json
from subvault.errors import NotFound, SubvaultError

FINDMNT_COLUMNS = "TARGET,SOURCE,FSTYPE,OPTIONS,UUID,FSROOT"
SYS_BTRFS = Path("/sys/fs/btrfs")


class UnsupportedLayout(SubvaultError):
    """Nothing on this machine is a layout `dr capture` records (every filesystem spans several devices)."""


def detect_firmware() -> str:
    """uefi when this machine booted through EFI, else bios."""
    return "uefi" if os.path.isdir("/sys/firmware/efi") else "bios"


def detect_selinux() -> bool:
    """Whether SELinux is on (enforcing or permissive), so a restore must have the files relabelled."""
    if os.path.exists("/sys/fs/selinux/enforce"):
        return True
    try:
        text = Path("/etc/selinux/config").read_text()
    except OSError:
        return False
    return any(line.strip() in ("SELINUX=enforcing", "SELINUX=permissive") for line in text.splitlines())


def mount_of(path: str) -> Mount:
    """Return the mount holding path. Raise NotFound if findmnt knows none."""
    res = process.run(["findmnt", "-J", "-o", FINDMNT_COLUMNS, "-T", path], check=False, what="findmnt")
    mounts = parse_findmnt_json(res.stdout) if res.returncode == 0 and res.stdout.strip() else []
    if not mounts:
        raise NotFound(f"{path}: no mounted filesystem holds it")
    return mounts[0]


def disk_of(device: str) -> str:
    """Given a partition (or whole-disk) device, return its disk's path."""
    res = process.run(["lsblk", "-n", "-d", "-o", "PKNAME", device], check=False, what="lsblk")
    parent = res.stdout.strip()
    return f"/dev/{parent}" if res.returncode == 0 and parent else device


def btrfs_devices(fs_uuid: str) -> list[str]:
    """The devices of a mounted btrfs (from sysfs); [] when the kernel does not know it."""
    try:
        return sorted(f"/dev/{n}" for n in os.listdir(SYS_BTRFS / fs_uuid / "devices"))
    except OSError:
        return []


def _profile(fs_uuid: str, kind: str) -> str:
    try:
        found = sorted(p.name for p in (SYS_BTRFS / fs_uuid / "allocation" / kind).iterdir() if p.is_dir())
    except OSError:
        found = []
    return found[0] if found else "PROFILE"


def multi_device_line(fs_uuid: str, devices: list[str]) -> str:
    """The one line that says a multi-device btrfs is left out, and what to do about it."""
    data, meta = _profile(fs_uuid, "data"), _profile(fs_uuid, "metadata")
    return (
        f"btrfs {fs_uuid} spans {len(devices)} devices ({', '.join(devices)}): dr capture leaves it out, since dr restore "
        f"recreates single-device filesystems only; after a disaster make it by hand with `mkfs.btrfs -U {fs_uuid} -d {data} -m {meta} "
        f"DEVICE…` and bring its subvolumes back with `subvault restore`"
    )


def detect_disks(config: Config, boot_dirs: dict[str, str], left_out: dict[str, str]) -> list[str]:
    """The disks under the configured subvolumes and boot dirs; a multi-device btrfs goes into left_out instead."""
    disks: list[str] = []
    for path in [s.path for s in config.subvolume] + list(boot_dirs.values()):
        m = mount_of(path)
        devices = btrfs_devices(m.uuid) if m.fstype == "btrfs" and m.uuid else []
        if len(devices) > 1:
            left_out.setdefault(m.uuid or "", multi_device_line(m.uuid or "", devices))
            continue
        source = m.source.split("[", 1)[0]
        if source.startswith("/dev/"):
            disk = disk_of(source)
            if disk not in disks:
                disks.append(disk)
    if not disks:
        if left_out:
            raise UnsupportedLayout("; ".join(left_out.values()))
        raise NotFound("found no disk under the configured subvolumes; name them in [dr] disks")
    return disks


def without_multi_device(records: list[M.FsRecord], left_out: dict[str, str]) -> list[M.FsRecord]:
    """Drop the btrfs filesystems that span several devices, noting each in left_out."""
    kept = []
    for f in records:
        devices = btrfs_devices(f.uuid) if f.type == "btrfs" and f.uuid else []
        if len(devices) > 1:
            left_out.setdefault(f.uuid or "", multi_device_line(f.uuid or "", devices))
        elif f.uuid not in left_out:
            kept.append(f)
    return kept


def btrfs_mount(fs_uuid: str) -> str:
    """Where the btrfs fs_uuid is mounted. Raise NotFound when it is not."""
    out = process.run(["findmnt", "-J", "-o", FINDMNT_COLUMNS], what="findmnt").stdout
    for m in parse_findmnt_json(out):
        if m.uuid == fs_uuid and m.fstype == "btrfs":
            return m.target
    raise NotFound(f"btrfs filesystem {fs_uuid} is not mounted; mount it so its subvolumes can be listed")
