"""Faults during replication: kill -9 of subvault, of the receive and of ssh; a corrupt stream; ENOSPC.

Each test checks that no data is lost, the chain continues (zero forced full sends) and
the error says what happened. Kills happen from the progress callback, i.e. after the
first bytes moved: deterministic, no sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from replication_helpers import T0, config_text, container, context, dump, entries, make_sources, sent_items, snap
from sshd import sshd  # noqa: F401 - fixture

from subvault.btrfs import adapter
from subvault.demo.testbed import exclude_foreign
from subvault.endpoints import endpoint as endpoint_mod
from subvault.run import replicate as replicate_mod
from subvault.run.replicate import replicate, replication_holds

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture
def pair(make_fs, tmp_path):
    src = make_fs("src")
    tgt = make_fs("tgt")
    paths = make_sources(src.mountpoint, mib=24)
    root = tgt.mountpoint / "backup"
    root.mkdir()
    return paths, root, tmp_path / "state"


def _children(match: str) -> list[int]:
    """Pids of this process's children whose command line contains match."""
    me = os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and match in cmd:
            out.append(int(d.name))
    return out


# A stage after `btrfs send` that lets the first MiB through and then holds the stream
# until the test releases it: the kill always lands mid-stream, whatever the speed.
GATE = (
    "import os, sys\n"
    "hold = os.open(sys.argv[1], os.O_RDWR)\n"
    "src, dst = sys.stdin.buffer, sys.stdout.buffer\n"
    "dst.write(src.read(1 << 20)); dst.flush()\n"
    "os.read(hold, 1)\n"
    "while chunk := src.read(1 << 16): dst.write(chunk)\n"
)


class Gate:
    """Holds every stream after its first MiB once armed; release() lets it go on."""

    def __init__(self, monkeypatch, fifo: Path) -> None:
        self.monkeypatch = monkeypatch
        self.fifo = fifo
        os.mkfifo(fifo)

    def arm(self) -> None:
        original = endpoint_mod.Endpoint.send_stages
        fifo = str(self.fifo)

        def gated(self, *a, **kw):
            return [*original(self, *a, **kw), [sys.executable, "-c", GATE, fifo]]

        self.monkeypatch.setattr(endpoint_mod.Endpoint, "send_stages", gated)

    def disarm(self) -> None:
        self.monkeypatch.undo()

    def release(self) -> None:
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # the gate is gone already
        os.write(fd, b"go")
        os.close(fd)


@pytest.fixture
def gate(monkeypatch, tmp_path):
    g = Gate(monkeypatch, tmp_path / "gate")
    yield g
    monkeypatch.undo()


def _kill_child_on_first_bytes(match: str, release=lambda: None):
    killed: list[int] = []

    def factory(subject: str):
        def report(n: int) -> None:
            if n and not killed:
                for pid in _children(match):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue  # ended between the listing and the kill
                    killed.append(pid)
                release()

        return report

    return factory, killed


def _assert_resumes_incrementally(paths, root, state, url, extra=""):
    """The next run removes the partial and completes with no full send."""
    ctx = context(paths, url, now=T0 + timedelta(hours=1, minutes=5), state=state, extra_target=extra)
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert sent_items(out, full=True) == [], "an interrupted transfer never forces a full send"
    assert sent_items(out, full=False)
    got = entries(root, "data")
    assert sorted(got) == ["data.20261120T000000Z", "data.20261120T010000Z"]
    assert all(i.readonly and i.received_uuid for i in got.values())
    newest = container(root, "data") / "data.20261120T010000Z"
    assert (newest / "big.bin").read_bytes() == (paths["data"] / "big.bin").read_bytes()


def _first_then_big_change(paths, root, state, url, extra=""):
    snap("data", paths["data"], T0)
    ctx = context(paths, url, now=T0 + timedelta(minutes=5), state=state, extra_target=extra)
    assert not replicate(ctx).errors
    (paths["data"] / "big.bin").write_bytes(os.urandom(24 << 20))
    snap("data", paths["data"], T0 + timedelta(hours=1))
    return context(paths, url, now=T0 + timedelta(hours=1, minutes=5), state=state, extra_target=extra)


def test_kill_receive_mid_stream_then_resume(pair, gate):
    paths, root, state = pair
    ctx = _first_then_big_change(paths, root, state, str(root))
    gate.arm()
    factory, killed = _kill_child_on_first_bytes("btrfs receive /", gate.release)  # the stream, not the read-ahead scan (--dump)
    out = replicate(ctx, progress=factory)
    gate.disarm()
    assert killed and out.errors and "receive" in out.errors[0], dump(out)
    _assert_resumes_incrementally(paths, root, state, str(root))


def test_kill_send_mid_stream_then_resume(pair, gate):
    paths, root, state = pair
    ctx = _first_then_big_change(paths, root, state, str(root))
    gate.arm()
    factory, killed = _kill_child_on_first_bytes("btrfs send -q", gate.release)  # the stream, not the read-ahead scan (--no-data)
    out = replicate(ctx, progress=factory)
    gate.disarm()
    assert killed and out.errors, dump(out)
    _assert_resumes_incrementally(paths, root, state, str(root))


