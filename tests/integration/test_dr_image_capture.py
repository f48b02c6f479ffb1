"""Capture of disks and the partition step, on image files with the real tools (no loop device, no root)."""

from __future__ import annotations

import shutil

import pytest

from subvault import process
from subvault.dr.gather import gather_disks
from subvault.dr.parse import parse_blkid_export, parse_sfdisk_dump, render_sfdisk_script, vfat_volume_id

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("sfdisk", "blkid", "mkfs.vfat", "mkfs.btrfs")), reason="needs sfdisk, blkid, mkfs.vfat, mkfs.btrfs"
)
ESP_UUID, FS_UUID = "1A2B-3C4D", "11111111-2222-3333-4444-555555555555"
SCRIPT = (
    "label: gpt\nunit: sectors\n\n"
    "size=64MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\"\n"
    "type=0FC63DAF-8483-4772-8E79-3D69E4F7C709, name=\"root\"\n"
)


def _dd(src, dst, sector):
    with open(src, "rb") as s, open(dst, "r+b") as d:
        d.seek(sector * 512)
        shutil.copyfileobj(s, d, 1 << 20)


@pytest.fixture
def machine(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    os_truncate(disk, 512 << 20)
    process.run(["sfdisk", "-q", str(disk)], input=SCRIPT)
    t = parse_sfdisk_dump(process.run(["sfdisk", "--dump", str(disk)]).stdout)
    esp, fs = tmp_path / "esp.img", tmp_path / "fs.img"
    os_truncate(esp, t.partitions[0].size * 512)
    os_truncate(fs, t.partitions[1].size * 512)
    process.run(["mkfs.vfat", "-F", "32", "-i", vfat_volume_id(ESP_UUID), "-n", "ESP", str(esp)])
    process.run(["mkfs.btrfs", "-q", "-f", "-U", FS_UUID, "-L", "fedora", str(fs)], env={"BLKID_FILE": "/dev/null"})
    _dd(esp, disk, t.partitions[0].start)
    _dd(fs, disk, t.partitions[1].start)
    return disk


def os_truncate(path, size):
    with open(path, "ab") as fh:
        fh.truncate(size)


def test_capture_finds_the_filesystems_on_each_partition(machine):
    files: dict[str, bytes] = {}
    (disk,), filesystems, blkid = gather_disks([str(machine)], files)
    assert disk.name == "disk_img" and disk.size_bytes == 512 << 20 and len(disk.table.partitions) == 2
    assert set(files) == {"disks/disk_img.sfdisk", "disks/disk_img.json"}
    got = {(f.partition, f.type, f.uuid, f.label) for f in filesystems}
    assert got == {(1, "vfat", ESP_UUID, "ESP"), (2, "btrfs", FS_UUID, "fedora")}
    assert {p.uuid for p in parse_blkid_export(blkid)} == {ESP_UUID, FS_UUID}
    assert next(f for f in filesystems if f.type == "vfat").version == "FAT32"


def test_the_rendered_script_recreates_the_table_with_its_ids(machine, tmp_path):
    original = parse_sfdisk_dump(process.run(["sfdisk", "--dump", str(machine)]).stdout)
    blank = tmp_path / "blank.img"
    os_truncate(blank, 1 << 30)  # a larger disk is fine
    process.run(["sfdisk", "-q", "--wipe", "always", str(blank)], input=render_sfdisk_script(original))
    again = parse_sfdisk_dump(process.run(["sfdisk", "--dump", str(blank)]).stdout)
    assert again.id == original.id and again.partitions == original.partitions
