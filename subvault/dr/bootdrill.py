"""The drill's boot step: find what to boot on the restored disks, freeze them, start the boot.

Rules:
- What boots is read from the restored disks only: the root is the captured fstab's "/"
  entry (its subvol=, else the restored default subvolume); /boot is its own fstab entry
  when there is one, else root's /boot.
- Before QEMU starts, every restored btrfs is committed and remounted read-only: the
  drill's remaining reads (content digests) overlap the boot, and the VM, whose writes go
  to an overlay (snapshot=on), sees a disk nobody writes to any more.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter
from subvault.dr import boot, fat
from subvault.dr.executor import Restored
from subvault.dr.manifest import Manifest
from subvault.dr.parse import FstabEntry
from subvault.errors import CommandFailed, NotFound, SubvaultError


def start(settings: boot.BootSettings, m: Manifest, fstab: list[FstabEntry], done: Restored, ws_root: Path, images: list[str],
          work: Path, log: Path, pool: ThreadPoolExecutor, say: Callable[[str], None]) -> Future[boot.BootResult]:
    """Locate the boot entry, freeze the restored filesystems, and start the boot in pool; return its future (a BootResult)."""
    root, top = _root(fstab, done)
    entry = None
    if root is not None:
        entry = boot.find_entry(root, _boot_dir(fstab, done, ws_root), top)
    fw_ok = boot.firmware_possible(m.firmware, _esp_has_removable(m, done), _mbr_has_code(images[0]) if images else False)
    _freeze(done)
    return pool.submit(boot.boot, settings, images, entry, m.firmware, fw_ok, work, log, say)


def _root(fstab: list[FstabEntry], done: Restored) -> tuple[Path | None, Path | None]:
    """(restored root directory, its filesystem's top) from the fstab's "/" entry on a restored btrfs."""
    entry = next((e for e in fstab if e.file == "/"), None)
    if entry is None or entry.vfstype != "btrfs":
        return None, None
    top = done.tops.get(entry.uuid or "") if entry.uuid else (next(iter(done.tops.values())) if len(done.tops) == 1 else None)
    if top is None:
        return None, None
    if entry.subvol:
        return top / entry.subvol.lstrip("/"), top
    try:
        default = adapter.get_default(top)
    except (NotFound, CommandFailed):
        return top, top
    if default == 5:
        return top, top
    found = next((s.path for s in adapter.list_subvolumes(top) if s.id == default), None)
    return (top / found if found else top), top


def _boot_dir(fstab: list[FstabEntry], done: Restored, ws_root: Path) -> Path | None:
    e = next((e for e in fstab if e.file == "/boot"), None)
    if e is None or not e.uuid:
        return None
    if e.vfstype == "btrfs" and e.uuid in done.tops:
        return done.tops[e.uuid] / (e.subvol or "").lstrip("/")
    where = ws_root / f"fs-{e.uuid}"
    return where if os.path.ismount(where) else None


def _esp_has_removable(m: Manifest, done: Restored) -> bool:
    if not fat.available():
        return False
    for fs in m.filesystems:
        dev = done.devices.get((fs.disk, fs.partition))
        if fs.type != "vfat" or dev is None:
            continue
        try:
            if any(p.upper().rstrip("/") == "::/EFI/BOOT/BOOTX64.EFI" for p in fat.listing(dev)):
                return True
        except SubvaultError:
            continue
    return False


def _mbr_has_code(image: str) -> bool:
    with open(image, "rb") as fh:
        mbr = fh.read(512)
    return len(mbr) == 512 and mbr[510:512] == b"\x55\xaa" and any(mbr[:440])


def _freeze(done: Restored) -> None:
    for top in done.tops.values():
        fd = os.open(top, os.O_RDONLY)
        try:
            adapter.syncfs(fd)
        finally:
            os.close(fd)
        process.run(["mount", "-o", "remount,ro", str(top)], what=f"remount {top} read-only")
