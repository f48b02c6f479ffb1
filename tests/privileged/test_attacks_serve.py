"""Adversarial suite: a compromised server holding a push key bound to `subvault serve --append-only`.

The attacker holds exactly that access: any command line and any stream through the
forced command of a real sshd. Each test ends by checking that every kept backup still
exists and still restores (its files read back as they were sent).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from replication_helpers import container, context, dump, entries, make_sources, snap
from sshd import REPO, make_sshd, serve_command  # noqa: F401 - fixtures

from subvault.btrfs import adapter
from subvault.context import host_name
from subvault.run.replicate import replicate
from subvault.timeutil import utcnow

HOST = host_name()


def _extra(server, append_only: bool = True) -> str:
    opts = ", ".join(f'"{o}"' for o in server.ssh_options())
    return f'ssh_identity = "{server.client_key}"\nssh_options = [{opts}]\n' + ("append_only = true\n" if append_only else "")


def _ssh(server, command: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    argv = ["ssh", "-p", str(server.port), "-i", str(server.client_key), "-o", "BatchMode=yes"]
    for o in server.ssh_options():
        argv += ["-o", o]
    return subprocess.run([*argv, "root@127.0.0.1", command], capture_output=True, input=stdin if stdin is not None else b"")


def _stream(path: Path) -> bytes:
    return subprocess.run(["btrfs", "send", "-q", str(path)], capture_output=True, check=True).stdout


def _digest(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tree.rglob("*")) if p.is_file()}


def _prune_received(root: Path, keep: str, tmp_path: Path) -> dict:
    cli = [str(REPO / ".venv" / "bin" / "subvault"), "prune-received", "--root", str(root), "--keep", keep,
           "--timezone", "UTC", "--state-dir", str(tmp_path / "pi-state"), "--json"]
    res = subprocess.run(cli, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)["result"]


def _assert_kept_and_restores(root: Path, kept: dict[str, tuple[str, dict[str, str]]]) -> None:
    """Each kept backup (name -> (its received_uuid, digest of its files)) is still there, verified, with the same files."""
    got = entries(root, "data")
    for name, (received_uuid, digest) in kept.items():
        assert name in got, f"kept backup {name} is gone; left: {sorted(got)}"
        info = got[name]
        assert info.readonly and info.received_uuid == received_uuid
        assert _digest(container(root, "data") / name) == digest, f"{name} no longer holds what was sent"


@pytest.fixture
def world(make_fs, tmp_path):
    """A source (the server the attacker owns) and a Pi filesystem with a backup root."""
    src = make_fs("src")
    tgt = make_fs("tgt")
    paths = make_sources(src.mountpoint, names=("data",), mib=1)
    root = tgt.mountpoint / "backup"
    root.mkdir()
    evil = src.mountpoint / "evil"
    adapter.create_subvolume(evil)
    (evil / "small.txt").write_text("garbage\n")
    return paths, root, tmp_path / "state", src.mountpoint


def _honest_backup(paths, root, state, server, at) -> dict[str, tuple[str, dict[str, str]]]:
    s = snap("data", paths["data"], at)
    ctx = context(paths, server.url(root), now=at + timedelta(seconds=30), keep="24h 8d 5w", state=state, extra_target=_extra(server))
    out = replicate(ctx)
    assert not out.errors, dump(out)
    kept = {}
    for name, info in entries(root, "data").items():
        kept[name] = (info.received_uuid, _digest(container(root, "data") / name))
    assert any(uuid == adapter.show(s.path).uuid for uuid, _ in kept.values())
    return kept


def test_attack_append_only_key_renames_a_receive_to_a_chosen_time_and_prunes_nothing_real(world, make_sshd, tmp_path):
    """Issue 13.1: receive any stream, rename it `<sub>.<today>T000000Z` (first of the day) or one second
    after the real newest; the host's own `prune-received --keep 1d` must still keep the real backup."""
    paths, root, state, mnt = world
    server = make_sshd(serve_command(root, "--host", HOST, "--append-only"))
    now = utcnow().replace(microsecond=0)
    kept = _honest_backup(paths, root, state, server, now - timedelta(minutes=1))
    (real_name,) = kept
    c = container(root, "data")
    for i, chosen in enumerate([now.strftime("data.%Y%m%dT000000Z"), f"data.{(now + timedelta(seconds=1)).strftime('%Y%m%dT%H%M%SZ')}"]):
        adapter.snapshot(mnt / "evil", mnt / f"lie{i}", readonly=True)
        res = _ssh(server, f"btrfs receive {c}", _stream(mnt / f"lie{i}"))
        assert res.returncode == 0, res.stderr
        res = _ssh(server, f"mv -T {c / f'lie{i}'} {c / chosen}")
        assert res.returncode == 0, res.stderr  # allowed: names decide nothing on this host
    result = _prune_received(root, "1d", tmp_path)
    assert not result["errors"], result
    _assert_kept_and_restores(root, kept)
    # and the next honest backup still goes on top of it
    _honest_backup(paths, root, state, server, now)
    _assert_kept_and_restores(root, kept)


