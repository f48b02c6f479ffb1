"""Gather what a capture of this machine stores, by running read-only commands: nothing is written.

Rules:
- Partitions are probed through their disk at their offset (`blkid -p -O`), which works
  the same on a disk and on an image file and needs no partition device nodes.
- A disk without a partition table whose filesystem fills it (common for data disks) is
  recorded with the table `none` and that filesystem as partition 0 (parse.WHOLE_DISK).
- The fingerprint covers what a restore depends on (tables, filesystems, subvolumes,
  fstab, firmware, boot dirs' file names, sizes and mtimes, BIOS boot sectors), so that
  `run` stores a new capture only when one of them changed.
- BIOS: a disk whose MBR holds boot code keeps that code and the area GRUB's core is
  loaded from (the GPT's BIOS boot partition, else the gap after the MBR).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter
from subvault.config.schema import Config
from subvault.context import host_name
from subvault.dr import fat
from subvault.dr import manifest as M
from subvault.dr.captureopts import CaptureSpec, is_block_device
from subvault.dr.disks import NO_CACHE, device_size
from subvault.dr.layout import (
    FINDMNT_COLUMNS,
    btrfs_mount,
    detect_disks,
    detect_firmware,
    detect_selinux,
    mount_of,
    without_multi_device,
)
from subvault.dr.parse import (
    GPT_BIOS_BOOT,
    WHOLE_DISK,
    no_table,
    parse_blkid_export,
    parse_sfdisk_dump,
    parse_sfdisk_json,
)
from subvault.dr.settings import capture_owner
from subvault.errors import NotFound, SubvaultError
from subvault.results import to_jsonable


@dataclass
class Gathered:
    """Everything a capture stores, before it is stored: manifest fields and raw file contents."""

    manifest: M.Manifest
    files: dict[str, bytes]
    boot_sources: dict[str, str]  # archive name -> directory to tar
    left_out: list[str] = field(default_factory=list)  # one line per filesystem not captured, saying what to do


def gather(config: Config, spec: CaptureSpec, now: datetime) -> Gathered:
    """Run the read-only commands and return what a capture of this machine stores.

    Raise NotFound if a disk, the fstab or a boot dir is missing, CommandFailed if a tool fails.
    """
    left_out: dict[str, str] = {}  # fs uuid -> the line saying what to do
    disks = spec.disks or detect_disks(config, spec.boot_dirs, left_out)
    files: dict[str, bytes] = {}
    disk_records, fs_records, blkid_text = gather_disks(disks, files)
    fs_records = without_multi_device(fs_records, left_out)
    files["blkid.export"] = blkid_text.encode()
    files["findmnt.json"] = process.run(["findmnt", "-J", "-o", FINDMNT_COLUMNS], what="findmnt").stdout.encode()
    try:
        files["fstab"] = Path(spec.fstab).read_bytes()
    except OSError as exc:
        raise NotFound(f"fstab {spec.fstab}: {exc.strerror}") from None
    fs_uuids = {f.uuid for f in fs_records if f.type == "btrfs" and f.uuid}
    btrfs = tuple(_gather_btrfs(u) for u in sorted(fs_uuids))
    protected = tuple(p for p in _gather_protected(config) if p.fs_uuid in fs_uuids)
    boot, sources = _gather_boot(spec.boot_dirs)
    dr_sub, dr_rel = capture_owner(config, str(spec.dest))
    firmware = spec.firmware or detect_firmware()
    if firmware == "bios":
        disk_records = [_with_boot_sectors(d, files) for d in disk_records]
    selinux = detect_selinux() if spec.selinux is None else spec.selinux
    parts = {
        "disks": [(d.name, d.table) for d in disk_records], "fs": fs_records, "btrfs": btrfs,
        "protected": protected, "fstab": files["fstab"].decode(errors="replace"), "firmware": firmware,
        "selinux": selinux, "boot": [(b.path, b.fs_uuid, b.dest, _tree_stamp(sources[b.archive])) for b in boot],
    }
    if any(d.boot_code for d in disk_records):  # a GRUB update rewrites them: capture again
        parts["boot_sectors"] = [hashlib.sha256(files.get(d.boot_code, b"") + files.get(d.boot_core, b"")).hexdigest() for d in disk_records]
    fingerprint = hashlib.sha256(json.dumps(to_jsonable(parts), sort_keys=True).encode()).hexdigest()
    manifest = M.Manifest(
        format=M.FORMAT, version=M.VERSION, host=spec.host or host_name(), captured_at=now,
        firmware=firmware, selinux=selinux, disks=tuple(disk_records), filesystems=tuple(fs_records),
        btrfs=btrfs, protected=protected, boot_dirs=tuple(boot), fingerprint=fingerprint,
        dr_subvolume=dr_sub, dr_relpath=dr_rel,
    )
    return Gathered(manifest, files, sources, list(left_out.values()))


MAX_BOOT_CORE = 2 << 20  # a BIOS boot partition or post-MBR gap larger than this is not GRUB's alone


def _with_boot_sectors(d: M.DiskRecord, files: dict[str, bytes]) -> M.DiskRecord:
    """BIOS: the record with the disk's boot code and the area it loads GRUB's core from, when the MBR holds code.

    The area is the GPT's BIOS boot partition, else (an MBR table) the sectors between the MBR and the first partition.
    """
    if d.table.whole_disk:
        return d
    ss = d.table.sector_size
    with open(d.device, "rb") as fh:
        code = fh.read(440)
        if len(code) < 440 or not any(code):
            return d
        bios_boot = next((p for p in d.table.partitions if p.type.upper() == GPT_BIOS_BOOT), None)
        if bios_boot is not None:
            offset, size = bios_boot.start * ss, bios_boot.size * ss
        elif d.table.label == "dos" and d.table.partitions:
            offset, size = ss, min(p.start for p in d.table.partitions) * ss - ss
        else:
            offset, size = 0, 0
        fh.seek(offset)
        core = fh.read(min(size, MAX_BOOT_CORE)) if size > 0 else b""
    files[f"disks/{d.name}.bootcode"] = code
    if any(core):
        files[f"disks/{d.name}.bootcore"] = core
    return replace(d, boot_code=f"disks/{d.name}.bootcode", boot_core=f"disks/{d.name}.bootcore" if any(core) else "",
                   boot_core_offset=offset if any(core) else 0)


def gather_disks(disks: list[str], files: dict[str, bytes]) -> tuple[list[M.DiskRecord], list[M.FsRecord], str]:
    """Record each disk's table (or the filesystem filling it) and its filesystems; return them and blkid's export text.

    The raw `sfdisk --dump` and `--json` outputs go into files. Raise NotFound for a missing disk.
    """
    records: list[M.DiskRecord] = []
    filesystems: list[M.FsRecord] = []
    blkid_lines: list[str] = []
    for i, disk in enumerate(disks):
        if not os.path.exists(disk):
            raise NotFound(f"disk {disk} does not exist")
        name = _disk_name(disk, i, [r.name for r in records])
        whole = _whole_disk_fs(disk)
        if whole is not None:
            records.append(M.DiskRecord(name, disk, device_size(disk), "", "", no_table()))
            blkid_lines.append(f"DEVNAME={disk}\n" + "".join(f"{k}={v}\n" for k, v in whole.items()))
            filesystems.append(_fs_record(name, WHOLE_DISK, whole))
            continue
        dump = process.run(["sfdisk", "--dump", disk], what=f"sfdisk --dump {disk}").stdout
        as_json = process.run(["sfdisk", "--json", disk], what=f"sfdisk --json {disk}").stdout
        table = parse_sfdisk_dump(dump)
        if parse_sfdisk_json(as_json).partitions != table.partitions:
            raise SubvaultError(f"sfdisk --dump and --json of {disk} disagree; is the disk being changed?")
        files[f"disks/{name}.sfdisk"], files[f"disks/{name}.json"] = dump.encode(), as_json.encode()
        records.append(M.DiskRecord(name, disk, device_size(disk), f"disks/{name}.sfdisk", f"disks/{name}.json", table))
        for p in table.partitions:
            off, size = p.start * table.sector_size, p.size * table.sector_size
            res = process.run(["blkid", "-p", "-o", "export", "-O", str(off), "-S", str(size), disk], check=False, what="blkid")
            probes = parse_blkid_export(res.stdout) if res.returncode == 0 else []
            if not probes or not probes[0].type:
                continue
            f = probes[0].fields
            blkid_lines.append(f"DEVNAME={disk}:{p.number}\n" + "".join(f"{k}={v}\n" for k, v in f.items()))
            filesystems.append(_fs_record(name, p.number, f))
    return records, filesystems, "\n".join(blkid_lines)


def _whole_disk_fs(disk: str) -> dict[str, str] | None:
    """blkid's fields when a filesystem (not a partition table) starts at byte 0 of disk, else None."""
    res = process.run(["blkid", "-p", "-o", "export", disk], check=False, env=NO_CACHE, what="blkid")
    probes = parse_blkid_export(res.stdout) if res.returncode == 0 and res.stdout.strip() else []
    if not probes or not probes[0].type or "PTTYPE" in probes[0].fields:
        return None
    return probes[0].fields


