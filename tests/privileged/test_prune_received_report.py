"""`subvault prune-received` reports what it keeps alike in text and JSON, and names a snapshot received twice."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from sshd import REPO

from subvault.btrfs import adapter


def _receive(src, dest, name: str) -> None:
    send = subprocess.Popen(["btrfs", "send", "-q", str(src)], stdout=subprocess.PIPE)
    subprocess.run(["btrfs", "receive", "-q", str(dest)], stdin=send.stdout, check=True, capture_output=True)
    send.stdout.close()
    assert send.wait() == 0
    (dest / src.name).rename(dest / name)


@pytest.fixture
def received_twice(make_fs):
    """A backup root whose container holds data.A and data.B (the same snapshot, received twice) and data.C."""
    fs = make_fs("tgt")
    mnt = fs.mountpoint
    adapter.create_subvolume(mnt / "src")
    (mnt / "src" / "f").write_text("one\n")
    adapter.snapshot(mnt / "src", mnt / "one", readonly=True)
    (mnt / "src" / "f").write_text("two\n")
    adapter.snapshot(mnt / "src", mnt / "two", readonly=True)
    root = mnt / "backup"
    (root / "host").mkdir(parents=True)
    c = root / "host" / "data"
    adapter.create_subvolume(c)
    _receive(mnt / "one", c, "data.20261201T000000Z")
    _receive(mnt / "one", c, "data.20261201T000001Z")
    _receive(mnt / "two", c, "data.20261201T000002Z")
    return root, mnt


def _cli(root, tmp_path, *extra):
    argv = [str(REPO / ".venv" / "bin" / "subvault"), "prune-received", "--root", str(root), "--keep", "24h 7d",
            "--timezone", "UTC", "--state-dir", str(tmp_path / "state"), *extra]
    return subprocess.run(argv, capture_output=True, text=True)


def test_prune_received_text_and_json_count_the_same_kept_entries(received_twice, tmp_path):
    root, _ = received_twice
    doc = json.loads(_cli(root, tmp_path, "--json").stdout)
    kept = [i for i in doc["result"]["items"] if i["action"] == "keep"]
    assert len(kept) == 3 and all(i["detail"].startswith("data.") for i in kept), doc
    text = _cli(root, tmp_path)
    assert text.returncode == 0, text.stderr
    counts = [int(m.group(1)) for m in re.finditer(r"keep\s+(\d+) snapshots?", text.stdout)]
    assert counts == [len(kept)], text.stdout


def test_attack_a_snapshot_received_twice_is_named_by_prune_received(received_twice, tmp_path):
    """Two complete receives of one snapshot (same received_uuid) are one backup, not two: prune-received says so."""
    root, mnt = received_twice
    res = _cli(root, tmp_path, "--json")
    doc = json.loads(res.stdout)
    uuid = adapter.show(mnt / "one").uuid
    dup = [w for w in doc["result"]["warnings"] if uuid in w]
    assert len(dup) == 1 and "data.20261201T000000Z" in dup[0] and "data.20261201T000001Z" in dup[0], doc
    assert "data.20261201T000002Z" not in dup[0]
    assert "received 2 times" in _cli(root, tmp_path).stderr
