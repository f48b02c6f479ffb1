"""Invariant 5's I/O: every mounted btrfs filesystem, every subvolume on it, the files
at a top level, mounted or not; `plan/coverage.py` judges what this finds."""

from __future__ import annotations

import os
import stat

from subvault import process
from subvault.btrfs import adapter
from subvault.btrfs.mounts import mounts_now
from subvault.context import Context
from subvault.errors import SubvaultError
from subvault.model import SubvolInfo
from subvault.plan.coverage import (
    ExcludedFilesystem,
    ExcludedPath,
    FoundSubvolume,
    MountPoint,
    Problem,
    ProblemKind,
    ProtectedPath,
    found_from_info,
    norm_path,
    plan_coverage,
)

TOP_LEVEL_ID = 5
SUBVOLUME_ROOT_INO = 256  # btrfs gives every subvolume's root directory this inode number


def coverage_problems(ctx: Context) -> list[Problem]:
    """Invariant 5 over every mounted btrfs filesystem, whether or not the config names it."""
    mounts, uuid_of = mounts_now()
    missing: list[Problem] = []
    for sub in ctx.config.subvolume:
        if not os.path.exists(sub.path):
            missing.append(Problem(ProblemKind.MISSING, sub.path, f"{sub.name}: {sub.path} does not exist; fix the path or remove the [[subvolume]]"))
    excluded = [ExcludedPath(e.path, e.reason) for e in ctx.config.exclude if e.path is not None]
    excluded += _owned_dirs(ctx)
    excluded_fs = [ExcludedFilesystem(e.filesystem, e.subvolume or "", e.reason) for e in ctx.config.exclude if e.filesystem]
    found: list[FoundSubvolume] = []
    unreadable: list[Problem] = []
    for fs_uuid in sorted({m.fs_uuid for m in mounts}):
        fs_mounts = [m for m in mounts if m.fs_uuid == fs_uuid]
        try:
            infos = _list_any(fs_mounts)
        except SubvaultError as exc:
            where = fs_mounts[0].mount_path
            unreadable.append(Problem(ProblemKind.UNPROTECTED, where, f"{where}: cannot list the subvolumes of btrfs filesystem {fs_uuid} ({exc}); check cannot vouch for it"))
            continue
        for info in infos:
            managed = "/.snapshots/" in f"/{info.path}/" or info.path.endswith(".snapshots")
            found.append(found_from_info(fs_uuid, info, fs_mounts, managed_snapshot=managed))
        device = next((src for src, u in uuid_of.items() if u == fs_uuid), None)
        top = _top_level(fs_uuid, fs_mounts, [e.path for e in excluded], {norm_path(s.path) for s in ctx.config.subvolume}, device)
        if top is not None:
            found.append(top)
    protected = [ProtectedPath(s.name, s.path, ("local", *ctx.config.targets_of(s))) for s in ctx.config.subvolume]
    problems = [
        p for p in plan_coverage(found, protected, excluded, excluded_fs)
        if not (p.kind == ProblemKind.MISSING and any(m.subject == p.subject for m in missing))
    ]
    return missing + unreadable + problems


def _list_any(fs_mounts: list[MountPoint]) -> list[SubvolInfo]:
    """List a filesystem's subvolumes through the first of its mounts that answers."""
    error: SubvaultError | None = None
    for m in sorted(fs_mounts, key=lambda m: (len(m.subvol_path), m.mount_path)):
        try:
            return adapter.list_subvolumes(m.mount_path)
        except SubvaultError as exc:
            error = exc
    assert error is not None
    raise error


def _top_level(
    fs_uuid: str, fs_mounts: list[MountPoint], skip: list[str], configured: set[str], device: str | None = None
) -> FoundSubvolume | None:
    """The top level as coverage input when it is mounted and configured, or holds a file outside every subvolume.

    A top level mounted nowhere (the usual / = subvol=root layout) is looked at through
    a private read-only mount of subvolid 5, made and removed here: files left there are
    data nothing protects.
    """
    tops = sorted((m.mount_path for m in fs_mounts if m.subvol_path == ""), key=lambda p: (len(p), p))
    if not tops:
        loose = _loose_in_unmounted_top(device) if device else None
        return None if loose is None else FoundSubvolume(fs_uuid, TOP_LEVEL_ID, "", (), f"{fs_uuid}:top-level", loose_file=loose)
    loose = loose_file(tops[0], skip)
    if loose is None and not configured.intersection(tops):
        return None
    return FoundSubvolume(fs_uuid, TOP_LEVEL_ID, "", tuple(tops), f"{fs_uuid}:top-level", loose_file=loose)


def _loose_in_unmounted_top(device: str) -> str | None:
    """Mount the top level read-only in a private directory, look for a loose file, unmount.
    Return it as `<top level>/PATH`, or None (also when it cannot be mounted, e.g. not root)."""
    import tempfile

    where = tempfile.mkdtemp(prefix="subvault-check-top-")
    try:
        if process.run(["mount", "-t", "btrfs", "-o", "ro,subvolid=5", device, where], check=False).returncode != 0:
            return None
        try:
            found = loose_file(where, [])
        finally:
            process.run(["umount", where], check=False)
        return None if found is None else "<top level>/" + os.path.relpath(found, where)
    finally:
        try:
            os.rmdir(where)
        except OSError:
            pass  # still mounted (busy): left for the admin rather than removed under a mount


def loose_file(root: str, skip: list[str]) -> str | None:
    """Return a file under root that lies in no subvolume, no other mount and no skipped dir; None if none.

    Walks directories only until the first such file: a top level that only holds
    subvolumes (the usual layout) costs one listing per directory leading to them.
    """
    skipped = {norm_path(p) for p in skip}
    stack = [root]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as entries:
                listed = list(entries)
        except OSError:
            continue
        for entry in listed:
            if norm_path(entry.path) in skipped or entry.name == ".snapshots":
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                return entry.path
            if st.st_ino == SUBVOLUME_ROOT_INO or os.path.ismount(entry.path):
                continue
            stack.append(entry.path)
    return None


def _owned_dirs(ctx: Context) -> list[ExcludedPath]:
    """Directories whose subvolumes are subvault's own copies, not data to protect.

    Local btrfs targets and pull destinations hold replicas (and their containers);
    the drill's scratch disk holds a restore being verified.
    """
    owned = [ExcludedPath(t.url, f"subvault target {t.name}") for t in ctx.config.target if t.type == "btrfs" and t.url.startswith("/")]
    owned += [ExcludedPath(s.dest, f"subvault pull destination of {s.name}") for s in ctx.config.source]
    if ctx.config.dr is not None:
        owned.append(ExcludedPath(ctx.config.dr.drill_dir, "subvault drill scratch"))
    return owned
