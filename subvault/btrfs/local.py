"""Local snapshots of one subvolume, in snapper's layout (thin executor, no policy).

Write ordering for a new snapshot N (see docs/design.md):
  1. mkdir .snapshots/N            (fails if N is taken: nothing else is touched)
  2. write the PENDING marker
  3. btrfs subvolume snapshot -r   (on failure: remove N, raise)
  4. write info.xml atomically     (on failure: delete the snapshot, remove N, raise)
  5. remove the marker
Deleting runs it backwards: marker, info.xml, subvolume, directory. A crash at any
point leaves a marker, and `finish_pending` completes or undoes the change.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from subvault.btrfs import adapter
from subvault.btrfs.snapper import (
    OWNER_KEY,
    PENDING,
    SNAPSHOTS_DIR,
    Info,
    numbered_dirs,
    parse_info,
    render_info,
    write_atomic,
)
from subvault.errors import NoSpace, NotBtrfs, SnapshotNumberTaken, SubvaultError
from subvault.model import LocalSnapshot, SnapshotKind

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


def read_snapshot(sub_name: str, ndir: Path) -> LocalSnapshot | None:
    """Return the snapshot in .snapshots/N, or None when N is incomplete or not a snapshot."""
    if (ndir / PENDING).exists():
        return None
    try:
        info = parse_info((ndir / "info.xml").read_text())
    except (OSError, ValueError):
        return None
    userdata = info.userdata_dict
    owner_kind = userdata.get(OWNER_KEY)
    kind: SnapshotKind = owner_kind if owner_kind in ("timeline", "prechange") else "foreign"  # type: ignore[assignment]
    return LocalSnapshot(
        subvolume=sub_name,
        number=info.num,
        path=ndir / "snapshot",
        date=info.date,
        description=info.description,
        cleanup=info.cleanup,
        kind=kind,
        owned=kind != "foreign",
        userdata=userdata,
    )


def scan(sub_name: str, sub_path: str | Path, *, with_uuids: bool = True) -> list[LocalSnapshot]:
    """Return every complete snapshot under <sub>/.snapshots, oldest number first.

    With with_uuids, each snapshot carries its btrfs uuid (one `btrfs subvolume list`
    for the whole filesystem); snapshots whose subvolume is missing are left out.
    """
    sdir = snapshots_dir(sub_path)
    found: list[LocalSnapshot] = []
    for num in numbered_dirs(sdir):
        snap = read_snapshot(sub_name, sdir / str(num))
        if snap is not None:
            found.append(snap)
    if not with_uuids or not found:
        return found
    prefix = adapter.fs_relative_path(sdir)
    by_path = {s.path: s for s in adapter.list_subvolumes(sub_path)}
    out = []
    for snap in found:
        rel = f"{prefix}/{snap.number}/snapshot" if prefix else f"{snap.number}/snapshot"
        info = by_path.get(rel)
        if info is None:
            continue  # info.xml without a snapshot: not a restore point
        out.append(
            LocalSnapshot(**{**snap.__dict__, "uuid": info.uuid, "received_uuid": info.received_uuid})
        )
    return out


def next_number(sub_path: str | Path) -> int:
    nums = numbered_dirs(snapshots_dir(sub_path))
    return (nums[-1] + 1) if nums else 1


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
    sdir = ensure_snapshots_dir(sub_path)
    num = number if number is not None else next_number(sub_path)
    ndir = sdir / str(num)
    try:
        os.mkdir(ndir, 0o755)
    except FileExistsError:
        raise SnapshotNumberTaken(
            f"{ndir} already exists (snapper or another run took number {num}); run again to pick the next number"
        ) from None
    except OSError as exc:
        raise _os_error(exc, f"create {ndir}") from None
    try:
        _write_marker(ndir, "create")
        adapter.snapshot(source or sub_path, ndir / "snapshot", readonly=readonly)
        info = Info(
            num=num,
            date=now.astimezone(timezone.utc).replace(microsecond=0),
            description=description,
            cleanup=KIND_CLEANUP.get(kind, ""),
            userdata=((OWNER_KEY, kind),),
        )
        write_atomic(ndir / "info.xml", render_info(info))
        (ndir / PENDING).unlink()
    except BaseException as exc:
        _undo(ndir)
        if isinstance(exc, OSError):
            raise _os_error(exc, f"snapshot {sub_path}") from None
        raise
    return LocalSnapshot(
        subvolume=sub_name,
        number=num,
        path=ndir / "snapshot",
        date=info.date,
        description=description,
        cleanup=info.cleanup,
        kind=kind if kind in KIND_CLEANUP else "foreign",
        owned=kind in KIND_CLEANUP,
        userdata=dict(info.userdata),
    )


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
