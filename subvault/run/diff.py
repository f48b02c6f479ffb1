"""`subvault diff`: paths changed between two snapshots, from `btrfs send --no-data`.

The metadata-only send stream between two read-only snapshots is exactly the list of
changes; `btrfs receive --dump` prints it. Comparing against the live subvolume uses a
temporary read-only snapshot inside .snapshots (a non-numeric name snapper ignores),
always deleted afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from subvault.btrfs import adapter, local
from subvault.btrfs.dump import inside, metadata_dump, split_line, unescape
from subvault.config.schema import SubvolumeConf
from subvault.context import Context
from subvault.run.local import find_snapshot

_ORPHAN = re.compile(r"^o\d+-\d+-\d+$")
_KINDS = {
    "mkfile": "added", "mkdir": "added", "mknod": "added", "mkfifo": "added", "mksock": "added",
    "symlink": "added", "link": "added",
    "unlink": "deleted", "rmdir": "deleted",
    "write": "modified", "truncate": "modified", "clone": "modified", "update_extent": "modified",
    "chmod": "attrs", "chown": "attrs", "set_xattr": "attrs", "remove_xattr": "attrs",
}
_RANK = {"added": 0, "deleted": 0, "renamed": 0, "modified": 1, "attrs": 2}


@dataclass(frozen=True)
class Change:
    kind: str  # added, deleted, modified, attrs, renamed
    path: str
    detail: str = ""


def parse_dump(text: str) -> list[Change]:
    """Given `btrfs receive --dump` output of a --no-data send, return the changes, one per path.

    Rule: no internal name reaches the result. A send stream moves inodes through
    orphan names (o<ino>-<gen>-<n>): an existing inode renamed to one stands for its old
    path until it is removed or renamed again; a new inode created under one gets its
    real name by a later rename, and everything recorded under it moves with it.
    """
    changes: dict[str, Change] = {}
    aliases: dict[str, str] = {}  # orphan path -> the real (old) path it stands for

    def real(path: str) -> str:
        parts = path.split("/")
        for i in range(len(parts), 0, -1):
            head = "/".join(parts[:i])
            if head in aliases:
                return "/".join([aliases[head], *parts[i:]])
        return path

    def record(path: str, kind: str) -> None:
        old = changes.get(path)
        if old is None or _RANK[kind] < _RANK[old.kind]:
            changes[path] = Change(kind, path)

    for line in text.splitlines():
        cmd, path, rest = split_line(line)
        if cmd == "rename":
            m = re.search(r"dest=(.*)$", rest)
            _rename(changes, aliases, real, path, inside(unescape(m.group(1))) if m else "")
            continue
        kind = _KINDS.get(cmd)
        if kind is not None and path:
            record(real(path), kind)
    return sorted((c for c in changes.values() if not _is_internal(c.path)), key=lambda c: c.path)


def _rename(changes: dict[str, Change], aliases: dict[str, str], real: Callable[[str], str], src: str, dest: str) -> None:
    if _ORPHAN.match(Path(dest).name):
        aliases[dest] = real(src)  # moved out of the way: it keeps standing for its old path
        return
    if src in aliases:
        old = aliases.pop(src)
        if old != dest:
            changes[dest] = Change("renamed", dest, f"from {old}")
        return
    if _is_internal(src):
        # A new inode gets its real name: what was recorded under the orphan moves with it.
        for key in [k for k in changes if k == src or k.startswith(src + "/")]:
            change = changes.pop(key)
            moved = dest + key[len(src) :]
            changes[moved] = Change(change.kind if key != src else "added", moved, change.detail)
        changes.setdefault(dest, Change("added", dest))
        return
    changes[dest] = Change("renamed", dest, f"from {src}")


def _is_internal(path: str) -> bool:
    return any(_ORPHAN.match(part) for part in path.split("/"))


@contextmanager
def _readonly_view(ctx: Context, sub: SubvolumeConf, ref: str, what: str) -> Iterator[Path]:
    if ref != "current":
        yield find_snapshot(ctx, sub, ref, what=what).path
        return
    tmp = local.ensure_snapshots_dir(sub.path) / ".subvault-diff-current"
    if adapter.is_subvolume(tmp):
        adapter.delete(tmp)
    adapter.snapshot(sub.path, tmp, readonly=True)
    try:
        yield tmp
    finally:
        adapter.delete(tmp)


def diff_snapshots(ctx: Context, subvolume: str, old: str, new: str) -> list[Change]:
    """Return the paths changed from snapshot OLD to NEW ("current" = the live subvolume)."""
    sub = ctx.config.get_subvolume(subvolume)
    with _readonly_view(ctx, sub, old, "OLD") as a, _readonly_view(ctx, sub, new, "NEW") as b:
        return parse_dump(metadata_dump(str(a), str(b)))
