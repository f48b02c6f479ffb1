"""`dr restore` restores what it says and resumes as documented (issue 11, item 8).

On real loop devices: a GPT image with an ESP (vfat, written through mtools) and a btrfs
partition in the homelab layout (subvault.demo.machine), replicated to a btrfs target.
- "already present" means the same restore point (by uuid), else the step refuses
  before anything is written;
- a restore stopped by SIGKILL or SIGTERM is resumed by running the same command again,
  without cleaning up by hand, and leaves nothing behind when it ends;
- a failed `--json` restore still prints JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from subvault import process
from subvault.btrfs import adapter, local_scan
from subvault.demo.machine import EFI_FILE, Machine, machine_config
from subvault.demo.testbed import PROTECTED
from subvault.dr import fat
from subvault.dr.digest import tree_digest
from subvault.dr.parse import parse_sfdisk_dump
from subvault.dr.restore import restore_workdir
from subvault.dr.workspace import Workspace
from subvault.plan.replication import parse_entry_time


@pytest.fixture
def machine(tmp_path):
    m = Machine(tmp_path)
    try:
        yield m.build()
    finally:
        m.close()


@pytest.fixture
def pi_and_cli(machine, make_fs, tmp_path):
    pi = make_fs("pi", size="2G")
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(machine_config(machine, pi.mountpoint, tmp_path / "state"))

    def cli(*args, check=True):
        return run_cli("--config", str(cfg), *args, check=check)

    return cli, pi


def _entries(pi, sub: str) -> list[Path]:
    return sorted(pi.mountpoint.glob(f"*/{sub}/{sub}.*"), key=lambda p: p.name)


def _source_snapshot(machine, pi, sub: str) -> Path:
    """The local snapshot the target's newest entry of sub was sent from (by uuid, invariant 7)."""
    sent = adapter.show(_entries(pi, sub)[-1]).received_uuid
    return Path(next(s.path for s in local_scan.scan(sub, machine.paths[sub], with_uuids=True) if s.uuid == sent))


def _write_esp(machine, content: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="subvault-test-esp-") as staging:
        (Path(staging) / EFI_FILE).parent.mkdir(parents=True)
        (Path(staging) / EFI_FILE).write_bytes(content)
        fat.copy_in(Path(staging), machine.esp)


def _next_second(after: datetime) -> None:
    """Entry names have a resolution of one second: let the clock pass `after` so the next point gets its own name."""
    while datetime.now(UTC).replace(microsecond=0) <= after:
        os.sched_yield()


class Restored:
    """The restored image's partitions attached by offset, for looking at the result."""

    def __init__(self, machine, where: Path) -> None:
        self.ws = Workspace(where)
        table = parse_sfdisk_dump(process.run(["sfdisk", "--dump", str(machine.image)]).stdout)
        self.esp, root = [self.ws.attach(str(machine.image), p.start * 512, p.size * 512) for p in table.partitions]
        self.top = self.ws.mount(root, "top", "btrfs", "subvolid=5")

    def close(self) -> None:
        self.ws.close()


def _nothing_left(machine) -> None:
    assert process.run(["losetup", "-j", str(machine.image)]).stdout.strip() == ""
    work = restore_workdir([str(machine.image)])
    assert str(work) not in Path("/proc/mounts").read_text()
    assert not work.exists()


