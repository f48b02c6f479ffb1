"""The btrfs adapter: the libbtrfsutil fast path and the CLI agree."""

from __future__ import annotations

import pytest

from subvault.btrfs import adapter, fastpath


def test_fast_listing_equals_cli_listing(homelab):
    homelab.cli("snapshot")
    homelab.cli("snap-all", "x")
    if not fastpath.available():
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
