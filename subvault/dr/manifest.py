"""The capture format: a versioned JSON manifest beside the raw files it was made from.

On disk (all readable with standard tools; invariant 10):

    <capture_dir>/latest -> captures/<UTC stamp>        (symlink, replaced atomically)
    <capture_dir>/captures/<UTC stamp>/
        manifest.json            this module's Manifest, written last
        disks/<name>.sfdisk      `sfdisk --dump` (feed it to `sfdisk DISK` by hand)
        disks/<name>.json        `sfdisk --json`
        blkid.export             `blkid -p -o export` of every partition
        findmnt.json             `findmnt -J` (the mount layout)
        fstab                    the machine's fstab
        boot/<slug>.tar          /boot, /boot/efi (tar with xattrs and ACLs)
        disks/<name>.bootcode    BIOS: the disk's first 440 bytes (`dd of=DISK bs=440 count=1 conv=notrunc`)
        disks/<name>.bootcore    BIOS: GRUB's core (a BIOS boot partition, or the gap after the MBR), at the
                                 manifest's boot_core_offset (`dd of=DISK bs=512 seek=OFFSET/512 conv=notrunc`)

Write ordering: raw files first, the manifest (with each file's sha256) last, the
`latest` link after that. A crash leaves an unlinked directory; readers follow `latest`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import msgspec

from subvault.dr.parse import PartitionTable
from subvault.errors import NotFound, SubvaultError

FORMAT = "subvault-dr"
VERSION = 1
MANIFEST = "manifest.json"
LATEST = "latest"


class CaptureInvalid(SubvaultError):
    """A capture is missing, from a newer subvault, or its files do not match the manifest."""


@dataclass(frozen=True)
class DiskRecord:
    name: str  # short name, used in file names and --disk pairing order
    device: str  # the original path (/dev/vda)
    size_bytes: int
    dump_file: str
    json_file: str
    table: PartitionTable
    # BIOS: the disk's boot code (its first 440 bytes) and the area that code loads GRUB's core from (a BIOS boot
    # partition, or the gap after the MBR), as captured; "" when there is none. Written back by the restore.
    boot_code: str = ""
    boot_core: str = ""
    boot_core_offset: int = 0  # bytes from the disk's start


@dataclass(frozen=True)
class FsRecord:
    """A filesystem found on a partition."""

    disk: str
    partition: int
    type: str
    uuid: str | None
    label: str | None = None
    uuid_sub: str | None = None
    version: str | None = None  # blkid VERSION (FAT16/FAT32 matters to mkfs.vfat)


@dataclass(frozen=True)
class SubvolRecord:
    """A writable subvolume of a btrfs filesystem (snapshots are not recorded)."""

    path: str  # relative to the top level
    uuid: str
    id: int


@dataclass(frozen=True)
class BtrfsRecord:
    fs_uuid: str
    default_path: str  # "" for the top level
    subvolumes: tuple[SubvolRecord, ...]


@dataclass(frozen=True)
class ProtectedRecord:
    """A configured subvolume: its name on targets and where it lives."""

    name: str
    mount: str
    fs_uuid: str
    path: str  # relative to the top level
    uuid: str


@dataclass(frozen=True)
class BootDirRecord:
    """A boot directory: the logical path, the filesystem it lives on and where inside it."""

    path: str  # /boot, /boot/efi
    fs_uuid: str | None
    fs_type: str
    dest: str  # relative to that filesystem's top level ("" when it is the root)
    archive: str


@dataclass(frozen=True)
class Manifest:
    format: str
    version: int
    host: str
    captured_at: datetime
    firmware: str  # "uefi" or "bios"
    selinux: bool
    disks: tuple[DiskRecord, ...]
    filesystems: tuple[FsRecord, ...]
    btrfs: tuple[BtrfsRecord, ...]
    protected: tuple[ProtectedRecord, ...]
    boot_dirs: tuple[BootDirRecord, ...]
    fingerprint: str  # of the layout; `run` recaptures when it changes
    dr_subvolume: str | None = None  # configured subvolume holding the capture
    dr_relpath: str | None = None  # the capture dir inside it
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256

    def filesystem(self, uuid: str) -> FsRecord:
        for f in self.filesystems:
            if f.uuid == uuid:
                return f
        raise NotFound(f"the capture has no filesystem with UUID {uuid}")


def encode(manifest: Manifest) -> bytes:
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def decode(data: bytes, origin: str = "manifest") -> Manifest:
    """Given manifest bytes, return the Manifest. Raise CaptureInvalid if it is not one this version reads."""
    try:
        head = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise CaptureInvalid(f"{origin}: not JSON ({exc})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise CaptureInvalid(f"{origin}: not a subvault capture (format is not {FORMAT!r})")
    if int(head.get("version", 0)) > VERSION:
        raise CaptureInvalid(f"{origin}: capture format {head['version']} is newer than this subvault reads ({VERSION}); upgrade subvault")
    try:
        return msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise CaptureInvalid(f"{origin}: malformed capture ({exc})") from None


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_capture(capture_dir: str | Path) -> tuple[Manifest, Path]:
    """Given a capture dir (holding `latest`) or one capture's own dir, return its Manifest and dir.

    Every raw file is checked against its sha256. Raise CaptureInvalid if the capture is
    missing, unreadable, or a file does not match.
    """
    base = Path(capture_dir)
    here = base if (base / MANIFEST).is_file() else base / LATEST
    path = here / MANIFEST
    if not path.is_file():
        raise CaptureInvalid(f"no capture at {base} (no {MANIFEST}); run `subvault dr capture` on the machine first")
    manifest = decode(path.read_bytes(), str(path))
    for rel, digest in manifest.files.items():
        f = here / rel
        if not f.is_file() or sha256_file(f) != digest:
            raise CaptureInvalid(f"capture {here}: {rel} is missing or does not match the manifest; capture again")
    return manifest, here.resolve()