def test_attack_restore_of_an_older_point_onto_a_newer_restore_is_refused(machine, pi_and_cli, tmp_path):
    """A disk holding a restore of point P2 is not reported "already present" for P1: refused, nothing written."""
    cli, pi = pi_and_cli
    cli("run")  # .snapshots containers and the first points
    pvc = machine.paths["var_lib_pvc"] / "nextcloud" / "version.txt"
    pvc.write_text("old\n")
    _write_esp(machine, b"old bootloader")
    cli("dr", "capture", *machine.capture_args())
    cli("snapshot", "--force")
    cli("replicate")
    p1_var, p1_pvc = _entries(pi, "var")[-1], _entries(pi, "var_lib_pvc")[-1]
    p1 = max(parse_entry_time(s, e.name) for s, e in (("var", p1_var), ("var_lib_pvc", p1_pvc)))
    _next_second(p1)
    pvc.write_text("new\n")
    _write_esp(machine, b"new bootloader")
    cli("dr", "capture", *machine.capture_args())
    cli("snapshot", "--force")
    cli("replicate")
    p2_var = _entries(pi, "var")[-1]
    assert p2_var != p1_var and parse_entry_time("var", p2_var.name) > p1, (p1, [e.name for e in _entries(pi, "var")])
    capture = lambda entry: str(entry / "lib" / "subvault" / "dr")  # noqa: E731
    machine.wipe()

    cli("dr", "restore", "--from", "pi", "--capture", capture(p2_var), "--disk", str(machine.image), "--yes")
    older = cli("dr", "restore", "--from", "pi", "--at", p1.isoformat(), "--capture", capture(p1_var),
                "--disk", str(machine.image), "--yes", check=False)
    assert older.returncode == 1, older.stdout + older.stderr
    assert "another restore point" in older.stderr and "var_lib_pvc" in older.stderr
    assert "already present" not in older.stdout
    got = Restored(machine, tmp_path / "look")
    try:
        assert (got.top / "var_lib_pvc" / "nextcloud" / "version.txt").read_text() == "new\n"
        assert fat.read_bytes(got.esp, EFI_FILE) == b"new bootloader"  # the older capture's ESP was not unpacked over it
        assert p1_pvc.name not in {p.name for p in (got.top / ".subvault-dr").iterdir()}  # nothing received either
    finally:
        got.close()
    # The same point again is "already present", step by step.
    again = cli("dr", "restore", "--from", "pi", "--capture", capture(p2_var), "--disk", str(machine.image), "--yes", "--json")
    details = [i["detail"] for i in json.loads(again.stdout)["result"]["items"]]
    assert any(d.startswith("snapshot var_lib_pvc: already present") for d in details), details
    _nothing_left(machine)


