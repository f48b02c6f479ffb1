"""Replication over ssh to a real sshd on 127.0.0.1, plain (btrfs-progs only) and through `subvault serve`."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta

import pytest
from replication_helpers import T0, container, context, dump, entries, sent_items, snap, source_and_target
from sshd import REPO, make_sshd, serve_command, sshd  # noqa: F401 - fixtures

from subvault.btrfs import adapter
from subvault.demo.testbed_ssh import HungListener, refused_port
from subvault.endpoints.runner import SshRunner, parse_ssh_url
from subvault.run.replicate import replicate


def _target_extra(server, *, compress: str = "none") -> str:
    opts = ", ".join(f'"{o}"' for o in server.ssh_options())
    return f'ssh_identity = "{server.client_key}"\nssh_options = [{opts}]\ncompress = "{compress}"\n'


@pytest.fixture
def pair(make_fs, tmp_path):
    return source_and_target(make_fs, tmp_path)


def _ssh_process_count(server) -> int:
    """Connections sshd accepted so far (one line per accepted publickey)."""
    return sum("Accepted publickey" in line for line in server.log)


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_ssh_full_then_incremental_one_connection(pair, sshd, compress):  # noqa: F811
    paths, root, state = pair
    snap("data", paths["data"], T0)
    snap("pvc", paths["pvc"], T0)
    extra = _target_extra(sshd, compress=compress)
    ctx = context(paths, sshd.url(root), now=T0 + timedelta(minutes=5), state=state, extra_target=extra)
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert len(sent_items(out, full=True)) == 2
    snap("data", paths["data"], T0 + timedelta(hours=1))
    snap("pvc", paths["pvc"], T0 + timedelta(hours=1))
    before = _ssh_process_count(sshd)
    ctx = context(paths, sshd.url(root), now=T0 + timedelta(hours=1, minutes=5), state=state, extra_target=extra)
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert len(sent_items(out, full=False)) == 2 and sent_items(out, full=True) == []
    # ControlMaster: a whole run (listing, two sends, verify, rename) authenticates once
    assert _ssh_process_count(sshd) - before == 1
    got = entries(root, "pvc")
    assert all(i.readonly and i.received_uuid for i in got.values()) and len(got) == 2


def test_ssh_url_parsing():
    u = parse_ssh_url("ssh://root@pi.wg:2222/mnt/backup/")
    assert (u.user, u.host, u.port, u.path) == ("root", "pi.wg", 2222, "/mnt/backup")
    u = parse_ssh_url("ssh://pi/mnt/backup")
    assert (u.user, u.port) == (None, None)
    argv = SshRunner(u, multiplex=False).argv([["btrfs", "receive", "/mnt/a b"]])
    assert "-p" not in argv and "-l" not in argv, "no port or user: ~/.ssh/config decides"
    assert argv[-1] == "btrfs receive '/mnt/a b'"


def test_plain_remote_with_only_btrfs_progs(pair, sshd):  # noqa: F811
    """No forced command: the remote runs the btrfs-progs/coreutils commands as they are."""
    paths, root, state = pair
    snap("data", paths["data"], T0)
    ctx = context(paths, sshd.url(root), now=T0, state=state, extra_target=_target_extra(sshd))
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert any(line.startswith("data.") for line in entries(root, "data"))


def _client(server, command: str) -> subprocess.CompletedProcess:
    argv = ["ssh", "-p", str(server.port), "-i", str(server.client_key), "-o", "BatchMode=yes"]
    for o in server.ssh_options():
        argv += ["-o", o]
    return subprocess.run([*argv, "--", "root@127.0.0.1", command], capture_output=True, text=True, stdin=subprocess.DEVNULL)


def test_serve_push_through_forced_command(pair, make_sshd):  # noqa: F811
    paths, root, state = pair
    server = make_sshd(serve_command(root))
    snap("data", paths["data"], T0)
    ctx = context(paths, server.url(root), now=T0, keep="latest", state=state, extra_target=_target_extra(server, compress="zstd"))
    out = replicate(ctx)
    assert not out.errors, dump(out)
    snap("data", paths["data"], T0 + timedelta(hours=1))
    ctx = context(paths, server.url(root), now=T0 + timedelta(hours=1), keep="latest", state=state, extra_target=_target_extra(server))
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert sent_items(out, full=True) == [] and len(sent_items(out)) == 1
    out = replicate(ctx)  # the previous base is released once the new one is in place
    assert not out.errors, dump(out)
    assert any(i.action == "prune" for i in out.items)
    assert list(entries(root, "data")) == ["data.20261120T010000Z"]


def test_serve_refuses_outside_root_other_commands_and_delete_when_append_only(pair, make_sshd, tmp_path):  # noqa: F811
    paths, root, state = pair
    server = make_sshd(serve_command(root, "--append-only"))
    outside = tmp_path / "outside"
    outside.mkdir()
    for cmd in [
        f"btrfs receive {outside}",
        f"btrfs receive {root}/../../outside",
        f"mkdir -p {outside}/x",
        "id",
        "sh -c id",
        f"btrfs subvolume list -o -u -q -R {root}; id",
        f"btrfs subvolume list -o -u -q -R {root} && id",
        f"btrfs subvolume list -o -u -q -R {root} || id",
        f"stat -f -c %T {root} && btrfs receive {outside}",
        f"btrfs subvolume delete {root}/x",
        f"btrfs subvolume snapshot {root} {root}/y",
        f"btrfs send -q {paths['data']}",
    ]:
        res = _client(server, cmd)
        assert res.returncode != 0, cmd
        assert "subvault serve refused" in res.stderr, (cmd, res.stderr)
    assert list(outside.iterdir()) == []
    # a real target entry cannot be deleted under --append-only
    snap("data", paths["data"], T0)
    ctx = context(paths, server.url(root), now=T0, state=state, extra_target=_target_extra(server))
    assert not replicate(ctx).errors
    (name,) = entries(root, "data")

    res = _client(server, f"btrfs subvolume delete {container(root, 'data') / name}")
    assert "--append-only" in res.stderr and adapter.is_subvolume(container(root, "data") / name)


def test_serve_send_only_refuses_writes(pair, make_sshd):  # noqa: F811
    paths, root, state = pair
    server = make_sshd(serve_command(root, "--send-only"))
    res = _client(server, f"mkdir -p {root}/x")
    assert res.returncode != 0 and "--send-only" in res.stderr
    res = _client(server, f"stat -f -c %T {root}")
    assert res.returncode == 0 and res.stdout.strip() == "btrfs"
    assert os.path.exists(root) and not os.path.exists(root / "x")


def test_append_only_target_is_never_asked_to_delete_and_prunes_itself(pair, make_sshd):  # noqa: F811
    """A target marked append_only gets no prune from the source; `prune-received` on its host prunes it."""
    paths, root, state = pair
    server = make_sshd(serve_command(root, "--append-only"))
    extra = _target_extra(server) + "append_only = true\n"
    for i in range(3):
        snap("data", paths["data"], T0 + timedelta(hours=i))
        ctx = context(paths, server.url(root), now=T0 + timedelta(hours=i, minutes=5), keep="latest", state=state, extra_target=extra)
        out = replicate(ctx)
        assert not out.errors, dump(out)
        assert not any(i.action == "prune" for i in out.items)
    names = sorted(n for n in entries(root, "data") if n.startswith("data."))
    assert len(names) == 3, "keep = latest, but nothing was deleted from the append-only target"
    # a partial (non-final name) may still be cleared through the append-only key
    c = container(root, "data")
    adapter.create_subvolume(c / "snapshot")
    res = _client(server, f"btrfs subvolume delete {c / 'snapshot'}")
    assert res.returncode == 0, res.stderr
    # the target host prunes itself: the newest is always kept
    cli = [str(REPO / ".venv" / "bin" / "subvault"), "prune-received", "--root", str(root), "--keep", "latest", "--state-dir", str(state)]
    dry = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True)
    assert dry.returncode == 0 and "would-prune" in dry.stdout, dry.stdout
    assert sorted(n for n in entries(root, "data") if n.startswith("data.")) == names, "--dry-run deletes nothing"
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(n for n in entries(root, "data") if n.startswith("data.")) == names[-1:]


def _hung_target_config(homelab, port: int) -> None:
    text = homelab.config.read_text().replace("prechange_keep = 10\n", 'prechange_keep = 10\ntargets = ["advpi"]\n', 1)
    text += (
        f'\n[[target]]\nname = "advpi"\ntype = "btrfs"\nurl = "ssh://root@127.0.0.1:{port}/mnt/backup"\n'
        'ssh_options = ["StrictHostKeyChecking=yes", "UserKnownHostsFile=/dev/null"]\n'
    )
    homelab.config.write_text(text)


@pytest.mark.timeout(300)  # a hang guard, not a timing assert: before the limits these never returned
def test_a_target_that_accepts_and_never_answers_ends_every_command_and_says_so(homelab):
    homelab.cli("snapshot")
    with HungListener() as hung:
        _hung_target_config(homelab, hung.port)
        for command, code in (("status", 0), ("check", 1), ("replicate", 1), ("run", 3)):
            before = len(hung.accepted)
            proc = homelab.cli(command, check=False)
            out = proc.stdout + proc.stderr
            assert proc.returncode == code, (command, out)
            assert "timed out" in out and "does not exist" not in out, (command, out)
            # asked once per command, however many subvolumes go there
            assert len(hung.accepted) - before == 1, (command, len(hung.accepted) - before)


@pytest.mark.timeout(120)
def test_a_refused_target_says_refused(homelab):
    homelab.cli("snapshot")
    _hung_target_config(homelab, refused_port())
    proc = homelab.cli("replicate", check=False)
    assert proc.returncode == 1 and "connection refused: root@127.0.0.1:" in proc.stderr, proc
    assert "does not exist" not in proc.stderr + proc.stdout
