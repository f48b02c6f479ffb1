"""`subvault demo`: the whole system on throwaway loop filesystems.

It drives the real CLI (a subprocess per step, exactly what a user would type) against
a homelab-layout filesystem on a sparse file, prints each command and its output, and
removes everything afterwards unless --keep.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from subvault import process
from subvault.demo.machine import demo_drill
from subvault.demo.testbed import LoopFs, build_homelab, exclude_foreign, homelab_config, remove_tree, scratch_dir
from subvault.demo.testbed_ssh import Sshd
from subvault.dr import qemu
from subvault.dr.report import render_report
from subvault.errors import SubvaultError


class Demo:
    def __init__(self, workdir: Path, say: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.say = say
        self.config = workdir / "subvault.toml"
        self.failures = 0

    def cli(self, *args: str, expect: int = 0) -> str:
        argv = [sys.executable, "-m", "subvault.cli.main", "--config", str(self.config), *args]
        self.say(f"\n$ subvault {' '.join(args)}")
        res = process.run(argv, check=False)
        text = (res.stdout + res.stderr).rstrip()
        if text:
            self.say("  " + text.replace("\n", "\n  "))
        if res.returncode != expect:
            self.failures += 1
            self.say(f"  !! exit {res.returncode}, expected {expect}")
        return res.stdout


def run_demo(*, keep: bool = False, workdir: str | None = None, say: Callable[[str], None] = print) -> int:
    """Run the demo; return 0 when every step did what it should, else 1."""
    if os.geteuid() != 0:
        raise SubvaultError("the demo builds loop filesystems and needs root; run it with sudo")
    base = Path(workdir) if workdir else scratch_dir("subvault-demo-")
    base.mkdir(parents=True, exist_ok=True)
    src = LoopFs(image=base / "server.img", mountpoint=base / "server", size="2G", label="demo-server")
    pi = LoopFs(image=base / "pi.img", mountpoint=base / "pi", size="2G", label="demo-pi")
    sshd = Sshd(base / "sshd")
    demo = Demo(base, say)
    try:
        src.create()
        pi.create()
        say(f"built the server's btrfs on {src.device} at {src.mountpoint} in the homelab layout")
        paths = build_homelab(src.mountpoint, data_mib=8)
        pi_disk = f'[[exclude]]\npath = "{pi.mountpoint}"\nreason = "the Pi\'s disk in this demo: replicas, checked on the Pi"\n'
        demo.config.write_text(homelab_config(paths, state_dir=base / "state", extra="\n" + exclude_foreign(base) + "\n" + pi_disk))
        _local_layers(demo, paths)
        sshd.start()
        (pi.mountpoint / "backup").mkdir()
        say(f"built the Pi's btrfs on {pi.device} at {pi.mountpoint}, reachable over sshd on 127.0.0.1:{sshd.port}")
        _remote_layers(demo, paths, sshd, pi.mountpoint / "backup", base)
    finally:
        sshd.stop()
        if keep:
            say(f"\nkept for inspection: {base} (clean up with: umount -R {src.mountpoint} {pi.mountpoint}; losetup -d {src.device} {pi.device})")
        else:
            pi.close()
            src.close()
            remove_tree(base)
            say("\ncleaned up: unmounted, detached and removed the loop filesystems")
    say("demo ok" if demo.failures == 0 else f"demo: {demo.failures} step(s) did not do what they should")
    return 0 if demo.failures == 0 else 1


def _local_layers(demo: Demo, paths: dict[str, Path]) -> None:
    demo.say("\n== layer 1: timeline snapshots (snapper's layout) ==")
    demo.cli("config", "check")
    demo.cli("run")
    demo.cli("run")  # nothing due within the same hour
    demo.say("\n== layer 2: a pre-change snapshot of everything ==")
    demo.cli("snap-all", "before-flux-update-demo")
    demo.cli("list", "var_lib_pvc")
    demo.say("\n== an app breaks its data; find and restore it ==")
    broken = paths["var_lib_pvc"] / "nextcloud" / "config.php"
    broken.write_text("<?php garbage\n")
    demo.cli("diff", "var_lib_pvc", "1", "current")
    demo.cli("restore", "var_lib_pvc", "nextcloud/config.php", "--at", "1", expect=1)  # refuses to overwrite
    demo.cli("restore", "var_lib_pvc", "nextcloud/config.php", "--at", "1", "--overwrite")
    if "instanceid" not in broken.read_text():
        demo.failures += 1
        demo.say("  !! the file was not restored")
    demo.say("\n== retention ==")
    demo.cli("prune", "--dry-run")


def _remote_layers(demo: Demo, paths: dict[str, Path], sshd: Sshd, backup: Path, base: Path) -> None:
    key = base / "age.key"
    process.run(["age-keygen", "-o", str(key)], what="age-keygen")
    recipient = process.run(["age-keygen", "-y", str(key)], what="age-keygen -y").stdout.strip()
    bucket = base / "bucket"
    bucket.mkdir()
    text = demo.config.read_text().replace("prechange_keep = 10", 'prechange_keep = 10\ntargets = ["pi", "offsite"]')
    text += "\n" + sshd.target_toml("pi", backup, extra='ssh_cipher = "aes128-gcm@openssh.com"\ncompress = "zstd"')
    text += (
        f'[[target]]\nname = "offsite"\ntype = "object"\nurl = "file://{bucket}"\nrecipients = ["{recipient}"]\n'
        f'keep = "8d 5w 12m"\nfull_every = "30d"\nmac_key = "{base}/offsite.mac"\n'
    )
    demo.config.write_text(text)
    demo.say("\n== layer 3: incremental replication to the Pi over ssh (one connection) ==")
    demo.cli("replicate")
    (paths["var_lib_pvc"] / "nextcloud" / "later.txt").write_text("written after the first replication\n")
    demo.cli("snapshot", "--force")
    demo.cli("replicate")  # incremental: -p is the snapshot both sides hold
    demo.cli("list", "var_lib_pvc")
    demo.say("\n== layer 4: age-encrypted, compressed streams in a bucket (file:// here) ==")
    demo.cli("offsite")
    demo.cli("verify", "--target", "offsite")
    demo.say("\n== restore a whole subvolume from the Pi, and another from the bucket ==")
    into = paths["var_tmp"]
    demo.cli("restore", "home", "--from", "pi", "--into", str(into))
    demo.cli("restore", "var_lib_pvc", "--from", "offsite", "--into", str(into), "--identity", str(key))
    if (into / "var_lib_pvc" / "nextcloud" / "later.txt").read_text() != "written after the first replication\n":
        demo.failures += 1
        demo.say("  !! the offsite restore does not hold the newest data")
    demo.say("\n== layer 5: the morning look ==")
    demo.cli("status")
    demo.cli("check")
    _drill(demo, base)


def _drill(demo: Demo, base: Path) -> None:
    """Layer 6 on a small partitioned machine image (GPT, ESP, btrfs): capture, replicate, drill."""
    demo.say("\n== layer 6: a recovery drill on a machine image (GPT + ESP + btrfs) ==")
    if qemu.qemu_path() is None:
        demo.say("  (QEMU is not installed: this drill does not boot the restored machine; ./dev installs qemu-system-x86)")
    report = demo_drill(base / "drill-demo", demo.say)
    for line in render_report(report):
        demo.say("  " + line)
    if not report.ok:
        demo.failures += 1
        demo.say("  !! the drill failed")
