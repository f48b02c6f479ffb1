"""The restore planner (subvault.dr.plan): refusals before any write, order, and the boot steps."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_dr_sample import DISK_BYTES, FS, choices, disk, fstab, sample_manifest

from subvault.demo.testbed import EXCLUDED, PROTECTED
from subvault.dr.plan import (
    DiskFacts,
    DiskInUse,
    DiskTooSmall,
    NoRestorePoint,
    NotConfirmed,
    plan_restore,
    render_plan,
    require_confirmation,
    root_location,
)
from subvault.errors import EXIT_USAGE, UsageError


def plan(**kw):
    m = kw.pop("manifest", None) or sample_manifest()
    return plan_restore(m, kw.pop("facts", [disk()]), kw.pop("choices", choices()), fstab(), source="pi", **kw)


def test_refuses_a_disk_smaller_than_the_original():
    with pytest.raises(DiskTooSmall, match="smaller than the original /dev/vda"):
        plan(facts=[disk(DISK_BYTES - 512)])


def test_a_larger_disk_is_fine():
    assert plan(facts=[disk(DISK_BYTES * 2)]).disks == {"vda": "/dev/sdb"}


def test_refuses_a_disk_in_use():
    with pytest.raises(DiskInUse, match="mounted at /mnt"):
        plan(facts=[disk(in_use="mounted at /mnt")])


def test_refuses_when_the_number_of_disks_differs():
    with pytest.raises(UsageError, match="give one --disk for each"):
        plan(facts=[disk(), DiskFacts("/dev/sdc", DISK_BYTES)])


def test_refuses_when_a_protected_subvolume_has_no_restore_point():
    c = choices()
    del c["var_lib_pvc"]
    with pytest.raises(NoRestorePoint, match="var_lib_pvc"):
        plan(choices=c)


def test_confirmation_required_when_not_interactive():
    with pytest.raises(NotConfirmed) as err:
        require_confirmation(yes=False, interactive=False)
    assert err.value.exit_code == EXIT_USAGE
    require_confirmation(yes=True, interactive=False)
    require_confirmation(yes=False, interactive=True)


def test_steps_in_order_partition_mkfs_subvolumes_default_boot():
    kinds = [s.kind for s in plan().steps]
    first = {k: kinds.index(k) for k in dict.fromkeys(kinds)}
    assert first["partition"] < first["mkfs"] < first["receive"] < first["set-default"] < first["boot-files"] < first["bootloader"] < first["autorelabel"]


def test_filesystems_get_their_original_uuids():
    mk = {s.args["type"]: s.args for s in plan().of_kind("mkfs")}
    assert mk["btrfs"]["uuid"] == FS and mk["vfat"]["uuid"] == "1A2B-3C4D" and mk["vfat"]["version"] == "FAT32"


def test_protected_are_received_then_snapshotted_writable_others_created_empty():
    p = plan()
    received = [s.subject for s in p.of_kind("receive")]
    assert sorted(received) == sorted(PROTECTED)
    assert sorted(s.subject for s in p.of_kind("snapshot")) == sorted(PROTECTED)
    created = {s.subject for s in p.of_kind("create")}
    assert set(EXCLUDED) | {"root/.snapshots", "var_lib_pvc/.snapshots"} == created
    order = [s.args.get("path") for s in p.steps if s.kind in ("snapshot", "create")]
    assert order.index("root") < order.index("root/.snapshots")


def test_receive_carries_the_original_snapshot_uuid():
    step = next(s for s in plan().of_kind("receive") if s.subject == "var_lib_pvc")
    assert step.args["received_uuid"] == "uuid-var_lib_pvc" and step.args["entry"].startswith("var_lib_pvc.")


def test_default_subvolume_is_set():
    (step,) = plan().of_kind("set-default")
    assert step.args == {"fs_uuid": FS, "path": "root"}


def test_uefi_gets_esp_files_and_no_grub_install():
    p = plan()
    assert {s.subject for s in p.of_kind("boot-files")} == {"/boot", "/boot/efi"}
    (boot,) = p.of_kind("bootloader")
    assert boot.subject == "uefi" and boot.args["skip"] == "1"


def test_bios_gets_grub_install_in_a_chroot_of_the_root():
    (boot,) = plan(manifest=sample_manifest(firmware="bios")).of_kind("bootloader")
    assert boot.subject == "grub" and boot.args["disk"] == "/dev/sdb" and boot.args["path"] == "root" and not boot.args["skip"]


def test_a_drill_never_installs_a_bootloader():
    (boot,) = plan(manifest=sample_manifest(firmware="bios"), drill=True).of_kind("bootloader")
    assert boot.args["skip"] == "1" and "skipped in a drill" in boot.reason


def test_bios_boot_sectors_as_captured_are_written_back_in_a_restore_and_a_drill():
    m = sample_manifest(firmware="bios")
    m = replace(m, disks=(replace(m.disks[0], boot_code="disks/vda.bootcode", boot_core="disks/vda.bootcore", boot_core_offset=1 << 20),))
    for drill in (False, True):
        steps = plan(manifest=m, drill=drill).steps
        (sectors,) = [s for s in steps if s.kind == "boot-sectors"]
        assert sectors.args == {"disk": "/dev/sdb", "code": "disks/vda.bootcode", "core": "disks/vda.bootcore", "offset": str(1 << 20)}
        assert [s.kind for s in steps].index("boot-sectors") < [s.kind for s in steps].index("bootloader")  # grub-install may redo it
    assert plan(manifest=sample_manifest(firmware="bios")).of_kind("boot-sectors") == []  # none captured: nothing written
    uefi = sample_manifest()
    assert plan(manifest=replace(uefi, disks=(replace(uefi.disks[0], boot_code="disks/vda.bootcode"),))).of_kind("boot-sectors") == []


def test_autorelabel_only_when_selinux_was_enabled():
    assert [s.args for s in plan().of_kind("autorelabel")] == [{"fs_uuid": FS, "path": "root"}]
    assert plan(manifest=sample_manifest(selinux=False)).of_kind("autorelabel") == []


def test_root_location_without_subvol_falls_back_to_the_default_subvolume():
    from subvault.dr.parse import parse_fstab

    assert root_location(sample_manifest(), parse_fstab(f"UUID={FS} / btrfs defaults 0 0\n")) == (FS, "root")


def test_unsupported_filesystem_is_a_warning_not_a_step():
    m = sample_manifest()
    m = replace(m, filesystems=m.filesystems + (replace(m.filesystems[0], partition=3, type="zfs_member", uuid="x"),))
    p = plan(manifest=m)
    assert any("zfs_member is not recreated" in w for w in p.warnings)
    assert all(s.args.get("type") != "zfs_member" for s in p.of_kind("mkfs"))


def test_every_step_has_a_reason_and_renders():
    p = plan()
    assert all(s.reason for s in p.steps)
    text = "\n".join(render_plan(p))
    assert "why:" in text and "partition" in text


def _with_data_disk(m, *, first: bool = False):
    """m plus a whole, unpartitioned data disk holding a second btrfs (listed first when first)."""
    from subvault.dr import manifest as M
    from subvault.dr.parse import WHOLE_DISK, no_table

    data = M.DiskRecord("vdb", "/dev/vdb", DISK_BYTES, "", "", no_table())
    fs = M.FsRecord("vdb", WHOLE_DISK, "btrfs", "data-fs", "data")
    disks = (data, *m.disks) if first else (*m.disks, data)
    return replace(m, disks=disks, filesystems=m.filesystems + (fs,), btrfs=m.btrfs + (M.BtrfsRecord("data-fs", "", ()),))


def test_whole_disk_gets_no_partition_table_and_its_filesystem_at_byte_0():
    p = plan(manifest=_with_data_disk(sample_manifest()), facts=[disk(), DiskFacts("/dev/sdc", DISK_BYTES)])
    whole = [s for s in p.of_kind("partition") if s.subject == "vdb"]
    assert len(whole) == 1 and whole[0].args["whole"] == "1" and "no partition table" in whole[0].detail
    assert [s.args["partition"] for s in p.of_kind("mkfs") if s.args["uuid"] == "data-fs"] == ["0"]
    assert not p.warnings


def test_bios_grub_goes_on_the_disk_holding_the_root_not_the_first_disk():
    m = _with_data_disk(sample_manifest(firmware="bios"), first=True)
    (boot,) = plan(manifest=m, facts=[DiskFacts("/dev/sdc", DISK_BYTES), disk()]).of_kind("bootloader")
    assert boot.args["disk"] == "/dev/sdb" and not boot.args["skip"]


def test_bios_without_the_root_in_the_capture_installs_nothing_and_says_so():
    from subvault.dr.parse import parse_fstab

    m = sample_manifest(firmware="bios", selinux=False)
    p = plan_restore(m, [disk()], choices(), parse_fstab("/dev/md0 / ext4 defaults 0 0\n"), source="pi")
    (boot,) = p.of_kind("bootloader")
    assert boot.args["skip"] == "1" and any("no bootloader is installed" in w for w in p.warnings)
    drill = plan_restore(m, [disk()], choices(), parse_fstab("/dev/md0 / ext4 defaults 0 0\n"), source="pi", drill=True)
    assert not drill.warnings  # a drill never installs one: nothing to warn about
