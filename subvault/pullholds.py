"""Holds a puller leaves on its source: the incremental base of each pulled subvolume.

In pull mode the source never sees its puller's target, so it cannot know which of its
snapshots is the base of the next incremental pull (invariant 1 on the source side).
After each pull the puller says so, through the one write a `serve --send-only
--puller NAME` key allows:

    subvault pulled --puller NAME PATH UUID

which records, in PATH/.snapshots/subvault-pulled-NAME.json, that NAME's base for the
subvolume at PATH is the snapshot UUID. The source's prune keeps that snapshot for as
long as the record names it. Rules:
- NAME comes from the forced command, never from the client, so a puller can only move
  its own record; the worst a compromised puller can do is pin one snapshot per
  subvolume.
- The record is written atomically (temporary file, fsync, rename), only into a real
  `.snapshots` directory of a subvolume (never through a symlink), and is only a hint
  for holding: a missing or unreadable record holds nothing, it never deletes.
- `check` reports records older than STALE, so a puller that stopped pulling does not
  pin a snapshot unnoticed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import datetime, timedelta
from pathlib import Path

PREFIX = "subvault-pulled-"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STALE = timedelta(days=7)


def record_path(sub_path: str | Path, puller: str) -> Path:
    return Path(sub_path) / ".snapshots" / f"{PREFIX}{puller}.json"


def write_record(sub_path: str | Path, puller: str, uuid: str, now: datetime) -> None:
    """Record that puller's base for the subvolume at sub_path is uuid.

    The record goes only into a real `.snapshots` directory owned by this user (never
    through a symlink: the temporary file is created exclusively, relative to that
    directory). Raise ValueError for a bad name or uuid, or if it cannot be written.
    """
    if not NAME_RE.match(puller) or not UUID_RE.match(uuid):
        raise ValueError(f"bad puller name {puller!r} or uuid {uuid!r}")
    name = record_path(sub_path, puller).name
    try:
        dfd = os.open(Path(sub_path) / ".snapshots", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise ValueError(f"{sub_path} has no .snapshots directory: not a subvolume subvault snapshots") from None
    try:
        if os.fstat(dfd).st_uid != os.geteuid():
            raise ValueError(f"{sub_path}/.snapshots is not owned by this user; refusing to write there")
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
            with os.fdopen(fd, "w") as fh:
                json.dump({"puller": puller, "uuid": uuid, "at": now.isoformat()}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            raise ValueError(f"cannot write {sub_path}/.snapshots/{name}: {exc.strerror}") from None
    finally:
        os.close(dfd)


def read_records(sub_path: str | Path) -> list[tuple[str, str, datetime | None]]:
    """Return (puller, uuid, when) for each readable record of the subvolume at sub_path."""
    sdir = Path(sub_path) / ".snapshots"
    out = []
    try:
        names = sorted(p for p in os.listdir(sdir) if p.startswith(PREFIX) and p.endswith(".json"))
    except OSError:
        return []
    for name in names:
        try:
            data = json.loads((sdir / name).read_text())
            puller, uuid = str(data["puller"]), str(data["uuid"])
            when = datetime.fromisoformat(data["at"]) if data.get("at") else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if NAME_RE.match(puller) and UUID_RE.match(uuid):
            out.append((puller, uuid, when))
    return out


def holds(sub_path: str | Path) -> dict[str, str]:
    """Return uuid -> reason for the snapshots pullers of the subvolume at sub_path still build on."""
    return {uuid: f"pulled by {puller}: its incremental base (invariant 1)" for puller, uuid, _ in read_records(sub_path)}
