"""`subvault init`: scan the mounted btrfs filesystems, write a starter config.

Every subvolume ends up covered: subvolumes that are mounted somewhere are protected;
subvolumes reachable only inside another one are excluded with reason "review me";
snapshots (read-only, received, or under .snapshots) are not data and are skipped.
Subvolumes that are not reachable from any mount are listed as comments.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter
from subvault.btrfs.snapper import SNAPSHOTS_DIR
from subvault.errors import SubvaultError
from subvault.model import SubvolInfo

REVIEW = "review me"
MAX_NAME = 48


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

    def walk(nodes):
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


def render_config(protected: list[str], excluded: list[str], unreachable: list[str]) -> str:
    """Return the starter TOML. Pure."""
    lines = [
        "# Written by `subvault init`. Every subvolume is protected or excluded:",
        "# review the excludes marked \"review me\", add targets, then `subvault config check`.",
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
    for path in excluded:
        lines += ["[[exclude]]", f"path = {json.dumps(path)}", f'reason = "{REVIEW}"', ""]
    for desc in unreachable:
        lines.append(f"# not reachable from any mount (mount it to protect it): {desc}")
    return "\n".join(lines).rstrip() + "\n"


def scan_host() -> str:
    """Scan every mounted btrfs filesystem and return a starter config covering each subvolume."""
    mounts = btrfs_mounts()
    if not mounts:
        raise SubvaultError("no btrfs filesystem is mounted; subvault protects btrfs subvolumes only")
    by_fs: dict[str, list[Mount]] = {}
    for m in mounts:
        by_fs.setdefault(m.uuid or m.target, []).append(m)
    protected: list[str] = []
    excluded: list[str] = []
    unreachable: list[str] = []
    for fs_mounts in by_fs.values():
        subs = adapter.list_subvolumes(fs_mounts[0].target)
        top = [s for s in fs_mounts if s.fsroot == ""]
        if top and top[0].target not in protected:
            protected.append(top[0].target)
        for sub in subs:
            if is_snapshot_like(sub):
                continue
            path, mounted = reachable_path(sub, fs_mounts)
            if path is None:
                unreachable.append(f"{sub.path} (id {sub.id})")
            elif mounted:
                if path not in protected:
                    protected.append(path)
            elif path not in excluded:
                excluded.append(path)
    for m in mounts:
        if m.fsroot and m.target not in protected:
            protected.append(m.target)
    return render_config(sorted(protected), sorted(excluded), unreachable)


def write_config(text: str, dest: str, *, force: bool) -> Path:
    """Write the config to dest (mode 0644); refuse to replace an existing one without force."""
    from subvault.btrfs.snapper import write_atomic

    path = Path(dest)
    if path.exists() and not force:
        raise SubvaultError(f"{path} exists; pass --force to replace it, or --output - to print the starter config")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, 0o644)
    return path
