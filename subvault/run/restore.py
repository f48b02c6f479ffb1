"""Restore files from a local snapshot with `cp -a --reflink=auto`.

Rules:
- Nothing that exists at the destination is replaced without `overwrite`; conflicts
  are found before the first byte is copied, so a refused restore changes nothing.
- The plan is made once, from lstat (symlinks are never followed), and both the dry
  run and the real run report it: the dry run promises exactly what the real run does.
- A directory merges into a directory. Anything else that exists at the destination
  is replaced, whatever its type: an entry whose type differs from the snapshot's
  (file, directory with its contents, symlink, fifo, socket, device; also a
  non-directory where the path needs a directory) is removed first, and `cp` runs
  with `--remove-destination`, so it never writes through a symlink it finds there.
- A destination directory that holds another subvolume or a mount point is never
  removed: the restore refuses, and the user moves it aside.
- `cp -a` keeps owner, mode, timestamps, xattrs and ACLs (ACLs are xattrs);
  `--reflink=auto` shares extents when source and destination are on one filesystem.
- The nested `.snapshots` of the subvolume is never restored onto itself.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from subvault import process
from subvault.btrfs.snapdir import SNAPSHOTS_DIR
from subvault.context import Context
from subvault.errors import NotFound, Refused, UsageError
from subvault.results import Item, Outcome
from subvault.run.local import find_snapshot
from subvault.units import human_size

MAX_LISTED = 5

_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device"}


def _kind(st: os.stat_result) -> str:
    return _KINDS.get(stat.S_IFMT(st.st_mode), "special file")


@dataclass(frozen=True)
class Replacement:
    """One destination entry the restore replaces; `entries` counts what a replaced directory held."""

    path: str
    was: str
    becomes: str
    entries: int = 0

    def __str__(self) -> str:
        if self.was == self.becomes:
            return self.path
        held = f" with {self.entries} entries" if self.was == "directory" else ""
        return f"{self.path} ({self.was}{held} -> {self.becomes})"


@dataclass
class CopyPlan:
    src: Path
    dest: Path
    skip: set[str]
    files: int = 0
    size: int = 0
    replaced: list[Replacement] = field(default_factory=list)


def _clean_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path.lstrip("/")) if path not in ("", ".", "/") else PurePosixPath(".")
    if ".." in rel.parts:
        raise UsageError(f"{path}: paths must stay inside the subvolume (no '..')")
    return rel


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _removable_dir(path: Path) -> int:
    """Return how many entries the directory tree at path holds. Raise Refused if it holds a subvolume or mount."""
    top = os.lstat(path).st_dev
    count = 0
    for root, dirs, names in os.walk(path):
        for d in dirs:
            p = Path(root) / d
            if os.lstat(p).st_dev != top or os.path.ismount(p):
                raise Refused(
                    f"{path} would be replaced, but it holds a subvolume or mount point ({p}); move it aside yourself, then restore"
                )
        count += len(dirs) + len(names)
    if os.path.ismount(path) or (path.parent.exists() and os.lstat(path.parent).st_dev != top):
        raise Refused(f"{path} is a subvolume or mount point; move it aside yourself, then restore")
    return count


def _replacement(dest: Path, dest_st: os.stat_result, becomes: str) -> Replacement:
    was = _kind(dest_st)
    return Replacement(str(dest), was, becomes, _removable_dir(dest) if was == "directory" else 0)


def _plan_tree(src: Path, dest: Path, plan: CopyPlan, *, top: bool) -> None:
    """Add src (and everything below it) to plan, comparing each entry with dest."""
    st = os.lstat(src)
    kind = _kind(st)
    dest_st = _lstat(dest)
    merge = dest_st is not None and kind == "directory" and _kind(dest_st) == "directory"
    if dest_st is not None and not merge:
        plan.replaced.append(_replacement(dest, dest_st, kind))
    if kind != "directory":
        plan.files += 1
        plan.size += st.st_size
        return
    with os.scandir(src) as it:
        names = sorted(e.name for e in it)
    for name in names:
        if top and name in plan.skip:
            continue
        if merge:
            _plan_tree(src / name, dest / name, plan, top=False)
        else:
            _count(src / name, plan)


def _count(src: Path, plan: CopyPlan) -> None:
    """Add src to plan where nothing exists at the destination."""
    st = os.lstat(src)
    if not stat.S_ISDIR(st.st_mode):
        plan.files += 1
        plan.size += st.st_size
        return
    for root, dirs, names in os.walk(src):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            plan.files += 1
            plan.size += os.lstat(os.path.join(root, name)).st_size


def _plan_ancestors(snap_root: Path, rel: PurePosixPath, dest_root: Path, plan: CopyPlan) -> None:
    """Each directory above rel must be a real directory in the snapshot; at the destination, anything else is replaced."""
    for i in range(1, len(rel.parts)):
        part = PurePosixPath(*rel.parts[:i])
        st = _lstat(snap_root / part)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{part} is a {_kind(st) if st else 'missing entry'} in the snapshot, not a directory; restore {part} itself")
        dest_st = _lstat(dest_root / part)
        if dest_st is None:
            return
        if not stat.S_ISDIR(dest_st.st_mode):
            plan.replaced.append(_replacement(dest_root / part, dest_st, "directory"))
            return


def plan_restore(snap_root: Path, rel: PurePosixPath, dest_root: Path) -> CopyPlan:
    """Return what copying snapshot path rel onto dest_root/rel does. Raise Refused/UsageError if it cannot."""
    src, dest = snap_root / rel, dest_root / rel
    skip = {SNAPSHOTS_DIR} if rel == PurePosixPath(".") else set()
    plan = CopyPlan(src, dest, skip)
    _plan_ancestors(snap_root, rel, dest_root, plan)
    if plan.replaced:  # an ancestor goes: nothing exists below it
        _count(src, plan)
    else:
        _plan_tree(src, dest, plan, top=True)
    return plan


def _listed(items: Sequence[object]) -> str:
    shown = ", ".join(map(str, items[:MAX_LISTED]))
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def restore_files(
    ctx: Context, subvolume: str, paths: list[str], *, at: str, into: str | None, overwrite: bool
) -> Outcome:
    """Copy `paths` (relative to the subvolume; default all) from the snapshot chosen by `at`.

    Raise Refused when files exist at the destination and overwrite is false.
    """
    sub = ctx.config.get_subvolume(subvolume)
    snap = find_snapshot(ctx, sub, at)
    dest_root = Path(into) if into else Path(sub.path)
    if os.path.lexists(dest_root) and not dest_root.is_dir():
        raise UsageError(f"--into {dest_root}: not a directory")
    if dest_root.exists():
        dest_root = Path(os.path.realpath(dest_root))  # the place the user named; symlinks below it are never followed
    out = Outcome("restore", dry_run=ctx.dry_run)
    plans = []
    for raw in paths or ["."]:
        rel = _clean_relative(raw)
        if not os.path.lexists(snap.path / rel):
            raise NotFound(f"{rel} is not in snapshot #{snap.number} of {sub.name} (see `subvault diff` or browse {snap.path})")
        plans.append(plan_restore(snap.path, rel, dest_root))
    conflicts = [r for p in plans for r in p.replaced]
    if conflicts and not overwrite:
        raise Refused(f"{len(conflicts)} paths exist at the destination ({_listed(conflicts)}); pass --overwrite to replace them, or --into DIR")
    for plan in plans:
        detail = f"#{snap.number} {plan.src} -> {plan.dest} ({plan.files} files, {human_size(plan.size)}, {len(plan.replaced)} replaced)"
        changed = [r for r in plan.replaced if r.was != r.becomes]
        if changed:
            detail += f"; type changes: {_listed(changed)}"
        data = {"files": plan.files, "bytes": plan.size, "snapshot": snap.number,
                "replaced": [{"path": r.path, "was": r.was, "becomes": r.becomes, "entries": r.entries} for r in plan.replaced]}
        if ctx.dry_run:
            out.items.append(Item(sub.name, "would-copy", detail, data))
            continue
        _copy(plan)
        out.items.append(Item(sub.name, "restored", detail, data))
    return out


def _remove(r: Replacement) -> None:
    path = Path(r.path)
    if r.was == "directory":
        shutil.rmtree(path)
    else:
        path.unlink()


def _copy(plan: CopyPlan) -> None:
    for r in plan.replaced:
        if r.was != r.becomes:
            _remove(r)
    src, dest = plan.src, plan.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    base = ["cp", "-a", "--reflink=auto", "--remove-destination", "-T"]
    if not plan.skip:
        process.run([*base, str(src), str(dest)], what=f"restore {src}")
        return
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(os.listdir(src)):
        if entry in plan.skip:
            continue
        process.run([*base, str(src / entry), str(dest / entry)], what=f"restore {src / entry}")
    process.run(["touch", "-r", str(src), str(dest)], check=False)
