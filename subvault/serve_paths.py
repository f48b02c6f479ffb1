"""Paths a receiving `subvault serve` accepts, opened so that nothing can be swapped in between.

The receiving layout is fixed: <root>/<host>/<subvolume>/<entry>. A path a client names
is accepted only when it is, written out, one of those depths (no `.` or `..`, no
trailing parts), lies under this key's host when the key is bound to one (`--host`),
and every part of it is a real directory, never a symlink: each part is opened
relative to the one before with O_NOFOLLOW. The command then runs on
/proc/self/fd/N of the directory that was opened and checked, not on the name, so a
stream on a second connection that renames or replaces a part after the check
cannot lead the command anywhere else.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter, fastpath, libbtrfsutil
from subvault.btrfs.parse import show_fields, uuid_or_none
from subvault.errors import EXIT_USAGE, SubvaultError

ROOT, HOST, CONTAINER, ENTRY = 0, 1, 2, 3  # depths below the root


class Rejected(SubvaultError):
    """The command is not one the restricted endpoint allows."""

    exit_code = EXIT_USAGE


def parts_of(root: Path, host: str | None, path: str) -> list[str]:
    """Given a client's path, return its parts below root. Raise Rejected unless it is a plain path there."""
    if not path.startswith("/"):
        raise Rejected(f"path {path!r} is not absolute")
    raw = [p for p in path.split("/") if p]
    base = [p for p in str(root).split("/") if p]
    if raw[: len(base)] != base:
        raise Rejected(f"path {path!r} is outside {root}")
    rest = raw[len(base) :]
    if any(p in (".", "..") for p in rest):
        raise Rejected(f"path {path!r} has . or .. in it")
    if len(rest) > ENTRY:
        raise Rejected(f"path {path!r} is deeper than <root>/<host>/<subvolume>/<entry>")
    if host is not None and rest and rest[0] != host:
        raise Rejected(f"this key may only touch {posixpath.join(str(root), host)}")
    return rest


@dataclass
class Opened:
    """Directories opened for one step; their fds are passed to the commands and closed after."""

    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()

    def open(self, root: Path, parts: list[str]) -> int:
        """Open root/parts..., every part a real directory (no symlink). Raise Rejected if one is not."""
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fds.append(fd)
        for part in parts:
            try:
                fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise Rejected(f"{part!r} under {root} is not a directory ({exc.strerror})") from None
            self.fds.append(fd)
        return fd

    @staticmethod
    def path(fd: int) -> str:
        return f"/proc/self/fd/{fd}"


def check_subvolume(fd: int, what: str) -> None:
    """Raise Rejected unless the directory open at fd is a subvolume's top directory."""
    if os.fstat(fd).st_ino != 256:
        raise Rejected(f"{what} is not a subvolume")


@dataclass(frozen=True)
class Info:
    id: int
    top_level: int
    readonly: bool
    received_uuid: str | None


def subvolume_info(fd: int) -> Info:
    """Return what the filesystem says of the subvolume open at fd. Raise Rejected if it cannot say."""
    if adapter.fast_path():  # in this process, on the open directory: no fork
        try:
            got = fastpath.subvolume_info(Opened.path(fd))
        except libbtrfsutil.LibError:
            raise Rejected("not a subvolume") from None
        return Info(got.id, got.top_level, got.readonly, got.received_uuid)
    res = process.run(["btrfs", "subvolume", "show", Opened.path(fd)], check=False, pass_fds=(fd,))
    _, fields = show_fields(res.stdout)
    if res.returncode != 0 or "Subvolume ID" not in fields:
        raise Rejected("not a subvolume")
    return Info(
        id=int(fields["Subvolume ID"]),
        top_level=int(fields.get("Top level ID", fields.get("Parent ID", "0")) or 0),
        readonly="readonly" in fields.get("Flags", ""),
        received_uuid=uuid_or_none(fields.get("Received UUID")),
    )
