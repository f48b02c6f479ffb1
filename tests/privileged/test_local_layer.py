"""Layers 1 and 2 on real btrfs: snapshots in snapper's layout, snap-all, prune, list."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

from msgspec.structs import replace

from subvault.btrfs import adapter, local, local_scan
from subvault.btrfs.snapdir import write_atomic
from subvault.btrfs.snapper import Info, parse_info, render_info
from subvault.config.load import load_config
from subvault.context import Context
from subvault.run.local import prune, snap_all


def test_snapshot_creates_snapper_layout_readonly(homelab):
    proc = homelab.cli("snapshot", "--json")
    result = json.loads(proc.stdout)
    assert result["version"] == 1
    created = [i for i in result["result"]["items"] if i["action"] == "created"]
    assert len(created) == 8
    for name in ("root", "var_lib_pvc"):
        ndir = homelab.paths[name] / ".snapshots" / "1"
        assert adapter.is_subvolume(homelab.paths[name] / ".snapshots")
        info = adapter.show(ndir / "snapshot")
        assert info.readonly
        parsed = parse_info((ndir / "info.xml").read_text())
        assert parsed.num == 1 and parsed.cleanup == "timeline"
        assert parsed.userdata_dict["subvault"] == "timeline"
        assert not (ndir / ".subvault-pending").exists()
    # excluded subvolumes are not touched
    assert not (homelab.paths["var_cache"] / ".snapshots").exists()


def test_snapshot_only_when_due_unless_forced(homelab):
    homelab.cli("snapshot")
    again = json.loads(homelab.cli("snapshot", "--json").stdout)["result"]["items"]
    assert {i["action"] for i in again} == {"not-due"}
    forced = json.loads(homelab.cli("snapshot", "--force", "--json").stdout)["result"]["items"]
    assert {i["action"] for i in forced} == {"created"}
    assert (homelab.paths["home"] / ".snapshots" / "2" / "info.xml").exists()


def test_snap_all_numbered_with_description(homelab):
    homelab.cli("snap-all", "before-flux-update-20261126-0300")
    for name in ("root", "data", "var_log"):
        info = parse_info((homelab.paths[name] / ".snapshots" / "1" / "info.xml").read_text())
        assert info.description == "before-flux-update-20261126-0300"
        assert info.cleanup == "number"
        assert info.userdata_dict["subvault"] == "prechange"


def test_prechange_kept_by_count(homelab):
    cfg = load_config(homelab.config)
    ctx = Context(cfg)
    for i in range(4):
        out = snap_all(ctx, f"change-{i}", names=["home"])
        assert not out.errors
    ctx2 = Context(replace(cfg, defaults=replace(cfg.defaults, prechange_keep=2)))
    dry = prune(Context(ctx2.config, dry_run=True), names=["home"])
    assert [i.action for i in dry.items].count("would-delete") == 2
    assert len(local_scan.scan("home", homelab.paths["home"])) == 4  # dry run changed nothing
    out = prune(ctx2, names=["home"])
    assert [i.action for i in out.items].count("deleted") == 2
    left = local_scan.scan("home", homelab.paths["home"])
    assert [s.description for s in left] == ["change-2", "change-3"]
    assert sorted(os.listdir(homelab.paths["home"] / ".snapshots")) == ["3", "4"]


def test_prechange_fewer_than_keep_are_never_pruned(homelab):
    # The exact steps: nine snap-alls under the default prechange_keep = 10,
    # then `run` and `prune`; then keep = 3 with two snapshots. Nothing may be deleted.
    for i in range(9):
        homelab.cli("snap-all", f"change-{i}")
    run = json.loads(homelab.cli("run", "--json", check=False).stdout)
    assert run["version"] == 1
    homelab.cli("prune")
    left = [s for s in local_scan.scan("home", homelab.paths["home"]) if s.kind == "prechange"]
    assert [s.description for s in left] == [f"change-{i}" for i in range(9)]
    cfg = load_config(homelab.config)
    ctx = Context(replace(cfg, defaults=replace(cfg.defaults, prechange_keep=3)))
    out = prune(ctx, names=["home"])
    left = [s for s in local_scan.scan("home", homelab.paths["home"]) if s.kind == "prechange"]
    assert [s.description for s in left] == ["change-6", "change-7", "change-8"], [i.action for i in out.items]


def test_timeline_prune_follows_policy(homelab):
    cfg = load_config(homelab.config)
    now = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)
    # 30 hourly snapshots, oldest first; "24h 7d 4w" keeps the first of each of the last 24 hours
    for h in range(30, 0, -1):
        local.create("data", homelab.paths["data"], kind="timeline", description="timeline", now=now - timedelta(hours=h))
    ctx = Context(cfg, now=now, zone=UTC)
    out = prune(ctx, names=["data"])
    deleted = [i for i in out.items if i.action == "deleted"]
    kept = local_scan.scan("data", homelab.paths["data"])
    assert len(kept) + len(deleted) == 30
    assert deleted, "older-than-24h snapshots beyond the daily firsts are pruned"
    assert max(s.date for s in kept) == now - timedelta(hours=1)  # newest always kept


def test_foreign_snapshots_never_deleted(homelab):
    sub = homelab.paths["var"]
    local.ensure_snapshots_dir(sub)
    # a snapshot made by snapper (no subvault userdata), dated long ago
    ndir = sub / ".snapshots" / "1"
    ndir.mkdir()
    adapter.snapshot(sub, ndir / "snapshot")
    write_atomic(ndir / "info.xml", render_info(Info(num=1, date=datetime(2020, 1, 1, tzinfo=UTC), description="snapper timeline", cleanup="timeline")))
    cfg = load_config(homelab.config)
    for i in range(3):
        local.create("var", sub, kind="prechange", description=f"c{i}", now=datetime.now(UTC))
    ctx = Context(replace(cfg, defaults=replace(cfg.defaults, prechange_keep=0)))
    prune(ctx, names=["var"])
    left = local_scan.scan("var", sub)
    assert [(s.number, s.owned) for s in left] == [(1, False)]
    listing = json.loads(homelab.cli("list", "var", "--json").stdout)["result"][0]["snapshots"]
    assert listing[0]["kind"] == "foreign" and listing[0]["description"] == "snapper timeline"


def test_list_json_and_text(homelab):
    homelab.cli("snapshot")
    homelab.cli("snap-all", "pre-upgrade")
    data = json.loads(homelab.cli("list", "--json").stdout)
    assert data["command"] == "list"
    by_name = {l["subvolume"]: l for l in data["result"]}
    assert set(by_name) == {"root", "var_lib_pvc", "var_lib_microshift", "data", "home", "var", "var_log", "var_lib_containers"}
    snaps = by_name["root"]["snapshots"]
    assert [s["kind"] for s in snaps] == ["timeline", "prechange"]
    assert all(s["uuid"] for s in snaps)
    text = homelab.cli("list", "root").stdout
    assert "pre-upgrade" in text and "timeline" in text


def test_run_snapshots_when_due_and_prunes(homelab):
    out = json.loads(homelab.cli("run", "--json").stdout)["result"]["items"]
    assert [i["action"] for i in out].count("created") == 8
    out = json.loads(homelab.cli("run", "--json").stdout)["result"]["items"]
    assert [i["action"] for i in out].count("created") == 0


def test_one_syncfs_per_filesystem_though_each_subvolume_has_its_own_st_dev(homelab, monkeypatch):
    from subvault.btrfs import numbered

    dirs = [str(p) for p in homelab.paths.values()]
    assert len({os.stat(d).st_dev for d in dirs}) == len(dirs) > 1  # what deduplicating by st_dev missed
    calls: list[int] = []
    monkeypatch.setattr(numbered, "syncfs", calls.append)
    numbered.sync_filesystems(dirs)
    assert len(calls) == 1
