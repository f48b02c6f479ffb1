"""The btrfs adapter: the libbtrfsutil fast path and the CLI agree."""

from __future__ import annotations

import os

import pytest

from subvault.btrfs import adapter, fastpath, libbtrfsutil


def test_fast_listing_equals_cli_listing(homelab):
    homelab.cli("snapshot")
    homelab.cli("snap-all", "x")
    if not libbtrfsutil.available():
        pytest.fail("libbtrfsutil is not installed (Debian: libbtrfsutil1); the fast path is untested")
    fast = {s.id: s for s in fastpath.list_subvolumes(str(homelab.fs.mountpoint))}
    cli = {s.id: s for s in adapter.list_subvolumes_cli(homelab.fs.mountpoint)}
    assert fast.keys() == cli.keys()
    for sid, c in cli.items():
        f = fast[sid]
        assert (f.path, f.uuid, f.parent_uuid, f.received_uuid, f.readonly, f.top_level) == (
            c.path, c.uuid, c.parent_uuid, c.received_uuid, c.readonly, c.top_level), sid
        if c.otime is not None:
            assert f.otime == c.otime


def test_snapshot_many_reports_each_error(homelab, tmp_path):
    paths = homelab.paths
    errors = adapter.snapshot_many([
        (str(paths["home"]), str(paths["home"] / "s1"), True),
        (str(tmp_path / "missing"), str(paths["home"] / "s2"), True),
    ])
    assert errors[0] is None and adapter.show(paths["home"] / "s1").readonly
    assert errors[1] is not None and "missing" in str(errors[1])


def test_fast_show_equals_cli_show(homelab):
    homelab.cli("snapshot")
    for path in (homelab.paths["home"], homelab.paths["home"] / ".snapshots" / "1" / "snapshot", homelab.fs.mountpoint):
        fast, cli = adapter.show(path), adapter.show_cli(path)
        assert (fast.id, fast.path, fast.uuid, fast.parent_uuid, fast.readonly, fast.top_level) == (
            cli.id, cli.path, cli.uuid, cli.parent_uuid, cli.readonly, cli.top_level)


def test_snapshots_found_by_place_equal_snapshots_found_by_path(homelab, tmp_path):
    """scan's root-tree walk (matched by parent subvolume, directory inode and name) finds
    the same uuid and received uuid for each .snapshots/N as the listing by path, and
    leaves out the same entries: a deleted snapshot subvolume, a plain directory, a
    snapshot under another name; a received snapshot carries its received uuid."""
    from subvault import process
    from subvault.btrfs import local_scan

    if not libbtrfsutil.available():
        pytest.fail("libbtrfsutil is not installed (Debian: libbtrfsutil1); the fast path is untested")
    for _ in range(3):
        homelab.cli("snap-all", "x")
    home, data = homelab.paths["home"] / ".snapshots", homelab.paths["data"] / ".snapshots"
    adapter.delete(home / "2" / "snapshot")  # info.xml left behind
    (home / "3" / "snapshot").rename(home / "3" / "other")  # a subvolume under another name
    (home / "9").mkdir()
    (home / "9" / "snapshot").mkdir()  # a plain directory
    (home / "9" / "info.xml").write_text((home / "1" / "info.xml").read_text())
    (data / "7").mkdir()  # a received snapshot: send home's #1, receive into data's .snapshots/7
    with process.pipeline([["btrfs", "send", "-q", str(home / "1" / "snapshot")], ["btrfs", "receive", str(data / "7")]]) as p:
        p.run()
    (data / "7" / "info.xml").write_text((data / "1" / "info.xml").read_text())

    index = local_scan.FsIndex()
    for sdir in (home, data, homelab.paths["root"] / ".snapshots"):
        by_place, by_path = index.locate_by_place(sdir), index.locate_by_path(sdir)
        for num, ino in local_scan.numbered_entries(sdir):
            assert by_place(num, ino) == by_path(num, ino), (sdir, num)
    place = index.locate_by_place(home)
    found = {n: place(n, ino) for n, ino in local_scan.numbered_entries(home)}
    assert found[2] is None and found[3] is None and found[9] is None and found[1] is not None
    received = index.locate_by_place(data)(7, os.stat(data / "7").st_ino)
    assert received is not None and received[1] == adapter.show(home / "1" / "snapshot").uuid
    assert [s.number for s in local_scan.scan("home", homelab.paths["home"])] == [1]
