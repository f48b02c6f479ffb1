"""A captured homelab machine as a value, shared by the dr unit tests (no tests here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from subvault.demo.testbed import EXCLUDED, PROTECTED
from subvault.dr import manifest as M
from subvault.dr.parse import GPT_ESP, Partition, PartitionTable, parse_fstab
from subvault.dr.plan import Choice, DiskFacts

NOW = datetime(2026, 11, 26, 3, 30, tzinfo=UTC)
FS = "11111111-2222-3333-4444-555555555555"
ESP = "1A2B-3C4D"
LINUX = "0FC63DAF-8483-4772-8E79-3D69E4F7C709"
DISK_BYTES = 20 << 30

FSTAB = f"""# /etc/fstab
UUID={FS} /                       btrfs subvol=root,compress=zstd:1 0 0
UUID={ESP} /boot/efi              vfat  umask=0077,shortname=winnt 0 2
UUID={FS} /var                    btrfs subvol=var 0 0
UUID={FS} /var/lib/pvc            btrfs subvol=var_lib_pvc 0 0
UUID={FS} /var/cache              btrfs subvol=var_cache 0 0
tmpfs     /tmp                    tmpfs defaults 0 0
"""


def table() -> PartitionTable:
    return PartitionTable(
        label="gpt", id="B0E2CFC7-2165-D743-BC58-D6B88E1ABE03", sector_size=512, first_lba=2048, last_lba=41943006,
        partitions=(
            Partition(1, 2048, 409600, GPT_ESP, "974387C8-6EB5-7E4E-A96D-C493794907B3", "EFI System"),
            Partition(2, 411648, 41531359, LINUX, "AE185106-EC1A-0049-A83A-AE4D6B622F83", "root"),
        ),
    )


def sample_manifest(*, firmware: str = "uefi", selinux: bool = True) -> M.Manifest:
    names = PROTECTED + list(EXCLUDED) + ["root/.snapshots", "var_lib_pvc/.snapshots"]
    subs = tuple(M.SubvolRecord(n, f"uuid-{n}", 256 + i) for i, n in enumerate(sorted(names)))
    return M.Manifest(
        format=M.FORMAT, version=M.VERSION, host="vps1", captured_at=NOW, firmware=firmware, selinux=selinux,
        disks=(M.DiskRecord("vda", "/dev/vda", DISK_BYTES, "disks/vda.sfdisk", "disks/vda.json", table()),),
        filesystems=(
            M.FsRecord("vda", 1, "vfat", ESP, "ESP", version="FAT32"),
            M.FsRecord("vda", 2, "btrfs", FS, "fedora", "sub-uuid"),
        ),
        btrfs=(M.BtrfsRecord(FS, "root", subs),),
        protected=tuple(M.ProtectedRecord(n, f"/{n}", FS, n, f"uuid-{n}") for n in PROTECTED),
        boot_dirs=(
            M.BootDirRecord("/boot", FS, "btrfs", "root/boot", "boot/boot.tar"),
            M.BootDirRecord("/boot/efi", ESP, "vfat", "", "boot/boot_efi.tar"),
        ),
        fingerprint="f" * 64, dr_subvolume="var", dr_relpath="lib/subvault/dr",
    )


def choices(age: timedelta = timedelta(hours=2)) -> dict[str, Choice]:
    t = NOW - age
    return {n: Choice(n, f"{n}.{t:%Y%m%dT%H%M%SZ}", t, f"uuid-{n}") for n in PROTECTED}


def disk(size: int = DISK_BYTES, in_use: str | None = None) -> DiskFacts:
    return DiskFacts("/dev/sdb", size, in_use)


def fstab():
    return parse_fstab(FSTAB)
