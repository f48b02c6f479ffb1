"""Adversarial suite: a compromised pull source answering `serve --send-only` with lies (names, times, paths).

The puller holds the only credential; the source can only answer. Each test ends by
checking that every backup the puller kept still exists and restores.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

from sshd import make_sshd  # noqa: F401 - fixture
from test_pull import _puller_config

from subvault.btrfs import adapter

LIAR = Path(__file__).with_name("lying_source.py")


def _digest(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tree.rglob("*")) if p.is_file() and ".snapshots" not in p.parts}


def _pull(config: Path) -> dict:
    from conftest import run_cli

    res = run_cli("--config", str(config), "pull", "--json", check=False)
    return json.loads(res.stdout)["result"]


def _newest_snapshot(home: Path) -> Path:
    return max((p for p in (home / ".snapshots").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)) / "snapshot"


def _entries(container: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(container.iterdir()) if adapter.is_subvolume(p)}


def _kept(container: Path) -> dict[str, tuple[str, dict[str, str]]]:
    return {name: (adapter.show(p).received_uuid, _digest(p)) for name, p in _entries(container).items()}


def _assert_kept_and_restores(container: Path, kept: dict[str, tuple[str, dict[str, str]]]) -> None:
    got = _entries(container)
    for name, (uuid, digest) in kept.items():
        assert name in got, f"kept backup {name} is gone; left: {sorted(got)}"
        assert adapter.show(got[name]).received_uuid == uuid and adapter.show(got[name]).readonly
        assert _digest(got[name]) == digest


def _setup(homelab, make_fs, make_sshd, tmp_path, keep: str):
    lies = tmp_path / "lies.json"
    lies.write_text("{}")
    server = make_sshd(shlex.join([sys.executable, str(LIAR), str(lies), str(homelab.fs.mountpoint)]))
    pi = make_fs("pi")
    config = _puller_config(tmp_path, server, pi, homelab, ["home"], keep=keep)
    return lies, config, pi.mountpoint / "vps1" / "home"


def test_attack_pull_source_reports_a_path_named_like_a_kept_entry(homelab, make_fs, make_sshd, tmp_path):
    """Issue 13.3: the reported path's last part names a kept entry of the puller; the failed check
    must not delete that entry (only what this receive made may be removed)."""
    homelab.cli("snapshot")
    lies, config, container = _setup(homelab, make_fs, make_sshd, tmp_path, keep="24h 8d 5w")
    first = _pull(config)
    assert not first["errors"], first
    kept = _kept(container)
    (victim,) = kept
    (homelab.paths["home"] / "more.txt").write_text("later\n")
    homelab.cli("snapshot", "--force")
    real = _newest_snapshot(homelab.paths["home"])
    lies.write_text(json.dumps({"paths": {str(real): f"/lies/{victim}"}}))
    _pull(config)
    _assert_kept_and_restores(container, kept)
    assert (adapter.show(real).uuid in {adapter.show(p).received_uuid for p in _entries(container).values()}), "and the new snapshot is pulled"


def test_attack_pull_source_back_dates_its_snapshots_to_make_the_puller_prune(homelab, make_fs, make_sshd, tmp_path):
    """Issue 13.3: times the source reports are lies; the puller dates what it received by its own clock,
    so its first backup of the day (kept by "2d") survives however old the source says things are."""
    homelab.cli("snapshot")
    lies, config, container = _setup(homelab, make_fs, make_sshd, tmp_path, keep="2d")
    assert not _pull(config)["errors"]
    kept = _kept(container)
    for i in range(2):
        lies.write_text(json.dumps({"days_back": 30 + i}))
        (homelab.paths["home"] / "more.txt").write_text(f"later {i}\n")
        homelab.cli("snapshot", "--force")
        out = _pull(config)
        assert not out["errors"], out
    _assert_kept_and_restores(container, kept)
    assert len(_entries(container)) >= 2