def test_kill_ssh_mid_stream_then_resume(pair, sshd, gate):  # noqa: F811
    paths, root, state = pair
    opts = ", ".join(f'"{o}"' for o in sshd.ssh_options())
    extra = f'ssh_identity = "{sshd.client_key}"\nssh_options = [{opts}]\n'
    ctx = _first_then_big_change(paths, root, state, sshd.url(root), extra)
    gate.arm()
    factory, killed = _kill_child_on_first_bytes("btrfs receive /", gate.release)  # the local ssh stage carries this command
    out = replicate(ctx, progress=factory)
    gate.disarm()
    assert killed and out.errors, dump(out)
    _wait_remote_receivers_gone(root)
    _assert_resumes_incrementally(paths, root, state, sshd.url(root), extra)


def _wait_remote_receivers_gone(root: Path) -> None:
    """Wait until no `btrfs receive` into root is alive (the remote side notices the drop on its own)."""
    for _ in range(50):
        alive = _all_with(f"btrfs receive {root}")
        if not alive:
            return
        _block_briefly(alive[0])
    raise AssertionError("a remote btrfs receive never ended")


def _block_briefly(pid: int) -> None:
    """Block on the process's pidfd until it exits (bounded)."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [], 5)
    finally:
        os.close(fd)


def _all_with(match: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if match in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


KILL_SELF = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {here!r})
    from datetime import datetime
    from subvault.config.load import parse_config
    from subvault.context import Context
    from subvault.run.replicate import replicate
    from subvault.endpoints import endpoint as endpoint_mod
    original = endpoint_mod.Endpoint.send_stages
    endpoint_mod.Endpoint.send_stages = lambda self, *a, **kw: [*original(self, *a, **kw), [sys.executable, "-c", {gate!r}, {fifo!r}]]
    cfg = parse_config(open({cfg!r}).read())
    ctx = Context(cfg, now=datetime.fromisoformat({now!r}), zone=datetime.fromisoformat({now!r}).tzinfo)
    def factory(subject):
        def report(n):
            if n:
                os.kill(os.getpid(), 9)
        return report
    replicate(ctx, progress=factory)
    """
)


def test_kill_subvault_itself_then_resume(pair, tmp_path):
    paths, root, state = pair
    ctx = _first_then_big_change(paths, root, state, str(root))
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(config_text(paths, str(root), state=state) + exclude_foreign(tmp_path))
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    script = KILL_SELF.format(here=str(HERE), cfg=str(cfg), now=ctx.now.isoformat(), gate=GATE, fifo=str(fifo))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _wait_remote_receivers_gone(root)
    _assert_resumes_incrementally(paths, root, state, str(root))


