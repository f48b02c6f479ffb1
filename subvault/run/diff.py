"""`subvault diff`: paths changed between two snapshots, from `btrfs send --no-data`.

The metadata-only send stream between two read-only snapshots is exactly the list of
changes; `btrfs receive --dump` prints it. Comparing against the live subvolume uses a
temporary read-only snapshot inside .snapshots (a non-numeric name snapper ignores),
always deleted afterwards.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from subvault import process
from subvault.btrfs import adapter, local
from subvault.btrfs.dump import inside, split_line, unescape
from subvault.run.context import Context
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
    """Given `btrfs receive --dump` output of a --no-data send, return the changes, one per path."""
    changes: dict[str, Change] = {}
    orphans: dict[str, str] = {}
    for line in text.splitlines():
        cmd, path, rest = split_line(line)
        if cmd in ("snapshot", "subvol", "utimes", "end", ""):
            continue
        if cmd == "rename":
            m = re.search(r"dest=(.*)$", rest)
            dest = inside(unescape(m.group(1))) if m else ""
            if _ORPHAN.match(Path(path).name):
                orphans.pop(path, None)
                changes.pop(path, None)
                changes[dest] = Change("added", dest)
            else:
                changes[dest] = Change("renamed", dest, f"from {path}")
            continue
        kind = _KINDS.get(cmd)
        if kind is None:
            continue
        if _ORPHAN.match(Path(path).name):
            orphans[path] = kind
            if kind == "deleted":
                continue
        old = changes.get(path)
        if old is None or _RANK[kind] < _RANK[old.kind]:
            changes[path] = Change(kind, path)
    return sorted((c for p, c in changes.items() if not _ORPHAN.match(Path(p).name)), key=lambda c: c.path)


@contextmanager
def _readonly_view(ctx: Context, sub, ref: str) -> Iterator[Path]:
    if ref != "current":
        yield find_snapshot(ctx, sub, ref).path
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
    with _readonly_view(ctx, sub, old) as a, _readonly_view(ctx, sub, new) as b:
        with process.pipeline(
            [["btrfs", "send", "--no-data", "-q", "-p", str(a), str(b)], ["btrfs", "receive", "--dump"]],
            what="btrfs send --no-data",
        ) as pipe:
            text = pipe.capture()
    return parse_dump(text)
