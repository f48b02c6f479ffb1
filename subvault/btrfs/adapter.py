"""The Btrfs adapter: subvolumes through btrfs-progs, parsed defensively.

Rules:
- Every call goes through `subvault.process`; output is parsed by keys, never by column
  position, so a btrfs-progs that adds fields does not break us.
- Paths from `btrfs subvolume list` are relative to the filesystem's top level.
- Where libbtrfsutil is present (`fastpath`), snapshot creation and listing go through
  it: no fork/exec per snapshot, concurrent snapshots can share one commit, and a
  listing is one tree walk. Everything else, and every fallback, is the CLI.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from subvault import process
from subvault.btrfs import fastpath, libbtrfsutil
from subvault.btrfs.parse import list_line, show_fields, uuid_or_none

# The statfs/syncfs checks live in btrfs/syscalls.py (lean, for snap-all's fast start);
# the adapter stays the one facade executors call for them.
from subvault.btrfs.syscalls import fs_id as fs_id
from subvault.btrfs.syscalls import fs_type as fs_type
from subvault.btrfs.syscalls import is_btrfs as is_btrfs
from subvault.btrfs.syscalls import is_subvolume as is_subvolume
from subvault.btrfs.syscalls import require_subvolume as require_subvolume
from subvault.btrfs.syscalls import syncfs as syncfs
from subvault.errors import NotFound, SubvaultError
from subvault.model import SubvolInfo

TOP_LEVEL_ID = 5

_KV_FIELDS = ("ID", "gen", "cgen", "parent", "top level", "otime", "parent_uuid", "received_uuid", "uuid")


def _local_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").astimezone(UTC)
    except ValueError:
        return None


def fast_path() -> bool:
    """True when libbtrfsutil can be used (present, and we are root for tree searches)."""
    return libbtrfsutil.available() and os.geteuid() == 0


_fast = fast_path


def list_subvolumes(mount: str | Path) -> list[SubvolInfo]:
    """Given any path on a btrfs filesystem, return every subvolume of that filesystem."""
    if _fast():
        try:
            return fastpath.list_subvolumes(str(mount))
        except libbtrfsutil.LibError:
            pass  # the CLI below reports the error in its own words
    return list_subvolumes_cli(mount)


def list_subvolumes_cli(mount: str | Path) -> list[SubvolInfo]:
    """list_subvolumes through `btrfs subvolume list` (three calls, parsed by key)."""
    mount = str(mount)
    base = ["btrfs", "subvolume", "list"]
    every = process.run([*base, "-a", "-p", "-g", "-u", "-q", "-R", mount], what="btrfs subvolume list").stdout
    ro = process.run([*base, "-a", "-r", mount], what="btrfs subvolume list -r").stdout
    snaps = process.run([*base, "-a", "-s", mount], what="btrfs subvolume list -s").stdout
    ro_ids = {f.get("ID") for f in map(list_line, ro.splitlines())}
    otimes = {f.get("ID"): f.get("otime") for f in map(list_line, snaps.splitlines())}
    result: list[SubvolInfo] = []
    for line in every.splitlines():
        f = list_line(line)
        if "ID" not in f or "uuid" not in f:
            continue
        result.append(
            SubvolInfo(
                id=int(f["ID"]),
                path=f["path"].removeprefix("<FS_TREE>/"),
                uuid=f["uuid"],
                parent_uuid=uuid_or_none(f.get("parent_uuid")),
                received_uuid=uuid_or_none(f.get("received_uuid")),
                readonly=f["ID"] in ro_ids,
                generation=int(f.get("gen", 0)),
                top_level=int(f.get("top level", f.get("parent", TOP_LEVEL_ID))),
                otime=_local_time(otimes.get(f["ID"])),
            )
        )
    return result


def show(path: str | Path) -> SubvolInfo:
    """Return the SubvolInfo of the subvolume at path. Raise NotFound if it is not one."""
    if fast_path() and is_subvolume(path):
        try:
            return fastpath.subvolume_info(str(path), with_path=True)
        except libbtrfsutil.LibError:
            pass  # the CLI below reports it in its own words
    return show_cli(path)


def show_cli(path: str | Path) -> SubvolInfo:
    """show() through `btrfs subvolume show`."""
    res = process.run(["btrfs", "subvolume", "show", str(path)], check=False)
    if res.returncode != 0:
        raise NotFound(f"{path} is not a btrfs subvolume ({res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'btrfs subvolume show failed'})")
    first, fields = show_fields(res.stdout)
    rel = "" if first in ("/", "<FS_TREE>") else first.removeprefix("<FS_TREE>/")
    flags = fields.get("Flags", "")
    return SubvolInfo(
        id=int(fields.get("Subvolume ID", "0")),
        path=rel,
        uuid=fields.get("UUID", ""),
        parent_uuid=uuid_or_none(fields.get("Parent UUID")),
        received_uuid=uuid_or_none(fields.get("Received UUID")),
        readonly="readonly" in flags,
        generation=int(fields.get("Generation", "0") or 0),
        top_level=int(fields.get("Top level ID", fields.get("Parent ID", "5")) or 5),
        otime=_parse_show_time(fields.get("Creation time")),
    )


def _parse_show_time(text: str | None) -> datetime | None:
    if not text or text == "-":
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z").astimezone(UTC)
    except ValueError:
        return None


def create_subvolume(path: str | Path) -> None:
    process.run(["btrfs", "subvolume", "create", str(path)], what=f"create subvolume {path}")


def snapshot(source: str | Path, dest: str | Path, *, readonly: bool = True) -> None:
    """Create a snapshot of source at dest (read-only unless told otherwise)."""
    error = snapshot_many([(str(source), str(dest), readonly)])[0]
    if error is not None:
        raise error


def snapshot_many(jobs: list[tuple[str, str, bool]]) -> list[SubvaultError | None]:
    """Create snapshots (source, dest, readonly); return each one's error or None.

    Through libbtrfsutil they are issued together (the kernel may fold them into one
    transaction commit); through the CLI, one after another.
    """
    if _fast():
        return libbtrfsutil.snapshot_many(jobs)
    return [_snapshot_cli_error(*job) for job in jobs]


def _snapshot_cli_error(source: str, dest: str, readonly: bool) -> SubvaultError | None:
    try:
        _snapshot_cli(source, dest, readonly)
        return None
    except SubvaultError as exc:
        return exc


def _snapshot_cli(source: str, dest: str, readonly: bool) -> None:
    argv = ["btrfs", "subvolume", "snapshot"]
    if readonly:
        argv.append("-r")
    process.run([*argv, str(source), str(dest)], what=f"snapshot {source}")


def delete(path: str | Path) -> None:
    process.run(["btrfs", "subvolume", "delete", str(path)], what=f"delete subvolume {path}")


def get_default(mount: str | Path) -> int:
    out = process.run(["btrfs", "subvolume", "get-default", str(mount)], what="btrfs get-default").stdout
    m = re.search(r"ID\s+(\d+)", out)
    if not m:
        raise NotFound(f"cannot read the default subvolume of {mount}: {out.strip()!r}")
    return int(m.group(1))


def set_default(subvol_id: int, mount: str | Path) -> None:
    process.run(["btrfs", "subvolume", "set-default", str(subvol_id), str(mount)], what="btrfs set-default")


def filesystem_uuid(path: str | Path) -> str:
    out = process.run(["btrfs", "filesystem", "show", str(path)], what="btrfs filesystem show").stdout
    m = re.search(r"uuid:\s*([0-9a-f-]{36})", out)
    if not m:
        raise NotFound(f"cannot read the filesystem uuid of {path}")
    return m.group(1)


def fs_relative_path(path: str | Path) -> str:
    """Return path's subvolume path relative to the filesystem top level ("" for top level)."""
    return show(path).path

