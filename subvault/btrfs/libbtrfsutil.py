"""libbtrfsutil through ctypes: the binding, and snapshot creation.

libbtrfsutil is the C library btrfs-progs is built on (Debian: libbtrfsutil1). Creating
a snapshot through it costs the kernel's time alone instead of a fork/exec of `btrfs`,
and snapshots created from several threads at once can share one transaction commit.
This module imports nothing heavier than ctypes and threading: `snap-all`'s start-up
is measured against snapper's (bench/bench_local.py). Listing is `btrfs/fastpath.py`.
When the library is missing, or SUBVAULT_NO_LIBBTRFSUTIL=1, callers use the `btrfs` CLI.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import threading

from subvault.errors import NoSpace, SubvaultError

READ_ONLY = 1 << 1
SUBVOL_RDONLY_FLAG = 1 << 0  # BTRFS_ROOT_SUBVOL_RDONLY in btrfs_util_subvolume_info.flags
ERROR_STOP_ITERATION = 1
TOP_LEVEL = 5


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class SubvolumeInfo(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("parent_id", ctypes.c_uint64),
        ("dir_id", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("uuid", ctypes.c_uint8 * 16),
        ("parent_uuid", ctypes.c_uint8 * 16),
        ("received_uuid", ctypes.c_uint8 * 16),
        ("generation", ctypes.c_uint64),
        ("ctransid", ctypes.c_uint64),
        ("otransid", ctypes.c_uint64),
        ("stransid", ctypes.c_uint64),
        ("rtransid", ctypes.c_uint64),
        ("ctime", Timespec),
        ("otime", Timespec),
        ("stime", Timespec),
        ("rtime", Timespec),
    ]


class LibError(OSError):
    """A libbtrfsutil call failed; errno is set when the library reported one."""


def _load() -> ctypes.CDLL | None:
    if os.environ.get("SUBVAULT_NO_LIBBTRFSUTIL") == "1":
        return None
    # The soname first; find_library is the fallback.
    try:
        lib = ctypes.CDLL("libbtrfsutil.so.1", use_errno=True)
    except OSError:
        # Only when the soname is missing: ctypes.util runs ldconfig and imports tempfile
        # (hashlib, openssl), some 40 ms that every snap-all would pay at the top.
        from ctypes import util

        found = util.find_library("btrfsutil")
        if not found:
            return None
        try:
            lib = ctypes.CDLL(found, use_errno=True)
        except OSError:
            return None
    lib.btrfs_util_create_snapshot.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.btrfs_util_create_snapshot.restype = ctypes.c_int
    lib.btrfs_util_strerror.argtypes = [ctypes.c_int]
    lib.btrfs_util_strerror.restype = ctypes.c_char_p
    lib.btrfs_util_create_subvolume_iterator.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
    lib.btrfs_util_create_subvolume_iterator.restype = ctypes.c_int
    lib.btrfs_util_subvolume_iterator_next_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(SubvolumeInfo)]
    lib.btrfs_util_subvolume_iterator_next_info.restype = ctypes.c_int
    lib.btrfs_util_subvolume_info.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.POINTER(SubvolumeInfo)]
    lib.btrfs_util_subvolume_info.restype = ctypes.c_int
    lib.btrfs_util_subvolume_path.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_void_p)]
    lib.btrfs_util_subvolume_path.restype = ctypes.c_int
    lib.btrfs_util_destroy_subvolume_iterator.argtypes = [ctypes.c_void_p]
    lib.btrfs_util_destroy_subvolume_iterator.restype = None
    return lib


LIB = _load()


def available() -> bool:
    return LIB is not None


def fail(code: int, what: str) -> LibError:
    assert LIB is not None
    err = ctypes.get_errno()
    text = (LIB.btrfs_util_strerror(code) or b"error").decode()
    if err:
        return LibError(err, f"{what}: {text}: {os.strerror(err)}")
    return LibError(errno_mod.EIO, f"{what}: {text}")


def create_snapshot(source: str, dest: str, *, readonly: bool) -> None:
    """Create a snapshot of source at dest. Raise LibError (errno set, e.g. ENOSPC) on failure.

    The call releases the GIL, so snapshots started from several threads run together.
    """
    assert LIB is not None
    ctypes.set_errno(0)
    code = LIB.btrfs_util_create_snapshot(os.fsencode(source), os.fsencode(dest), READ_ONLY if readonly else 0, None, None)
    if code:
        raise fail(code, f"snapshot {source}")


def snapshot_many(jobs: list[tuple[str, str, bool]]) -> list[SubvaultError | None]:
    """Create snapshots (source, dest, readonly) through the library from up to 16
    threads, so the kernel may fold them into one commit; return each one's error or None."""
    results: list[SubvaultError | None] = [None] * len(jobs)
    pending = iter(range(len(jobs)))
    take = threading.Lock()

    def worker() -> None:
        while True:
            with take:
                i = next(pending, None)
            if i is None:
                return
            results[i] = snapshot_error(*jobs[i])

    threads = [threading.Thread(target=worker) for _ in range(min(16, len(jobs)))]
    for t in threads[1:]:
        t.start()
    if threads:
        worker()  # this thread works too: one snapshot starts no thread at all
    for t in threads[1:]:
        t.join()
    return results


def snapshot_error(source: str, dest: str, readonly: bool) -> SubvaultError | None:
    """Create one snapshot; return the error as subvault reports it, or None."""
    try:
        create_snapshot(source, dest, readonly=readonly)
        return None
    except LibError as exc:
        if exc.errno == errno_mod.ENOSPC:
            return NoSpace(f"snapshot {source}: no space left on device; free space or prune, then retry")
        return SubvaultError(f"snapshot {source} failed: {exc.strerror}")
