"""Restore files from a local snapshot with `cp -a --reflink=auto`.

Rules:
- Nothing that exists at the destination is replaced without `overwrite`; conflicts
  are found before the first byte is copied, so a refused restore changes nothing.
- `cp -a` keeps owner, mode, timestamps, xattrs and ACLs (ACLs are xattrs);
  `--reflink=auto` shares extents when source and destination are on one filesystem.
- The nested `.snapshots` of the subvolume is never restored onto itself.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from subvault import process
from subvault.btrfs.snapper import SNAPSHOTS_DIR
from subvault.errors import NotFound, Refused, UsageError
from subvault.run.context import Context
from subvault.run.local import find_snapshot
from subvault.run.results import Item, Outcome
from subvault.units import human_size

MAX_LISTED = 5


def _clean_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path.lstrip("/")) if path not in ("", ".", "/") else PurePosixPath(".")
    if ".." in rel.parts:
        raise UsageError(f"{path}: paths must stay inside the subvolume (no '..')")
    return rel


def _walk(src: Path, dest: Path, skip_top: set[str]) -> tuple[int, int, list[str]]:
    """Return (files, bytes, conflicts) for copying src onto dest."""
    files = size = 0
    conflicts: list[str] = []
    if not src.is_dir() or src.is_symlink():
        st = src.lstat()
        if os.path.lexists(dest):
            conflicts.append(str(dest))
        return 1, st.st_size, conflicts
    for root, dirs, names in os.walk(src):
        rel_root = Path(root).relative_to(src)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in skip_top]
            names = [n for n in names if n not in skip_top]
        for d in dirs:
            target = dest / rel_root / d
            if os.path.lexists(target) and not target.is_dir():
                conflicts.append(str(target))
        for name in names:
            files += 1
            source = Path(root) / name
            size += source.lstat().st_size
            if os.path.lexists(dest / rel_root / name):
                conflicts.append(str(dest / rel_root / name))
    return files, size, conflicts


def restore_files(
    ctx: Context, subvolume: str, paths: list[str], *, at: str, into: str | None, overwrite: bool
) -> Outcome:
    """Copy `paths` (relative to the subvolume; default all) from the snapshot chosen by `at`.

    Raise Refused when files exist at the destination and overwrite is false.
    """
    sub = ctx.config.get_subvolume(subvolume)
    snap = find_snapshot(ctx, sub, at)
    dest_root = Path(into) if into else Path(sub.path)
    out = Outcome("restore", dry_run=ctx.dry_run)
    plans = []
    for raw in paths or ["."]:
        rel = _clean_relative(raw)
        src = snap.path / rel
        if not os.path.lexists(src):
            raise NotFound(f"{rel} is not in snapshot #{snap.number} of {sub.name} (see `subvault diff` or browse {snap.path})")
        dest = dest_root / rel
        skip = {SNAPSHOTS_DIR} if rel == PurePosixPath(".") else set()
        files, size, conflicts = _walk(src, dest, skip)
        plans.append((src, dest, skip, files, size, conflicts))
    conflicts = [c for p in plans for c in p[5]]
    if conflicts and not overwrite:
        shown = ", ".join(conflicts[:MAX_LISTED]) + (f" and {len(conflicts) - MAX_LISTED} more" if len(conflicts) > MAX_LISTED else "")
        raise Refused(f"{len(conflicts)} paths exist at the destination ({shown}); pass --overwrite to replace them, or --into DIR")
    for src, dest, skip, files, size, conflicting in plans:
        detail = f"#{snap.number} {src} -> {dest} ({files} files, {human_size(size)}, {len(conflicting)} replaced)"
        if ctx.dry_run:
            out.items.append(Item(sub.name, "would-copy", detail))
            continue
        _copy(src, dest, skip)
        out.items.append(Item(sub.name, "restored", detail, {"files": files, "bytes": size, "snapshot": snap.number}))
    return out


def _copy(src: Path, dest: Path, skip: set[str]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    base = ["cp", "-a", "--reflink=auto"]
    if not src.is_dir() or src.is_symlink():
        process.run([*base, "-T", str(src), str(dest)], what=f"restore {src}")
        return
    if not skip:
        process.run([*base, "-T", str(src), str(dest)], what=f"restore {src}")
        return
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(os.listdir(src)):
        if entry in skip:
            continue
        process.run([*base, "-T", str(src / entry), str(dest / entry)], what=f"restore {src / entry}")
    process.run(["touch", "-r", str(src), str(dest)], check=False)