def _fs_record(disk: str, number: int, f: dict[str, str]) -> M.FsRecord:
    return M.FsRecord(disk, number, f["TYPE"], f.get("UUID"), f.get("LABEL"), f.get("UUID_SUB"), f.get("VERSION"))


def _disk_name(disk: str, index: int, taken: list[str]) -> str:
    base = Path(disk).name.replace(".", "_") or f"disk{index}"
    return base if base not in taken else f"{base}_{index}"


def _gather_btrfs(fs_uuid: str) -> M.BtrfsRecord:
    mnt = btrfs_mount(fs_uuid)
    subs = adapter.list_subvolumes(mnt)
    default_id = adapter.get_default(mnt)
    default = next((s.path for s in subs if s.id == default_id), "")
    keep = [
        M.SubvolRecord(s.path, s.uuid, s.id)
        for s in subs
        if not s.readonly and "/.snapshots/" not in f"/{s.path}" and not s.path.startswith(".subvault-dr")
    ]
    return M.BtrfsRecord(fs_uuid, default, tuple(sorted(keep, key=lambda r: r.path)))


def _gather_protected(config: Config) -> list[M.ProtectedRecord]:
    out = []
    for sub in config.subvolume:
        info = adapter.show(sub.path)
        out.append(M.ProtectedRecord(sub.name, sub.path, mount_of(sub.path).uuid or adapter.filesystem_uuid(sub.path), info.path, info.uuid))
    return out