def _start_restore(cli_args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "subvault.cli.main", *cli_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, start_new_session=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_restore_stopped_by_a_signal_resumes_without_cleaning_up_by_hand(machine, pi_and_cli, tmp_path, sig):
    cli, pi = pi_and_cli
    cli("run")
    cli("dr", "capture", *machine.capture_args())
    cli("snapshot", "--force")
    cli("replicate")
    var = _entries(pi, "var")[-1]
    capture = str(var / "lib" / "subvault" / "dr")
    expected = {n: tree_digest(_source_snapshot(machine, pi, n)).digest for n in PROTECTED}
    esp_file = fat.read_bytes(machine.esp, EFI_FILE)
    machine.wipe()
    args = ["--config", str(tmp_path / "subvault.toml"), "dr", "restore", "--from", "pi", "--capture", capture,
            "--disk", str(machine.image), "--yes"]
    proc = _start_restore(args)
    receives = 0
    seen = []
    for line in proc.stderr:  # the progress lines are the sync point: stop it in the middle of the receives
        seen.append(line)
        if "] receive " in line:
            receives += 1
            if receives == 2:  # the top level is mounted by now
                break
    assert receives == 2, "".join(seen)
    os.killpg(proc.pid, sig)
    proc.communicate()
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        _nothing_left(machine)  # SIGTERM unwinds: its loop devices and mounts are undone on the way out
    else:
        assert process.run(["losetup", "-j", str(machine.image)]).stdout.strip()  # SIGKILL leaves them behind

    resumed = run_cli(*args, "--json", check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    items = json.loads(resumed.stdout)["result"]["items"]
    assert any(i["detail"].startswith("partition") and "already" in i["detail"] for i in items)
    warnings = json.loads(resumed.stdout)["result"]["warnings"]
    assert any("left by an interrupted run" in w for w in warnings) == (sig == signal.SIGKILL), warnings
    _nothing_left(machine)
    got = Restored(machine, tmp_path / "look")
    try:
        for n in PROTECTED:
            assert tree_digest(got.top / n).digest == expected[n], n
        assert fat.read_bytes(got.esp, EFI_FILE) == esp_file
    finally:
        got.close()


def test_leftovers_of_someone_else_on_the_disk_still_refuse(machine, pi_and_cli, tmp_path):
    """Only what a dr restore of this disk left is released: a loop device someone else attached is "in use"."""
    cli, pi = pi_and_cli
    cli("run")
    cli("dr", "capture", *machine.capture_args())
    cli("snapshot", "--force")
    cli("replicate")
    capture = str(_entries(pi, "var")[-1] / "lib" / "subvault" / "dr")
    res = cli("dr", "restore", "--from", "pi", "--capture", capture, "--disk", str(machine.image), "--yes", check=False)
    assert res.returncode == 1 and "in use" in res.stderr  # the machine's own loop devices
    assert process.run(["losetup", "-j", str(machine.image)]).stdout.count("/dev/loop") == 2


def test_failed_json_restore_prints_json(machine, pi_and_cli, tmp_path):
    cli, pi = pi_and_cli
    cli("run")
    cli("dr", "capture", *machine.capture_args())
    cli("snapshot", "--force")
    cli("replicate")
    capture = str(_entries(pi, "var")[-1] / "lib" / "subvault" / "dr")
    small = tmp_path / "small.img"
    with open(small, "wb") as fh:
        fh.truncate(512 << 20)
    res = cli("dr", "restore", "--from", "pi", "--capture", capture, "--disk", str(small), "--yes", "--json", check=False)
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["command"] == "dr restore" and any("smaller than the original" in e for e in doc["result"]["errors"])
    assert not restore_workdir([str(small)]).exists()


GRUB_STUB = """#!/bin/sh
# Stands in for grub-install inside the restored root: which disk was it given, as the chroot sees it?
disk="$2"
[ -b "$disk" ] || { echo "grub-install: $disk is not a block device here" >&2; exit 1; }
read back < "/sys/block/${disk#/dev/}/loop/backing_file"
read off < "/sys/block/${disk#/dev/}/loop/offset"
echo "$1 $disk $back $off" > /grub-install.args
"""


def _give_root_a_shell_and_grub(root: Path) -> None:
    """Just enough of a system in the machine's root for `chroot ROOT grub-install`: dash, its libraries, a grub-install script."""
    import shutil

    for lib in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
        (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.realpath(lib), root / lib.lstrip("/"))
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/dash", root / "bin" / "sh")
    (root / "usr" / "sbin").mkdir(parents=True, exist_ok=True)
    (root / "usr" / "sbin" / "grub-install").write_text(GRUB_STUB)
    os.chmod(root / "usr" / "sbin" / "grub-install", 0o755)


@pytest.mark.skipif(not Path("/lib64/ld-linux-x86-64.so.2").exists(), reason="needs an x86-64 dash to chroot into")
def test_bios_restore_with_an_esp_installs_grub_on_the_disk_the_chroot_sees(machine, pi_and_cli, tmp_path):
    """BIOS with an ESP: grub-install needs no ESP mounted (this kernel may have no vfat), and gets a disk it can open."""
    cli, pi = pi_and_cli
    _give_root_a_shell_and_grub(machine.paths["root"])
    cli("run")
    args = machine.capture_args()
    args[args.index("--firmware") + 1] = "bios"
    cli("dr", "capture", *args)
    cli("snapshot", "--force")
    cli("replicate")
    capture = str(_entries(pi, "var")[-1] / "lib" / "subvault" / "dr")
    machine.wipe()
    res = cli("dr", "restore", "--from", "pi", "--capture", capture, "--disk", os.path.relpath(machine.image, REPO), "--yes", "--json",
              check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    got = Restored(machine, tmp_path / "look")
    try:
        target, disk, back, offset = (got.top / "root" / "grub-install.args").read_text().split()
    finally:
        got.close()
    assert target == "--target=i386-pc" and disk.startswith("/dev/loop")
    assert back == str(machine.image) and offset == "0"  # the whole image, not a partition of it
    _nothing_left(machine)
