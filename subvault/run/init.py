"""`subvault init`: scan the mounted btrfs filesystems, write a starter config.

Rule: the config it writes passes `subvault check` as written (after a first `run`),
so every subvolume ends up covered, and every exclude carries a real reason:
- a subvolume that is mounted somewhere, or reachable inside another one, is data
  and is protected;
- except well-known rebuildable places, excluded with the reason why (caches and temp
  directories; container runtimes' image layers; the kubelet's state);
- a filesystem's top level is protected only when it holds files of its own (the
  same test `check` uses); a top level that only holds subvolumes is not data and gets
  no entry (an exclude there would cover every subvolume created under it later);
- snapshots (read-only, received, or under .snapshots) are not data and are skipped;
- subvolumes not reachable from any mount are listed as comments.
With paths given, only the filesystems holding those paths are scanned.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subvault import process
from subvault.btrfs import adapter
from subvault.btrfs.snapdir import SNAPSHOTS_DIR, write_atomic
from subvault.errors import ConfigError, SubvaultError
from subvault.model import SubvolInfo
from subvault.run.coverage_scan import loose_file
from subvault.run.neighbours import hand_over_notes

MAX_NAME = 48

# Rebuildable places on a live system: (absolute path, reason); it covers what lies under it.
REBUILDABLE = (
    ("/var/cache", "ephemeral: a cache"),
    ("/var/tmp", "ephemeral: temporary files"),
    ("/var/lib/kubelet", "rebuilt by the kubelet"),
    ("/var/lib/containers/storage/btrfs/subvolumes", "container image layers: rebuilt by pulling the images"),
    ("/var/lib/docker/btrfs/subvolumes", "container image layers: rebuilt by pulling the images"),
    ("/var/lib/machines", "machine images: rebuilt by importing them"),
)


@dataclass(frozen=True)
class Mount:
    target: str
    fsroot: str  # subvolume path relative to the top level, "" for the top level
    uuid: str


def btrfs_mounts() -> list[Mount]:
    """Return every mounted btrfs filesystem view (one per mount point)."""
    out = process.run(["findmnt", "-J", "-t", "btrfs", "-o", "TARGET,FSROOT,UUID"], check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    mounts = []

    def walk(nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            mounts.append(Mount(node["target"], (node.get("fsroot") or "/").strip("/"), node.get("uuid") or ""))
            walk(node.get("children", []))

    walk(json.loads(out.stdout).get("filesystems", []))
    return mounts


def reachable_path(sub: SubvolInfo, mounts: list[Mount]) -> tuple[str | None, bool]:
    """Return (path where sub is reachable, whether it is itself a mount root). Pure."""
    best: tuple[int, str, bool] | None = None
    for m in mounts:
        if sub.path == m.fsroot:
            return m.target, True
        prefix = m.fsroot + "/" if m.fsroot else ""
        if sub.path.startswith(prefix):
            depth = len(m.fsroot)
            path = os.path.join(m.target, sub.path[len(prefix):])
            if best is None or depth > best[0]:
                best = (depth, path, False)
    return (best[1], best[2]) if best else (None, False)


def is_snapshot_like(sub: SubvolInfo) -> bool:
    parts = sub.path.split("/")
    return sub.readonly or sub.received_uuid is not None or SNAPSHOTS_DIR in parts


def config_name(path: str, taken: set[str]) -> str:
    base = "root" if path == "/" else re.sub(r"[^A-Za-z0-9_-]", "_", path.strip("/").replace("/", "_")) or "root"
    if len(base) > MAX_NAME:
        base = base[-MAX_NAME:].lstrip("_-") or "subvolume"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def rebuildable(path: str) -> tuple[str, str] | None:
    """Return (exclude path, reason) when path is or lies under a rebuildable place. Pure."""
    norm = "/" + path.strip("/")
    for place, reason in REBUILDABLE:
        if norm == place or norm.startswith(place + "/"):
            return place, reason
    return None


def render_config(protected: list[str], excluded: dict[str, str], unreachable: list[str], notes: Sequence[str] = ()) -> str:
    """Return the starter TOML. Pure."""
    lines = [
        "# Written by `subvault init`. Every subvolume is protected or excluded with a reason:",
        "# review both lists, add a [[target]], then `subvault config check` and `subvault check`.",
        "",
        "[defaults]",
        'timeline = "24h 7d 4w"',
        "prechange_keep = 10",
        "targets = []",
        "",
    ]
    taken: set[str] = set()
    for path in protected:
        lines += ["[[subvolume]]", f"name = {json.dumps(config_name(path, taken))}", f"path = {json.dumps(path)}", ""]
    for path, reason in sorted(excluded.items()):
        lines += ["[[exclude]]", f"path = {json.dumps(path)}", f"reason = {json.dumps(reason)}", ""]
    for desc in unreachable:
        lines.append(f"# not reachable from any mount (mount it to protect it): {desc}")
    lines += list(notes)
    return "\n".join(lines).rstrip() + "\n"


def scan_host(only: list[str] | None = None) -> str:
    """Scan the mounted btrfs filesystems (only those holding `only`'s paths, if given) and
    return a starter config covering each subvolume."""
    mounts = btrfs_mounts()
    if not mounts:
        raise SubvaultError("no btrfs filesystem is mounted; subvault protects btrfs subvolumes only")
    by_fs: dict[str, list[Mount]] = {}
    for m in mounts:
        by_fs.setdefault(m.uuid or m.target, []).append(m)
    if only:
        wanted = {_fs_of(p, mounts) for p in only}
        by_fs = {k: v for k, v in by_fs.items() if k in wanted}
    protected: list[str] = []
    excluded: dict[str, str] = {}
    unreachable: list[str] = []
    for fs_mounts in by_fs.values():
        for top in (m for m in fs_mounts if m.fsroot == ""):
            if loose_file(top.target, []) is not None:
                protected.append(top.target)
            break
        for sub in adapter.list_subvolumes(fs_mounts[0].target):
            if is_snapshot_like(sub):
                continue
            path, _mounted = reachable_path(sub, fs_mounts)
            if path is None:
                unreachable.append(f"{sub.path} (id {sub.id})")
            elif (skip := rebuildable(path)) is not None:
                excluded.setdefault(*skip)
            elif path not in protected:
                protected.append(path)
        for m in fs_mounts:
            if m.fsroot and m.target not in protected and rebuildable(m.target) is None:
                protected.append(m.target)
    # An exclude covers everything under it: drop protected paths it would contradict.
    protected = [p for p in protected if not any(p == e or p.startswith(e.rstrip("/") + "/") for e in excluded)]
    return render_config(sorted(set(protected)), excluded, unreachable, hand_over_notes(sorted(set(protected))))


def _fs_of(path: str, mounts: list[Mount]) -> str:
    """Return the filesystem key (uuid) of the mount holding path; raise if none is btrfs."""
    real = os.path.realpath(path)
    best = max((m for m in mounts if real == m.target or real.startswith(m.target.rstrip("/") + "/")), key=lambda m: len(m.target), default=None)
    if best is None:
        raise SubvaultError(f"{path} is not on a mounted btrfs filesystem; give a path on one")
    return best.uuid or best.target


def write_config(text: str, dest: str, *, force: bool) -> Path:
    """Write the config to dest (mode 0600: it may come to hold secrets); refuse to replace an existing one without force."""
    path = Path(dest)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory (expected the config file's path, e.g. {path / 'subvault.toml'})")
    if path.exists() and not force:
        raise SubvaultError(f"{path} exists; pass --force to replace it, or --output - to print the starter config")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, 0o600)
    return path
