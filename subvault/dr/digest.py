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
- Every content byte is hashed with BLAKE3 (CONTENT_HASH); the records with sha256.
- File contents are hashed on a pool of threads (hashing releases the GIL), one file
  per task, at most WINDOW files ahead of the records; the records are hashed in walk
  order, so the digest does not depend on the pool. Files under INLINE bytes are hashed
  by the walker itself (a task costs more than they do).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from subvault.btrfs import adapter

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

BTRFS_EMPTY_SUBVOL_DIR_INO = 2
CHUNK = 1 << 20


class ContentHash(Protocol):
    """What the digest uses of a content hash: blake3 and hashlib's sha256 both have it."""

    def update(self, data: ReadableBuffer, /) -> object: ...
    def hexdigest(self) -> str: ...


# Content hash: BLAKE3 (256-bit, collision resistant like sha256). Measured on the
# 2-core build machine with the data in the page cache: sha256 (SHA-NI) 1.77 GB/s,
# BLAKE3 6.6 GB/s on one core; a tree digest of 776 MiB took 0.60 s with sequential
# sha256 and 0.21 s with BLAKE3 on a pool of 2 (bench/bench_drill.py). Both sides of a
# drill are hashed by the same process, so the choice never mixes; sha256 stands in
# when the blake3 package is missing.
try:
    from blake3 import blake3 as _Blake3

    _THREADED: type[_Blake3] | None = _Blake3
except ImportError:  # pragma: no cover - blake3 is a dependency
    _THREADED = None
CONTENT_HASH: Callable[[], ContentHash] = _THREADED or hashlib.sha256
INLINE = 256 << 10
WINDOW = 64
BIG = 64 << 20  # files from this size on are hashed by BLAKE3's own threads
FILE_CHUNK = 256 << 10  # read size below BIG (hashlib.file_digest's, which this path used)
READ_CHUNK = 16 << 20  # read size from BIG on


def _workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0))))


@dataclass(frozen=True)
class TreeDigest:
    digest: str
    entries: int
    bytes: int
    records: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def first_difference(self, other: TreeDigest) -> str | None:
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
        if _THREADED is not None and os.fstat(fd).st_size >= BIG:
            # A big file's BLAKE3 with the hash spread over the cores (BLAKE3 is a tree
            # hash: the value does not depend on how many threads computed it). One
            # file's pool task would otherwise hash it on one core: measured on 512 MiB
            # in the page cache here, 147 ms -> 113 ms, bound by the copy out of the page cache.
            return _hash_file(fh, _THREADED(max_threads=_THREADED.AUTO), READ_CHUNK)
        return _hash_file(fh, CONTENT_HASH(), FILE_CHUNK)


def _hash_file(fh: io.FileIO, h: ContentHash, chunk: int) -> str:
    """The hex digest of the rest of fh, read in pieces of chunk bytes."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    while n := fh.readinto(buf):
        h.update(view[:n])
    return h.hexdigest()


def _head(rel: str, full: str, st: os.stat_result) -> str:
    """The record of one entry; for a regular file, all but its content hash."""
    mode = stat.S_IMODE(st.st_mode)
    head = f"{rel}\t{mode:o}\t{st.st_uid}:{st.st_gid}\t{_xattrs(full)}"
    if stat.S_ISREG(st.st_mode):
        return f"{head}\tf\t{st.st_size}"
    if stat.S_ISDIR(st.st_mode):
        return f"{head}\td"
    if stat.S_ISLNK(st.st_mode):
        return f"{head}\tl\t{os.readlink(full)}"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
        return f"{head}\t{kind}\t{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return f"{head}\t{'p' if stat.S_ISFIFO(st.st_mode) else 's'}"


def _record(rel: str, full: str, st: os.stat_result) -> str:
    head = _head(rel, full, st)
    return f"{head}\t{_content(full)}" if stat.S_ISREG(st.st_mode) else head


def is_nested_subvolume(st: os.stat_result, root_st: os.stat_result, on_btrfs: bool) -> bool:
    """True for a directory that is a nested subvolume (or, on btrfs, a snapshot's placeholder for one)."""
    if not stat.S_ISDIR(st.st_mode):
        return False
    return st.st_dev != root_st.st_dev or (on_btrfs and st.st_ino == BTRFS_EMPTY_SUBVOL_DIR_INO)


def tree_digest(root: str | Path, *, keep_records: bool = False, workers: int | None = None) -> TreeDigest:
    """Given a directory, return the digest of everything below it (the root's own metadata included).

    Nested subvolumes and their placeholders are left out (module rule). Raise OSError if root cannot be read.
    """
    root = os.fspath(root)
    root_st = os.lstat(root)
    on_btrfs = adapter.is_btrfs(root)
    h = hashlib.sha256()
    kept: list[str] = []
    count = total = 0
    pending: deque[tuple[str, Future[str] | None]] = deque()

    def settle(limit: int) -> None:
        while len(pending) > limit:
            head, content = pending.popleft()
            rec = head if content is None else f"{head}\t{content.result()}"
            h.update(rec.encode("utf-8", "surrogateescape") + b"\n")
            if keep_records:
                kept.append(rec)

    stack: list[str] = [""]
    with ThreadPoolExecutor(max_workers=workers or _workers()) as pool:
        try:
            while stack:
                rel = stack.pop()
                full = os.path.join(root, rel) if rel else root
                st = root_st if not rel else os.lstat(full)
                if rel and is_nested_subvolume(st, root_st, on_btrfs):
                    continue
                head = _head(rel or ".", full, st)
                count += 1
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
                    if st.st_size < INLINE:
                        head = f"{head}\t{_content(full)}"
                    else:
                        pending.append((head, pool.submit(_content, full)))
                        settle(WINDOW)
                        head = ""
                if head:
                    pending.append((head, None))
                settle(WINDOW)
                if stat.S_ISDIR(st.st_mode):
                    names = sorted(os.listdir(full), key=os.fsencode)
                    stack.extend(os.path.join(rel, n) if rel else n for n in reversed(names))
            settle(0)
        except BaseException:
            for _, content in pending:
                if content is not None:
                    content.cancel()
            raise
    return TreeDigest(h.hexdigest(), count, total, tuple(kept))
