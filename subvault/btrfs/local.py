"""Creating and deleting the local snapshots of one subvolume, in snapper's layout
(thin executor, no policy). Reading them is `btrfs/local_scan.py`.

A new snapshot is written in the order `btrfs/numbered.py` states. Deleting runs it
backwards: marker, info.xml, subvolume, directory. A crash at any point leaves a marker,
and `finish_pending` completes or undoes the change.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from subvault.btrfs import adapter
from subvault.btrfs.numbered import KIND_CLEANUP, Request, create_in, os_error, undo, write_marker
from subvault.btrfs.snapdir import OWNER_KEY, PENDING, numbered_dirs, snapshots_dir
from subvault.btrfs.snapper import parse_info
from subvault.errors import NotBtrfs, SubvaultError
from subvault.model import LocalSnapshot


def ensure_snapshots_dir(sub_path: str | os.PathLike[str]) -> Path:
    """Return <sub>/.snapshots, creating it as a subvolume if missing.

    Raise NotBtrfs if the subvolume is missing or `.snapshots` is a plain directory.
    """
    adapter.require_subvolume(sub_path)
    sdir = Path(snapshots_dir(sub_path))
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
    """Create several snapshots together (`numbered.create_in`, after making each
    `.snapshots`); return each one's snapshot or error, in order."""
    date = now.astimezone(UTC).replace(microsecond=0)
    results: list[LocalSnapshot | SubvaultError | None] = [None] * len(requests)
    ready: list[int] = []
    for i, req in enumerate(requests):
        try:
            ensure_snapshots_dir(req.sub_path)
            ready.append(i)
        except SubvaultError as exc:
            results[i] = exc
        except OSError as exc:
            results[i] = os_error(exc, f"snapshot {req.sub_path}")
    made = create_in([requests[i] for i in ready], date, adapter.snapshot_many)
    for i, got in zip(ready, made, strict=True):
        results[i] = got if isinstance(got, SubvaultError) else _snapshot(requests[i], Path(got), date)
    return [r for r in results if r is not None]


def _snapshot(req: Request, ndir: Path, date: datetime) -> LocalSnapshot:
    """The LocalSnapshot that `create_in` made in ndir for req."""
    return LocalSnapshot(
        subvolume=req.sub_name, number=int(ndir.name), path=ndir / "snapshot", date=date,
        description=req.description, cleanup=KIND_CLEANUP.get(req.kind, ""),
        kind=req.kind if req.kind in KIND_CLEANUP else "foreign",  # type: ignore[arg-type]  # a kind in KIND_CLEANUP is a SnapshotKind; `in` does not narrow a str
        owned=req.kind in KIND_CLEANUP, userdata={OWNER_KEY: req.kind},
    )


def delete_snapshot(snap: LocalSnapshot) -> None:
    """Delete one owned snapshot: marker, info.xml, subvolume, directory.

    Raise SubvaultError if the snapshot is not subvault's own (invariant 8).
    """
    if not snap.owned:
        raise SubvaultError(f"refusing to delete {snap.path}: it was not made by subvault")
    ndir = snap.path.parent
    write_marker(ndir, "delete")
    (ndir / "info.xml").unlink(missing_ok=True)
    undo(ndir)


def finish_pending(sub_path: str | Path) -> list[int]:
    """Complete or undo every half-done create/delete under .snapshots; return their numbers.

    A create whose snapshot is read-only and whose info.xml is whole is kept; anything
    else marked pending is removed.
    """
    sdir = Path(snapshots_dir(sub_path))
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
            undo(ndir)
        fixed.append(num)
    return fixed