def test_attack_append_only_key_leaves_a_writable_entry_under_a_final_name_and_backups_go_on(world, make_sshd, tmp_path):
    """Issue 13.1: a writable subvolume under a final name (`data.20991231T000000Z`) must not stop
    `replicate`, and the receiving host must report it."""
    paths, root, state, mnt = world
    server = make_sshd(serve_command(root, "--host", HOST, "--append-only"))
    now = utcnow().replace(microsecond=0)
    kept = _honest_backup(paths, root, state, server, now - timedelta(minutes=2))
    c = container(root, "data")
    # the direct way is refused: no subvolume is created below a container
    res = _ssh(server, f"btrfs subvolume create {c / 'data.20991231T000000Z'}")
    assert res.returncode != 0 and "refused" in res.stderr.decode()
    # a stream named like a final entry, cut off half way: a writable subvolume under that name
    adapter.snapshot(mnt / "evil", mnt / "data.20991231T000000Z", readonly=True)
    (mnt / "evil" / "big.bin").write_bytes(b"x" * (4 << 20))
    adapter.snapshot(mnt / "evil", mnt / "data.20991230T000000Z", readonly=True)
    stream = _stream(mnt / "data.20991230T000000Z")
    _ssh(server, f"btrfs receive {c}", stream[: len(stream) // 2])
    blocker = c / "data.20991230T000000Z"
    assert adapter.is_subvolume(blocker) and not adapter.show(blocker).readonly
    result = _prune_received(root, "24h 8d 5w", tmp_path)
    assert any("data.20991230T000000Z" in w and "not a complete receive" in w for w in result["warnings"]), result
    # the honest sender clears it (it is no backup) and carries on
    s = snap("data", paths["data"], now - timedelta(minutes=1))
    out = replicate(context(paths, server.url(root), now=now, state=state, extra_target=_extra(server)))
    assert not out.errors, dump(out)
    assert not blocker.exists()
    assert any(i.received_uuid == adapter.show(s.path).uuid for i in entries(root, "data").values())
    _assert_kept_and_restores(root, kept)


def test_attack_a_host_bound_key_cannot_read_or_write_another_hosts_backups(world, make_sshd):
    """Issue 13.2: `serve --host NAME` lets the key touch <root>/<NAME>/ only, reads as well as writes."""
    paths, root, state, mnt = world
    honest = make_sshd(serve_command(root, "--host", HOST, "--append-only"))
    kept = _honest_backup(paths, root, state, honest, utcnow() - timedelta(minutes=1))
    (name,) = kept
    other = make_sshd(serve_command(root, "--host", "intruder", "--append-only"), name="intruder")
    c = container(root, "data")
    for cmd in [
        f"btrfs send -q {c / name}",
        f"btrfs subvolume list -o -u -q -R {c}",
        f"btrfs subvolume show {c / name}",
        f"btrfs receive {c}",
        f"btrfs subvolume delete {c / name}",
        f"mkdir -p {root / HOST}",
        f"btrfs subvolume create {root / HOST / 'new'}",
        f"btrfs subvolume sync {c}",
        f"stat -f -c %T {c}",
        f"mkdir -p {root / 'intruder' / 'a' / 'b' / 'c' / 'd'}",
        f"btrfs receive {root}/intruder/../{HOST}/data",
    ]:
        res = _ssh(other, cmd, b"")
        assert res.returncode != 0 and "refused" in res.stderr.decode(), (cmd, res.stderr)
    # its own directory works as usual
    assert _ssh(other, f"mkdir -p {root / 'intruder'}").returncode == 0
    _assert_kept_and_restores(root, kept)


def test_attack_a_path_swapped_for_a_symlink_after_the_check_changes_nothing(world, make_sshd):
    """Issue 13.2: between checking a path and running the command, another connection swaps a part of
    it for a symlink to a kept backup. The command acts on what was checked (opened), never on the new name."""
    from subvault import serve
    from subvault.serve_paths import Opened

    paths, root, state, mnt = world
    server = make_sshd(serve_command(root, "--host", HOST, "--append-only"))
    kept = _honest_backup(paths, root, state, server, utcnow() - timedelta(minutes=1))
    (name,) = kept
    c = container(root, "data")
    adapter.create_subvolume(c / "partial")
    opened = Opened()
    try:
        cmds = serve.check_step([["btrfs", "subvolume", "delete", str(c / "partial")]], root.resolve(), append_only=True, send_only=False, host=HOST, opened=opened)
        # the other connection: move the partial away and put a symlink to the kept backup in its place
        (c / "partial").rename(c / "moved")
        (c / "partial").symlink_to(c / name)
        assert serve._run_step(cmds, tuple(opened.fds)) == 0
    finally:
        opened.close()
    assert not (c / "moved").exists(), "the subvolume that was checked is the one deleted"
    _assert_kept_and_restores(root, kept)
    (c / "partial").unlink()


def test_attack_append_only_key_parks_a_complete_receive_under_the_next_streams_name(world, make_sshd, tmp_path):
    """Found on the way: a complete receive left under the name the next honest stream carries
    ("snapshot") cannot be deleted through an append-only key; it must not block the receive."""
    paths, root, state, mnt = world
    server = make_sshd(serve_command(root, "--host", HOST, "--append-only"))
    now = utcnow().replace(microsecond=0)
    kept = _honest_backup(paths, root, state, server, now - timedelta(minutes=2))
    c = container(root, "data")
    adapter.snapshot(mnt / "evil", mnt / "snapshot", readonly=True)
    assert _ssh(server, f"btrfs receive {c}", _stream(mnt / "snapshot")).returncode == 0
    res = _ssh(server, f"btrfs subvolume delete {c / 'snapshot'}")
    assert res.returncode != 0 and "append-only" in res.stderr.decode(), "a complete receive is never deleted by this key"
    s = snap("data", paths["data"], now - timedelta(minutes=1))
    out = replicate(context(paths, server.url(root), now=now, state=state, extra_target=_extra(server)))
    assert not out.errors, dump(out)
    assert any(i.received_uuid == adapter.show(s.path).uuid for i in entries(root, "data").values())
    _assert_kept_and_restores(root, kept)


def test_attack_append_only_key_cannot_delete_a_real_backup_whose_rename_was_cut_off(world, make_sshd):
    """Found on the way: a real backup still under the stream's name (its rename was cut off) was
    deletable as a "partial" by name; a complete receive is never deleted through this key."""
    paths, root, state, mnt = world
    server = make_sshd(serve_command(root, "--host", HOST, "--append-only"))
    kept = _honest_backup(paths, root, state, server, utcnow() - timedelta(minutes=1))
    (name,) = kept
    c = container(root, "data")
    (c / name).rename(c / "snapshot")  # as a crash between verify and rename leaves it
    res = _ssh(server, f"btrfs subvolume delete {c / 'snapshot'}")
    assert res.returncode != 0 and "append-only" in res.stderr.decode()
    (c / "snapshot").rename(c / name)
    _assert_kept_and_restores(root, kept)


def test_attack_append_only_key_adds_a_receive_and_the_previous_newest_is_not_pruned(world, make_sshd, tmp_path):
    """Issue 13.1, "it can never cause an existing entry to be pruned": two honest backups today, the
    second held only as the newest under `--keep 1d`; the key receives any stream and names it
    final. The host's own `prune-received` keeps both real backups (the addition moves no hold
    while it is inside the policy's finest window)."""
    paths, root, state, mnt = world
    server = make_sshd(serve_command(root, "--host", HOST, "--append-only"))
    now = utcnow().replace(microsecond=0)
    _honest_backup(paths, root, state, server, now - timedelta(minutes=3))
    kept = _honest_backup(paths, root, state, server, now - timedelta(minutes=2))
    assert len(kept) == 2
    c = container(root, "data")
    adapter.snapshot(mnt / "evil", mnt / "lie", readonly=True)
    res = _ssh(server, f"btrfs receive {c}", _stream(mnt / "lie"))
    assert res.returncode == 0, res.stderr
    res = _ssh(server, f"mv -T {c / 'lie'} {c / ('data.' + now.strftime('%Y%m%dT%H%M%SZ'))}")
    assert res.returncode == 0, res.stderr
    result = _prune_received(root, "1d", tmp_path)
    assert not result["errors"], result
    assert not [i for i in result["items"] if i.get("action") == "prune"], result
    _assert_kept_and_restores(root, kept)


def test_attack_append_only_key_parks_a_complete_receive_and_the_report_says_what_was_done(world, make_sshd, tmp_path):
    """A complete receive parked under a non-final name (`data.partial`) is renamed aside to a
    final name, never deleted: the sender's report (and its dry run) says set-aside and the new
    name, not delete-partial."""
    paths, root, state, mnt = world
    server = make_sshd(serve_command(root, "--host", HOST, "--append-only"))
    now = utcnow().replace(microsecond=0)
    _honest_backup(paths, root, state, server, now - timedelta(minutes=2))
    c = container(root, "data")
    adapter.snapshot(mnt / "evil", mnt / "data.partial", readonly=True)
    assert _ssh(server, f"btrfs receive {c}", _stream(mnt / "data.partial")).returncode == 0
    snap("data", paths["data"], now - timedelta(minutes=1))
    ctx = context(paths, server.url(root), now=now, state=state, extra_target=_extra(server))
    ctx.dry_run = True
    dry = replicate(ctx)
    assert [i.action for i in dry.items if "partial" in i.detail] == ["would-set-aside"], dump(dry)
    out = replicate(context(paths, server.url(root), now=now, state=state, extra_target=_extra(server)))
    assert not out.errors, dump(out)
    (item,) = [i for i in out.items if "data.partial" in i.detail]
    assert item.action == "set-aside", dump(out)
    new_name = item.data["renamed_to"]
    assert not (c / "data.partial").exists() and adapter.show(c / new_name).readonly, "the report names where it went"
    assert not [i for i in out.items if i.action == "delete-partial"], dump(out)
