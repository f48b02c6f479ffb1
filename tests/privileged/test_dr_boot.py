"""The drill boots the restored machine (issue 17): a tiny bootable machine (Debian's kernel,
an initramfs built here, a busybox init) is captured, replicated, wiped, and drilled with
--boot. The boot must reach its milestone and answer its probes; each way a restored disk
passes every pre-boot check yet cannot start must fail the boot with the right reason.

Needs root, loop devices, QEMU (qemu-system-x86), busybox-static and apt (the kernel
package is fetched once into SUBVAULT_KERNEL_CACHE). Every loop device and mount made
here is undone in `finally`, pass or fail.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import struct
from pathlib import Path

import pytest
from conftest import run_cli

from subvault import process
from subvault.demo import tinyos
from subvault.demo.machine import Machine, machine_config

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU is not installed (apt-get install qemu-system-x86)")



@pytest.fixture
def machine(tmp_path):
    m = Machine(tmp_path, bootable=True)
    try:
        yield m.build()
    finally:
        m.close()


def _prepare(machine, make_fs, tmp_path, spoil=None, capture_args=None):
    """run, capture, (spoil the live machine after its capture), snapshot, replicate, wipe; return (cli, state, capture)."""
    pi = make_fs("pi", size="2G")
    state = tmp_path / "state"
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(machine_config(machine, pi.mountpoint, state))

    def cli(*args, check=True):
        return run_cli("--config", str(cfg), *args, check=check)

    cli("run")
    cli("dr", "capture", *(capture_args or machine.capture_args()))
    if spoil:
        spoil(machine)  # after the capture: the captured layout stays right, the restored root is not
    cli("snapshot", "--force")
    cli("replicate")
    capture = max(pi.mountpoint.glob("*/var/var.*"), key=lambda p: p.name) / "lib" / "subvault" / "dr"
    machine.wipe()
    return cli, state, capture


def _pre_boot_checks(report):
    return [c for c in report["checks"] if c["name"] != "boot" and not c["name"].startswith("probe")]


def test_drill_boot_reaches_the_milestone_and_answers_its_probes(machine, make_fs, tmp_path):
    cli, state, capture = _prepare(machine, make_fs, tmp_path)
    res = cli("drill", "--from", "pi", "--capture", str(capture), "--workdir", str(tmp_path / "drill"), "--boot",
              "--boot-port", str(tinyos.PORT), "--boot-command", "cat /etc/hostname", "--boot-expect", "^vps1$", "--json", check=False)
    report = json.loads(res.stdout)["result"]
    boot = report["boot"]
    assert res.returncode == 0 and report["ok"], (report["checks"], boot and boot["console_tail"])
    assert boot["ok"] and boot["method"] == "direct" and boot["accelerator"] in ("kvm", "tcg")
    assert "Multi-User System" in boot["milestone"] and boot["seconds"] > 0
    # why not firmware: the tiny machine's ESP has no removable loader
    assert boot["firmware_not_proven"].startswith("UEFI firmware boot not proven: the restored ESP has no EFI/BOOT/BOOTX64.EFI")
    probes = {p["name"]: p for p in boot["probes"]}
    assert probes[f"probe tcp/{tinyos.PORT}"]["ok"]
    assert probes["probe command 'cat /etc/hostname'"]["ok"] and probes["probe command 'cat /etc/hostname'"]["detail"] == "vps1"
    log = Path(boot["log"])
    assert log.parent == state / "drill-logs" and log.name.startswith(report["id"]) and "Reached target Multi-User System" in log.read_text(errors="replace")
    assert report["rto_seconds"] >= boot["seconds"]
    print(f"\nbooted drill: RTO {report['rto_seconds']:.1f}s, boot {boot['method']} on {boot['accelerator']} {boot['seconds']:.1f}s to the milestone")
    text = cli("check", check=False).stdout
    assert "booted the machine (direct on" in text


def _bogus_fstab_uuid(m):
    with open(m.fstab, "a") as fh:
        fh.write("UUID=0badc0de-0000-4000-8000-000000000000 /srv btrfs subvol=srv 0 0\n")


def _missing_rootflags_subvol(m):
    entry = next((m.paths["root"] / "boot" / "loader" / "entries").glob("*.conf"))
    entry.write_text(entry.read_text().replace("rootflags=subvol=root", "rootflags=subvol=oldroot"))


def _initramfs_without_btrfs(m):
    initrd = next((m.paths["root"] / "boot").glob("initrd.img-*"))
    tinyos.build_initramfs(initrd, with_btrfs=False)


@pytest.mark.parametrize("spoil, reason", [
    (_bogus_fstab_uuid, "Failed to mount /srv"),
    (_missing_rootflags_subvol, "initramfs emergency shell"),
    (_initramfs_without_btrfs, "initramfs emergency shell"),
], ids=["fstab-names-a-missing-uuid", "rootflags-subvol-missing", "initramfs-lacks-btrfs"])
def test_a_machine_that_cannot_start_fails_the_boot_with_its_reason(machine, make_fs, tmp_path, spoil, reason):
    cli, _, capture = _prepare(machine, make_fs, tmp_path, spoil)
    res = cli("drill", "--from", "pi", "--capture", str(capture), "--workdir", str(tmp_path / "drill"), "--boot",
              "--boot-timeout", "120", "--json", check=False)
    report = json.loads(res.stdout)["result"]
    assert res.returncode == 1 and not report["ok"]
    assert all(c["ok"] for c in _pre_boot_checks(report)), _pre_boot_checks(report)
    assert not report["boot"]["ok"] and report["boot"]["reason"].startswith(reason), report["boot"]
    assert report["boot"]["console_tail"] and len(report["boot"]["console_tail"]) <= 40
    text = cli("drill", "--from", "pi", "--capture", str(capture), "--workdir", str(tmp_path / "drill2"), "--boot",
               "--boot-timeout", "120", check=False).stdout
    assert "boot: direct" in text and "last " in text and "console lines" in text


LOOP_SET_STATUS64, LOOP_GET_STATUS64 = 0x4C04, 0x4C05


def _grow_btrfs_past_its_partition(done):
    """A restore that made the filesystem larger than its partition: lift the loop's size limit, grow btrfs to the image's end."""
    for (_, number), dev in done.devices.items():
        if number != 2:
            continue
        with open(dev, "rb") as fh:
            info = bytearray(fcntl.ioctl(fh, LOOP_GET_STATUS64, bytes(232)))
            struct.pack_into("Q", info, 32, 0)  # lo_sizelimit: none, to the end of the image
            fcntl.ioctl(fh, LOOP_SET_STATUS64, bytes(info))
        top = next(iter(done.tops.values()))
        process.run(["btrfs", "filesystem", "resize", "max", str(top)])


def test_a_filesystem_larger_than_its_partition_fails_the_boot(machine, make_fs, tmp_path):
    from subvault.config.load import parse_config
    from subvault.context import Context
    from subvault.dr.drill import DrillRequest, drill

    _prepare(machine, make_fs, tmp_path)
    capture = max((tmp_path / "pi").glob("*/var/var.*"), key=lambda p: p.name) / "lib" / "subvault" / "dr"
    config = parse_config((tmp_path / "subvault.toml").read_text())
    report = drill(Context(config), DrillRequest("pi", capture=str(capture), workdir=str(tmp_path / "drill"), boot=True,
                                                 boot_timeout=120, after_restore=_grow_btrfs_past_its_partition))
    data = report.to_json()
    assert not report.ok
    assert all(c["ok"] for c in _pre_boot_checks(data)), _pre_boot_checks(data)
    assert data["boot"]["reason"].startswith("initramfs emergency shell"), data["boot"]
    assert "total_bytes" in data["boot"]["reason"] or "total_bytes" in "\n".join(data["boot"]["console_tail"]), data["boot"]


def test_drill_boots_through_the_restored_bootloader_with_ovmf(tmp_path, make_fs):
    """Firmware way: OVMF starts the restored ESP's GRUB (EFI/BOOT/BOOTX64.EFI), which loads the kernel from btrfs."""
    if shutil.which("grub-mkstandalone") is None or not Path("/usr/share/OVMF").is_dir():
        pytest.skip("needs grub-efi-amd64-bin and ovmf")
    m = Machine(tmp_path, bootable=True, firmware_boot=True)
    try:
        m.build()
        cli, _, capture = _prepare(m, make_fs, tmp_path)
        res = cli("drill", "--from", "pi", "--capture", str(capture), "--workdir", str(tmp_path / "drill"), "--boot",
                  "--boot-timeout", "240", "--json", check=False)
    finally:
        m.close()
    report = json.loads(res.stdout)["result"]
    boot = report["boot"]
    assert report["ok"] and boot["ok"], (report["checks"], boot and boot["console_tail"])
    assert boot["method"] == "firmware" and "OVMF" in boot["note"] and boot["firmware_not_proven"] is None
    print(f"\nfirmware drill: RTO {report['rto_seconds']:.1f}s, boot {boot['method']} on {boot['accelerator']} {boot['seconds']:.1f}s to the milestone")


