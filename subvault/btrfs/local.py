"""Creating and deleting the local snapshots of one subvolume, in snapper's layout
(thin executor, no policy). Reading them is `btrfs/local_scan.py`.

Write ordering for a new snapshot N (see docs/design.md):
  1. mkdir .snapshots/N            (fails if N is taken: nothing else is touched)
  2. write the PENDING marker
  3. btrfs subvolume snapshot -r   (on failure: remove N, raise)
  4. write info.xml atomically     (on failure: delete the snapshot, remove N, raise)
  5. syncfs, then remove the marker (info.xml is durable before the marker goes)
Deleting runs it backwards: marker, info.xml, subvolume, directory. A crash at any
point leaves a marker, and `finish_pending` completes or undoes the change.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from subvault.btrfs import adapter
from subvault.btrfs.snapper import OWNER_KEY, PENDING, Info, numbered_dirs, parse_info, render_info, snapshots_dir, write_atomic
from subvault.errors import NoSpace, NotBtrfs, SnapshotNumberTaken, SubvaultError
from subvault.model import LocalSnapshot

KIND_CLEANUP = {"timeline": "timeline", "prechange": "number"}


def ensure_snapshots_dir(sub_path: str | Path) -> Path:
    """Return <sub>/.snapshots, creating it as a subvolume if missing.

    Raise NotBtrfs if the subvolume is missing or `.snapshots` is a plain directory.
    """
    adapter.require_subvolume(sub_path)
    sdir = snapshots_dir(sub_path)
    if sdir.is_symlink():
        raise NotBtrfs(f"{sdir} is a symlink; subvault needs .snapshots to be a subvolume or a mount of one")
    if not sdir.exists():
        adapter.create_subvolume(sdir)
        os.chmod(sdir, 0o750)
    elif not adapter.is_subvolume(sdir) and not os.path.ismount(sdir):
        raise NotBtrfs(
            f"{sdir} is a plain directory, not a subvolume; move it aside and let subvault create it, "
            "or turn it into a subvolume (`btrfs subvolume create`)"
        )
    return sdir


def next_number(sub_path: str | Path) -> int:
    nums = numbered_dirs(snapshots_dir(sub_path))
    return (nums[-1] + 1) if nums else 1


@dataclass(frozen=True)
class Request:
    """One snapshot to create: sub_path (or `source`) into the next free number of sub_path."""

    sub_name: str
    sub_path: str | Path
    kind: str
    description: str
    number: int | None = None
    source: str | Path | None = None
    readonly: bool = True


def create(
    sub_name: str,
    sub_path: str | Path,
    *,
    kind: str,
    description: str,
    now: datetime,
    number: int | None = None,
    source: str | Path | None = None,
    readonly: bool = True,
) -> LocalSnapshot:
    """Create snapshot N of sub_path (or of `source`) with its info.xml, in the order above.

    Kind "rollback" makes a writable snapshot that prune never deletes.
    Raise SnapshotNumberTaken if N exists, NoSpace on ENOSPC; in every failure nothing
    of N is left behind.
    """
    result = create_many([Request(sub_name, sub_path, kind, description, number, source, readonly)], now=now)[0]
    if isinstance(result, SubvaultError):
        raise result
    return result


def create_many(requests: list[Request], *, now: datetime) -> list[LocalSnapshot | SubvaultError]:
    """Create several snapshots together; return each one's snapshot or error, in order.

    The snapshots themselves are taken concurrently (they may share a transaction
    commit), and the info.xml files are made durable with one syncfs per filesystem
    before the markers go. Each failure is undone on its own; the others stand.
    """
    date = now.astimezone(UTC).replace(microsecond=0)
    staged: list[tuple[Request, Path] | SubvaultError] = [_stage(r) for r in requests]
    jobs = [(i, r, d) for i, (r, d) in ((i, s) for i, s in enumerate(staged) if not isinstance(s, SubvaultError))]
    errors = adapter.snapshot_many([(str(r.source or r.sub_path), str(d / "snapshot"), r.readonly) for _, r, d in jobs])
    results: list[LocalSnapshot | SubvaultError] = [s if isinstance(s, SubvaultError) else None for s in staged]  # type: ignore[misc]  # None holds the place of a snapshot made below
    written: list[tuple[int, Path]] = []
    for (i, req, ndir), err in zip(jobs, errors, strict=True):
        if err is not None:
            _undo(ndir)
            results[i] = err
            continue
        info = Info(num=int(ndir.name), date=date, description=req.description,
                    cleanup=KIND_CLEANUP.get(req.kind, ""), userdata=((OWNER_KEY, req.kind),))
        try:
            write_atomic(ndir / "info.xml", render_info(info), durable=False)
        except OSError as exc:
            _undo(ndir)
            results[i] = _os_error(exc, f"write {ndir}/info.xml")
            continue
        written.append((i, ndir))
        results[i] = LocalSnapshot(
            subvolume=req.sub_name, number=info.num, path=ndir / "snapshot", date=date,
            description=req.description, cleanup=info.cleanup,
            kind=req.kind if req.kind in KIND_CLEANUP else "foreign",  # type: ignore[arg-type]  # a kind in KIND_CLEANUP is a SnapshotKind; `in` does not narrow a str
            owned=req.kind in KIND_CLEANUP, userdata=dict(info.userdata),
        )
    sync_filesystems([ndir for _, ndir in written])
    for _, ndir in written:
        (ndir / PENDING).unlink()
    return results


def _stage(req: Request) -> tuple[Request, Path] | SubvaultError:
    """Steps 1 and 2: make .snapshots/N and its marker. Return (req, dir) or the error."""
    try:
        sdir = ensure_snapshots_dir(req.sub_path)
        num = req.number if req.number is not None else next_number(req.sub_path)
        ndir = sdir / str(num)
        try:
            os.mkdir(ndir, 0o755)
        except FileExistsError:
            return SnapshotNumberTaken(
                f"{ndir} already exists (snapper or another run took number {num}); run again to pick the next number"
            )
        try:
            _write_marker(ndir, "create")
        except OSError as exc:
            _undo(ndir)
            return _os_error(exc, f"create {ndir}")
        return req, ndir
    except SubvaultError as exc:
        return exc
    except OSError as exc:
        return _os_error(exc, f"snapshot {req.sub_path}")


def sync_filesystems(dirs: list[Path]) -> None:
    """One syncfs per filesystem among dirs: info.xml is durable before its marker goes."""
    seen: set[int] = set()
    for d in dirs:
        dev = os.stat(d).st_dev
        if dev in seen:
            continue
        seen.add(dev)
        fd = os.open(d, os.O_RDONLY)
        try:
            adapter.syncfs(fd)
        finally:
            os.close(fd)


def delete_snapshot(snap: LocalSnapshot) -> None:
    """Delete one owned snapshot: marker, info.xml, subvolume, directory.

    Raise SubvaultError if the snapshot is not subvault's own (invariant 8).
    """
    if not snap.owned:
        raise SubvaultError(f"refusing to delete {snap.path}: it was not made by subvault")
    ndir = snap.path.parent
    _write_marker(ndir, "delete")
    (ndir / "info.xml").unlink(missing_ok=True)
    _undo(ndir)


def finish_pending(sub_path: str | Path) -> list[int]:
    """Complete or undo every half-done create/delete under .snapshots; return their numbers.

    A create whose snapshot is read-only and whose info.xml is whole is kept; anything
    else marked pending is removed.
    """
    sdir = snapshots_dir(sub_path)
    fixed = []
    for num in numbered_dirs(sdir):
        ndir = sdir / str(num)
        marker = ndir / PENDING
        if not marker.exists():
            continue
        action = marker.read_text().split()[0] if marker.stat().st_size else "create"
        complete = False
        if action == "create" and (ndir / "info.xml").exists() and adapter.is_subvolume(ndir / "snapshot"):
            try:
                info = parse_info((ndir / "info.xml").read_text())
                writable_kind = info.userdata_dict.get(OWNER_KEY) == "rollback"
                complete = writable_kind or adapter.show(ndir / "snapshot").readonly
            except (ValueError, SubvaultError):
                complete = False
        if complete:
            marker.unlink()
        else:
            (ndir / "info.xml").unlink(missing_ok=True)
            _undo(ndir)
        fixed.append(num)
    return fixed


def _write_marker(ndir: Path, action: str) -> None:
    with open(ndir / PENDING, "w") as fh:
        fh.write(f"{action} pid={os.getpid()}\n")


def _undo(ndir: Path) -> None:
    """Remove .snapshots/N entirely: the snapshot subvolume, then the directory."""
    snap = ndir / "snapshot"
    if adapter.is_subvolume(snap):
        adapter.delete(snap)
    elif snap.exists():
        shutil.rmtree(snap)
    for name in os.listdir(ndir) if ndir.exists() else []:
        (ndir / name).unlink()
    if ndir.exists():
        ndir.rmdir()


def _os_error(exc: OSError, what: str) -> SubvaultError:
    if exc.errno == errno.ENOSPC:
        return NoSpace(f"{what}: no space left on device; free space or prune, then retry")
    return SubvaultError(f"{what}: {exc.strerror}")
