"""What a disk holds now, read without writing: its size, whether something uses it, its table and filesystems.

Rules:
- blkid probes the device itself (NO_CACHE), never its cache, which may describe what
  was there before a restore wrote the disk.
- A filesystem is identified by its type and UUID (invariant 7), a table by its label id
  and partitions: a name or label proves nothing.
- Loop devices an interrupted restore of this disk left (`ours`) are not counted as the
  disk being in use: the restore releases them before writing.
"""

from __future__ import annotations

import errno
import os
import stat

from subvault import process
from subvault.dr.parse import PartitionTable, parse_blkid_export, parse_sfdisk_dump
from subvault.dr.plan import DiskFacts
from subvault.errors import NotFound

NO_CACHE = {"BLKID_FILE": "/dev/null"}  # probe the device itself, never a stale cache


def device_size(path: str) -> int:
    """The size in bytes of a block device or an image file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


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


def table_as_captured(disk: str, table: PartitionTable) -> bool:
    """Whether disk has exactly the captured table (same label id and partitions)."""
    res = process.run(["sfdisk", "--dump", disk], check=False)
    if res.returncode != 0:
        return False
    try:
        now = parse_sfdisk_dump(res.stdout)
    except ValueError:
        return False
    return (now.id or "").lower() == (table.id or "").lower() and now.partitions == table.partitions


def fs_made(dev: str, fstype: str, uuid: str) -> bool:
    """Whether dev holds a filesystem of fstype with uuid (identity is the UUID, invariant 7)."""
    res = process.run(["blkid", "-p", "-o", "export", dev], check=False, env=NO_CACHE)
    probes = parse_blkid_export(res.stdout) if res.returncode == 0 else []
    return bool(probes) and probes[0].type == fstype and (probes[0].uuid or "").lower() == uuid.lower()