def test_a_bios_drill_without_boot_code_boots_direct_and_says_why_seabios_is_not_proven(tmp_path, make_fs):
    """BIOS way, no boot code: the machine's MBR holds none, so neither its capture nor the restored image does and
    SeaBIOS has nothing to start: the drill boots direct and its report says the firmware way is not proven."""
    m = Machine(tmp_path, bootable=True)
    try:
        m.build()
        cli, _, capture = _prepare(m, make_fs, tmp_path, capture_args=[*m.capture_args()[:-1], "bios"])
        res = cli("drill", "--from", "pi", "--capture", str(capture), "--workdir", str(tmp_path / "drill"), "--boot",
                  "--boot-timeout", "240", "--json", check=False)
        text = cli("drill", "--from", "pi", "--capture", str(capture), "--workdir", str(tmp_path / "drill2"), "--boot",
                   "--boot-timeout", "240", check=False).stdout
    finally:
        m.close()
    report = json.loads(res.stdout)["result"]
    boot = report["boot"]
    assert report["ok"] and boot["ok"] and boot["method"] == "direct", (report["checks"], boot and boot["console_tail"])
    assert boot["firmware_not_proven"].startswith("BIOS firmware boot not proven: ") and "grub-install" in boot["firmware_not_proven"]
    assert "firmware: BIOS firmware boot not proven: " in text and "boot: direct" in text, text
    print(f"\nbios drill (direct): boot {boot['seconds']:.1f}s to the milestone")


