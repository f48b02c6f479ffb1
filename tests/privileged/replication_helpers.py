"""Shared setup for the replication tests: source subvolumes, configs, snapshots at chosen times."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from subvault.btrfs import adapter, local
from subvault.config.load import parse_config
from subvault.context import Context, host_name

UTC = UTC
T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


def make_sources(mnt: Path, names=("data", "pvc"), mib: int = 2) -> dict[str, Path]:
    paths = {}
    for name in names:
        p = mnt / name
        adapter.create_subvolume(p)
        (p / "file.bin").write_bytes(os.urandom(mib << 20))
        (p / "small.txt").write_text(f"{name}\n")
        paths[name] = p
    return paths


def source_and_target(make_fs, tmp_path: Path) -> tuple[dict[str, Path], Path, Path]:
    """Two loop filesystems: the sources (make_sources) on one, a target root `backup` on the other; and a state dir."""
    src = make_fs("src")
    tgt = make_fs("tgt")
    paths = make_sources(src.mountpoint)
    root = tgt.mountpoint / "backup"
    root.mkdir()
    return paths, root, tmp_path / "state"


def config_text(paths: dict[str, Path], url: str, *, keep: str = "24h 8d 5w", state: Path, extra_target: str = "") -> str:
    lines = ["[defaults]", 'timeline = "48h 7d"', 'targets = ["pi"]', f'state_dir = "{state}"', 'timezone = "UTC"', ""]
    for name, p in paths.items():
        lines += ["[[subvolume]]", f'name = "{name}"', f'path = "{p}"', ""]
    lines += ["[[target]]", 'name = "pi"', 'type = "btrfs"', f'url = "{url}"', f'keep = "{keep}"', extra_target]
    return "\n".join(lines) + "\n"


def context(paths, url, *, now: datetime, keep: str = "24h 8d 5w", state: Path, extra_target: str = "") -> Context:
    cfg = parse_config(config_text(paths, url, keep=keep, state=state, extra_target=extra_target))
    return Context(cfg, now=now, zone=UTC)


def snap(name: str, path: Path, at: datetime, change: bool = True):
    """Take a timeline snapshot dated `at`, after changing a file so each one differs."""
    if change:
        (path / "small.txt").write_text(f"{name} {at.isoformat()}\n" + "x" * 1000)
    return local.create(name, path, kind="timeline", description="timeline", now=at)


def hourly(name: str, path: Path, start: datetime, count: int):
    return [snap(name, path, start + timedelta(hours=i)) for i in range(count)]


def container(root: Path, sub: str) -> Path:
    return root / host_name() / sub


def entries(root: Path, sub: str) -> dict[str, adapter.SubvolInfo]:
    """Return name -> SubvolInfo of the subvolumes in the target container of sub."""
    c = container(root, sub)
    if not c.exists():
        return {}
    out = {}
    for child in sorted(c.iterdir()):
        if adapter.is_subvolume(child):
            out[child.name] = adapter.show(child)
    return out


def sent_items(outcome, *, full: bool | None = None):
    items = [i for i in outcome.items if i.action == "sent"]
    if full is not None:
        items = [i for i in items if i.data.get("full") is full]
    return items


def dump(outcome) -> str:
    return json.dumps([(i.subject, i.action, i.detail) for i in outcome.items], indent=1) + "\n" + "\n".join(outcome.errors)