def _gather_boot(boot_dirs: dict[str, str]) -> tuple[list[M.BootDirRecord], dict[str, str]]:
    """Record each boot dir: a mounted directory, or an unmounted FAT device (an ESP) read through mtools."""
    records, sources = [], {}
    for logical, actual in sorted(boot_dirs.items()):
        archive = f"boot/{logical.strip('/').replace('/', '_') or 'root'}.tar"
        if is_block_device(actual):
            records.append(_unmounted_boot(logical, actual, archive))
        elif os.path.isdir(actual):
            m = mount_of(actual)
            inner = os.path.relpath(os.path.realpath(actual), os.path.realpath(m.target))
            dest = "/".join(x for x in (m.fsroot.strip("/"), "" if inner == "." else inner) if x)
            records.append(M.BootDirRecord(logical, m.uuid, m.fstype, dest, archive))
        else:
            raise NotFound(f"boot dir {actual} does not exist")
        sources[archive] = actual
    return records, sources


def _unmounted_boot(logical: str, device: str, archive: str) -> M.BootDirRecord:
    """Record a boot dir given as its (unmounted) FAT device. Raise SubvaultError for other types."""
    res = process.run(["blkid", "-p", "-o", "export", device], check=False, env=NO_CACHE, what="blkid")
    probes = parse_blkid_export(res.stdout) if res.returncode == 0 else []
    if not probes or probes[0].type != "vfat":
        raise SubvaultError(f"boot dir {logical}={device}: only an unmounted vfat device can be read in place; mount it and pass the directory")
    return M.BootDirRecord(logical, probes[0].uuid, "vfat", "", archive)


def _tree_stamp(root: str) -> list[tuple[str, int, int]] | str:
    """Names, sizes and mtimes under root: cheap, and changes whenever a kernel is installed."""
    if is_block_device(root):
        return fat.stamp(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(filenames):
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            out.append((os.path.relpath(os.path.join(dirpath, n), root), st.st_size, st.st_mtime_ns))
    return out
