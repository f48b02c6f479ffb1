"""Tree digests: one hash over paths, types, modes, owners, xattrs, sizes and content hashes.

Rules:
- Times are not part of the digest (a restore may touch directory times; content and
  metadata that matter are compared).
- The walk stays inside one subvolume, and a nested subvolume's mount point is left out
  altogether: neither a nested subvolume (another st_dev) nor the empty placeholder a
  snapshot keeps for one (btrfs inode 2) is recorded. A send stream carries no
  placeholder, so a received copy has no entry where its source snapshot has one; a
  nested subvolume is never part of its parent's backup (see docs/design.md, "How the
  drill treats nested subvolumes").
- Entries are visited in sorted byte order, so two equal trees give equal digests.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from subvault.btrfs import adapter

BTRFS_EMPTY_SUBVOL_DIR_INO = 2
CHUNK = 1 << 20


@dataclass(frozen=True)
class TreeDigest:
    digest: str
    entries: int
    bytes: int
    records: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def first_difference(self, other: "TreeDigest") -> str | None:
        """Return the first record present in one tree and not the other (needs keep_records)."""
        a, b = set(self.records), set(other.records)
        diff = sorted((a - b) | (b - a))
        return diff[0] if diff else None


def _xattrs(path: str) -> str:
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:
        return ""
    parts = []
    for n in names:
        try:
            value = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
        parts.append(f"{n}={hashlib.sha256(value).hexdigest()[:16]}")
    return ",".join(parts)


def _content(path: str) -> str:
    # Rule: never follow a symlink out of the tree (a file swapped for a link after
    # the lstat would otherwise be read through it): O_NOFOLLOW refuses the last part.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _record(rel: str, full: str, st: os.stat_result) -> str:
    mode = stat.S_IMODE(st.st_mode)
    head = f"{rel}\t{mode:o}\t{st.st_uid}:{st.st_gid}\t{_xattrs(full)}"
    if stat.S_ISREG(st.st_mode):
        return f"{head}\tf\t{st.st_size}\t{_content(full)}"
    if stat.S_ISDIR(st.st_mode):
        return f"{head}\td"
    if stat.S_ISLNK(st.st_mode):
        return f"{head}\tl\t{os.readlink(full)}"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
        return f"{head}\t{kind}\t{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return f"{head}\t{'p' if stat.S_ISFIFO(st.st_mode) else 's'}"


def is_nested_subvolume(st: os.stat_result, root_st: os.stat_result, on_btrfs: bool) -> bool:
    """True for a directory that is a nested subvolume (or, on btrfs, a snapshot's placeholder for one)."""
    if not stat.S_ISDIR(st.st_mode):
        return False
    return st.st_dev != root_st.st_dev or (on_btrfs and st.st_ino == BTRFS_EMPTY_SUBVOL_DIR_INO)


def tree_digest(root: str | Path, *, keep_records: bool = False) -> TreeDigest:
    """Given a directory, return the digest of everything below it (the root's own metadata included).

    Nested subvolumes and their placeholders are left out (module rule). Raise OSError if root cannot be read.
    """
    root = os.fspath(root)
    root_st = os.lstat(root)
    on_btrfs = adapter.is_btrfs(root)
    h = hashlib.sha256()
    kept: list[str] = []
    count = total = 0
    stack: list[str] = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        st = root_st if not rel else os.lstat(full)
        if rel and is_nested_subvolume(st, root_st, on_btrfs):
            continue
        rec = _record(rel or ".", full, st)
        h.update(rec.encode("utf-8", "surrogateescape") + b"\n")
        count += 1
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
        if keep_records:
            kept.append(rec)
        if stat.S_ISDIR(st.st_mode):
            names = sorted(os.listdir(full), key=os.fsencode)
            stack.extend(os.path.join(rel, n) if rel else n for n in reversed(names))
    return TreeDigest(h.hexdigest(), count, total, tuple(kept))
