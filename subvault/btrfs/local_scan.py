"""Reading the local snapshots of one subvolume from snapper's layout (no writes).

Rules:
- A snapshot is `.snapshots/N` with a whole info.xml and no PENDING marker; anything
  else (a half-done change, a stray directory, a FIFO named info.xml) is not a restore
  point and is skipped, never waited on.
- With uuids, a snapshot whose subvolume is missing is left out (an info.xml alone is
  not a restore point); the filesystem's subvolumes are looked at once per filesystem
  per command (`FsIndex`), however many subvolumes are scanned.
- A scan runs over 10,000 snapshots in `list` and `prune`: per snapshot, paths are
  relative to one open directory, and no pathlib parsing or Info object is made.

Creating and deleting snapshots is `btrfs/local.py`.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from subvault.btrfs import adapter
from subvault.btrfs.snapdir import OWNER_KEY, PENDING, snapshots_dir
from subvault.btrfs.snapper import fast_info_fields, parse_info
from subvault.model import LocalSnapshot, SnapshotKind, SubvolInfo


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
    sdir = Path(snapshots_dir(sub_path))
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
            found = [(int(e.name), e.inode()) for e in it if e.name.isascii() and e.name.isdigit()]
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