KILL_BEFORE_RENAME = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {here!r})
    from datetime import datetime
    from subvault.config.load import parse_config
    from subvault.endpoints.endpoint import Endpoint
    from subvault.context import Context
    from subvault.run.replicate import replicate
    def die(*a, **kw):
        os.kill(os.getpid(), 9)
    # A local target renames at once; a remote one sends the owed rename with the prune.
    Endpoint.rename = die
    original_apply = Endpoint.apply
    Endpoint.apply = lambda self, steps, what: die() if what == "rename and prune" and steps else original_apply(self, steps, what)
    cfg = parse_config(open({cfg!r}).read())
    ctx = Context(cfg, now=datetime.fromisoformat({now!r}), zone=datetime.fromisoformat({now!r}).tzinfo)
    replicate(ctx)
    """
)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "ssh"])
def test_kill_between_verify_and_rename_then_adopt(pair, sshd, tmp_path, remote):  # noqa: F811
    """kill -9 after the receive was verified, before its rename: the next run adopts it, sends nothing again."""
    paths, root, state = pair
    extra = ""
    url = str(root)
    if remote:
        opts = ", ".join(f'"{o}"' for o in sshd.ssh_options())
        extra = f'ssh_identity = "{sshd.client_key}"\nssh_options = [{opts}]\n'
        url = sshd.url(root)
    ctx = _first_then_big_change(paths, root, state, url, extra)
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(config_text(paths, url, state=state, extra_target=extra))
    script = KILL_BEFORE_RENAME.format(here=str(HERE), cfg=str(cfg), now=ctx.now.isoformat())
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = entries(root, "data")
    assert "snapshot" in left and left["snapshot"].readonly, "the verified receive is still under the stream's name"
    out = replicate(ctx)
    assert not out.errors, dump(out)
    assert sent_items(out) == [], "a complete receive is never sent again"
    assert [i.action for i in out.items if i.action == "adopt"] == ["adopt"], dump(out)
    got = entries(root, "data")
    assert sorted(got) == ["data.20261120T000000Z", "data.20261120T010000Z"]
    newest = container(root, "data") / "data.20261120T010000Z"
    assert (newest / "big.bin").read_bytes() == (paths["data"] / "big.bin").read_bytes()


CORRUPT = "import sys\nd=sys.stdin.buffer.read()\nm=len(d)//2\nsys.stdout.buffer.write(d[:m]+bytes(b^0xFF for b in d[m:m+4096])+d[m+4096:])\n"


def test_corrupt_stream_is_rejected_and_cleaned(pair, monkeypatch):
    paths, root, state = pair
    ctx = _first_then_big_change(paths, root, state, str(root))
    original = endpoint_mod.Endpoint.send_stages

    def corrupting(self, *a, **kw):
        return [*original(self, *a, **kw), [sys.executable, "-c", CORRUPT]]

    monkeypatch.setattr(endpoint_mod.Endpoint, "send_stages", corrupting)
    out = replicate(ctx)
    assert out.errors and "receive" in out.errors[0], dump(out)
    assert "data.20261120T010000Z" not in entries(root, "data"), "a garbled receive never gets a final name"
    monkeypatch.setattr(endpoint_mod.Endpoint, "send_stages", original)
    _assert_resumes_incrementally(paths, root, state, str(root))


def test_enospc_on_target_is_clear_and_loses_nothing(make_fs, tmp_path):
    src = make_fs("src", size="1G")
    tgt = make_fs("tgt", size="150M")
    paths = make_sources(src.mountpoint, names=("data",), mib=1)
    (paths["data"] / "big.bin").write_bytes(os.urandom(300 << 20))
    root = tgt.mountpoint / "backup"
    root.mkdir()
    state = tmp_path / "state"
    s = snap("data", paths["data"], T0)
    ctx = context(paths, str(root), now=T0 + timedelta(minutes=5), state=state)
    out = replicate(ctx)
    assert out.errors and "no space left" in out.errors[0], dump(out)
    assert [n for n in entries(root, "data") if n.startswith("data.")] == []
    held = replication_holds(ctx, ctx.config.get_subvolume("data"))
    assert adapter.show(s.path).uuid in held, "what could not be sent is still owed"
    # making room lets the next run through, removing the partial first
    (paths["data"] / "big.bin").unlink()
    snap("data", paths["data"], T0 + timedelta(hours=1))
    ctx = context(paths, str(root), now=T0 + timedelta(hours=1, minutes=5), keep="latest", state=state)
    out = replicate(ctx)
    assert not [e for e in out.errors], dump(out)
    assert replicate_mod  # module under test


def test_enospc_partial_removed_at_once_and_error_shown_in_status_and_check(make_fs, tmp_path):
    src = make_fs("src", size="1G")
    tgt = make_fs("tgt", size="150M")
    paths = make_sources(src.mountpoint, names=("data",), mib=1)
    (paths["data"] / "big.bin").write_bytes(os.urandom(300 << 20))
    root = tgt.mountpoint / "backup"
    root.mkdir()
    state = tmp_path / "state"
    snap("data", paths["data"], T0)
    ctx = context(paths, str(root), now=T0 + timedelta(minutes=5), state=state)
    out = replicate(ctx)
    assert out.errors and "no space left" in out.errors[0], dump(out)
    assert entries(root, "data") == {}, "the partial receive is removed at once, not at the next run"
    df = subprocess.run(["btrfs", "filesystem", "df", "-b", str(root)], capture_output=True, text=True, check=True).stdout
    data_used = int(df.split("Data,", 1)[1].split("used=", 1)[1].split()[0])
    assert data_used < 8 << 20, f"the partial's space is given back at once:\n{df}"
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(config_text(paths, str(root), state=state) + exclude_foreign(tmp_path))
    status = subprocess.run([sys.executable, "-m", "subvault.cli.main", "--config", str(cfg), "status"],
                            capture_output=True, text=True, cwd=REPO)
    rows = [line for line in status.stdout.splitlines() if "replica:pi" in line]  # the table row, then the whole error
    assert any("no space" in row for row in rows), status.stdout + status.stderr
    check = subprocess.run([sys.executable, "-m", "subvault.cli.main", "--config", str(cfg), "check"],
                           capture_output=True, text=True, cwd=REPO)
    assert check.returncode == 1
    [line] = [l for l in check.stdout.splitlines() if "replica:pi" in l]
    assert line.startswith("space:") and "data" in line and "no space left" in line, check.stdout
    # once a replication to that target succeeds, the error is gone
    (paths["data"] / "big.bin").unlink()
    snap("data", paths["data"], T0 + timedelta(hours=1))
    out = replicate(context(paths, str(root), now=T0 + timedelta(hours=1, minutes=5), keep="latest", state=state))
    assert not out.errors, dump(out)
    status = subprocess.run([sys.executable, "-m", "subvault.cli.main", "--config", str(cfg), "status"],
                            capture_output=True, text=True, cwd=REPO)
    [row] = [line for line in status.stdout.splitlines() if "replica:pi" in line]
    assert "no space" not in row, status.stdout
