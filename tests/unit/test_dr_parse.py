"""Parsers of sfdisk, blkid, findmnt and fstab output (real outputs of util-linux 2.38)."""

from __future__ import annotations

import pytest

from subvault.dr.parse import (
    GPT_ESP,
    parse_blkid_export,
    parse_findmnt_json,
    parse_fstab,
    parse_sfdisk_dump,
    parse_sfdisk_json,
    render_sfdisk_script,
    vfat_volume_id,
)

GPT_DUMP = """label: gpt
label-id: B0E2CFC7-2165-D743-BC58-D6B88E1ABE03
device: disk.img
unit: sectors
first-lba: 2048
last-lba: 4194270
sector-size: 512

disk.img1 : start=        2048, size=      409600, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=974387C8-6EB5-7E4E-A96D-C493794907B3, name="EFI System"
disk.img2 : start=      411648, size=        2048, type=21686148-6449-6E6F-744E-656564454649, uuid=AEBF5F78-9A90-9044-AAC6-7442F45D96F5, name="bios, boot"
disk.img3 : start=      413696, size=     3778560, type=0FC63DAF-8483-4772-8E79-3D69E4F7C709, uuid=AE185106-EC1A-0049-A83A-AE4D6B622F83, name="root"
"""

GPT_JSON = """{
   "partitiontable": {
      "label": "gpt", "id": "B0E2CFC7-2165-D743-BC58-D6B88E1ABE03", "device": "disk.img", "unit": "sectors",
      "firstlba": 2048, "lastlba": 4194270, "sectorsize": 512,
      "partitions": [
         {"node": "disk.img1", "start": 2048, "size": 409600, "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
          "uuid": "974387C8-6EB5-7E4E-A96D-C493794907B3", "name": "EFI System"},
         {"node": "disk.img2", "start": 411648, "size": 2048, "type": "21686148-6449-6E6F-744E-656564454649",
          "uuid": "AEBF5F78-9A90-9044-AAC6-7442F45D96F5", "name": "bios, boot"},
         {"node": "disk.img3", "start": 413696, "size": 3778560, "type": "0FC63DAF-8483-4772-8E79-3D69E4F7C709",
          "uuid": "AE185106-EC1A-0049-A83A-AE4D6B622F83", "name": "root"}
      ]
   }
}"""

DOS_DUMP = """label: dos
label-id: 0xe549fbea
device: m.img
unit: sectors
sector-size: 512

m.img1 : start=        2048, size=      102400, type=83, bootable
m.img2 : start=      104448, size=      100352, type=83
"""


def test_sfdisk_dump_gpt():
    t = parse_sfdisk_dump(GPT_DUMP)
    assert (t.label, t.id, t.sector_size, t.first_lba, t.last_lba) == ("gpt", "B0E2CFC7-2165-D743-BC58-D6B88E1ABE03", 512, 2048, 4194270)
    assert [p.number for p in t.partitions] == [1, 2, 3]
    assert t.partitions[0].type == GPT_ESP and t.partitions[0].name == "EFI System"
    assert t.partitions[1].name == "bios, boot"  # a comma inside quotes
    assert t.partition(3).end == 413696 + 3778560


def test_sfdisk_dump_and_json_agree():
    assert parse_sfdisk_dump(GPT_DUMP).partitions == parse_sfdisk_json(GPT_JSON).partitions


def test_sfdisk_dump_dos_with_bootable_flag():
    t = parse_sfdisk_dump(DOS_DUMP)
    assert t.label == "dos" and t.id == "0xe549fbea"
    assert t.partitions[0].bootable and not t.partitions[1].bootable
    assert t.required_bytes() == (104448 + 100352) * 512


def test_gpt_needs_room_for_the_backup_header():
    assert parse_sfdisk_dump(GPT_DUMP).required_bytes() == (413696 + 3778560 + 33) * 512


