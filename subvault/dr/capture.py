"""`dr capture`: record what a bare-metal restore needs, into a directory that gets replicated.

Gathering (commands, no writes) is separate from storing, so that `capture_if_changed`
can compare the layout's fingerprint with the stored capture and write only on change.
Partitions are probed through their disk at their offset (`blkid -p -O`), which works the
same on a disk and on an image file and needs no partition device nodes.

Rules:
- A disk without a partition table whose filesystem fills it (common for data disks) is
  recorded with the table `none` and that filesystem as partition 0 (parse.WHOLE_DISK).
- A btrfs on several devices is left out (with its subvolumes), with one line saying how
  to recreate it by hand: `dr restore` makes single-device filesystems only. The rest is
  captured; when nothing is left, the capture is refused (UnsupportedLayout), which `run`
  reports as a warning, not a failure, so that it does not end partial on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter
from subvault.config.schema import Config
from subvault.context import Context, host_name
from subvault.dr import fat
from subvault.dr import manifest as M
from subvault.dr.captureopts import OPTIONS_FILE, CaptureSpec, is_block_device, options_file, spec_for_run, usable_boot_dirs
from subvault.dr.parse import (
    GPT_BIOS_BOOT,
    WHOLE_DISK,
    Mount,
    no_table,
    parse_blkid_export,
    parse_findmnt_json,
    parse_sfdisk_dump,
    parse_sfdisk_json,
)
from subvault.dr.settings import DrSettings
from subvault.errors import NotFound, SubvaultError
from subvault.results import Item, Outcome, to_jsonable

FINDMNT_COLUMNS = "TARGET,SOURCE,FSTYPE,OPTIONS,UUID,FSROOT"
KEEP_CAPTURES = 2
SYS_BTRFS = Path("/sys/fs/btrfs")
NO_CACHE = {"BLKID_FILE": "/dev/null"}


class UnsupportedLayout(SubvaultError):
    """Nothing on this machine is a layout `dr capture` records (every filesystem spans several devices)."""


@dataclass
class Gathered:
    """Everything a capture stores, before it is stored: manifest fields and raw file contents."""

    manifest: M.Manifest
    files: dict[str, bytes]
    boot_sources: dict[str, str]  # archive name -> directory to tar
    left_out: list[str] = field(default_factory=list)  # one line per filesystem not captured, saying what to do


def detect_firmware() -> str:
    return "uefi" if os.path.isdir("/sys/firmware/efi") else "bios"


def detect_selinux() -> bool:
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


def device_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


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


def _detect_disks(config: Config, boot_dirs: dict[str, str], left_out: dict[str, str]) -> list[str]:
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


def gather(config: Config, spec: CaptureSpec, now: datetime) -> Gathered:
    """Run the read-only commands and return what a capture of this machine stores.

    Raise NotFound if a disk, the fstab or a boot dir is missing, CommandFailed if a tool fails.
    """
    left_out: dict[str, str] = {}  # fs uuid -> the line saying what to do
    disks = spec.disks or _detect_disks(config, spec.boot_dirs, left_out)
    files: dict[str, bytes] = {}
    disk_records, fs_records, blkid_text = _gather_disks(disks, files)
    fs_records = _without_multi_device(fs_records, left_out)
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
    dr_sub, dr_rel = _owner(config, str(spec.dest))
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
    fingerprint = hashlib.sha256(json.dumps(_jsonable(parts), sort_keys=True).encode()).hexdigest()
    manifest = M.Manifest(
        format=M.FORMAT, version=M.VERSION, host=spec.host or _hostname(), captured_at=now,
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
    from dataclasses import replace

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


def _without_multi_device(records: list[M.FsRecord], left_out: dict[str, str]) -> list[M.FsRecord]:
    """Drop the btrfs filesystems that span several devices, noting each in left_out."""
    kept = []
    for f in records:
        devices = btrfs_devices(f.uuid) if f.type == "btrfs" and f.uuid else []
        if len(devices) > 1:
            left_out.setdefault(f.uuid or "", multi_device_line(f.uuid or "", devices))
        elif f.uuid not in left_out:
            kept.append(f)
    return kept


def _hostname() -> str:
    return host_name()


def _gather_disks(disks: list[str], files: dict[str, bytes]) -> tuple[list[M.DiskRecord], list[M.FsRecord], str]:
    records, filesystems, blkid_lines = [], [], []
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


def _btrfs_mount(fs_uuid: str) -> str:
    out = process.run(["findmnt", "-J", "-o", FINDMNT_COLUMNS], what="findmnt").stdout
    for m in parse_findmnt_json(out):
        if m.uuid == fs_uuid and m.fstype == "btrfs":
            return m.target
    raise NotFound(f"btrfs filesystem {fs_uuid} is not mounted; mount it so its subvolumes can be listed")


def _gather_btrfs(fs_uuid: str) -> M.BtrfsRecord:
    mnt = _btrfs_mount(fs_uuid)
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
    res = process.run(["blkid", "-p", "-o", "export", device], check=False, env={"BLKID_FILE": "/dev/null"}, what="blkid")
    probes = parse_blkid_export(res.stdout) if res.returncode == 0 else []
    if not probes or probes[0].type != "vfat":
        raise SubvaultError(f"boot dir {logical}={device}: only an unmounted vfat device can be read in place; mount it and pass the directory")
    return M.BootDirRecord(logical, probes[0].uuid, "vfat", "", archive)


def _owner(config: Config, capture_dir: str) -> tuple[str | None, str | None]:
    """Return the configured subvolume holding capture_dir (longest path prefix) and the dir inside it."""
    best = None
    for sub in config.subvolume:
        base = sub.path.rstrip("/") + "/"
        if capture_dir.startswith(base) or sub.path == "/":
            if best is None or len(sub.path) > len(best.path):
                best = sub
    if best is None:
        return None, None
    return best.name, os.path.relpath(capture_dir, best.path)


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


def _jsonable(value):
    return to_jsonable(value)


def store(gathered: Gathered, dest: Path) -> Path:
    """Write the capture under dest (raw files, boot archives, manifest last, then `latest`); return its dir."""
    stamp = gathered.manifest.captured_at.strftime("%Y%m%dT%H%M%SZ")
    here = dest / "captures" / stamp
    if here.exists():
        shutil.rmtree(here)
    here.mkdir(parents=True)
    os.chmod(dest, 0o700)
    for rel, data in gathered.files.items():
        (here / rel).parent.mkdir(parents=True, exist_ok=True)
        (here / rel).write_bytes(data)
    for archive, source in gathered.boot_sources.items():
        (here / archive).parent.mkdir(parents=True, exist_ok=True)
        _archive(source, here / archive)
    digests = {rel: M.sha256_file(here / rel) for rel in [*gathered.files, *gathered.boot_sources]}
    final = M.Manifest(**{**_fields(gathered.manifest), "files": digests})
    _write_synced(here / M.MANIFEST, M.encode(final))
    link_tmp = dest / f".{M.LATEST}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(f"captures/{stamp}", link_tmp)
    os.replace(link_tmp, dest / M.LATEST)
    _prune(dest / "captures", keep_name=stamp)
    return here


def _archive(source: str, archive: Path) -> None:
    """Tar the directory source (or the files of the FAT device source) into archive."""
    if not is_block_device(source):
        process.run(
            ["tar", "--xattrs", "--xattrs-include=*", "--acls", "--one-file-system", "-C", source, "-cf", str(archive), "."],
            what=f"tar {source}",
        )
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="subvault-esp-") as tmp:
        fat.copy_out(source, Path(tmp))
        process.run(["tar", "--numeric-owner", "-C", tmp, "-cf", str(archive), "."], what=f"tar {source}")


def _fields(m: M.Manifest) -> dict:
    import dataclasses

    return {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _prune(captures: Path, keep_name: str) -> None:
    names = sorted(p.name for p in captures.iterdir() if p.is_dir())
    for name in names[:-KEEP_CAPTURES]:
        if name != keep_name:
            shutil.rmtree(captures / name, ignore_errors=True)


def stored_fingerprint(dest: Path) -> str | None:
    """Return the fingerprint of the latest stored capture, or None when there is none readable."""
    try:
        return M.decode((dest / M.LATEST / M.MANIFEST).read_bytes()).fingerprint
    except (OSError, M.CaptureInvalid):
        return None


def capture(ctx: Context, spec: CaptureSpec | None = None, *, force: bool = True) -> Outcome:
    """Capture the machine into spec.dest (default: the [dr] settings); with force false, only on change."""
    import dataclasses

    out = Outcome("dr capture", dry_run=ctx.dry_run)
    config_spec = CaptureSpec.from_settings(DrSettings.from_config(ctx.config))
    note = None
    if spec is None:
        spec, note = spec_for_run(config_spec)
    boot, warnings = usable_boot_dirs(spec.boot_dirs, spec.fstab)
    out.warnings += warnings
    try:
        gathered = gather(ctx.config, dataclasses.replace(spec, boot_dirs=boot), ctx.now)
    except UnsupportedLayout as exc:
        if force:
            out.fail("dr", exc)
        else:  # `run`: a layout the capture cannot record is said every time, but is no failure of the run
            out.warnings.append(f"dr: {exc}")
        return out
    except SubvaultError as exc:
        out.fail("dr", exc)
        return out
    out.warnings += [f"dr: {line}" for line in gathered.left_out]
    gathered.files[OPTIONS_FILE] = options_file(spec, config_spec)
    m = gathered.manifest
    if m.dr_subvolume is None:
        out.warnings.append(f"{spec.dest} is in no configured subvolume, so the capture does not travel to any target")
    summary = f"{len(m.disks)} disk(s), {len(m.filesystems)} filesystem(s), {len(m.boot_dirs)} boot dir(s), {m.firmware}"
    if note:
        summary += f"; {note}"
    if not force and stored_fingerprint(spec.dest) == m.fingerprint:
        out.items.append(Item("dr", "unchanged", f"layout as captured ({summary})", {"fingerprint": m.fingerprint}))
        return out
    if ctx.dry_run:
        out.items.append(Item("dr", "would-capture", f"{spec.dest} ({summary})", {"fingerprint": m.fingerprint}))
        return out
    try:
        here = store(gathered, spec.dest)
    except (SubvaultError, OSError) as exc:
        out.fail("dr", exc if isinstance(exc, SubvaultError) else SubvaultError(f"storing the capture: {exc}"))
        return out
    out.items.append(Item("dr", "captured", f"{here} ({summary})", {"path": str(here), "fingerprint": m.fingerprint}))
    return out


def capture_if_changed(ctx: Context, spec: CaptureSpec | None = None) -> Outcome:
    """For `run`: capture only when the layout's fingerprint differs from the stored capture's."""
    return capture(ctx, spec, force=False)
