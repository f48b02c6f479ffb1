"""Bad input on the local layer: clear errors, and nothing half-created."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime

import pytest

from subvault.btrfs import adapter, local, local_scan
from subvault.btrfs.snapdir import PENDING
from subvault.errors import NoSpace, NotBtrfs, SnapshotNumberTaken
from subvault.lock import exclusive


def _complete_or_absent(snapdir):
    """Every numbered entry has both a read-only snapshot and its info.xml, or does not exist."""
    for name in os.listdir(snapdir):
        if not name.isdigit():
            continue
        n = snapdir / name
        assert (n / "info.xml").exists(), f"{n} has no info.xml"
        assert adapter.is_subvolume(n / "snapshot"), f"{n} has no snapshot"
        assert not (n / PENDING).exists()


def test_malformed_toml_is_exit_2_with_one_line(homelab):
    homelab.config.write_text("[defaults\n")
    proc = homelab.cli("snapshot", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {os.path.realpath(homelab.config)}: not valid TOML")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_path_fails_that_subvolume_only(homelab, tmp_path):
    homelab.config.write_text(homelab.config.read_text() + f'\n[[subvolume]]\nname = "gone"\npath = "{tmp_path}/gone"\n')
    proc = homelab.cli("snapshot", check=False)
    assert proc.returncode == 3, proc.stderr  # partial: the others were done
    assert f"gone: {tmp_path}/gone does not exist" in proc.stderr
    assert (homelab.paths["root"] / ".snapshots" / "1" / "info.xml").exists()


def test_path_not_on_btrfs(homelab):
    homelab.config.write_text(homelab.config.read_text() + '\n[[subvolume]]\nname = "tmp"\npath = "/dev"\n')
    proc = homelab.cli("snapshot", check=False)
    assert proc.returncode == 3
    assert "/dev is not on btrfs" in proc.stderr


def test_directory_not_subvolume(homelab):
    d = homelab.paths["var"] / "lib" / "plain"
    d.mkdir()
    with pytest.raises(NotBtrfs, match="directory, not a btrfs subvolume"):
        local.ensure_snapshots_dir(d)


def test_snapshots_plain_directory_refused(homelab):
    sub = homelab.paths["data"]
    (sub / ".snapshots").mkdir()
    proc = homelab.cli("snapshot", "data", check=False)
    assert proc.returncode == 1
    assert ".snapshots is a plain directory, not a subvolume" in proc.stderr
    assert os.listdir(sub / ".snapshots") == []


def test_snapshot_number_already_taken(homelab):
    sub = homelab.paths["data"]
    now = datetime.now(UTC)
    first = local.create("data", sub, kind="timeline", description="timeline", now=now)
    before = sorted(os.listdir(first.path.parent))
    with pytest.raises(SnapshotNumberTaken, match="already exists"):
        local.create("data", sub, kind="timeline", description="timeline", now=now, number=first.number)
    assert sorted(os.listdir(first.path.parent)) == before
    _complete_or_absent(sub / ".snapshots")


def test_interrupted_create_is_undone_on_next_run(homelab):
    """Write ordering: a crash after the snapshot but before info.xml leaves a marker; the next run removes it."""
    sub = homelab.paths["data"]
    sdir = local.ensure_snapshots_dir(sub)
    (sdir / "1").mkdir()
    (sdir / "1" / PENDING).write_text("create pid=1\n")
    adapter.snapshot(sub, sdir / "1" / "snapshot")
    assert local_scan.scan("data", sub) == []  # not a restore point while pending
    homelab.cli("snapshot", "data")
    _complete_or_absent(sdir)
    assert [s.number for s in local_scan.scan("data", sub)] == [1]  # undone, then number 1 reused cleanly


def test_enospc_while_snapshotting_leaves_nothing_half_created(make_fs, tmp_path):
    small = make_fs("small", size="128M")
    sub = small.mountpoint / "vol"
    adapter.create_subvolume(sub)
    local.ensure_snapshots_dir(sub)
    # fill data, then metadata, until the filesystem refuses
    subprocess.run(["dd", "if=/dev/zero", f"of={sub}/fill", "bs=1M", "status=none"], check=False)
    i = 0
    try:
        while True:
            os.mkdir(sub / f"d{i}")
            (sub / f"d{i}" / "x").write_bytes(b"x" * 3000)
            i += 1
    except OSError:
        pass
    errors = 0
    for _ in range(20):
        try:
            local.create("vol", sub, kind="timeline", description="timeline", now=datetime.now(UTC))
        except NoSpace as exc:
            errors += 1
            assert "no space left on device" in str(exc)
        _complete_or_absent(sub / ".snapshots")
    assert errors > 0, "the filesystem never ran out of space"


def test_second_run_waits_or_says_so(homelab):
    with exclusive(homelab.state):
        proc = homelab.cli("snapshot", check=False)
        assert proc.returncode == 1
        assert "another subvault" in proc.stderr and "--wait" in proc.stderr
        proc = homelab.cli("--wait", "0.3", "snapshot", check=False)
        assert proc.returncode == 1
    assert not (homelab.paths["root"] / ".snapshots").exists()
    homelab.cli("--wait", "5", "snapshot")  # free again
