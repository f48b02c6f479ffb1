"""Creating numbered snapshots in snapper's layout: the write ordering (thin executor).

Write ordering for a new snapshot N (see docs/design.md):
  1. mkdir .snapshots/N            (fails if N is taken: nothing else is touched)
  2. write the PENDING marker
  3. snapshot the subvolume        (on failure: remove N)
  4. write info.xml atomically     (on failure: delete the snapshot, remove N)
  5. syncfs, then remove the marker (info.xml is durable before the marker goes)
A crash at any point leaves a marker, and `local.finish_pending` completes or undoes
the change. `btrfs/local.py` makes `.snapshots` first and wraps the results; snap-all's
fast start (`cli/fast.py`) calls `create_in` directly, so nothing heavier than os and
datetime is imported here (paths are strings).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from datetime import datetime

from subvault.btrfs.snapdir import OWNER_KEY, PENDING, info_xml, numbered_dirs, snapshots_dir, write_atomic
from subvault.btrfs.syscalls import fs_id, is_subvolume, syncfs
from subvault.errors import NoSpace, NotBtrfs, SnapshotNumberTaken, SubvaultError

KIND_CLEANUP = {"timeline": "timeline", "prechange": "number"}

# (source, dest, readonly) for each snapshot -> each one's error or None
SnapshotMany = Callable[[list[tuple[str, str, bool]]], list[SubvaultError | None]]


class Request:
    """One snapshot to create: sub_path (or `source`) into the next free number of sub_path."""

    __slots__ = ("sub_name", "sub_path", "kind", "description", "number", "source", "readonly")

    def __init__(self, sub_name: str, sub_path: str | os.PathLike[str], kind: str, description: str,
                 number: int | None = None, source: str | os.PathLike[str] | None = None, readonly: bool = True) -> None:
        self.sub_name = sub_name
        self.sub_path = sub_path
        self.kind = kind
        self.description = description
        self.number = number
        self.source = source
        self.readonly = readonly


def next_number(sub_path: str | os.PathLike[str]) -> int:
    nums = numbered_dirs(snapshots_dir(sub_path))
    return (nums[-1] + 1) if nums else 1


def create_in(requests: list[Request], date: datetime, snapshot_many: SnapshotMany) -> list[str | SubvaultError]:
    """Steps 1-5 for requests whose `.snapshots` exists; return each one's .snapshots/N or error, in order.

    The snapshots are taken by one `snapshot_many` call (they may share a transaction
    commit), and the info.xml files are made durable with one syncfs per filesystem
    before the markers go. Each failure is undone on its own; the others stand.
    """
    results: list[str | SubvaultError] = [_stage(r) for r in requests]
    jobs = [(i, requests[i], d) for i, d in enumerate(results) if isinstance(d, str)]
    errors = snapshot_many([(os.fspath(r.source or r.sub_path), os.path.join(d, "snapshot"), r.readonly) for _, r, d in jobs])
    written: list[str] = []
    for (i, req, ndir), err in zip(jobs, errors, strict=True):
        if err is not None:
            undo(ndir)
            results[i] = err
            continue
        text = info_xml(int(os.path.basename(ndir)), date, req.description, KIND_CLEANUP.get(req.kind, ""), ((OWNER_KEY, req.kind),))
        try:
            write_atomic(os.path.join(ndir, "info.xml"), text, durable=False)
        except OSError as exc:
            undo(ndir)
            results[i] = os_error(exc, f"write {ndir}/info.xml")
            continue
        written.append(ndir)
    sync_filesystems(written)
    for ndir in written:
        os.unlink(os.path.join(ndir, PENDING))
    return results


def _stage(req: Request) -> str | SubvaultError:
    """Steps 1 and 2: make .snapshots/N and its marker. Return the directory or the error."""
    try:
        num = req.number if req.number is not None else next_number(req.sub_path)
        ndir = os.path.join(snapshots_dir(req.sub_path), str(num))
        try:
            os.mkdir(ndir, 0o755)
        except FileExistsError:
            return SnapshotNumberTaken(
                f"{ndir} already exists (snapper or another run took number {num}); run again to pick the next number"
            )
        try:
            write_marker(ndir, "create")
        except OSError as exc:
            undo(ndir)
            return os_error(exc, f"create {ndir}")
        return ndir
    except SubvaultError as exc:
        return exc
    except OSError as exc:
        return os_error(exc, f"snapshot {req.sub_path}")


def sync_filesystems(dirs: list[str]) -> None:
    """One syncfs per filesystem among dirs: info.xml is durable before its marker goes.

    A filesystem is known by its uuid: each btrfs subvolume has an st_dev of its own.
    """
    seen: set[str | int] = set()
    for d in dirs:
        try:
            fs: str | int = fs_id(d)
        except NotBtrfs:
            fs = os.stat(d).st_dev
        if fs in seen:
            continue
        seen.add(fs)
        fd = os.open(d, os.O_RDONLY)
        try:
            syncfs(fd)
        finally:
            os.close(fd)


def write_marker(ndir: str | os.PathLike[str], action: str) -> None:
    with open(os.path.join(ndir, PENDING), "w") as fh:
        fh.write(f"{action} pid={os.getpid()}\n")


def undo(ndir: str | os.PathLike[str]) -> None:
    """Remove .snapshots/N entirely: the snapshot subvolume, then the directory."""
    snap = os.path.join(ndir, "snapshot")
    if is_subvolume(snap):
        # Only after a failure, or when deleting: the process gateway is imported here so
        # that a snap-all that goes well never loads it (its start-up is measured).
        from subvault.btrfs import adapter

        adapter.delete(snap)
    elif os.path.exists(snap):
        import shutil

        shutil.rmtree(snap)
    for name in os.listdir(ndir) if os.path.exists(ndir) else []:
        os.unlink(os.path.join(ndir, name))
    if os.path.exists(ndir):
        os.rmdir(ndir)


def os_error(exc: OSError, what: str) -> SubvaultError:
    if exc.errno == errno.ENOSPC:
        return NoSpace(f"{what}: no space left on device; free space or prune, then retry")
    return SubvaultError(f"{what}: {exc.strerror}")
