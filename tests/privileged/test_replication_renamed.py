"""Invariant 7 on btrfs targets: a subvolume renamed in the config is found by uuid, never sent in full again.

A target keeps each subvolume's receives in a directory named after its configured
`name`. After a rename in the config (same path, same subvolume), the old directory
holds verified receives of this subvolume's own snapshots: replicate refuses to send a
second full copy, names the old directory and the fix, holds the common base locally,
and touches nothing under the old name.
"""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from replication_helpers import T0, container, context, dump, entries, sent_items, snap, source_and_target
from sshd import make_sshd, serve_command, sshd  # noqa: F401 - fixtures

from subvault.btrfs import adapter, local_scan
from subvault.errors import EXIT_PARTIAL
from subvault.run.holds import all_holds
from subvault.run.local import prune as local_prune
from subvault.run.replicate import replicate
from subvault.run.watch import check


@pytest.fixture
def two(make_fs, tmp_path):
    return source_and_target(make_fs, tmp_path)


def _renamed(paths: dict, old: str, new: str) -> dict:
    return {(new if k == old else k): v for k, v in paths.items()}


def _replicated_then_renamed(paths, root, state, url, extra=""):
    """Replicate data and pvc once, then rename data to files in the config and take a new snapshot."""
    snap("data", paths["data"], T0)
    snap("pvc", paths["pvc"], T0)
    out = replicate(context(paths, url, now=T0 + timedelta(minutes=5), state=state, extra_target=extra))
    assert not out.errors, dump(out)
    before = entries(root, "data")
    assert list(before) == ["data.20261120T000000Z"]
    renamed = _renamed(paths, "data", "files")
    snap("files", renamed["files"], T0 + timedelta(hours=1))
    ctx = context(renamed, url, now=T0 + timedelta(hours=1, minutes=5), state=state, extra_target=extra)
    return renamed, ctx, before


def _assert_refused_not_resent(out, root, before):
    assert sent_items(out) == [], f"nothing may be sent for a renamed subvolume: {dump(out)}"
    [error] = out.errors
    old = container(root, "data")
    assert error.startswith("files→pi: ") and str(old) in error and 'name = "data"' in error, error
    assert "mv -T" in error, error
    assert out.exit_code == EXIT_PARTIAL, "pvc succeeded, files did not: partial"
    assert any(i.subject.startswith("pvc") and i.action == "up-to-date" for i in out.items), dump(out)
    assert entries(root, "data") == before, "the old directory is untouched"
    assert entries(root, "files") == {}, "no second full copy under the new name"


def test_invariant_7_renamed_subvolume_is_found_by_uuid_not_resent_full(two):
    paths, root, state = two
    renamed, ctx, before = _replicated_then_renamed(paths, root, state, str(root))

    dry = context(renamed, str(root), now=ctx.now, state=state)
    dry.dry_run = True
    out = replicate(dry)
    assert not [i for i in out.items if i.action == "would-send"] and out.errors, dump(out)
    out = replicate(ctx)
    _assert_refused_not_resent(out, root, before)

    # check says the same, for that subvolume and target
    report = check(ctx)
    assert any(str(container(root, "data")) in p.message and p.message.startswith("files replica:pi") for p in report.problems), report.problems

    # the snapshot the old directory shares with the source is held: a local prune keeps it
    base = local_scan.scan("files", renamed["files"])[0]
    # (a target keeping only the newest would otherwise release it, and the local timeline has aged it out)
    fresh = context(renamed, str(root), now=T0 + timedelta(days=30), keep="1h", state=state)
    holds = all_holds(fresh, next(s for s in fresh.config.subvolume if s.name == "files"))
    assert base.uuid in holds, holds
    local_prune(fresh, holds=all_holds)
    assert base.uuid in {s.uuid for s in local_scan.scan("files", renamed["files"])}
    assert entries(root, "data") == before

    # the fix the message gives, run literally on the target, and the next run is incremental
    fix = out.errors[0].split("`")[1]
    subprocess.run(["bash", "-c", fix], check=True)
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert sent_items(out, full=True) == [] and len(sent_items(out, full=False)) == 1, dump(out)
    got = entries(root, "files")
    assert sorted(got) == ["files.20261120T000000Z", "files.20261120T010000Z"]
    assert got["files.20261120T000000Z"].uuid == before["data.20261120T000000Z"].uuid, "the same receive, renamed"


def test_invariant_7_a_genuinely_new_subvolume_still_gets_its_first_full_send(two):
    paths, root, state = two
    snap("data", paths["data"], T0)
    snap("pvc", paths["pvc"], T0)
    assert not replicate(context(paths, str(root), now=T0 + timedelta(minutes=5), state=state)).errors
    logs = paths["data"].parent / "logs"
    adapter.create_subvolume(logs)
    (logs / "a.log").write_text("hello\n")
    snap("logs", logs, T0 + timedelta(hours=1))
    out = replicate(context({**paths, "logs": logs}, str(root), now=T0 + timedelta(hours=1, minutes=5), state=state))
    assert not out.errors, dump(out)
    [full] = sent_items(out, full=True)
    assert full.subject == "logs→pi"
    assert list(entries(root, "logs")) == ["logs.20261120T010000Z"]


def _ssh_extra(server) -> str:
    opts = ", ".join(f'"{o}"' for o in server.ssh_options())
    return f'ssh_identity = "{server.client_key}"\nssh_options = [{opts}]\n'


def test_invariant_7_renamed_subvolume_over_ssh_is_not_resent_full(two, sshd):  # noqa: F811
    paths, root, state = two
    renamed, ctx, before = _replicated_then_renamed(paths, root, state, sshd.url(root), _ssh_extra(sshd))
    _assert_refused_not_resent(replicate(ctx), root, before)


def test_invariant_7_renamed_subvolume_through_serve_is_not_resent_full(two, make_sshd):  # noqa: F811
    paths, root, state = two
    server = make_sshd(serve_command(root))
    renamed, ctx, before = _replicated_then_renamed(paths, root, state, server.url(root), _ssh_extra(server))
    _assert_refused_not_resent(replicate(ctx), root, before)


def test_invariant_7_two_swapped_names_are_refused_and_neither_directory_is_touched(two):
    paths, root, state = two
    snap("data", paths["data"], T0)
    snap("pvc", paths["pvc"], T0)
    assert not replicate(context(paths, str(root), now=T0 + timedelta(minutes=5), state=state)).errors
    before = {n: entries(root, n) for n in ("data", "pvc")}
    swapped = {"data": paths["pvc"], "pvc": paths["data"]}
    for name, path in swapped.items():
        snap(name, path, T0 + timedelta(hours=1))
    # keep "1h": a plan that took the other's receives for its own would prune them
    out = replicate(context(swapped, str(root), now=T0 + timedelta(hours=1, minutes=5), keep="1h", state=state))
    assert sent_items(out) == [] and not [i for i in out.items if i.action == "prune"], dump(out)
    assert len(out.errors) == 2 and all("swapped" in e for e in out.errors), out.errors
    assert {n: entries(root, n) for n in ("data", "pvc")} == before