def test_rendered_script_parses_back_to_the_same_partitions():
    t = parse_sfdisk_dump(GPT_DUMP)
    script = render_sfdisk_script(t)
    assert "device:" not in script and "last-lba" not in script
    back = parse_sfdisk_dump(script)
    assert back.partitions == t.partitions and back.id == t.id


@pytest.mark.parametrize("bad", ["", "nonsense\n", "label: gpt\nsda1 : size=10\n"])
def test_sfdisk_dump_rejects_garbage(bad):
    with pytest.raises(ValueError):
        parse_sfdisk_dump(bad)


def test_sfdisk_json_rejects_garbage():
    with pytest.raises(ValueError, match="partitiontable"):
        parse_sfdisk_json('{"x": 1}')


def test_blkid_export_blocks():
    text = (
        "DEVNAME=/dev/vda1\nSEC_TYPE=msdos\nLABEL_FATBOOT=ESP\nLABEL=ESP\nUUID=1A2B-3C4D\nBLOCK_SIZE=512\nTYPE=vfat\n\n"
        "DEVNAME=/dev/vda2\nLABEL=my\\ disk\nUUID=11111111-2222-3333-4444-555555555555\nUUID_SUB=9054\nTYPE=btrfs\n"
    )
    a, b = parse_blkid_export(text)
    assert (a.devname, a.type, a.uuid, a.label) == ("/dev/vda1", "vfat", "1A2B-3C4D", "ESP")
    assert (b.type, b.label, b.fields["UUID_SUB"]) == ("btrfs", "my disk", "9054")


def test_blkid_export_without_devname():
    (p,) = parse_blkid_export("UUID=x\nTYPE=ext4\nUSAGE=filesystem\n")
    assert p.devname == "" and p.type == "ext4"


def test_blkid_export_rejects_garbage():
    with pytest.raises(ValueError):
        parse_blkid_export("this is not blkid\n")


def test_findmnt_tree_is_flattened_in_order():
    text = """{"filesystems": [{"target": "/", "source": "/dev/vda2[/root]", "fstype": "btrfs",
      "options": "rw,relatime,subvol=/root", "uuid": "U", "fsroot": "/root",
      "children": [{"target": "/boot/efi", "source": "/dev/vda1", "fstype": "vfat", "options": "rw", "uuid": "1A2B-3C4D", "fsroot": "/"},
                   {"target": "/var", "source": "/dev/vda2[/var]", "fstype": "btrfs", "options": "rw,subvol=/var", "uuid": "U", "fsroot": "/var",
                    "children": [{"target": "/var/lib/pvc", "source": "/dev/vda2[/var_lib_pvc]", "fstype": "btrfs", "options": "subvol=/var_lib_pvc", "uuid": "U"}]}]}]}"""
    mounts = parse_findmnt_json(text)
    assert [m.target for m in mounts] == ["/", "/boot/efi", "/var", "/var/lib/pvc"]
    assert mounts[0].subvol == "root" and mounts[0].fsroot == "/root" and mounts[3].fsroot == "/"


def test_fstab():
    text = "# comment\n\nUUID=abc / btrfs subvol=root,compress=zstd 0 0\n/dev/disk/by-uuid/1A2B-3C4D /boot/efi vfat umask=0077 0 2\nLABEL=x /mnt/with\\040space ext4\n"
    a, b, c = parse_fstab(text)
    assert (a.uuid, a.file, a.subvol, a.passno) == ("abc", "/", "root", 0)
    assert b.uuid == "1A2B-3C4D" and b.passno == 2
    assert c.uuid is None and c.file == "/mnt/with space" and c.options == "defaults"


def test_fstab_rejects_short_lines():
    with pytest.raises(ValueError, match="at least 3"):
        parse_fstab("UUID=abc /\n")


def test_vfat_volume_id_drops_the_dash():
    assert vfat_volume_id("1a2b-3c4d") == "1A2B3C4D"
