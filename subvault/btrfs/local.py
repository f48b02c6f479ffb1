"""Local snapshots of one subvolume, in snapper's layout (thin executor, no policy).

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

import gc
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from subvault.btrfs import adapter
from subvault.btrfs.snapper import (
    OWNER_KEY,
    PENDING,
    SNAPSHOTS_DIR,
    Info,
    fast_info_fields,
    numbered_dirs,
    parse_info,
    render_info,
    write_atomic,
)
from subvault.errors import NoSpace, NotBtrfs, SnapshotNumberTaken, SubvaultError
from subvault.model import LocalSnapshot, SnapshotKind, SubvolInfo

KIND_CLEANUP = {"timeline": "timeline", "prechange": "number"}


def snapshots_dir(sub_path: str | Path) -> Path:
    return Path(sub_path) / SNAPSHOTS_DIR


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


def read_snapshot(sub_name: str, ndir: str | Path, *, uuid: str | None = None, received_uuid: str | None = None) -> LocalSnapshot | None:
    """Return the snapshot in .snapshots/N, or None when N is incomplete or not a snapshot."""
    ndir = Path(ndir)
    dfd = os.open(ndir.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _read_snapshot(sub_name, ndir.parent, dfd, ndir.name, uuid, received_uuid)
    finally:
        os.close(dfd)


_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO named info.xml is not waited on


def _read_snapshot(sub_name: str, sdir: Path, dfd: int, name: str, uuid: str | None, received_uuid: str | None) -> LocalSnapshot | None:
    """read_snapshot for .snapshots/<name>, with paths relative to dfd (the .snapshots directory).

    Runs once per snapshot (10,000 of them in `list` and `prune`): no pathlib parsing,
    no Info object, three system calls when nothing is pending.
    """
    if os.access(f"{name}/{PENDING}", os.F_OK, dir_fd=dfd):
        return None
    try:
        text = _read_text(f"{name}/info.xml", dfd)
        fields = fast_info_fields(text)
        if fields is None:
            info = parse_info(text)
            fields = (info.type, info.num, info.date, info.description, info.cleanup, info.userdata)
    except (OSError, ValueError):
        return None
    _type, num, date, description, cleanup, pairs = fields
    userdata = dict(pairs)
    owner_kind = userdata.get(OWNER_KEY)
    kind: SnapshotKind = owner_kind if owner_kind in ("timeline", "prechange") else "foreign"  # type: ignore[assignment]  # owner_kind is one of the literal's values here; `in` does not narrow a str
    return LocalSnapshot(
        subvolume=sub_name,
        number=num,
        path=sdir.joinpath(f"{name}/snapshot"),  # a third of Path(str)'s cost
        date=date,
        description=description,
        cleanup=cleanup,
        kind=kind,
        owned=kind != "foreign",
        uuid=uuid,
        received_uuid=received_uuid,
        userdata=userdata,
    )


def _read_text(path: str, dfd: int) -> str:
    """A small file's text as UTF-8 (no buffered text layer: this runs once per snapshot).

    A regular file's read returns fewer bytes than asked only at its end, so one read
    of a file under 64 KiB is the whole file.
    """
    fd = os.open(path, _READ_FLAGS, dir_fd=dfd)
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)).decode("utf-8")  # UnicodeDecodeError is a ValueError


def scan(
    sub_name: str, sub_path: str | Path, *, with_uuids: bool = True, fs_subvols: FsIndex | None = None
) -> list[LocalSnapshot]:
    """Return every complete snapshot under <sub>/.snapshots, oldest number first.

    With with_uuids, each snapshot carries its btrfs uuid (one look at the filesystem's
    subvolumes, shared through `fs_subvols` by callers that scan several subvolumes);
    snapshots whose subvolume is missing are left out (an info.xml alone is not a
    restore point).
    """
    sdir = snapshots_dir(sub_path)
    entries = numbered_entries(sdir)
    if not entries:
        return []
    locate = (fs_subvols or FsIndex()).locator(sdir) if with_uuids else None
    found: list[LocalSnapshot] = []
    dfd = os.open(sdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    collecting = gc.isenabled()
    gc.disable()  # the objects made here hold no cycles: no collector passes over 10,000 of them (5% of a scan)
    try:
        for num, ino in entries:
            uuid = received = None
            if locate is not None:
                ids = locate(num, ino)
                if ids is None:
                    continue
                uuid, received = ids
            snap = _read_snapshot(sub_name, sdir, dfd, str(num), uuid, received)
            if snap is not None:
                found.append(snap)
    finally:
        if collecting:
            gc.enable()
        os.close(dfd)
    return found


def numbered_entries(sdir: Path) -> list[tuple[int, int]]:
    """(number, directory inode) of every numeric entry under .snapshots, sorted (inodes from readdir: no stat)."""
    try:
        with os.scandir(sdir) as it:
            found = [(int(e.name), e.inode()) for e in it if e.name.isdigit()]
    except FileNotFoundError:
        return []
    found.sort()
    return found


Locator = Callable[[int, int], "tuple[str | None, str | None] | None"]


class FsIndex:
    """Subvolumes per filesystem, looked at once per command.

    Keyed by the filesystem's uuid: st_dev differs for every subvolume of one btrfs.
    """

    def __init__(self) -> None:
        self._by_fs: dict[str, dict[str, SubvolInfo]] = {}
        self._placement: dict[str, Any] = {}  # fs uuid -> fastpath.Placement

    def by_path(self, path: str | Path) -> dict[str, SubvolInfo]:
        fs = adapter.fs_id(path)
        if fs not in self._by_fs:
            self._by_fs[fs] = {s.path: s for s in adapter.list_subvolumes(path)}
        return self._by_fs[fs]

    def locator(self, sdir: Path) -> Locator:
        """A function (N, inode of N) -> (uuid, received uuid) of .snapshots/N/snapshot, or None if it is missing.

        As root with libbtrfsutil: one walk of the root tree per filesystem, matched by
        place (parent subvolume, directory inode, name). Otherwise by path from the
        filesystem's top level.
        """
        if adapter.fast_path():
            try:
                return self.locate_by_place(sdir)
            except OSError:
                pass  # the listing below reports the error in its own words
        return self.locate_by_path(sdir)

    def locate_by_path(self, sdir: Path) -> Locator:
        prefix = adapter.fs_relative_path(sdir)
        by_path = self.by_path(sdir.parent)

        def by_name(num: int, _ino: int) -> tuple[str | None, str | None] | None:
            info = by_path.get(f"{prefix}/{num}/snapshot" if prefix else f"{num}/snapshot")
            return None if info is None else (info.uuid, info.received_uuid)

        return by_name

    def locate_by_place(self, sdir: Path) -> Locator:
        from subvault.btrfs import fastpath

        fs = adapter.fs_id(sdir)
        placement = self._placement.get(fs)
        if placement is None:
            placement = self._placement[fs] = fastpath.Placement(str(sdir))
        parent = fastpath.subvolume_id(str(sdir))
        return lambda _num, ino: placement.uuids(parent, ino, b"snapshot")


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
    _sync_filesystems([ndir for _, ndir in written])
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


def _sync_filesystems(dirs: list[Path]) -> None:
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
    import errno

    if exc.errno == errno.ENOSPC:
        return NoSpace(f"{what}: no space left on device; free space or prune, then retry")
    return SubvaultError(f"{what}: {exc.strerror}")