def test_drill_boots_through_the_restored_boot_sectors_with_seabios(tmp_path, make_fs):
    """BIOS firmware way: the machine's GRUB (boot code in the MBR, core in a BIOS boot partition, modules and
    grub.cfg in root's /boot/grub) is captured and restored; SeaBIOS starts it, and it loads the kernel from btrfs."""
    m = Machine(tmp_path, bootable=True, bios_boot=True)
    try:
        m.build()
        cli, _, capture = _prepare(m, make_fs, tmp_path)
        res = cli("drill", "--from", "pi", "--capture", str(capture), "--workdir", str(tmp_path / "drill"), "--boot",
                  "--boot-timeout", "240", "--json", check=False)
    finally:
        m.close()
    report = json.loads(res.stdout)["result"]
    boot = report["boot"]
    assert report["ok"] and boot["ok"], (report["checks"], boot and boot["console_tail"])
    assert boot["method"] == "firmware" and "SeaBIOS" in boot["note"] and boot["firmware_not_proven"] is None, boot
    [disk] = json.loads((capture / "latest" / "manifest.json").read_text())["disks"]
    assert disk["boot_code"] and disk["boot_core"] and disk["boot_core_offset"] > 0  # GRUB's core from the BIOS boot partition
    print(f"\nSeaBIOS drill: RTO {report['rto_seconds']:.1f}s, boot {boot['method']} on {boot['accelerator']} {boot['seconds']:.1f}s to the milestone")
