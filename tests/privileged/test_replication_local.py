"""Replication to a local-path target on a second loop btrfs filesystem."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from replication_helpers import T0, container, context, dump, entries, hourly, sent_items, snap, source_and_target

from subvault.btrfs import adapter, local_scan
from subvault.errors import NotBtrfs, NotFound
from subvault.run.holds import all_holds
from subvault.run.local import prune as local_prune
from subvault.run.replicate import replicate, replication_holds


@pytest.fixture
def two(make_fs, tmp_path):
    return source_and_target(make_fs, tmp_path)


def test_full_then_incremental_verified(two):
    paths, root, state = two
    s1 = snap("data", paths["data"], T0)
    snap("pvc", paths["pvc"], T0)
    ctx = context(paths, str(root), now=T0 + timedelta(minutes=5), state=state)
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert len(sent_items(out, full=True)) == 2
    got = entries(root, "data")
    assert list(got) == ["data.20261120T000000Z"]
    info = got["data.20261120T000000Z"]
    assert info.readonly and info.received_uuid == adapter.show(s1.path).uuid
    assert (container(root, "data") / "data.20261120T000000Z" / "file.bin").read_bytes() == (paths["data"] / "file.bin").read_bytes()

    snap("data", paths["data"], T0 + timedelta(hours=1))
    ctx = context(paths, str(root), now=T0 + timedelta(hours=1, minutes=5), state=state)
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert sent_items(out, full=True) == []
    inc = sent_items(out, full=False)
    assert len(inc) == 1 and inc[0].data["parent"] == adapter.show(s1.path).uuid
    assert inc[0].data["bytes"] < 200_000, "an incremental of a 1 kB change must be small"
    assert any(i.action == "up-to-date" and i.subject.startswith("pvc") for i in out.items)


def test_invariant_3_partials_removed_never_parents(two):
    paths, root, state = two
    snap("data", paths["data"], T0)
    ctx = context(paths, str(root), now=T0 + timedelta(minutes=5), state=state)
    assert not replicate(ctx).errors
    c = container(root, "data")
    # a receive killed half-way (writable, under the stream's name) and a garbled final name
    adapter.create_subvolume(c / "snapshot")
    adapter.create_subvolume(c / "data.20261120T010000Z")
    snap("data", paths["data"], T0 + timedelta(hours=1))
    ctx = context(paths, str(root), now=T0 + timedelta(hours=1, minutes=5), state=state)
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert sorted(i.detail.split()[0] for i in out.items if i.action == "delete-partial") == ["data.20261120T010000Z", "snapshot"]
    assert sent_items(out, full=True) == [], "a partial is never a reason for a full send"
    got = entries(root, "data")
    assert sorted(got) == ["data.20261120T000000Z", "data.20261120T010000Z"]
    assert all(i.readonly and i.received_uuid for i in got.values())


def test_invariant_1_target_prune_keeps_base(two):
    paths, root, state = two
    hourly("data", paths["data"], T0, 6)
    ctx = context(paths, str(root), now=T0 + timedelta(hours=5, minutes=5), keep="2h", state=state)
    out = replicate(ctx)
    assert not out.errors, dump(out)
    # "2h": the first of the last two hours; the newest is always kept
    assert sorted(entries(root, "data")) == ["data.20261120T040000Z", "data.20261120T050000Z"]
    assert len(sent_items(out, full=True)) == 1, "one full send (pvc has no snapshots), then incrementals"
    hourly("data", paths["data"], T0 + timedelta(hours=6), 3)
    ctx = context(paths, str(root), now=T0 + timedelta(hours=8, minutes=5), keep="2h", state=state)
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert sent_items(out, full=True) == []
    # the old base (05) is kept while the run moves the base; the next run releases it
    assert sorted(entries(root, "data")) == ["data.20261120T050000Z", "data.20261120T070000Z", "data.20261120T080000Z"]
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert sorted(entries(root, "data")) == ["data.20261120T070000Z", "data.20261120T080000Z"]


def test_invariant_2_owed_snapshots_survive_local_prune(two):
    paths, root, state = two
    snaps = hourly("data", paths["data"], T0, 4)
    ctx = context(paths, str(root), now=T0 + timedelta(days=30), keep="all", state=state)
    held = replication_holds(ctx, ctx.config.get_subvolume("data"))
    uuids = {adapter.show(s.path).uuid for s in snaps}
    assert uuids <= set(held), "every snapshot the target keeps is owed and held"
    out = local_prune(ctx, holds=all_holds)
    assert not out.errors, dump(out)
    left = {s.uuid for s in local_scan.scan("data", paths["data"]) if s.kind == "timeline"}
    assert uuids <= left
    # once sent, only the base stays held
    assert not replicate(ctx).errors
    held = replication_holds(ctx, ctx.config.get_subvolume("data"))
    newest = adapter.show(snaps[-1].path).uuid
    assert [u for u in uuids if u in held] == [newest]
    local_prune(ctx, holds=all_holds)
    left = {s.uuid for s in local_scan.scan("data", paths["data"]) if s.kind == "timeline"}
    assert newest in left, "invariant 1: the local base survives pruning"


def test_unreachable_target_holds_everything(two, tmp_path):
    paths, root, state = two
    snaps = hourly("data", paths["data"], T0, 3)
    ctx = context(paths, str(tmp_path / "not-mounted"), now=T0 + timedelta(days=30), state=state)
    held = replication_holds(ctx, ctx.config.get_subvolume("data"))
    assert {adapter.show(s.path).uuid for s in snaps} <= set(held)


def test_target_refused_when_missing_or_not_btrfs(two, tmp_path):
    paths, root, state = two
    snap("data", paths["data"], T0)
    ctx = context(paths, str(tmp_path / "usb-not-mounted"), now=T0, state=state)
    out = replicate(ctx)
    assert out.exit_code == 1 and "is the disk mounted" in out.errors[0]
    plain = tmp_path / "plain"  # tmp_path lives on a non-btrfs filesystem here
    plain.mkdir()
    if adapter.is_btrfs(plain):
        pytest.skip("tmp is on btrfs")
    out = replicate(context(paths, str(plain), now=T0, state=state))
    assert "not btrfs" in out.errors[0]
    assert NotFound and NotBtrfs


def test_dry_run_changes_nothing(two):
    paths, root, state = two
    snap("data", paths["data"], T0)
    ctx = context(paths, str(root), now=T0, state=state)
    ctx.dry_run = True
    out = replicate(ctx)
    assert not out.errors and any(i.action == "would-send" for i in out.items)
    assert list(root.iterdir()) == []


def test_restore_from_target_is_a_writable_snapshot_and_leaves_nothing_else(two, make_fs):
    from subvault.run.restore_target import restore_from_target

    paths, root, state = two
    snap("data", paths["data"], T0)
    first = (paths["data"] / "small.txt").read_text()
    snap("data", paths["data"], T0 + timedelta(hours=1))
    ctx = context(paths, str(root), now=T0 + timedelta(hours=2), state=state)
    assert not replicate(ctx).errors
    scratch = make_fs("restore")
    (scratch.mountpoint / "data.20261120T000000Z").write_text("a user's file named like the entry\n")
    out = restore_from_target(ctx, "pi", "data", "2026-11-20T00:30+00:00", str(scratch.mountpoint))
    assert not out.errors
    assert "received read-only copy was removed" in out.items[0].detail
    restored = scratch.mountpoint / "data"
    assert sorted(p.name for p in scratch.mountpoint.iterdir()) == ["data", "data.20261120T000000Z"], \
        "only the writable copy is added: no received subvolume, no work directory"
    assert not adapter.show(restored).readonly
    assert (restored / "small.txt").read_text() == first
    (restored / "new.txt").write_text("writable\n")
    with pytest.raises(NotFound):
        restore_from_target(ctx, "pi", "data", "2026-11-19T00:00+00:00", str(restored))


def test_restore_from_target_at_a_number_or_uuid_even_within_one_second(two, make_fs):
    """`--at 3` (a snapshot number, as --help says) and a uuid name one entry; two snapshots of one second differ."""
    from subvault.run.restore_target import restore_from_target

    paths, root, state = two
    snap("data", paths["data"], T0)
    (paths["data"] / "small.txt").write_text("second\n")
    s2 = snap("data", paths["data"], T0 + timedelta(hours=1), change=False)
    (paths["data"] / "small.txt").write_text("third, same second\n")
    s3 = snap("data", paths["data"], T0 + timedelta(hours=1), change=False)
    ctx = context(paths, str(root), now=T0 + timedelta(hours=2), state=state)
    assert not replicate(ctx).errors
    scratch = make_fs("restore")
    for n, (at, want) in enumerate([(str(s2.number), "second\n"), (str(s3.number), "third, same second\n"),
                                    (adapter.show(s2.path).uuid, "second\n"), ("latest", "third, same second\n")]):
        into = scratch.mountpoint / f"r{n}"
        into.mkdir()
        ctx.dry_run = True
        promised = restore_from_target(ctx, "pi", "data", at, str(into)).items[0].data
        ctx.dry_run = False
        done = restore_from_target(ctx, "pi", "data", at, str(into)).items[0].data
        assert (into / "data" / "small.txt").read_text() == want, at
        assert promised["entry"] == done["entry"]
    from subvault.errors import UsageError
    with pytest.raises(UsageError, match="not a snapshot number, uuid or time"):
        restore_from_target(ctx, "pi", "data", "tuesday", str(scratch.mountpoint))
    with pytest.raises(NotFound, match="no restore point #99"):
        restore_from_target(ctx, "pi", "data", "99", str(scratch.mountpoint))


def test_run_metrics_report_bytes_sent_and_the_jobs_own_time(two, tmp_path):
    from datetime import datetime

    from conftest import run_cli
    from prometheus_client.parser import text_string_to_metric_families
    from replication_helpers import config_text

    paths, root, state = two
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(config_text(paths, str(root), state=state))
    metrics = tmp_path / "run.prom"
    run_cli("--config", str(cfg), "run", "--metrics-file", str(metrics))

    def read() -> dict:
        return {
            (s.name, s.labels.get("subvolume"), s.labels.get("layer")): s.value
            for f in text_string_to_metric_families(metrics.read_text()) for s in f.samples
        }

    got = read()
    assert got[("subvault_sent_bytes", "data", "replica:pi")] >= 2 << 20  # the 2 MiB file went over
    between = datetime.now(UTC).timestamp()
    run_cli("--config", str(cfg), "run", "--metrics-file", str(metrics))  # nothing due, all up to date
    got = read()
    # The job's clock, not the newest snapshot's date (which is from the first run).
    assert got[("subvault_last_success_timestamp_seconds", "data", "replica:pi")] >= between
    assert got[("subvault_last_success_timestamp_seconds", "data", "local")] >= between
    assert got[("subvault_sent_bytes", "data", "replica:pi")] == 0
