"""The boot step's pure parts: boot entries, the console verdict, the QEMU command line, the drill record."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from subvault.dr import qemu
from subvault.dr.boot import DEFAULT_MILESTONE, find_entry, judge, kernel_command_line, parse_bls, parse_grub_cfg
from subvault.dr.state import last_drill_success, last_success_booted, record_drill

MS = re.compile(DEFAULT_MILESTONE)


def test_the_milestone_is_multi_user_or_a_login_prompt():
    assert judge(["[  OK  ] Reached target Multi-User System."], None, MS).ok
    assert judge(["Debian GNU/Linux 12 vps1 ttyS0", "vps1 login: "], None, MS).ok
    assert judge(["Starting kernel ..."], None, MS) is None  # undecided while it runs


def test_a_kernel_panic_names_the_vfs_line():
    v = judge(["x", "VFS: Unable to mount root fs on unknown-block(0,0)", "Kernel panic - not syncing: VFS"], None, MS)
    assert not v.ok and v.reason == "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)"


def test_an_initramfs_shell_names_what_failed_before_it():
    lines = ["tiny initramfs: root=UUID=x", "mount: mounting /dev/vda2 on /newroot failed: No such device",
             "ALERT! UUID=x could not be mounted. Dropping to a shell!"]
    v = judge(lines, None, MS)
    assert not v.ok and v.reason == "initramfs emergency shell: mount: mounting /dev/vda2 on /newroot failed: No such device"


def test_a_failed_mount_then_emergency_mode_names_the_mount():
    v = judge(["[FAILED] Failed to mount var.mount - /var.", "You are in emergency mode. After logging in, ..."], None, MS)
    assert not v.ok and v.reason == "Failed to mount var.mount - /var, emergency mode"


def test_timeout_and_an_early_exit_are_reasons():
    assert judge(["booting"], None, MS, timed_out=True, timeout=300).reason == "timeout: no milestone within 300s"
    assert judge(["booting"], 0, MS).reason.startswith("QEMU stopped (exit 0) before the milestone")


def test_bls_and_grub_entries(tmp_path):
    assert parse_bls("title T\nlinux /vmlinuz-6\ninitrd /initrd-6\noptions root=UUID=a rootflags=subvol=root\n")["options"] == "root=UUID=a rootflags=subvol=root"
    cfg = "menuentry 'Debian' {\n  linux /root/boot/vmlinuz-6 root=UUID=a ro rootflags=subvol=root\n  initrd /root/boot/initrd.img-6\n}\n"
    assert parse_grub_cfg(cfg) == ("/root/boot/vmlinuz-6", "/root/boot/initrd.img-6", "root=UUID=a ro rootflags=subvol=root")
    top = tmp_path / "top"
    (top / "root" / "boot" / "grub").mkdir(parents=True)
    (top / "root" / "boot" / "vmlinuz-6").write_bytes(b"k")
    (top / "root" / "boot" / "initrd.img-6").write_bytes(b"i")
    (top / "root" / "boot" / "grub" / "grub.cfg").write_text(cfg)
    e = find_entry(top / "root", None, top)  # grub paths relative to the top level resolve
    assert e.kernel == top / "root" / "boot" / "vmlinuz-6" and e.initrd == top / "root" / "boot" / "initrd.img-6"
    assert kernel_command_line(e.options).endswith("console=ttyS0,115200 panic=-1")


def test_the_vm_has_no_network_or_only_loopback_forwards():
    base = qemu.VmSpec(disks=["/x.img"], accel="tcg", kernel="/k", initrd="/i", append="root=UUID=a")
    argv = qemu.argv_for(base)
    assert argv[argv.index("-nic") + 1] == "none" and "file=/x.img,format=raw,if=virtio,snapshot=on" in argv
    base.forwards = {40000: 8080}
    nic = qemu.argv_for(base)[qemu.argv_for(base).index("-nic") + 1]
    assert "restrict=on" in nic and "hostfwd=tcp:127.0.0.1:40000-:8080" in nic


def test_the_drill_record_says_whether_the_last_success_booted(tmp_path):
    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    record_drill(tmp_path, {"boot": {"ok": True, "method": "direct", "accelerator": "tcg"}}, ok=True, finished=t1)
    assert last_success_booted(tmp_path) == "direct on tcg"
    record_drill(tmp_path, {"boot": None}, ok=True, finished=t2)
    assert last_success_booted(tmp_path) == ""
    assert last_drill_success(tmp_path) == t2 and last_drill_success(tmp_path, booted=True) == t1


def test_with_boot_required_the_drill_age_names_a_booted_drill():
    from subvault.plan.freshness import plan_drill

    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert "no successful booted recovery drill" in plan_drill(None, now, booted=True)[0].message
    stale = plan_drill(now - timedelta(days=40), now, timedelta(days=30), booted=True)[0].message
    assert "booted recovery drill" in stale and "subvault drill --boot" in stale
    assert plan_drill(now - timedelta(days=1), now, timedelta(days=30), booted=True) == []


def _record(state, day: int, *, ok: bool, booted: bool | None):
    """Record a drill finished on 2026-01-<day>; booted None: it did not try to boot (so no serial log)."""
    from subvault.dr.state import new_boot_log

    boot = None
    if booted is not None:
        log = new_boot_log(state, f"202601{day:02d}T000000Z")
        log.write_text(f"serial console of drill {day}\n")
        boot = {"ok": booted, "method": "direct", "accelerator": "tcg", "log": str(log)}
    record_drill(state, {"id": f"202601{day:02d}T000000Z", "boot": boot}, ok=ok, finished=datetime(2026, 1, day, tzinfo=UTC))
    return Path(boot["log"]) if boot else None


def test_the_serial_log_is_kept_beside_the_report_that_names_it(tmp_path):
    from subvault.dr.state import new_boot_log

    first = _record(tmp_path, 1, ok=True, booted=True)
    second = _record(tmp_path, 2, ok=False, booted=False)
    assert first != second and first.read_text() == "serial console of drill 1\n"  # the next drill never overwrites it
    assert first.name.startswith("20260101T000000Z") and second.name.startswith("20260102T000000Z")
    assert new_boot_log(tmp_path, "20260102T000000Z") != second  # two drills in one second: two logs


def test_serial_logs_are_kept_while_the_drill_record_names_them(tmp_path):
    from subvault.dr.state import boot_logs

    booted = _record(tmp_path, 1, ok=True, booted=True)  # the last booted success: kept until a newer one
    failed = _record(tmp_path, 2, ok=False, booted=False)
    _record(tmp_path, 3, ok=True, booted=None)  # a success without a boot: the booted one's log stays
    assert set(boot_logs(tmp_path)) == {booted}  # the failed drill is neither the last nor a success any more
    assert not failed.exists()
    failed_again = _record(tmp_path, 4, ok=False, booted=False)
    assert set(boot_logs(tmp_path)) == {booted, failed_again}
    newer = _record(tmp_path, 5, ok=True, booted=True)
    assert set(boot_logs(tmp_path)) == {newer}  # bounded: only what the record names
    assert json.loads((tmp_path / "drill.json").read_text())["last_booted_log"] == str(newer)


CHECK_CONFIG = """
[defaults]
state_dir = "{state}"
[[subvolume]]
name = "root"
path = "/"
[[target]]
name = "pi"
type = "btrfs"
url = "/mnt/pi"
keep = "all"
[dr]
boot = {boot}
"""


def _check_drill(state, *, boot: bool, day: int = 10):
    """What `check` says about drills (its drill line, problems, warnings) on day <day> of 2026 with [dr] boot = boot."""
    from subvault.config.load import parse_config
    from subvault.context import Context
    from subvault.run.watch import WatchReport, drill_age

    ctx = Context(parse_config(CHECK_CONFIG.format(state=state, boot=str(boot).lower())))
    ctx.now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day - 1)
    report = WatchReport()
    drill_age(ctx, report)
    return report.drill, [p.message for p in report.problems], report.warnings


def test_check_says_so_when_no_drill_was_ever_run(tmp_path):
    for boot, cmd in ((False, "`subvault drill`"), (True, "`subvault drill --boot`")):
        line, problems, warnings = _check_drill(tmp_path, boot=boot)
        assert line.startswith("no successful drill recorded") and "not proven" in line and cmd in line, line
        assert not problems and warnings  # before any drill succeeded here: a reminder, not a failure


def test_check_says_the_last_drill_did_not_boot_when_boot_is_enabled_later(tmp_path):
    _record(tmp_path, 1, ok=True, booted=None)  # drilled while [dr] boot was false
    line, problems, warnings = _check_drill(tmp_path, boot=True, day=3)
    assert "did not boot the machine" in line and "no booted drill recorded" in line, line
    assert not problems and any("booted recovery drill" in w for w in warnings)
    # [dr] boot = true and still no booted drill a drill_max_age later: a problem, not a reminder forever
    line, problems, _ = _check_drill(tmp_path, boot=True, day=31 + 1)
    assert problems and "subvault drill --boot" in problems[0], problems


def test_check_names_a_failed_boot_after_an_earlier_boot_passed(tmp_path):
    _record(tmp_path, 1, ok=True, booted=True)
    log = _record(tmp_path, 2, ok=False, booted=False)
    line, problems, warnings = _check_drill(tmp_path, boot=True, day=3)
    assert "booted the machine (direct on tcg)" in line, line
    assert "the last drill, 1d ago, FAILED" in line and str(log) in line, line
    assert not problems  # the booted success is within drill_max_age
    assert any("last drill" in w and "FAILED" in w for w in warnings), warnings
    _, problems, _ = _check_drill(tmp_path, boot=True, day=1 + 31)
    assert problems and "booted recovery drill" in problems[0]  # drill_max_age counts the last booted success


def test_check_with_boot_off_still_says_whether_the_last_success_booted(tmp_path):
    _record(tmp_path, 1, ok=True, booted=True)
    line, problems, _ = _check_drill(tmp_path, boot=False, day=2)
    assert line.startswith("last successful drill 1d ago, booted the machine (direct on tcg)") and not problems, line
    _record(tmp_path, 2, ok=True, booted=None)
    line, _, _ = _check_drill(tmp_path, boot=False, day=3)
    assert "did not boot the machine" in line and "last booted 2d ago" in line, line


def test_a_bios_drill_says_why_firmware_boot_is_not_proven():
    from subvault.dr.boot import firmware_possible

    ok, why = firmware_possible("bios", esp_has_removable=False, mbr_has_code=False)
    assert not ok and why.startswith("BIOS firmware boot not proven: ") and "grub-install" in why and "direct" not in why
    ok, why = firmware_possible("uefi", esp_has_removable=False, mbr_has_code=False)
    assert not ok and why.startswith("UEFI firmware boot not proven: ") and "EFI/BOOT/BOOTX64.EFI" in why
