"""The boot step's pure parts: boot entries, the console verdict, the QEMU command line, the drill record."""

from __future__ import annotations

import re
from datetime import UTC, datetime

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
    from datetime import timedelta

    from subvault.plan.freshness import plan_drill

    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert "no successful booted recovery drill" in plan_drill(None, now, booted=True)[0].message
    stale = plan_drill(now - timedelta(days=40), now, timedelta(days=30), booted=True)[0].message
    assert "booted recovery drill" in stale and "subvault drill --boot" in stale
    assert plan_drill(now - timedelta(days=1), now, timedelta(days=30), booted=True) == []
